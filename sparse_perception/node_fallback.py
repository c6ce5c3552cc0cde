"""Minimal ONNX Runtime engine pool and image decoding, used by the detector node only while
``sparse_perception.runtime`` / ``sparse_perception.image_codec`` are not installed.

Same API subset the node uses (``RuntimeConfig``, ``EnginePool.from_manifest/from_model``,
``detect``, ``swap``, ``swap_to_sparsity``, ``levels``, ``active_level``, ``status``, ``close``,
``UnknownLevelError``; ``image_to_bgr``, ``compressed_to_bgr``). Real inference (ONNX Runtime
CPU sessions, letterbox, per-class NMS), no ROS. Remove once the runtime modules land.
"""
from __future__ import annotations

import ast
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from sparse_perception.zoo import load_manifest, sha256_file

_CHANNELS = {"bgr8": 3, "rgb8": 3, "mono8": 1, "bgra8": 4, "rgba8": 4}


def image_to_bgr(encoding: str, height: int, width: int, step: int, data: Any, is_bigendian: int = 0) -> np.ndarray:
    """``sensor_msgs/Image`` fields -> HxWx3 uint8 BGR.

    :raises ValueError: naming the field (encoding, size, step, data length).
    """
    ch = _CHANNELS.get(encoding)
    if ch is None:
        raise ValueError(f"unsupported encoding {encoding!r} (supported: {sorted(_CHANNELS)})")
    if height <= 0 or width <= 0:
        raise ValueError(f"zero-size image {width}x{height}")
    if step < width * ch:
        raise ValueError(f"step {step} < width*channels {width * ch} for {encoding}")
    buf = np.frombuffer(data, np.uint8)
    if buf.size < step * height:
        raise ValueError(f"truncated data: {buf.size} bytes < step*height {step * height}")
    img = buf[: step * height].reshape(height, step)[:, : width * ch].reshape(height, width, ch)
    if ch == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if encoding.startswith("rgb"):
        img = img[..., 2::-1]
    return np.ascontiguousarray(img[..., :3])


