"""Inference backends: a common :class:`Backend` protocol and :func:`create_backend`.

``onnxruntime`` (CPU by default, CUDA where asked for and available) lives in
:mod:`sparse_perception.runtime.backends.onnxruntime_backend`; ``tensorrt`` in
:mod:`sparse_perception.runtime.backends.tensorrt_backend` (imported lazily: needs an NVIDIA GPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Backend", "create_backend", "BACKENDS"]

BACKENDS = ("onnxruntime", "tensorrt")


@runtime_checkable
class Backend(Protocol):
    """One loaded detection model."""

    name: str
    device: str
    input_shape: tuple[int, int, int, int]
    precision: str
    class_names: tuple[str, ...]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(1, 3, H, W) float32 -> raw (1, 4 + nc, N) float32."""
        ...

    def close(self) -> None:
        """Free the model."""
        ...


def create_backend(path: str | Path, backend: str = "onnxruntime", threads: int = 2,
                   expected: dict[str, Any] | None = None, providers: tuple[str, ...] | None = None) -> Backend:
    """Load ``path`` with the named backend.

    :param expected: manifest facts to check/complete (``class_names``, ``input_shape``, ``precision``).
    :raises ValueError: unknown backend name.
    :raises RuntimeError: TensorRT not usable here.
    """
    if backend == "onnxruntime":
        from sparse_perception.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, threads=threads, expected=expected, providers=providers)
    if backend == "tensorrt":
        try:
            from sparse_perception.runtime.backends.tensorrt_backend import TensorRTBackend
        except ImportError as exc:
            raise RuntimeError("TensorRT backend needs an NVIDIA GPU with tensorrt and pycuda installed "
                               f"(pip install -r requirements/gpu.txt): {exc}") from exc
        return TensorRTBackend(path, expected)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
