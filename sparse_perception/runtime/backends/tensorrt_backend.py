"""TensorRT backend: a serialized engine run with pycuda buffers (TensorRT 10 and 11).

A TensorRT engine only runs on the TensorRT version and the GPU (compute capability) it was built
for. Every engine written by :mod:`pruning_tools.quant.tensorrt_build` has a sidecar
``<engine>.json`` (:data:`SIDECAR_SUFFIX`) recording ``tensorrt_version``, ``gpu`` and
``compute_capability``; the zoo manifest repeats them in the artifact's ``tensorrt`` field. Before
deserialising, :class:`TensorRTBackend` compares that record with the running TensorRT and GPU
(:func:`check_engine_compat`, a pure function) and refuses a mismatch with a message naming the
engine, what it was built for and what is running.

``tensorrt`` and ``pycuda`` are imported lazily: importing this module never needs them, and
constructing a backend where they (or an NVIDIA GPU) are absent raises :class:`TensorRTUnavailable`
(a ``RuntimeError``) that says what is missing.

Inference uses the TensorRT 10+ name-based I/O API: ``engine.num_io_tensors`` /
``get_tensor_name`` / ``get_tensor_mode``, ``context.set_tensor_address`` and
``context.execute_async_v3(stream)`` with page-locked host buffers and device buffers from pycuda.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

SIDECAR_SUFFIX = ".json"


class TensorRTUnavailable(RuntimeError):
    """tensorrt, pycuda or an NVIDIA GPU is missing on this machine."""


class EngineMismatchError(RuntimeError):
    """The engine was built for another TensorRT version or GPU."""


def sidecar_path(engine: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + SIDECAR_SUFFIX)


def read_sidecar(engine: str | Path) -> dict[str, Any]:
    """The build record of an engine.

    :raises EngineMismatchError: when the sidecar is missing or unreadable (an engine of unknown
        origin is refused rather than risked).
    """
    side = sidecar_path(engine)
    try:
        data = json.loads(side.read_text())
    except FileNotFoundError as exc:
        raise EngineMismatchError(f"TensorRT engine {engine} has no build record {side}: refusing an engine of "
                                  "unknown TensorRT version / GPU; rebuild it with `pruning-tools export`") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise EngineMismatchError(f"cannot read the build record {side} of engine {engine}: {exc}") from exc
    for key in ("tensorrt_version", "gpu", "compute_capability"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise EngineMismatchError(f"build record {side}: field {key!r} missing or not a string")
    return data


def _version_key(version: str) -> tuple[str, ...]:
    """Major.minor.patch of a TensorRT version string (the build number is ignored)."""
    return tuple(str(version).split(".")[:3])


def check_engine_compat(recorded: Mapping[str, Any], running: Mapping[str, Any], engine: str | Path = "<engine>") -> None:
    """Refuse an engine whose recorded TensorRT version or GPU differs from the running one.

    Both mappings use the sidecar keys ``tensorrt_version``, ``gpu``, ``compute_capability``
    (manifest-style ``version`` is accepted for ``tensorrt_version``). TensorRT versions must agree on
    major.minor.patch; the GPU on its name and compute capability.

    :raises EngineMismatchError: naming the engine, each mismatching field, built-for and running values.
    """
    def get(d: Mapping[str, Any], key: str) -> str:
        v = d.get(key)
        if v is None and key == "tensorrt_version":
            v = d.get("version")
        return "" if v is None else str(v)

    problems = []
    rv, nv = get(recorded, "tensorrt_version"), get(running, "tensorrt_version")
    if not rv or _version_key(rv) != _version_key(nv):
        problems.append(f"TensorRT version: built with {rv or '<unknown>'}, running {nv or '<unknown>'}")
    rg, ng = get(recorded, "gpu"), get(running, "gpu")
    if not rg or rg.strip() != ng.strip():
        problems.append(f"GPU: built for {rg or '<unknown>'!s}, running on {ng or '<unknown>'}")
    rc, nc = get(recorded, "compute_capability"), get(running, "compute_capability")
    if not rc or rc != nc:
        problems.append(f"compute capability: built for {rc or '<unknown>'}, running {nc or '<unknown>'}")
    if problems:
        raise EngineMismatchError(f"refusing TensorRT engine {engine}: " + "; ".join(problems)
                                  + ". TensorRT engines are specific to the TensorRT version and GPU they were built "
                                  "on: rebuild it on this machine (`pruning-tools export --backends tensorrt`).")


def import_tensorrt() -> Any:
    """:return: the ``tensorrt`` module. :raises TensorRTUnavailable: when it is not installed."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(
            "TensorRT backend unavailable: the `tensorrt` Python package is not installed "
            f"({exc}). Install the GPU extra (pip install '.[gpu]': tensorrt, pycuda) on a machine with an "
            "NVIDIA GPU and driver, or use backend 'onnxruntime'.") from exc
    return trt


