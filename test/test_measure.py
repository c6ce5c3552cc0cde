"""Measurements: mAP sanity of the evaluator on oracle detections, FLOPs/params, ONNX Runtime latency."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.tiny_data import make_yolo_dataset
from pruning_tools import ultralytics_adapter as ua
from pruning_tools.data.yolo import YoloDataset
from pruning_tools.train.evaluate import evaluate_detector
from pruning_tools.train.measure import count_flops, model_latency

IMGSZ = (96, 320)


def _oracle(data: Path, jitter: float):
    ds = YoloDataset(data, "test", IMGSZ)
    it = iter(range(len(ds)))

    def infer(_: np.ndarray) -> np.ndarray:
        _, lab = ds.load(next(it))
        raw = np.zeros((1, 7, 50), np.float32)
        for k, (c, x1, y1, x2, y2) in enumerate(lab):
            w, h = (x2 - x1) * (1 + jitter), (y2 - y1) * (1 + jitter)
            raw[0, :4, k] = [(x1 + x2) / 2, (y1 + y2) / 2, w, h]
            raw[0, 4 + int(c), k] = 0.9
        return raw

    return infer


def test_map_of_oracle_detections_perfect_and_degraded(tmp_path: Path) -> None:
    data = make_yolo_dataset(tmp_path / "ds", n_train=1, n_val=1, n_test=5, size=IMGSZ)
    perfect = evaluate_detector(_oracle(data, 0.0), data, "test", IMGSZ, progress=False)
    assert perfect["map50_95"] == pytest.approx(1.0) and perfect["map50"] == pytest.approx(1.0)
    loose = evaluate_detector(_oracle(data, 0.2), data, "test", IMGSZ, progress=False)  # boxes 1.2x: IoU 0.69, matches at .50-.65 only
    assert loose["map50"] == pytest.approx(1.0) and loose["map50_95"] == pytest.approx(0.4)


def test_flops_and_latency(tmp_path: Path) -> None:
    model = ua.build_model("yolov5n.yaml").eval()
    gflops, params = count_flops(model, IMGSZ)
    assert params == sum(p.numel() for p in model.parameters()) and gflops > 0.1
    lat = model_latency(model, IMGSZ, threads=1, warmup=1, runs=2, keep=tmp_path / "m.onnx")
    assert lat["median_ms"] > 0 and (tmp_path / "m.onnx").is_file() and lat["onnx_bytes"] > 1e6


def test_interleaved_latency_times_every_model_round_robin(tmp_path: Path) -> None:
    import copy

    from pruning_tools.train.measure import interleaved_latency
    from pruning_tools.surgery.channels import PruningSpace, apply_ratios

    dense = ua.build_model("yolov5n.yaml").eval()
    space = PruningSpace(dense, IMGSZ, round_to=8)
    small = apply_ratios(copy.deepcopy(dense), space, space.uniform(0.9))
    for name, m in (("dense", dense), ("small", small)):
        ua.export_onnx(m, tmp_path / f"{name}.onnx", imgsz=IMGSZ, class_names=ua.class_names(m))
    lat = interleaved_latency({k: tmp_path / f"{k}.onnx" for k in ("dense", "small")}, IMGSZ, threads=1,
                              warmup=1, runs=5)
    assert set(lat) == {"dense", "small"}
    assert all(v["runs"] == 5 and v["interleaved"] and v["models"] == 2 and v["median_ms"] > 0 for v in lat.values())
    with pytest.raises(ValueError, match="at least one"):
        interleaved_latency({}, IMGSZ)
