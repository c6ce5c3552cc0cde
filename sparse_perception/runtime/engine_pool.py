"""Detection runtime without ROS: preloaded engines per sparsity level and an atomic hot swap.

:class:`EnginePool` loads every allowed level of an engine-zoo manifest (sha256-verified, warmed
up) or one stock Ultralytics ONNX (level ``"model"``). :meth:`EnginePool.detect` takes the active
engine reference once at the start of a frame, so a concurrent :meth:`EnginePool.swap` (a pointer
exchange under a lock that is never held during inference) lets the frame in flight finish on the
old engine while the next frame uses the new one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparse_perception.runtime.backends import BACKENDS, Backend, create_backend
from sparse_perception.runtime.postprocess import decode, letterbox
from sparse_perception.runtime.zoo import load_manifest, sha256_file

__all__ = ["DetectionResult", "Engine", "EnginePool", "RuntimeConfig", "UnknownLevelError"]


class UnknownLevelError(ValueError, KeyError):
    """A level that is not preloaded; the message names the available ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class RuntimeConfig:
    """Runtime settings.

    :raises ValueError: out-of-range value.
    """

    backend: str = "onnxruntime"
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    max_det: int = 100
    threads: int = 2
    warmup_runs: int = 2
    agnostic_nms: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not 0.0 < self.conf_thres < 1.0:
            raise ValueError(f"conf_thres must be in (0, 1), got {self.conf_thres}")
        if not 0.0 < self.iou_thres < 1.0:
            raise ValueError(f"iou_thres must be in (0, 1), got {self.iou_thres}")
        if self.max_det < 1:
            raise ValueError(f"max_det must be >= 1, got {self.max_det}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.warmup_runs < 0:
            raise ValueError(f"warmup_runs must be >= 0, got {self.warmup_runs}")


@dataclass(frozen=True)
class DetectionResult:
    """Detections of one frame in original image pixels plus the level that produced them.

    ``timing`` has ``preprocess_ms``, ``inference_ms``, ``postprocess_ms``, ``total_ms``.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: tuple[str, ...]
    level: str
    timing: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.scores.shape[0])


class Engine:
    """One backend plus its level metadata (level, sparsity, precision, backend, device, sha256)."""

    def __init__(self, backend: Backend, level: str, sparsity: float, sha256: str, cfg: RuntimeConfig) -> None:
        self.backend = backend
        self.level = level
        self.sparsity = float(sparsity)
        self.sha256 = sha256
        self.cfg = cfg
        self.class_names = tuple(backend.class_names)
        self.meta: dict[str, Any] = {"level": level, "sparsity": self.sparsity, "precision": backend.precision,
                                     "backend": backend.name, "device": backend.device, "sha256": sha256,
                                     "input_shape": list(backend.input_shape)}

    def warmup(self, runs: int) -> None:
        """Run ``runs`` inferences on a grey frame."""
        _, _, h, w = self.backend.input_shape
        for _ in range(runs):
            self.detect(np.full((h, w, 3), 114, np.uint8))

    def detect(self, img_bgr: np.ndarray) -> DetectionResult:
        """Letterbox, infer, decode one BGR uint8 image.

        :raises ValueError: malformed image.
        """
        t0 = time.perf_counter()
        batch, info = letterbox(img_bgr, self.backend.input_shape[2:4])
        t1 = time.perf_counter()
        raw = self.backend.infer(batch)
        t2 = time.perf_counter()
        det = decode(raw, self.cfg.conf_thres, self.cfg.iou_thres, self.cfg.max_det, info, self.cfg.agnostic_nms)
        t3 = time.perf_counter()
        return DetectionResult(det.boxes, det.scores, det.class_ids, self.class_names, self.level,
                               {"preprocess_ms": (t1 - t0) * 1e3, "inference_ms": (t2 - t1) * 1e3,
                                "postprocess_ms": (t3 - t2) * 1e3, "total_ms": (t3 - t0) * 1e3})

    def close(self) -> None:
        """Free the backend."""
        self.backend.close()


def _check_image(img: Any) -> None:
    if not isinstance(img, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(img).__name__}")
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3) BGR, got {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"image has zero size: {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"image dtype must be uint8, got {img.dtype}")


class EnginePool:
    """Preloaded engines, one active; thread-safe :meth:`detect` and :meth:`swap`.

    :param engines: level -> engine, densest (first) is active initially.
    :param cfg: runtime settings.
    """

    def __init__(self, engines: dict[str, Engine], cfg: RuntimeConfig = RuntimeConfig()) -> None:
        if not engines:
            raise ValueError("EnginePool needs at least one engine")
        self.cfg = cfg
        self._engines = dict(engines)
        self._active: Engine = min(self._engines.values(), key=lambda e: e.sparsity)
        self._lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_manifest(cls, manifest_path: str | Path, levels: Sequence[str] | None = None,
                      backend: str = "onnxruntime", precision: str | None = None,
                      cfg: RuntimeConfig = RuntimeConfig()) -> "EnginePool":
        """Load, sha256-verify and warm every allowed level of a zoo manifest.

        :raises UnknownLevelError: an allowed level not in the manifest.
        :raises sparse_perception.runtime.zoo.ManifestError: bad manifest or sha256 mismatch.
        """
        m = load_manifest(manifest_path)
        available = list(m.levels(backend))
        if not available:
            raise UnknownLevelError(f"{m.path}: no artifacts for backend {backend!r}")
        missing = [lv for lv in (levels or ()) if lv not in available]
        if missing:
            raise UnknownLevelError(f"levels {missing} not in {m.path}; available levels: {available}")
        engines: dict[str, Engine] = {}
        try:
            for lv in available:
                if levels and lv not in levels:
                    continue
                art = m.select(lv, backend, precision)
                art.verify()
                be = create_backend(art.path, backend, cfg.threads,
                                    expected={"class_names": list(art.class_names), "input_shape": list(art.input_shape),
                                              "precision": art.precision})
                eng = Engine(be, lv, art.sparsity, art.sha256, cfg)
                engines[lv] = eng
                eng.warmup(cfg.warmup_runs)
        except BaseException:
            for e in engines.values():
                e.close()
            raise
        return cls(engines, cfg)

    @classmethod
    def from_model(cls, model_path: str | Path, cfg: RuntimeConfig = RuntimeConfig()) -> "EnginePool":
        """One stock Ultralytics detection ONNX as level ``"model"``."""
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"model_path {path} does not exist")
        eng = Engine(create_backend(path, cfg.backend, cfg.threads), "model", 0.0, sha256_file(path), cfg)
        eng.warmup(cfg.warmup_runs)
        return cls({"model": eng}, cfg)

    # ------------------------------------------------------------------ state
    @property
    def active_level(self) -> str:
        """Name of the active level."""
        return self._active.level

    def levels(self) -> list[str]:
        """Preloaded levels, densest first."""
        return [e.level for e in sorted(self._engines.values(), key=lambda e: e.sparsity)]

    def engine(self, level: str) -> Engine:
        """The engine of ``level``. :raises UnknownLevelError:"""
        try:
            return self._engines[level]
        except KeyError:
            raise UnknownLevelError(f"unknown level {level!r}; available levels: {self.levels()}") from None

    def status(self) -> dict[str, Any]:
        """Metadata of the active engine (for EngineStatus)."""
        return dict(self._active.meta)

    # ------------------------------------------------------------------ work
    def detect(self, img_bgr: np.ndarray) -> DetectionResult:
        """Detect on one BGR uint8 image with the engine active at the start of the call.

        :raises ValueError: malformed image (nothing else is affected).
        """
        _check_image(img_bgr)
        eng = self._active  # one atomic reference read: the whole frame runs on this engine
        if self._closed:
            raise RuntimeError("EnginePool is closed")
        return eng.detect(img_bgr)

    def swap(self, level: str) -> float:
        """Make ``level`` active (pointer exchange, never waits for inference).

        :return: swap time in ms.
        :raises UnknownLevelError: level not preloaded.
        """
        t0 = time.perf_counter()
        eng = self.engine(level)
        with self._lock:
            self._active = eng
        return (time.perf_counter() - t0) * 1e3

    def swap_to_sparsity(self, fraction: float) -> float:
        """Swap to the level whose sparsity is closest to ``fraction`` (ties: the denser).

        :raises ValueError: fraction outside [0, 1).
        """
        if not 0.0 <= float(fraction) < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {fraction}")
        best = min(self._engines.values(), key=lambda e: (abs(e.sparsity - float(fraction)), e.sparsity))
        return self.swap(best.level)

    def close(self) -> None:
        """Free every engine."""
        with self._lock:
            self._closed = True
            engines, self._engines = list(self._engines.values()), {self._active.level: self._active}
        for e in engines:
            e.close()
