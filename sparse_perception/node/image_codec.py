"""sensor_msgs/Image and CompressedImage payloads -> BGR uint8 arrays (no rclpy, no cv_bridge)."""

from __future__ import annotations

import re
from typing import Any

import cv2
import numpy as np

__all__ = ["ENCODINGS", "MAX_PIXELS", "compressed_to_bgr", "declared_size", "image_to_bgr"]

#: encoding -> (channels, bytes per channel)
ENCODINGS: dict[str, tuple[int, int]] = {"bgr8": (3, 1), "rgb8": (3, 1), "bgra8": (4, 1), "rgba8": (4, 1),
                                         "mono8": (1, 1), "mono16": (1, 2)}


def _buffer(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, np.uint8)
    if isinstance(data, (list, tuple)):  # rclpy may hand out array('B') / lists
        return np.asarray(data, np.uint8)
    try:
        return np.frombuffer(memoryview(data), np.uint8)
    except TypeError as exc:
        raise ValueError(f"image data of type {type(data).__name__} is not a byte buffer") from exc


def image_to_bgr(encoding: str, height: int, width: int, step: int, data: Any, is_bigendian: int | bool = 0) -> np.ndarray:
    """Convert a raw image payload to a contiguous BGR uint8 (H, W, 3) array.

    :raises ValueError: unknown encoding, zero size, step too small, or data length != step * height.
    """
    enc = str(encoding).lower()
    if enc not in ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: {sorted(ENCODINGS)}")
    ch, bpc = ENCODINGS[enc]
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ValueError(f"image has zero size: height={height}, width={width}")
    row = width * ch * bpc
    if step < row:
        raise ValueError(f"step {step} < width*channels*bytes = {row} for {enc} {width}x{height}")
    buf = _buffer(data)
    if buf.size != step * height:
        raise ValueError(f"image data has {buf.size} bytes, expected step*height = {step}*{height} = {step * height}")
    rows = buf.reshape(height, step)[:, :row]
    if bpc == 2:
        dt = np.dtype(">u2" if is_bigendian else "<u2")
        mono = np.ascontiguousarray(rows).view(dt).reshape(height, width)
        img8 = (mono >> 8).astype(np.uint8)
        return cv2.cvtColor(img8, cv2.COLOR_GRAY2BGR)
    px = rows.reshape(height, width, ch)
    if enc == "bgr8":
        return np.ascontiguousarray(px)
    if enc == "rgb8":
        return cv2.cvtColor(px, cv2.COLOR_RGB2BGR)
    if enc == "bgra8":
        return cv2.cvtColor(px, cv2.COLOR_BGRA2BGR)
    if enc == "rgba8":
        return cv2.cvtColor(px, cv2.COLOR_RGBA2BGR)
    return cv2.cvtColor(np.ascontiguousarray(px[:, :, 0]), cv2.COLOR_GRAY2BGR)


#: largest decoded frame accepted (pixels): 8192 x 8192; a header declaring more is refused before decoding
MAX_PIXELS = 8192 * 8192

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        if marker in _SOF:
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """RIFF/WEBP: the first chunk is VP8 (lossy), VP8L (lossless) or VP8X (extended; canvas size)."""
    kind, body = data[12:16], data[20:]
    if kind == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        return int.from_bytes(body[6:8], "little") & 0x3FFF, int.from_bytes(body[8:10], "little") & 0x3FFF
    if kind == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        bits = int.from_bytes(body[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X" and len(body) >= 10:
        return int.from_bytes(body[4:7], "little") + 1, int.from_bytes(body[7:10], "little") + 1
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """Largest ImageWidth x ImageLength over the IFDs (every page may be decoded)."""
    order = "little" if data[:2] == b"II" else "big"
    if int.from_bytes(data[2:4], order) != 42:
        return None  # BigTIFF (43) and others: not bounded here
    off, best, seen = int.from_bytes(data[4:8], order), None, set()
    while 8 <= off < len(data) and off not in seen and len(seen) < 64:
        seen.add(off)
        n = int.from_bytes(data[off:off + 2], order)
        w = h = None
        for k in range(n):
            e = off + 2 + 12 * k
            if e + 12 > len(data):
                return None
            tag, typ = int.from_bytes(data[e:e + 2], order), int.from_bytes(data[e + 2:e + 4], order)
            val = int.from_bytes(data[e + 8:e + 10], order) if typ == 3 else int.from_bytes(data[e + 8:e + 12], order)
            if tag == 256:
                w = val
            elif tag == 257:
                h = val
        if w is None or h is None:
            return None
        if best is None or w * h > best[0] * best[1]:
            best = (w, h)
        nxt = off + 2 + 12 * n
        off = int.from_bytes(data[nxt:nxt + 4], order)
    return best


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    """PBM/PGM/PPM/PFM: magic, then ASCII width and height (``#`` comments allowed)."""
    text = re.sub(rb"#[^\n]*", b" ", data[2:512]).split()
    if len(text) < 2 or not text[0].isdigit() or not text[1].isdigit():
        return None
    return int(text[0]), int(text[1])


def declared_size(buf: np.ndarray) -> tuple[int, int] | None:
    """(width, height) the header of a PNG, JPEG, GIF, WebP, TIFF, BMP, PNM/PFM or Sun raster declares, without
    decoding; None for other formats (which :func:`compressed_to_bgr` refuses) or unreadable headers."""
    head = buf[:32].tobytes()
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24 and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(buf.tobytes())
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:  # logical screen size
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_size(buf[:64].tobytes())
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(buf.tobytes())
    if head[:2] == b"BM" and len(head) >= 26:
        return (abs(int.from_bytes(head[18:22], "little", signed=True)),
                abs(int.from_bytes(head[22:26], "little", signed=True)))
    if head[:4] == b"\x59\xa6\x6a\x95" and len(head) >= 12:
        return int.from_bytes(head[4:8], "big"), int.from_bytes(head[8:12], "big")
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456Ff" and head[2:3].isspace():
        return _pnm_size(buf[:512].tobytes())
    return None


def compressed_to_bgr(fmt: str, data: Any) -> np.ndarray:
    """Decode a CompressedImage payload (jpeg/png, or another format :func:`declared_size` bounds) to BGR uint8.

    Every failure is a ``ValueError``: OpenCV's own errors (``cv2.error``, e.g. for a header that
    declares an absurd size) are converted; a header declaring more than :data:`MAX_PIXELS` is
    refused before anything is allocated, and so is any format whose declared size
    :func:`declared_size` cannot read (decompression bombs: GIF, WebP, TIFF, ... are bounded too).

    :raises ValueError: empty, oversized or undecodable data (names the format).
    """
    buf = _buffer(data)
    if buf.size == 0:
        raise ValueError(f"compressed image ({fmt!r}) has no data")
    size = declared_size(buf)
    if size is None:  # the decoder would allocate whatever the header says: refuse what cannot be bounded
        raise ValueError(f"cannot decode compressed image of format {fmt!r} ({buf.size} bytes): not a PNG, JPEG, "
                         "GIF, WebP, TIFF, BMP, PNM or Sun raster header whose size can be read before decoding")
    if size[0] * size[1] > MAX_PIXELS or 0 in size:
        raise ValueError(f"compressed image ({fmt!r}, {buf.size} bytes) declares {size[0]}x{size[1]} pixels; "
                         f"accepted: 1 to {MAX_PIXELS} pixels")
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot decode compressed image of format {fmt!r} ({buf.size} bytes): {first}") from exc
    if img is None or img.size == 0:
        raise ValueError(f"cannot decode compressed image of format {fmt!r} ({buf.size} bytes)")
    return img