def import_pycuda() -> Any:
    """:return: ``pycuda.driver`` initialised. :raises TensorRTUnavailable: without pycuda or a GPU."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise TensorRTUnavailable(f"TensorRT backend unavailable: `pycuda` is not installed ({exc}); "
                                  "pip install '.[gpu]' on a machine with an NVIDIA GPU") from exc
    try:
        cuda.init()
        if cuda.Device.count() < 1:
            raise TensorRTUnavailable("TensorRT backend unavailable: no CUDA device found")
    except TensorRTUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - pycuda raises its own error types
        raise TensorRTUnavailable(f"TensorRT backend unavailable: CUDA initialisation failed ({exc}); "
                                  "is an NVIDIA driver installed?") from exc
    return cuda


def running_platform(device: int = 0) -> dict[str, str]:
    """The running TensorRT version and GPU: ``{"tensorrt_version", "gpu", "compute_capability"}``.

    :raises TensorRTUnavailable: when tensorrt, pycuda or a GPU is missing.
    """
    trt = import_tensorrt()
    cuda = import_pycuda()
    dev = cuda.Device(int(device))
    major, minor = dev.compute_capability()
    return {"tensorrt_version": str(trt.__version__), "gpu": str(dev.name()), "compute_capability": f"{major}.{minor}"}


class TensorRTBackend:
    """Run a serialized TensorRT engine (implements the ``Backend`` protocol).

    :param path: the ``.engine`` file; its build record ``<path>.json`` must sit beside it.
    :param expected: the manifest's ``tensorrt`` field (``version``, ``gpu``, ``compute_capability``),
        checked against the running platform too when given.
    :param device: CUDA device index.
    :raises TensorRTUnavailable: without tensorrt / pycuda / GPU.
    :raises EngineMismatchError: when the engine was built for another TensorRT or GPU.
    """

    name = "tensorrt"

    def __init__(self, path: str | Path, expected: dict[str, Any] | None = None, device: int = 0) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"TensorRT engine not found: {self.path}")
        record = read_sidecar(self.path)
        running = running_platform(device)
        check_engine_compat(record, running, self.path)
        if expected is not None:
            check_engine_compat(expected, running, self.path)
        trt = import_tensorrt()
        cuda = import_pycuda()
        self._cuda = cuda
        self._ctx = cuda.Device(int(device)).retain_primary_context()
        self._ctx.push()
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self._engine is None:
                raise EngineMismatchError(f"TensorRT could not deserialize {self.path} (see the TensorRT log above)")
            self._context = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            self._inputs: list[tuple[str, Any, Any]] = []
            self._outputs: list[tuple[str, Any, Any]] = []
            for i in range(self._engine.num_io_tensors):
                tname = self._engine.get_tensor_name(i)
                shape = tuple(int(s) for s in self._engine.get_tensor_shape(tname))
                if any(s < 0 for s in shape):
                    raise EngineMismatchError(f"{self.path}: dynamic shape {shape} of tensor {tname!r}; "
                                              "zoo engines are built with a static input shape")
                dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(tname)))
                host = cuda.pagelocked_empty(shape, dtype)
                dev = cuda.mem_alloc(host.nbytes)
                self._context.set_tensor_address(tname, int(dev))
                is_input = self._engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
                (self._inputs if is_input else self._outputs).append((tname, host, dev))
        finally:
            self._ctx.pop()
        if len(self._inputs) != 1 or not self._outputs:
            raise EngineMismatchError(f"{self.path}: expected 1 input and >= 1 output, got "
                                      f"{len(self._inputs)} / {len(self._outputs)}")
        self.input_shape = tuple(self._inputs[0][1].shape)
        self.precision = str(record.get("precision", "unknown"))
        self.device = f"cuda: {running['gpu']} (sm {running['compute_capability']}), TensorRT {running['tensorrt_version']}"
        self.record = record

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch (float32 NCHW of :attr:`input_shape`) -> the first output, as float32."""
        _, host_in, dev_in = self._inputs[0]
        if tuple(batch.shape) != tuple(host_in.shape):
            raise ValueError(f"input shape {tuple(batch.shape)} != engine input {tuple(host_in.shape)} ({self.path})")
        cuda = self._cuda
        self._ctx.push()
        try:
            np.copyto(host_in, batch.astype(host_in.dtype, copy=False))
            cuda.memcpy_htod_async(dev_in, host_in, self._stream)
            if not self._context.execute_async_v3(self._stream.handle):
                raise RuntimeError(f"TensorRT execution failed for {self.path}")
            for _, host, dev in self._outputs:
                cuda.memcpy_dtoh_async(host, dev, self._stream)
            self._stream.synchronize()
        finally:
            self._ctx.pop()
        return np.array(self._outputs[0][1], dtype=np.float32, copy=True)

    def close(self) -> None:
        """Free device buffers and the CUDA context reference."""
        ctx = getattr(self, "_ctx", None)
        if ctx is None:
            return
        ctx.push()
        try:
            for _, _, dev in self._inputs + self._outputs:
                dev.free()
            self._inputs, self._outputs = [], []
            self._context = None
            self._engine = None
        finally:
            ctx.pop()
            ctx.detach()
            self._ctx = None
