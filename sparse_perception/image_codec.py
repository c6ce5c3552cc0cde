"""sensor_msgs/Image and CompressedImage payloads -> BGR uint8 arrays (no rclpy, no cv_bridge)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

__all__ = ["ENCODINGS", "compressed_to_bgr", "image_to_bgr"]

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


def compressed_to_bgr(fmt: str, data: Any) -> np.ndarray:
    """Decode a CompressedImage payload (jpeg/png) to BGR uint8.

    :raises ValueError: empty or undecodable data (names the format).
    """
    buf = _buffer(data)
    if buf.size == 0:
        raise ValueError(f"compressed image ({fmt!r}) has no data")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ValueError(f"cannot decode compressed image of format {fmt!r} ({buf.size} bytes)")
    return img
