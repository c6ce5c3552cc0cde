"""sensor_msgs/Image and CompressedImage payloads -> BGR uint8 arrays (no rclpy, no cv_bridge)."""

from __future__ import annotations

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


def declared_size(buf: np.ndarray) -> tuple[int, int] | None:
    """(width, height) a PNG or JPEG header declares, without decoding; None for other or unreadable headers."""
    head = buf[:24].tobytes()
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24 and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if not head.startswith(b"\xff\xd8"):
        return None
    data, i = buf.tobytes(), 2
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


def compressed_to_bgr(fmt: str, data: Any) -> np.ndarray:
    """Decode a CompressedImage payload (jpeg/png) to BGR uint8.

    Every failure is a ``ValueError``: OpenCV's own errors (``cv2.error``, e.g. for a header that
    declares an absurd size) are converted, and a PNG/JPEG header declaring more than
    :data:`MAX_PIXELS` is refused before anything is allocated.

    :raises ValueError: empty, oversized or undecodable data (names the format).
    """
    buf = _buffer(data)
    if buf.size == 0:
        raise ValueError(f"compressed image ({fmt!r}) has no data")
    size = declared_size(buf)
    if size is not None and (size[0] * size[1] > MAX_PIXELS or 0 in size):
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
