"""Real ONNX Runtime sessions on tiny exported detectors."""
import sys
from pathlib import Path

import numpy as np
import torch
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from runtime_models import NAMES, export_tiny  # noqa: E402

from sparse_perception.runtime.backends import Backend, create_backend  # noqa: E402
from sparse_perception.runtime.backends.onnxruntime_backend import parse_names  # noqa: E402


def test_static_model(tmp_path: Path) -> None:
    be = create_backend(export_tiny(tmp_path / "m.onnx"), threads=1)
    assert isinstance(be, Backend)
    assert be.class_names == NAMES and be.input_shape == (1, 3, 384, 1248) and be.precision == "fp32"
    out = be.infer(np.zeros((1, 3, 384, 1248), np.float32))
    assert out.shape == (1, 7, 12 * 39) and out.dtype == np.float32
    with pytest.raises(ValueError, match="input batch shape"):
        be.infer(np.zeros((1, 3, 64, 64), np.float32))
    be.close()


def test_dynamic_model_defaults_to_384x1248(tmp_path: Path) -> None:
    be = create_backend(export_tiny(tmp_path / "d.onnx", dynamic=True))
    assert be.input_shape == (1, 3, 384, 1248)
    be2 = create_backend(tmp_path / "d.onnx", expected={"input_shape": [1, 3, 256, 640]})
    assert be2.infer(np.zeros((1, 3, 256, 640), np.float32)).shape == (1, 7, 8 * 20)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        create_backend(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="unknown backend"):
        create_backend(tmp_path / "x.onnx", backend="openvino")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        (tmp_path / "x.engine").write_bytes(b"\0" * 16)
        with pytest.raises(RuntimeError, match="TensorRT"):
            create_backend(tmp_path / "x.engine", backend="tensorrt")
    assert parse_names("{0: 'person', 1: 'car'}") == ("person", "car")
    with pytest.raises(ValueError):
        parse_names("__import__('os')")


class _AnchorsFirst(torch.nn.Module):
    """A YOLOX-like head: (1, N, 5 + nc) with N anchors first, no class names in the metadata."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean().view(1, 1, 1).expand(1, 3549, 85) * 1.0


@pytest.mark.parametrize("shape_kind", ["yolox", "4d"])
def test_unsupported_output_layout_is_named_before_class_names(tmp_path: Path, shape_kind: str) -> None:
    path = tmp_path / f"{shape_kind}.onnx"
    model = _AnchorsFirst() if shape_kind == "yolox" else torch.nn.Conv2d(3, 7, 1)
    torch.onnx.export(model.eval(), (torch.zeros(1, 3, 64, 192),), str(path), input_names=["images"],
                      output_names=["output0"], opset_version=17, dynamo=False)
    with pytest.raises(ValueError, match=r"unsupported output layout .*supported: Ultralytics detect head") as err:
        create_backend(path, threads=1)  # no names anywhere: the layout is still what is reported
    assert "class names" not in str(err.value).split("supported:")[0]
    if shape_kind == "yolox":
        assert "anchors first" in str(err.value)
