"""Engine/GPU compatibility refusal (pure Python: no TensorRT or GPU needed)."""
from __future__ import annotations

import json
import importlib.util
from pathlib import Path

import pytest

from sparse_perception.runtime.backends.tensorrt_backend import (
    EngineMismatchError,
    TensorRTUnavailable,
    check_engine_compat,
    read_sidecar,
    sidecar_path,
)

BUILT = {"tensorrt_version": "10.3.0.30", "gpu": "Orin (nvgpu)", "compute_capability": "8.7"}


def test_same_platform_accepted() -> None:
    check_engine_compat(BUILT, dict(BUILT))
    check_engine_compat(BUILT, {**BUILT, "tensorrt_version": "10.3.0.99"})  # build number ignored
    check_engine_compat({"version": "10.3.0", "gpu": "Orin (nvgpu)", "compute_capability": "8.7"}, BUILT)


@pytest.mark.parametrize("field,value,words", [
    ("gpu", "NVIDIA H100 80GB HBM3", ["GPU", "Orin (nvgpu)", "NVIDIA H100"]),
    ("compute_capability", "9.0", ["compute capability", "8.7", "9.0"]),
    ("tensorrt_version", "11.4.0.12", ["TensorRT version", "10.3.0.30", "11.4.0.12"]),
    ("tensorrt_version", "10.4.0.1", ["TensorRT version"]),
])
def test_mismatch_refused(field: str, value: str, words: list[str]) -> None:
    with pytest.raises(EngineMismatchError) as err:
        check_engine_compat(BUILT, {**BUILT, field: value}, "zoo/s75/model_int8.engine")
    msg = str(err.value)
    assert "zoo/s75/model_int8.engine" in msg and "rebuild" in msg
    for w in words:
        assert w in msg


def test_sidecar_fake_gpu_refused(tmp_path: Path) -> None:
    engine = tmp_path / "model_fp16.engine"
    engine.write_bytes(b"\x00" * 16)
    assert sidecar_path(engine).name == "model_fp16.engine.json"
    sidecar_path(engine).write_text(json.dumps({**BUILT, "gpu": "Fake GPU 9000", "precision": "fp16"}))
    with pytest.raises(EngineMismatchError, match="Fake GPU 9000"):
        check_engine_compat(read_sidecar(engine), BUILT, engine)


def test_missing_or_bad_sidecar(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(EngineMismatchError, match="no build record"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"tensorrt_version": "10.3.0", "gpu": "Orin"}))
    with pytest.raises(EngineMismatchError, match="compute_capability"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(EngineMismatchError, match="cannot read"):
        read_sidecar(engine)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt installed here")
def test_backend_without_tensorrt_is_clear(tmp_path: Path) -> None:
    from sparse_perception.runtime.backends.tensorrt_backend import TensorRTBackend

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    sidecar_path(engine).write_text(json.dumps(BUILT))
    with pytest.raises(TensorRTUnavailable, match="tensorrt") as err:
        TensorRTBackend(engine)
    assert isinstance(err.value, RuntimeError) and "onnxruntime" in str(err.value)
    from pruning_tools.quant.tensorrt_build import tensorrt_status

    ok, why = tensorrt_status()
    assert not ok and "not installed" in why
