"""engine_status's precision comes from the loaded ONNX graph (sparse_perception/runtime/backends/onnx_precision.py).

Real ONNX Runtime quantisation of a tiny exported detector: QDQ (static, as pruning_tools exports
INT8) and operator-integer (dynamic) models say int8, whatever a manifest or a file name claims.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime_models import export_tiny
from sparse_perception.runtime.backends.onnx_precision import onnx_precision
from sparse_perception.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

quantization = pytest.importorskip("onnxruntime.quantization")
IMGSZ = (64, 192)


class _OneFrame(quantization.CalibrationDataReader):
    def __init__(self) -> None:
        self._frames = iter([{"images": np.random.default_rng(0).random((1, 3, *IMGSZ), dtype=np.float32)}])

    def get_next(self):  # noqa: ANN201 - onnxruntime's interface
        return next(self._frames, None)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("precision")
    fp32 = export_tiny(root / "fp32.onnx", imgsz=IMGSZ)
    qdq, dyn = root / "model_fp32_named.onnx", root / "dynamic.onnx"
    quantization.quantize_static(str(fp32), str(qdq), _OneFrame(), quant_format=quantization.QuantFormat.QDQ)
    quantization.quantize_dynamic(str(fp32), str(dyn), op_types_to_quantize=["Conv"])
    return {"fp32": fp32, "qdq": qdq, "dynamic": dyn}


def test_fp32_model_says_fp32(models: dict[str, Path]) -> None:
    assert OnnxRuntimeBackend(models["fp32"]).precision == "fp32"


@pytest.mark.parametrize("kind", ["qdq", "dynamic"])
def test_int8_model_given_as_model_path_says_int8(models: dict[str, Path], kind: str) -> None:
    assert OnnxRuntimeBackend(models[kind]).precision == "int8"


def test_file_wins_over_a_manifest_claim(models: dict[str, Path]) -> None:
    assert OnnxRuntimeBackend(models["qdq"], expected={"precision": "fp32"}).precision == "int8"
    assert OnnxRuntimeBackend(models["fp32"], expected={"precision": "int8"}).precision == "fp32"


def test_float16_input_says_fp16(models: dict[str, Path]) -> None:
    assert onnx_precision(models["fp32"], "tensor(float16)") == "fp16"
    assert onnx_precision(models["fp32"], "tensor(float)") == "fp32"
