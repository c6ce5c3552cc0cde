"""Constrained precision search on a real tiny detector: delta respected, path logged, bisection minimal."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers.quant_data import IMGSZ, tiny_dataset, tiny_model
from pruning_tools.quant.bisection import OrtMeasurer, SearchConfig, search_precision, time_interleaved
from pruning_tools.quant.quantize import Int8Builder, QuantConfig, export_fp32, float_weight_convs, select_calibration_files


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("bisect")
    model, _ = tiny_model(0.5)
    fp32 = export_fp32(model, root / "fp32.onnx", IMGSZ, ["Car", "Pedestrian", "Cyclist"])
    data = tiny_dataset(root / "data", fp32)
    return {"root": root, "fp32": fp32, "data": data, "calib": select_calibration_files(data, 8)}


def _builder(setup: dict, sub: str) -> Int8Builder:
    return Int8Builder(setup["fp32"], setup["root"] / sub, setup["calib"], IMGSZ, QuantConfig(calib_images=8))


def _check_invariants(res: Any, delta: float) -> None:
    sel = [c for c in res.candidates if c.selected]
    assert len(sel) == 1 and sel[0].accepted
    ref = res.candidates[0]
    assert ref.precision == "fp32" and ref.accepted and ref.reason == "reference"
    for c in res.candidates:  # every candidate fully logged, and accepted <=> within delta
        assert c.map50_95 is not None and c.latency_ms["median"] > 0 and c.latency_ms["backend"] == "onnxruntime"
        # the latency probes: every candidate of the search timed round-robin in one process
        assert c.latency_ms["interleaved"] is True and c.latency_ms["models"] == len(res.candidates)
        assert c.accepted == (c.drop_points <= delta + 1e-9)
        assert Path(c.path).is_file()
    assert sel[0].latency_ms["median"] == min(c.latency_ms["median"] for c in res.candidates if c.accepted)
    d = res.to_dict()
    assert d["selected"]["precision"] == sel[0].precision and len(d["path"]) == len(res.candidates)


@pytest.mark.parametrize("delta", [0.0, 50.0])
def test_real_search(setup: dict, delta: float) -> None:
    lines: list[str] = []
    res = search_precision(setup["fp32"], setup["root"] / f"d{delta}", OrtMeasurer(setup["data"], imgsz=IMGSZ, runs=3),
                           SearchConfig(delta=delta, max_fallback=3, max_candidates=4), _builder(setup, f"b{delta}"),
                           "tiny", log=lines.append)
    _check_invariants(res, delta)
    assert [c.precision for c in res.candidates][:3] == ["fp32", "fp16", "int8"]
    assert any("selected" in ln for ln in lines) and sum("step" in ln for ln in lines) == len(res.candidates)
    if delta >= 50:  # everything admissible: plain int8 is accepted, no fallback tried
        assert all(c.accepted for c in res.candidates) and len(res.candidates) == 3


class PenalisedMeasurer(OrtMeasurer):
    """Real ONNX Runtime latency; accuracy read from the artifact itself: 1 mAP point lost per
    quantised convolution among ``penalised`` (a known ground truth for the bisection)."""

    def __init__(self, data: Path, penalised: list[str]) -> None:
        super().__init__(data, imgsz=IMGSZ, runs=2, warmup=1)
        self.penalised = penalised

    def accuracy(self, onnx_path: Path) -> dict[str, Any]:
        floats = float_weight_convs(onnx_path)
        int8 = "QuantizeLinear" in Path(onnx_path).read_bytes().decode("latin-1")
        lost = sum(1 for n in self.penalised if n not in floats) if int8 else 0
        return {"map50_95": 0.5 - 0.01 * lost, "map50": 0.8}


def test_bisection_finds_smallest_fallback(setup: dict) -> None:
    builder = _builder(setup, "pen")
    cands = builder.candidates()
    penalised = [c for c in cands if "/cv3" in c][:4]
    m = PenalisedMeasurer(setup["data"], penalised)
    res = search_precision(setup["fp32"], setup["root"] / "pen_out", m,
                           SearchConfig(delta=2.0, precisions=("fp32", "int8"), max_fallback=6, max_candidates=7),
                           builder, "pen", log=lambda s: None)
    _check_invariants(res, 2.0)
    order = [r["node"] for r in res.sensitivity]
    # ground truth: smallest k whose top-k fallback leaves <= 2 penalised layers quantised
    need = [k for k in range(0, 7) if sum(1 for n in penalised if n not in order[:k]) <= 2]
    tried = {len(c.fallback_nodes): c for c in res.candidates if c.precision == "int8"}
    if need:
        best = tried[need[0]]
        assert best.accepted and best.fallback_nodes == order[: need[0]]
        assert need[0] == 0 or not tried.get(need[0] - 1, best).accepted or need[0] - 1 not in tried
        assert all(not c.accepted for k, c in tried.items() if k < need[0])
    else:
        assert not any(c.accepted for c in tried.values())
    # the sensitivity ranking put penalised (real head) layers among the candidates it measured
    assert res.sensitivity and {r["node"] for r in res.sensitivity} <= set(cands)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="delta"):
        SearchConfig(delta=-1)
    with pytest.raises(ValueError, match="precisions"):
        SearchConfig(precisions=("fp8",))


def test_time_interleaved_rotates_and_reports_medians() -> None:
    import numpy as np

    calls: list[str] = []

    def fn(name: str):
        return lambda x: calls.append(name)

    out = time_interleaved([fn("a"), fn("b"), fn("c")], np.zeros(1), warmup=1, runs=4, backend="x")
    assert calls[:3] == ["a", "b", "c"]  # warm-up: each once
    rounds = [calls[3 + 3 * r: 6 + 3 * r] for r in range(4)]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert [o["runs"] for o in out] == [4, 4, 4] and all(o["interleaved"] and o["models"] == 3 for o in out)
    assert all(o["median"] >= 0 and o["backend"] == "x" for o in out)
    with pytest.raises(ValueError):
        time_interleaved([], np.zeros(1), 0, 1)
    with pytest.raises(ValueError):
        time_interleaved([fn("a")], np.zeros(1), 0, 0)
