"""Message <-> numpy/dataclass converters used by the detector node.

Imports message packages only (no ``rclpy``), so the conversions are testable without
a running ROS graph. ``vision_msgs`` is optional: :data:`VISION_MSGS` is ``None`` where it
is not installed and :func:`to_vision_detections` must not be called then.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from sparse_perception.runtime.conditions import Condition
from sparse_perception_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, DrivingCondition,
                                        EngineStatus, ObjectHypothesis)

from sparse_perception.node.image_codec import compressed_to_bgr, image_to_bgr as _raw_to_bgr

try:  # optional: present on full ROS 2 installs with vision_msgs
    import vision_msgs.msg as VISION_MSGS  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the install
    VISION_MSGS = None


def image_to_bgr(msg: Image | CompressedImage) -> np.ndarray:
    """``sensor_msgs/Image`` or ``CompressedImage`` -> HxWx3 uint8 BGR via :mod:`sparse_perception.node.image_codec`.

    :raises ValueError: on a malformed message (the codec names the field).
    """
    if isinstance(msg, CompressedImage):
        return compressed_to_bgr(msg.format, msg.data)
    return _raw_to_bgr(msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian)


def time_from_ns(ns: int) -> Time:
    """:return: a ``builtin_interfaces/Time`` for ``ns`` nanoseconds."""
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def wall_time() -> Time:
    """:return: the wall clock as ``builtin_interfaces/Time``."""
    return time_from_ns(time.time_ns())


def _boxes(result: Any) -> list[tuple[float, float, float, float, float, str]]:
    boxes = np.asarray(result.boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(result.scores, dtype=np.float64).reshape(-1)
    names = list(result.class_names)
    out = []
    for (x1, y1, x2, y2), score, cid in zip(boxes, scores, np.asarray(result.class_ids).reshape(-1)):
        cid = int(cid)
        name = names[cid] if 0 <= cid < len(names) else str(cid)
        out.append(((x1 + x2) / 2.0, (y1 + y2) / 2.0, x2 - x1, y2 - y1, float(score), name))
    return out


def to_detections(result: Any, header: Header) -> Detection2DArray:
    """Convert a runtime ``DetectionResult`` to ``sparse_perception_msgs/Detection2DArray``.

    :param result: object with ``boxes`` (M,4) xyxy in input pixels, ``scores`` (M,),
        ``class_ids`` (M,), ``class_names`` (index -> name) and, when present, ``level`` and
        ``timing["total_ms"]`` (written to the array's ``level`` and ``engine_time_ms``).
    :param header: the input image's header (copied into the array and every detection).
    """
    arr = Detection2DArray(header=header, level=str(getattr(result, "level", "") or ""),
                           engine_time_ms=float((getattr(result, "timing", None) or {}).get("total_ms", 0.0)))
    for cx, cy, w, h, score, name in _boxes(result):
        det = Detection2D(header=header, id="")
        det.bbox = BoundingBox2D(center_x=cx, center_y=cy, theta=0.0, size_x=w, size_y=h)
        det.results = [ObjectHypothesis(class_id=name, score=score)]
        arr.detections.append(det)
    return arr


def to_vision_detections(result: Any, header: Header) -> Any:
    """Same as :func:`to_detections` but as ``vision_msgs/Detection2DArray`` (needs vision_msgs)."""
    if VISION_MSGS is None:
        raise RuntimeError("vision_msgs is not installed")
    arr = VISION_MSGS.Detection2DArray(header=header)
    for cx, cy, w, h, score, name in _boxes(result):
        det = VISION_MSGS.Detection2D(header=header)
        det.bbox.center.position.x, det.bbox.center.position.y = cx, cy
        det.bbox.size_x, det.bbox.size_y = w, h
        hyp = VISION_MSGS.ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = name, score
        det.results.append(hyp)
        arr.detections.append(det)
    return arr


def detections_from_msg(arr: Detection2DArray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Inverse view for tests/benchmarks: (boxes xyxy (M,4), scores (M,), class names)."""
    boxes, scores, names = [], [], []
    for d in arr.detections:
        b = d.bbox
        boxes.append((b.center_x - b.size_x / 2, b.center_y - b.size_y / 2,
                      b.center_x + b.size_x / 2, b.center_y + b.size_y / 2))
        scores.append(d.results[0].score if d.results else 1.0)
        names.append(d.results[0].class_id if d.results else "")
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(scores, dtype=np.float64), names


def condition_from_msg(msg: DrivingCondition) -> Condition:
    """:return: the :class:`Condition` of a ``DrivingCondition`` message.

    :raises ValueError: on unknown illumination/weather codes.
    """
    return Condition.from_codes(int(msg.illumination), int(msg.weather), visibility_m=msg.visibility_m,
                                ambient_light=msg.ambient_light, ego_speed_mps=msg.ego_speed_mps,
                                scene_density=msg.scene_density)


def condition_to_msg(cond: Condition, stamp: Time | None = None) -> DrivingCondition:
    """:return: a ``DrivingCondition`` message for ``cond``."""
    msg = DrivingCondition(illumination=cond.illumination_code, weather=cond.weather_code,
                           visibility_m=float(cond.visibility_m), ambient_light=float(cond.ambient_light),
                           ego_speed_mps=float(cond.ego_speed_mps), scene_density=float(cond.scene_density))
    if stamp is not None:
        msg.header.stamp = stamp
    return msg


def engine_status(status: dict[str, Any], mode: str, levels: Sequence[str], last_swap_ns: int,
                  last_swap_ms: float) -> EngineStatus:
    """Build ``EngineStatus`` from the pool's ``status()`` dict (missing keys stay at defaults)."""
    msg = EngineStatus(stamp=wall_time(), mode=mode, available_levels=list(levels))
    msg.level = str(status.get("level", ""))
    msg.sparsity = float(status.get("sparsity", 0.0) or 0.0)
    msg.precision = str(status.get("precision", ""))
    msg.backend = str(status.get("backend", ""))
    msg.device = str(status.get("device", ""))
    msg.artifact_sha256 = str(status.get("sha256", status.get("artifact_sha256", "")) or "")
    msg.mean_inference_ms = float(status.get("mean_inference_ms", 0.0) or 0.0)
    if last_swap_ns:
        msg.last_swap_time = time_from_ns(last_swap_ns)
    msg.last_swap_ms = float(last_swap_ms)
    return msg


def diagnostics(name: str, hardware_id: str, values: dict[str, Any], level: bytes = DiagnosticStatus.OK,
                message: str = "ok") -> DiagnosticArray:
    """One-status ``DiagnosticArray`` with ``values`` as key/value strings.

    :param level: ``DiagnosticStatus.OK`` / ``WARN`` / ``ERROR`` (octet constants).
    """
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id)
    status.values = [KeyValue(key=str(k), value=f"{v:.3f}" if isinstance(v, float) else str(v))
                     for k, v in values.items()]
    arr = DiagnosticArray(status=[status])
    arr.header.stamp = wall_time()
    return arr


def bgr_to_image(img: np.ndarray, header: Header, encoding: str = "bgr8") -> Image:
    """``sensor_msgs/Image`` from an HxWxC (or HxW) uint8 array, rows unpadded.

    :param encoding: written as is (the array's channel order must match it; tests send wrong
        ones on purpose).
    """
    img = np.ascontiguousarray(img, dtype=np.uint8)
    h, w = img.shape[:2]
    channels = img.shape[2] if img.ndim == 3 else 1
    return Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0, step=w * channels,
                 data=img.tobytes())


def draw_boxes(img: np.ndarray, result: Any) -> np.ndarray:
    """Copy of ``img`` with the detections drawn (debug image)."""
    import cv2  # local: only the optional debug image needs it

    out = img.copy()
    for cx, cy, w, h, score, name in _boxes(result):
        p1, p2 = (int(cx - w / 2), int(cy - h / 2)), (int(cx + w / 2), int(cy + h / 2))
        cv2.rectangle(out, p1, p2, (0, 255, 0), 2)
        cv2.putText(out, f"{name} {score:.2f}", (p1[0], max(p1[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 255, 0), 1)
    return out
