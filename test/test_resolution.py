"""The resolution baseline (:mod:`pruning_tools.pipeline.resolution`): the ladder and its config, the
equal-latency comparison on given numbers, and a tiny real prune run that reports it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from helpers.tiny_data import tiny_prune_inputs
from pruning_tools.pipeline import resolution as rb
from pruning_tools.pipeline.config import ConfigError, config_from_dict


# ------------------------------------------------------------------------------------------------ ladder + config
def test_default_ladder_of_the_deployment_size() -> None:
    assert rb.default_ladder((384, 1248)) == [(352, 1152), (320, 1024), (288, 928), (256, 832), (224, 736), (192, 640)]
    assert rb.default_ladder((64, 192)) == [(32, 96)]
    assert all(h % 32 == 0 and w % 32 == 0 for h, w in rb.default_ladder((480, 640)))


def test_ladder_follows_the_config() -> None:
    assert rb.ladder(config_from_dict({})) == rb.default_ladder((384, 1248))  # on by default
    assert rb.ladder(config_from_dict({"resolution": {"enabled": False}})) == []
    cfg = config_from_dict({"resolution": {"sizes": [[320, 1024], [256, 832]]}})
    assert rb.ladder(cfg) == [(320, 1024), (256, 832)]


@pytest.mark.parametrize("raw, match", [
    ({"resolution": {"sizes": [[320, 1000]]}}, r"multiples of 32"),
    ({"resolution": {"sizes": [[320]]}}, r"multiples of 32"),
    ({"resolution": {"sizes": []}}, r"at least one size"),
    ({"resolution": {"sizes": [[256, 832], [256, 832]]}}, r"listed twice"),
    ({"resolution": {"sizes": [[384, 1248]]}}, r"not smaller than data.imgsz"),
    ({"resolution": {"sizes": [[416, 832]]}}, r"not smaller than data.imgsz"),
    ({"data": {"imgsz": [256, 832]}, "resolution": {"sizes": [[288, 928]]}}, r"not smaller"),
    ({"resolution": {"enabled": "yes"}}, r"resolution.enabled: expected true/false"),
    ({"resolution": {"sizez": [[256, 832]]}}, r"unknown key 'resolution.sizez'"),
])
def test_bad_ladders_are_named(raw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw)


# ------------------------------------------------------------------------------------------------ comparison
#: a resolution curve: the dense model (100 ms, 0.30) and three smaller sizes; 288x928 is slower and less
#: accurate than 256x832 (noise): not on the Pareto front, never the baseline
CURVE = [{"name": "dense", "latency_ms": 100.0, "value": 0.30},
         {"name": "320x1024", "latency_ms": 70.0, "value": 0.26},
         {"name": "288x928", "latency_ms": 62.0, "value": 0.20},
         {"name": "256x832", "latency_ms": 50.0, "value": 0.22}]


def test_pareto_front_drops_sizes_beaten_by_a_faster_one() -> None:
    assert [p["name"] for p in rb.pareto_front(CURVE)] == ["256x832", "320x1024", "dense"]


def test_baseline_interpolates_at_the_measured_latency() -> None:
    b = rb.baseline_at(60.0, CURVE)  # halfway between 256x832 (50 ms, .22) and 320x1024 (70 ms, .26)
    assert b["where"] == "inside" and b["value"] == pytest.approx(0.24)
    assert b["not_slower"]["name"] == "256x832"  # 288x928 is not slower either, but less accurate
    assert rb.baseline_at(85.0, CURVE)["value"] == pytest.approx(0.28)
    assert rb.baseline_at(50.0, CURVE)["value"] == pytest.approx(0.22)
    slow = rb.baseline_at(120.0, CURVE)  # slower than the dense model: the dense model is the baseline
    assert slow["where"] == "slower_than_every_size" and slow["value"] == pytest.approx(0.30)
    fast = rb.baseline_at(40.0, CURVE)
    assert fast["value"] is None and fast["where"] == "faster_than_every_size" and fast["not_slower"] is None
    with pytest.raises(ValueError, match="at least one point"):
        rb.baseline_at(1.0, [])


def test_compare_reports_levels_that_do_not_beat_the_baseline() -> None:
    win = rb.compare(60.0, 0.25, CURVE)
    assert win["beats"] is True and win["margin_points"] == pytest.approx(1.0)
    lose = rb.compare(60.0, 0.23, CURVE)
    assert lose["beats"] is False and lose["margin_points"] == pytest.approx(-1.0)
    assert rb.compare(60.0, 0.24, CURVE)["beats"] is False  # equal is not beating
    assert rb.compare(120.0, 0.29, CURVE)["beats"] is False  # slower and less accurate than dense
    # faster than every size: beats only where it is also more accurate than the fastest size
    assert rb.compare(40.0, 0.23, CURVE)["beats"] is True
    undecided = rb.compare(40.0, 0.21, CURVE)
    assert undecided["beats"] is None and undecided["margin_points"] is None


def test_comparison_table_names_every_level_and_its_verdict() -> None:
    dense = {"latency_ms": 100.0, "map50_95": 0.30, "map50": 0.5, "gflops": 8.0,
             "real": {"data": "real", "classes": {"Car": {"ap_kitti": 0.70}}}}
    sizes = [{"name": p["name"], "latency_ms": p["latency_ms"], "map50_95": p["value"], "map50": 0.4, "gflops": 5.0,
              "real": {"classes": {"Car": {"ap_kitti": p["value"] * 2}}}} for p in CURVE[1:]]
    agg = [{"method": "full", "level": 0.5, "latency_ms": 60.0, "map50_95": 0.25,
            "real": {"classes": {"Car": {"ap_kitti": 0.40}}}},
           {"method": "uniform", "level": 0.5, "latency_ms": 60.0, "map50_95": 0.20,
            "real": {"classes": {"Car": {"ap_kitti": 0.60}}}}]
    records = [{"method": "full", "level": 0.5, "level_name": "x1.5"}]
    comp = rb.comparison(dense, agg, sizes, records)
    assert [c["level_name"] for c in comp] == ["x1.5", "50 %"]  # a latency level's name where there is one
    assert comp[0]["speedup"] == pytest.approx(100 / 60, abs=1e-3)
    assert comp[0]["map50_95"]["beats"] is True and comp[1]["map50_95"]["beats"] is False
    assert comp[0]["real_car"]["beats"] is False and comp[1]["real_car"]["beats"] is True  # .48 at 60 ms
    s = rb.summary(comp)
    assert s["beat_on_map50_95"] == 1 and s["not_beaten_on_map50_95"] == ["uniform 50 %"]
    assert s["every_level_beats_resolution_on_map50_95"] is False
    lines = "\n".join(rb.table_lines(dense, sizes, comp, (384, 1248), "test split", {"full": "RL"}))
    assert "384x1248 (dense, as deployed)" in lines and "320x1024" in lines and "1.67×" in lines
    assert "**yes**, by +1.0 points" in lines and "**no**, by -4.0 points" in lines
    assert "1 of 2 levels beat the resolution baseline" in lines and "not beaten: uniform 50 %" in lines


# ------------------------------------------------------------------------------------------------ in a prune run
IMGSZ = [64, 192]


@pytest.mark.slow
def test_tiny_prune_run_reports_the_resolution_baseline(tmp_path: Path) -> None:
    from pruning_tools.pipeline.cli import main

    data, base = tiny_prune_inputs(tmp_path, n_train=4, size=tuple(IMGSZ))
    cfg = {"name": "tiny", "baseline": str(base), "levels": [0.5], "methods": ["uniform"], "round_to": 8,
           "data": {"dataset": str(data), "imgsz": IMGSZ, "val_images": 2, "test_images": 2},
           "finetune": {"prune_steps": 1, "steps_per_prune": 1, "final_steps": 0, "batch": 2, "crop_width": None,
                        "checkpoint_every": 1, "bn_batches": 1},
           "latency": {"runs": 2, "warmup": 0},
           "resolution": {"sizes": [[32, 96], [64, 128]]}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["--config", str(tmp_path / "cfg.yaml"), "--out", str(run), "--no-progress"]) == 0
    res = json.loads((run / "results.json").read_text())
    sizes = res["resolution"]["sizes"]
    assert [s["name"] for s in sizes] == ["32x96", "64x128"] and all(s["latency"]["interleaved"] for s in sizes)
    assert res["latency"]["models"] == 4  # dense, uniform 50 %, two sizes: one round-robin
    assert all(0.0 <= s["map50_95"] <= 1.0 and s["gflops"] < res["dense"]["gflops"] for s in sizes)
    for s in sizes:  # its ONNX model takes the smaller input
        import onnxruntime as ort

        shape = ort.InferenceSession(str(run / s["onnx"]), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
        assert shape[2:] == s["imgsz"]
    (comp,) = res["resolution"]["comparison"]
    assert comp["method"] == "uniform" and comp["map50_95"]["beats"] in (True, False, None)
    assert "resolution_beat_on_map50_95" in res["targets"]
    table = (run / "table.md").read_text()
    assert "What a user would do instead" in table and "32x96" in table and "Res. baseline mAP50-95" in table
    assert (run / "pareto.png").stat().st_size > 1000
    # resume: the sizes are not measured again
    mtime = (run / "resolution" / "32x96" / "result.json").stat().st_mtime
    assert main(["--config", str(tmp_path / "cfg.yaml"), "--out", str(run), "--no-progress"]) == 0
    assert (run / "resolution" / "32x96" / "result.json").stat().st_mtime == mtime
    # turned off: no resolution section
    cfg["resolution"] = {"enabled": False}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(tmp_path / "cfg.yaml"), "--out", str(run), "--no-progress"]) == 0
    res = json.loads((run / "results.json").read_text())
    assert "resolution" not in res and res["latency"]["models"] == 2
    assert "What a user would do instead" not in (run / "table.md").read_text()
