"""Contract of the Ultralytics adapter: pinned version, internals it touches, checkpoints, ONNX export."""
from __future__ import annotations

import copy
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from pruning_tools import ultralytics_adapter as ua

IMGSZ = (96, 320)


def test_pinned_version_and_internals() -> None:
    import ultralytics
    from ultralytics.nn.modules import C2f, Detect
    from ultralytics.nn.modules.block import DFL
    from ultralytics.nn.tasks import DetectionModel

    assert ultralytics.__version__ == ua.PINNED_ULTRALYTICS == "8.4.190"
    assert ua.check_version(strict=True)
    # internals the adapter relies on
    assert {"cv1", "cv2", "m", "c"} <= set(vars(C2f(32, 32, 1)).get("_modules", {})) | {"c"}
    assert "forward_split" in vars(C2f)
    src = inspect.getsource(DFL.forward)
    assert "transpose(2, 1).softmax(1)" in src  # ExportDFL reproduces this expectation
    for attr in ("export", "format", "dynamic", "reg_max", "nc", "cv2", "cv3", "dfl", "stride"):
        assert hasattr(Detect(nc=3, ch=(16, 32, 64)), attr), attr
    assert "loss" in vars(DetectionModel.__mro__[1]) and "init_criterion" in vars(DetectionModel)
    assert callable(getattr(DetectionModel, "fuse"))


@pytest.mark.parametrize("cfg", ["yolov5n.yaml", "yolov8n.yaml", "yolo11n.yaml"])
def test_build_offline_and_raw_output(cfg: str) -> None:
    model = ua.build_model(cfg, nc=3).eval()
    y = ua.raw_forward(model, ua.example_input(IMGSZ))
    assert tuple(y.shape[:2]) == (1, 7)
    assert ua.class_names(model) == ["Car", "Pedestrian", "Cyclist"]
    if cfg != "yolov5n.yaml":
        assert any(isinstance(m, ua.C2fSplit) for m in model.modules())


def test_c2f_split_is_exact() -> None:
    ref = ua.build_model("yolov8n.yaml", nc=3, split_c2f=False).eval()
    split = copy.deepcopy(ref)
    assert ua.replace_c2f(split) > 0
    x = torch.rand(1, 3, *IMGSZ)
    torch.testing.assert_close(ua.raw_forward(split, x), ua.raw_forward(ref, x), rtol=1e-4, atol=1e-4)


def test_ignored_layers_keep_only_detect_outputs() -> None:
    model = ua.build_model("yolov5n.yaml")
    head = ua.detect_head(model)
    ignored = ua.ignored_layers(model)
    assert all(seq[-1] in ignored for seq in list(head.cv2) + list(head.cv3))
    prunable = dict(ua.prunable_convs(model))
    assert "model.24.cv3.0.0.conv" in prunable and "model.24.cv2.2.1.conv" in prunable  # head internals prunable
    assert "model.24.cv3.0.2" not in prunable and "model.24.dfl.conv" not in prunable


def test_unknown_or_bad_cfg_errors() -> None:
    with pytest.raises(ua.AdapterError, match="not a YAML"):
        ua.build_model("yolov5n.pt")
    with pytest.raises(ua.AdapterError, match="unknown model config"):
        ua.build_model("no_such_model_zz.yaml")


def test_checkpoint_round_trip_dense_and_pruned(tmp_path: Path) -> None:
    from pruning_tools.surgery.channels import PruningSpace, apply_ratios

    model = ua.build_model("yolov5n.yaml").eval()
    x = torch.rand(1, 3, *IMGSZ)
    path = ua.save_checkpoint(model, tmp_path / "dense.pt", {"note": "dense", "n": 1})
    raw = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert raw["format"] == ua.CHECKPOINT_FORMAT
    back, meta = ua.load_checkpoint(path)
    assert meta == {"note": "dense", "n": 1}
    torch.testing.assert_close(ua.raw_forward(back, x), ua.raw_forward(model, x))

    space = PruningSpace(model, IMGSZ)
    pruned = apply_ratios(copy.deepcopy(model), space, space.uniform(0.6))
    ua.save_checkpoint(pruned, tmp_path / "pruned.pt", {"sparsity": 0.6})
    back, meta = ua.load_checkpoint(tmp_path / "pruned.pt")
    assert sum(p.numel() for p in back.parameters()) == sum(p.numel() for p in pruned.parameters())
    torch.testing.assert_close(ua.raw_forward(back, x), ua.raw_forward(pruned.eval(), x))
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temp files


def test_load_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ua.load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "other.pt"
    torch.save({"model": "x"}, bad)
    with pytest.raises(ua.AdapterError, match="format"):
        ua.load_checkpoint(bad)


def test_user_checkpoint_needs_opt_in_for_pickles(tmp_path: Path) -> None:
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    path = tmp_path / "user.pt"
    torch.save({"model": model}, path)  # an Ultralytics-style pickled checkpoint
    with pytest.raises(ua.TrustPickleRequired, match="--trust-pickle"):
        ua.load_user_checkpoint(path)
    loaded, _ = ua.load_user_checkpoint(path, trust_pickle=True, nc=3)
    assert any(isinstance(m, ua.C2fSplit) for m in loaded.modules())


def test_export_onnx_raw_layout_and_metadata(tmp_path: Path) -> None:
    import onnxruntime as ort

    model = ua.build_model("yolov5n.yaml").eval()
    path = ua.export_onnx(model, tmp_path / "m.onnx", imgsz=IMGSZ, class_names=["Car", "Pedestrian", "Cyclist"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["names"] == "{0: 'Car', 1: 'Pedestrian', 2: 'Cyclist'}"
    assert meta["imgsz"] == str(list(IMGSZ)) and meta["task"] == "detect"
    x = np.random.default_rng(0).random((1, 3, *IMGSZ)).astype(np.float32)
    out = sess.run(None, {"images": x})[0]
    ref = ua.raw_forward(model, torch.from_numpy(x)).detach().numpy()
    assert out.shape == ref.shape and out.shape[:2] == (1, 7)
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3)
