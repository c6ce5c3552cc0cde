"""Build TensorRT engines from the zoo's ONNX files (TensorRT 10 and 11, Python API).

Precision handling differs between the two major versions:

* **TensorRT 10** (JetPack 6): FP32 builds with no flag; FP16 sets ``BuilderFlag.FP16`` (weak
  typing: TensorRT may pick FP16 kernels for any layer); INT8 parses the QDQ ONNX (explicit
  quantisation, no calibrator: the INT8 calibrator API is deprecated since 10.1) and sets
  ``BuilderFlag.INT8`` so the Q/DQ scales are honoured; layers outside Q/DQ stay FP32.
* **TensorRT 11**: precision flags are gone and networks are always strongly typed: the graph's
  own types decide each layer's precision.

Both versions therefore build each precision from that precision's ONNX: FP32 from the FP32 export,
FP16 from the FP16 ONNX (:func:`pruning_tools.quant.quantize.to_fp16`, float32 I/O), INT8 from the QDQ
ONNX (built with ``target="tensorrt"``: symmetric int8 activations). On TensorRT 10 the matching
flag is set in addition.

Which path is taken is decided by the installed module's capabilities (``BuilderFlag.FP16``
present or not), not by parsing the version. Each engine gets a build record ``<engine>.json``
(TensorRT version, GPU name, compute capability, precision, source ONNX sha256) that the backend
checks before running it (:mod:`sparse_perception.runtime.backends.tensorrt_backend`).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparse_perception.runtime.backends.tensorrt_backend import (
    TensorRTUnavailable,
    import_tensorrt,
    running_platform,
    sidecar_path,
)
from sparse_perception.runtime.zoo import sha256_file
from pruning_tools.data.files import strict_dumps


@dataclass(frozen=True)
class EngineSpec:
    """One engine to build.

    :param onnx: source ONNX of that precision (FP32, FP16 with float32 I/O, or QDQ INT8).
    :param engine: output ``.engine`` path.
    :param precision: ``fp32`` | ``fp16`` | ``int8``.
    :param workspace_mb: builder workspace memory pool limit.
    """

    onnx: Path
    engine: Path
    precision: str
    workspace_mb: int = 1024

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16", "int8"):
            raise ValueError(f"precision must be fp32|fp16|int8, got {self.precision!r}")
        if int(self.workspace_mb) < 16:
            raise ValueError(f"workspace_mb must be >= 16, got {self.workspace_mb}")


def tensorrt_status() -> tuple[bool, str]:
    """Whether engines can be built here, and a one-line reason/description.

    :return: ``(True, "TensorRT 10.x on <GPU> (sm X.Y)")`` or ``(False, why not)``.
    """
    try:
        info = running_platform()
    except TensorRTUnavailable as exc:
        return False, str(exc)
    return True, f"TensorRT {info['tensorrt_version']} on {info['gpu']} (sm {info['compute_capability']})"


def has_weak_typing(trt: Any) -> bool:
    """TensorRT 10 has precision builder flags; TensorRT 11 removed them (strong typing only)."""
    return hasattr(trt.BuilderFlag, "FP16") and hasattr(trt.BuilderFlag, "INT8")


def build_engine(spec: EngineSpec, extra_record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parse ``spec.onnx``, build and serialise the engine, write its build record.

    :return: the build record (also written to ``<engine>.json``).
    :raises TensorRTUnavailable: without tensorrt / GPU.
    :raises RuntimeError: on parse or build failure, with TensorRT's parser errors.
    """
    trt = import_tensorrt()
    platform = running_platform()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    weak = has_weak_typing(trt)
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if not weak and strongly is not None:
        flags |= 1 << int(strongly)  # TensorRT 11: strong typing (also the default)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(spec.onnx).read_bytes()):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {spec.onnx}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(spec.workspace_mb) << 20)
    if weak:
        if spec.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif spec.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantisation: Q/DQ scales, no calibrator
    t0 = time.monotonic()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {spec.onnx} ({spec.precision}); see the log above")
    spec.engine.parent.mkdir(parents=True, exist_ok=True)
    tmp = spec.engine.with_name(f".{spec.engine.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(memoryview(plan))
    os.replace(tmp, spec.engine)
    record = {**platform, "precision": spec.precision, "typing": "weak" if weak else "strong",
              "onnx": str(spec.onnx), "onnx_sha256": sha256_file(spec.onnx),
              "build_s": round(time.monotonic() - t0, 1),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra_record or {})}
    side = sidecar_path(spec.engine)
    tmp_side = side.with_name(f".{side.name}.tmp{os.getpid()}")
    tmp_side.write_text(strict_dumps(record, indent=2) + "\n")
    os.replace(tmp_side, side)
    return record


def manifest_field(record: dict[str, Any]) -> dict[str, str]:
    """The manifest's ``tensorrt`` field from a build record."""
    return {"version": str(record["tensorrt_version"]), "gpu": str(record["gpu"]),
            "compute_capability": str(record["compute_capability"])}
