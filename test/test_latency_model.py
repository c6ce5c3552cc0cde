"""The latency model (pruning_tools/quant/latency.py): real ONNX Runtime blocks, the cached table,
interpolation, calibration, the latency metric of PruningSpace, and a tiny prune run on latency levels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml

from pruning_tools import ultralytics_adapter as ua
from pruning_tools.pipeline.config import ConfigError, config_from_dict
from pruning_tools.quant import latency as L
from pruning_tools.search.strategies import level_name, level_speedup
from pruning_tools.surgery.channels import PruningError, PruningSpace

IMGSZ = (64, 192)


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, PruningSpace]:
    torch.manual_seed(0)
    model = ua.build_model("yolov5n.yaml").eval()
    return model, PruningSpace(model, IMGSZ, round_to=8)


@pytest.fixture(scope="module")
def fp32_model(tiny: tuple[torch.nn.Module, PruningSpace], tmp_path_factory: pytest.TempPathFactory) -> L.LatencyModel:
    _, space = tiny
    table = L.LatencyTable("fp32", threads=1, runs=3, warmup=1)
    lm = L.LatencyModel(space, table, grid=3)
    table.measure(lm.blocks(), cache_dir=tmp_path_factory.mktemp("latcache"))
    return lm


def test_speedup_levels_and_names() -> None:
    assert L.speedup_level(2) == 0.5 and abs(L.speedup_level(1.5) - 1 / 3) < 1e-12
    assert abs(level_speedup(L.speedup_level(3)) - 3) < 1e-12
    assert [level_name(L.speedup_level(x), "latency") for x in (1.5, 2, 3)] == ["x1.5", "x2", "x3"]
    assert level_name(0.75) == "s75" and level_name(0.5, "flops") == "s50"
    for bad in (1.0, 0.5, -2, float("nan"), "fast"):
        with pytest.raises(L.LatencyModelError):
            L.speedup_level(bad)


def test_latency_levels_may_overshoot_a_little() -> None:
    from pruning_tools.search.strategies import within_level

    assert within_level(0.505, 0.5) and not within_level(0.52, 0.5) and not within_level(0.485, 0.5)
    assert within_level(0.52, 0.5, "latency") and not within_level(0.535, 0.5, "latency")
    assert not within_level(0.485, 0.5, "latency")


def test_blocks_run_in_onnxruntime_and_int8_takes_quantised_tensors(tmp_path: Path) -> None:
    small = L.Block(16, 16, (3, 3), (1, 1), (1, 1), 1, (48, 160), True)
    big = L.Block(16, 256, (3, 3), (1, 1), (1, 1), 1, (48, 160), True)
    assert small.key() != big.key() and "silu" in small.key()
    fp32 = onnx.load_from_string(L.block_model(small, "fp32", tmp_path))
    assert [n.op_type for n in fp32.graph.node] == ["Conv", "Sigmoid", "Mul"]
    int8 = onnx.load_from_string(L.block_model(small, "int8", tmp_path))
    assert int8.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert int8.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert "QuantizeLinear" in {n.op_type for n in int8.graph.node}  # the conv's output stays quantised
    with pytest.raises(L.LatencyModelError):
        L.block_model(small, "fp16", tmp_path)
    # 16x the output channels (and MACs) of the same conv: clearly slower, at both precisions
    for prec in ("fp32", "int8"):
        t_small = L.time_block(L.block_model(small, prec, tmp_path), 1, 1, 5)
        t_big = L.time_block(L.block_model(big, prec, tmp_path), 1, 1, 5)
        assert 0 < t_small < t_big, (prec, t_small, t_big)


def test_table_cache_is_per_machine_and_measurement(tmp_path: Path) -> None:
    blocks = [L.Block(8, c, (1, 1), (1, 1), (0, 0), 1, (16, 48), False) for c in (8, 16)]
    t = L.LatencyTable("fp32", threads=1, runs=2, warmup=0)
    assert t.measure(blocks + blocks, cache_dir=tmp_path) == 2  # duplicates timed once
    again = L.LatencyTable.cached("fp32", 1, tmp_path, runs=2, warmup=0)
    assert again.entries == t.entries and again.measure(blocks, cache_dir=tmp_path) == 0
    assert L.LatencyTable.cached("fp32", 1, tmp_path, runs=3, warmup=0).entries == {}  # measured differently
    assert L.LatencyTable.cached("int8", 1, tmp_path, runs=2, warmup=0).entries == {}
    raw = json.loads(t.path(tmp_path).read_text())
    raw["meta"]["machine"]["cpu"] = "another CPU"
    t.path(tmp_path).write_text(json.dumps(raw))
    assert L.LatencyTable.cached("fp32", 1, tmp_path, runs=2, warmup=0).entries == {}
    t.path(tmp_path).write_text("{not json")
    assert L.LatencyTable.cached("fp32", 1, tmp_path, runs=2, warmup=0).entries == {}
    with pytest.raises(L.LatencyModelError, match="not in the fp32 latency table"):
        L.LatencyTable("fp32")[blocks[0]]
    with pytest.raises(L.LatencyModelError):
        L.LatencyTable("fp16")


def test_model_interpolates_the_table_monotonically(fp32_model: L.LatencyModel,
                                                    tiny: tuple[torch.nn.Module, PruningSpace]) -> None:
    _, space = tiny
    lm = fp32_model
    n = len(space)
    dense = lm.predict(np.zeros(n))
    # at the dense widths every conv reads its table entry (after the monotone envelope: >= the raw entry)
    per = lm.per_conv(np.zeros(n))
    raw = np.array([lm.table[lm._block(rec, rec.in_ch, rec.out_ch)] for rec in lm._recs])
    assert np.all(per >= raw - 1e-12) and dense == pytest.approx(per.sum())
    preds = [lm.predict(np.full(n, r)) for r in (0.0, 0.3, 0.6, 0.85)]
    assert all(a >= b for a, b in zip(preds, preds[1:])) and preds[-1] < preds[0]
    rng = np.random.default_rng(0)
    for _ in range(20):  # pruning one more layer never predicts more time
        r = rng.uniform(0, 0.8, n)
        r2 = r.copy()
        r2[rng.integers(n)] = 0.85
        assert lm.predict(r2) <= lm.predict(r) + 1e-9


def test_fit_recovers_offset_and_scale(fp32_model: L.LatencyModel, tiny: tuple[torch.nn.Module, PruningSpace]) -> None:
    _, space = tiny
    lm = L.LatencyModel(space, fp32_model.table, grid=3)
    vecs = [np.full(len(space), r) for r in (0.0, 0.3, 0.6)] + [np.random.default_rng(1).uniform(0, 0.8, len(space))]
    rec = lm.fit([(v, 3.0 + 2.0 * fp32_model.block_sum(v)) for v in vecs], offset=True)
    assert lm.offset == pytest.approx(3.0, rel=1e-6) and lm.scale == pytest.approx(2.0, rel=1e-6)
    assert rec["models"] == 4 and max(rec["fit_rel_error"]) < 1e-6
    lm.fit([(v, 3.0 + 2.0 * fp32_model.block_sum(v)) for v in vecs])  # FP32 default: scale alone
    assert lm.offset == 0.0 and lm.scale > 2.0
    lm.fit([(vecs[0], 10.0 * fp32_model.block_sum(vecs[0]))])  # one model: scale only
    assert lm.offset == 0.0 and lm.scale == pytest.approx(10.0)
    with pytest.raises(L.LatencyModelError):
        lm.fit([])


def test_latency_metric_of_the_pruning_space(fp32_model: L.LatencyModel, tiny: tuple[torch.nn.Module, PruningSpace],
                                             tmp_path: Path) -> None:
    model, _ = tiny
    space = PruningSpace(model, IMGSZ, round_to=8, metric="latency")
    with pytest.raises(PruningError, match="no latency model"):
        space.sparsity(np.zeros(len(space)))
    lm = L.LatencyModel(space, fp32_model.table, grid=3)
    space.attach_latency(lm)
    assert space.sparsity(np.zeros(len(space))) == pytest.approx(0.0)
    target = L.speedup_level(1.5)
    from pruning_tools.search.strategies import within_level

    weights = np.linspace(0.3, 1.0, len(space))
    for ratios in (space.solve(weights, target, 0.9), space.uniform(target, 0.9)):
        assert within_level(space.sparsity(ratios), target, "latency")  # the rule the pipeline applies
        assert 1.5 - 0.03 <= lm.speedup(ratios) <= 1.5 / (1 - 0.03 * 1.5) + 1e-9
    # save -> load gives the same predictions without measuring; another space is refused
    path = lm.save(tmp_path / "lm.json")
    back = L.LatencyModel.load(space, path)
    r = np.random.default_rng(2).uniform(0, 0.8, len(space))
    assert back.predict(r) == pytest.approx(lm.predict(r)) and back.table.precision == "fp32"
    other = PruningSpace(model, (96, 320), round_to=8)
    with pytest.raises(L.LatencyModelError, match="not in the file"):
        L.LatencyModel.load(other, path)
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(L.LatencyModelError, match="not a latency model"):
        L.LatencyModel.load(space, tmp_path / "bad.json")


def test_latency_levels_in_the_config() -> None:
    c = config_from_dict({"target_metric": "latency", "levels": [1.5, 2, 3], "latency": {"precision": "int8"}})
    assert c.targets == pytest.approx((1 / 3, 0.5, 2 / 3)) and c.latency.precision == "int8"
    assert config_from_dict({"levels": [0.5]}).targets == (0.5,)
    for bad, match in (({"target_metric": "latency", "levels": [0.5]}, "speed-up"),
                       ({"target_metric": "latency", "levels": [2, 2.0]}, "each level once"),
                       ({"target_metric": "speed"}, "target_metric"),
                       ({"latency": {"precision": "fp16"}}, "latency.precision"),
                       ({"latency": {"grid": 1}}, "latency.grid"),
                       ({"latency": {"miss_tolerance": 1.5}}, "miss_tolerance")):
        with pytest.raises(ConfigError, match=match):
            config_from_dict(bad)


@pytest.mark.slow
def test_tiny_prune_run_on_latency_levels(tmp_path: Path) -> None:
    from helpers.tiny_data import tiny_prune_inputs
    from pruning_tools.pipeline.cli import main

    data, base = tiny_prune_inputs(tmp_path, n_train=4, size=tuple(IMGSZ))
    cfg = {"name": "tinylat", "baseline": str(base), "levels": [1.5], "round_to": 8, "target_metric": "latency",
           "methods": ["uniform", "importance"],
           "data": {"dataset": str(data), "imgsz": list(IMGSZ), "val_images": 2, "test_images": 2},
           "importance": {"batches": 1, "batch": 2},
           "finetune": {"prune_steps": 1, "steps_per_prune": 1, "final_steps": 0, "batch": 2, "crop_width": None,
                        "checkpoint_every": 1, "bn_batches": 1},
           "latency": {"runs": 3, "warmup": 1, "threads": 1, "grid": 3, "calibrate_models": 1,
                       "cache_dir": str(tmp_path / "cache")}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["--config", str(tmp_path / "cfg.yaml"), "--out", str(run), "--no-progress"]) == 0
    lm = json.loads((run / "latency_model.json").read_text())
    assert lm["table"]["precision"] == "fp32" and lm["calibration"]["models"] == 4  # dense, 2 uniform, 1 random
    assert list((tmp_path / "cache").glob("latency_onnxruntime_fp32_t1_*.json"))
    res = json.loads((run / "results.json").read_text())
    assert {r["level_name"] for r in res["records"]} == {"x1.5"}
    for r in res["records"]:
        assert (run / r["method"] / "x1.5" / "model.pt").is_file()
        assert r["speedup_target"] == 1.5 and abs(r["speedup_predicted"] - 1.5) < 0.05
        assert r["speedup_measured"] == pytest.approx(res["dense"]["latency_ms"] / r["latency_ms"], rel=1e-3)
        assert r["speedup_missed"] == (r["speedup_measured"] < 0.9 * 1.5)
    assert res["latency"]["speedup_check"]["precision"] == "fp32"
    summary = json.loads((run / "summary.json").read_text())
    assert {c["level_name"] for c in summary["checkpoints"]} == {"x1.5"}
    assert all(c["target_metric"] == "latency" for c in summary["checkpoints"])
    assert "Speed-ups over the dense model" in (run / "table.md").read_text()
    # resume: nothing re-measured (the run's latency model file is reused)
    mtime = (run / "latency_model.json").stat().st_mtime
    assert main(["--config", str(tmp_path / "cfg.yaml"), "--out", str(run), "--no-progress"]) == 0
    assert (run / "latency_model.json").stat().st_mtime == mtime