def compressed_to_bgr(fmt: str, data: Any) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` -> BGR. :raises ValueError: when undecodable."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if len(data) else None
    if img is None:
        raise ValueError(f"cannot decode compressed image (format {fmt!r}, {len(data)} bytes)")
    return img


class UnknownLevelError(KeyError):
    """A level that is not preloaded; the message names the available ones."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class RuntimeConfig:
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    max_det: int = 300
    threads: int = 2

    def __post_init__(self) -> None:
        if not (0 < self.conf_thres < 1 and 0 < self.iou_thres < 1 and self.max_det >= 1 and self.threads >= 1):
            raise ValueError(f"invalid runtime config {self}")


@dataclass
class DetectionResult:
    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: tuple[str, ...]
    timing: dict[str, float] = field(default_factory=dict)


class _Engine:
    def __init__(self, path: Path, threads: int, meta: dict[str, Any]) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.hw = tuple(self.session.get_inputs()[0].shape[2:4])
        names = self.session.get_modelmeta().custom_metadata_map.get("names", "{}")
        self.names = tuple(str(v) for v in ast.literal_eval(names).values())
        self.meta = meta


def _nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float) -> np.ndarray:
    order, keep = scores.argsort()[::-1], []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        wh = np.clip(np.minimum(boxes[i, 2:], boxes[rest, 2:]) - np.maximum(boxes[i, :2], boxes[rest, :2]), 0, None)
        inter = wh[:, 0] * wh[:, 1]
        order = rest[inter / (area[i] + area[rest] - inter + 1e-9) <= iou_thres]
    return np.asarray(keep, dtype=np.int64)


class EnginePool:
    """Preloaded engines, one active; :meth:`swap` is a reference exchange."""

    def __init__(self, engines: dict[str, _Engine], cfg: RuntimeConfig) -> None:
        self._engines, self.cfg = engines, cfg
        self._active = next(iter(engines))
        self._lock = threading.Lock()
        for eng in engines.values():  # warm-up
            self._run(eng, np.zeros((64, 64, 3), np.uint8))

    @classmethod
    def from_manifest(cls, manifest: str | Path, levels: Sequence[str] | None = None, backend: str = "onnxruntime",
                      precision: str | None = None, cfg: RuntimeConfig = RuntimeConfig()) -> "EnginePool":
        if backend != "onnxruntime":
            raise ValueError(f"backend {backend!r} needs sparse_perception.runtime (not installed)")
        m = load_manifest(manifest)
        available = m.levels(backend)
        missing = sorted(set(levels or ()) - set(available))
        if missing:
            raise UnknownLevelError(f"allowed_levels {missing} not in {m.path}; available: {available}")
        engines = {}
        for lv in available:
            if levels and lv not in levels:
                continue
            art = m.select(lv, backend, precision)
            art.verify()
            engines[lv] = _Engine(art.path, cfg.threads, {"level": lv, "sparsity": art.sparsity, "backend": backend,
                                                          "precision": art.precision, "device": "cpu",
                                                          "sha256": art.sha256})
        return cls(engines, cfg)

    @classmethod
    def from_model(cls, path: str | Path, cfg: RuntimeConfig = RuntimeConfig()) -> "EnginePool":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model_path {path} does not exist")
        return cls({"model": _Engine(path, cfg.threads, {"level": "model", "sparsity": 0.0, "precision": "fp32",
                                                         "backend": "onnxruntime", "device": "cpu",
                                                         "sha256": sha256_file(path)})}, cfg)

    @property
    def active_level(self) -> str:
        return self._active

    def levels(self) -> list[str]:
        return list(self._engines)

    def status(self) -> dict[str, Any]:
        return dict(self._engines[self._active].meta)

    def swap(self, level: str) -> float:
        t0 = time.perf_counter()
        if level not in self._engines:
            raise UnknownLevelError(f"unknown level {level!r}; available levels: {self.levels()}")
        with self._lock:
            self._active = level
        return (time.perf_counter() - t0) * 1e3

    def swap_to_sparsity(self, sparsity: float) -> float:
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        return self.swap(min(self._engines, key=lambda k: abs(self._engines[k].meta["sparsity"] - sparsity)))

    def detect(self, img_bgr: np.ndarray) -> DetectionResult:
        return self._run(self._engines[self._active], img_bgr)  # engine fixed for this frame

    def close(self) -> None:
        self._engines.clear()

    def _run(self, eng: _Engine, img: np.ndarray) -> DetectionResult:
        t0 = time.perf_counter()
        (hh, ww), (h, w) = eng.hw, img.shape[:2]
        r = min(hh / h, ww / w)
        nh, nw = int(round(h * r)), int(round(w * r))
        py, px = (hh - nh) // 2, (ww - nw) // 2
        canvas = np.full((hh, ww, 3), 114, np.uint8)
        canvas[py:py + nh, px:px + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        x = np.ascontiguousarray(canvas[..., ::-1].transpose(2, 0, 1))[None].astype(np.float32) / 255.0
        t1 = time.perf_counter()
        out = eng.session.run(None, {eng.input: x})[0][0]
        t2 = time.perf_counter()
        cls_scores = out[4:]
        cls, score = cls_scores.argmax(0), cls_scores.max(0)
        keep = score > self.cfg.conf_thres
        b, s, c = out[:4, keep].T, score[keep], cls[keep]
        xyxy = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1) if len(b) else np.zeros((0, 4))
        idx = _nms(xyxy + c[:, None] * 8192.0, s, self.cfg.iou_thres)[: self.cfg.max_det] if len(b) else \
            np.zeros(0, np.int64)
        xyxy = (xyxy[idx] - np.array([px, py, px, py])) / r
        xyxy = np.clip(xyxy, 0, [w, h, w, h]).astype(np.float32)
        t3 = time.perf_counter()
        return DetectionResult(xyxy, s[idx].astype(np.float32), c[idx].astype(np.int64), eng.names,
                               {"preprocess_ms": (t1 - t0) * 1e3, "inference_ms": (t2 - t1) * 1e3,
                                "postprocess_ms": (t3 - t2) * 1e3, "total_ms": (t3 - t0) * 1e3})


# ------------------------------------------------------------------------------------ policy
class SparsityPolicy:
    """Table policy: per condition key, a score per level (higher is better).

    File (JSON): ``{"kind": "score_table", "levels": [...], "scores": {"day_clear": {"s75": 0.9, ...}}}``.
    Stand-in for the trained policy of ``sparse_perception.policy`` while it is not installed.
    """

    def __init__(self, levels: Sequence[str], scores: dict[str, dict[str, float]]) -> None:
        self.levels = list(levels)
        self.scores = {k: {lv: float(v) for lv, v in row.items()} for k, row in scores.items()}
        for key, row in self.scores.items():
            unknown = sorted(set(row) - set(self.levels))
            if unknown:
                raise ValueError(f"policy scores for {key!r} name unknown levels {unknown}")

    @classmethod
    def load(cls, path: str | Path) -> "SparsityPolicy":
        import json

        path = Path(path)
        try:
            data = json.loads(path.read_text())
            if data.get("kind") != "score_table":
                raise ValueError(f"kind must be 'score_table', got {data.get('kind')!r}")
            return cls(data["levels"], data["scores"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: not a usable policy file: {exc}") from exc

    def scores_for(self, condition: Any) -> dict[str, float]:
        return self.scores.get(condition.key, {})


class PolicyController:
    """Switches only when the best level beats the current one by ``hysteresis`` and the last
    switch is at least ``cooldown_s`` old; :meth:`update` returns the level to switch to or None.
    """

    def __init__(self, policy: SparsityPolicy, hysteresis: float = 0.02, cooldown_s: float = 2.0) -> None:
        self.policy, self.hysteresis, self.cooldown_s = policy, float(hysteresis), float(cooldown_s)
        self.current: str | None = None
        self._last_switch = -float("inf")

    def update(self, condition: Any, now: float) -> str | None:
        scores = self.policy.scores_for(condition)
        if not scores:
            return None
        best = max(scores, key=lambda lv: scores[lv])
        if best == self.current or now - self._last_switch < self.cooldown_s:
            return None
        if self.current in scores and scores[best] - scores[self.current] <= self.hysteresis:
            return None
        self.current, self._last_switch = best, now
        return best
