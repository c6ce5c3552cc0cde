"""FP16 / INT8 (QDQ) ONNX from a real detector, run in ONNX Runtime and compared with FP32."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.quant_data import IMGSZ, tiny_dataset, tiny_model
from pruning_tools.train.measure import ort_session
from pruning_tools.quant.quantize import (
    CalibrationImages,
    Int8Builder,
    QuantConfig,
    QuantizeError,
    decode_tail_nodes,
    export_fp32,
    fallback_candidates,
    float_weight_convs,
    load_image,
    node_to_layer,
    quantize_int8,
    select_calibration_files,
    to_fp16,
)

NAMES = ["Car", "Pedestrian", "Cyclist"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("quant")
    model, _ = tiny_model(0.0)
    fp32 = export_fp32(model, root / "fp32.onnx", IMGSZ, NAMES)
    data = tiny_dataset(root / "data", fp32)
    calib = select_calibration_files(data, 12)
    builder = Int8Builder(fp32, root / "work", calib, IMGSZ, QuantConfig(calib_images=12))
    x = load_image(sorted((data / "images" / "test").glob("*.png"))[0], IMGSZ)
    return {"root": root, "fp32": fp32, "data": data, "calib": calib, "builder": builder, "x": x,
            "ref": ort_session(fp32).run(None, {"images": x})[0]}


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort_session(path)
    assert sess.get_inputs()[0].type == "tensor(float)"  # float32 I/O for every precision
    return sess.run(None, {"images": x})[0]


def test_fp16_close_to_fp32(setup: dict) -> None:
    out = to_fp16(setup["fp32"], setup["root"] / "fp16.onnx")
    y, ref = _run(out, setup["x"]), setup["ref"]
    assert y.dtype == np.float32 and y.shape == ref.shape
    # float16 keeps 11 significant bits (relative step 4.9e-4); ~25 conv layers accumulate a few
    # steps: scores (0..1) within 5e-3, boxes (pixels up to 320) within 1 % of the input width.
    assert np.abs(y[0, 4:] - ref[0, 4:]).max() < 5e-3
    assert np.abs(y[0, :4] - ref[0, :4]).max() < 0.01 * IMGSZ[1]
    import onnx

    m = onnx.load(str(out))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["precision"] == "fp16" and "Car" in meta["names"]


def test_int8_qdq_close_to_fp32(setup: dict) -> None:
    out = setup["builder"].build(setup["root"] / "int8.onnx")
    import onnx

    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    y, ref = _run(out, setup["x"]), setup["ref"]
    # 8-bit activations (256 levels per tensor) : scores within 0.05 anywhere; for the 100 most
    # confident anchors the median box-coordinate error stays under 2 % of the input width.
    assert np.abs(y[0, 4:] - ref[0, 4:]).max() < 0.05
    top = np.argsort(-ref[0, 4:].max(0))[:100]
    assert np.median(np.abs(y[0, :4, top] - ref[0, :4, top])) < 0.02 * IMGSZ[1]
    assert not float_weight_convs(out)  # every conv quantised when nothing falls back


def test_fallback_nodes_stay_float(setup: dict) -> None:
    cands = fallback_candidates(setup["builder"].pre)
    assert cands[0].endswith("Conv") and any("/cv3" in c for c in cands)
    fb = [cands[0], cands[-1]]
    out = setup["builder"].build(setup["root"] / "int8_fb.onnx", fb)
    assert float_weight_convs(out) == set(fb)
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["fallback_layers"].split(",") == [node_to_layer(n) for n in fb]
    # the decode tail (DFL, anchors, Concat) is never quantised
    tail = set(decode_tail_nodes(setup["builder"].pre))
    qnodes = onnx.load(str(out)).graph.node
    assert tail and not any(n.name in tail and n.op_type == "QuantizeLinear" for n in qnodes)


def test_calibration_uses_train_split(setup: dict) -> None:
    assert setup["calib"] and all(p.parent.name == "train" for p in setup["calib"])
    reader = CalibrationImages(setup["calib"][:2], IMGSZ)
    first = reader.get_next()
    assert first["images"].shape == (1, 3, *IMGSZ) and first["images"].dtype == np.float32
    assert reader.get_next() is not None and reader.get_next() is None
    reader.rewind()
    assert reader.get_next() is not None


def test_tensorrt_target_is_symmetric(setup: dict, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    b = Int8Builder(setup["fp32"], tmp_path, setup["calib"][:4], IMGSZ, QuantConfig(calib_images=4, target="tensorrt"))
    m = onnx.load(str(b.build(tmp_path / "trt.onnx")))
    zps = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer if "zero_point" in i.name}
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps.values())  # symmetric, no int32 bias


def test_bad_inputs(setup: dict, tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="no calibration"):
        quantize_int8(setup["fp32"], tmp_path / "x.onnx", None, QuantConfig(), cache=tmp_path / "missing.json")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(QuantizeError, match="bad.onnx"):
        fallback_candidates(bad)
    with pytest.raises(ValueError, match="target"):
        QuantConfig(target="tpu")
    with pytest.raises(QuantizeError, match="split folder"):
        select_calibration_files(tmp_path, 4)
