"""A tiny end-to-end ``pruning-tools prune`` run: all three stages, table, plots, checkpoints, resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from helpers.tiny_data import make_yolo_dataset, tiny_prune_inputs
from pruning_tools import ultralytics_adapter as ua

IMGSZ = [64, 192]


@pytest.mark.slow
def test_tiny_prune_run_end_to_end(tmp_path: Path) -> None:
    from pruning_tools.pipeline.cli import main

    data, base = tiny_prune_inputs(tmp_path, n_train=6, size=tuple(IMGSZ))
    cfg = {"name": "tiny", "baseline": str(base), "levels": [0.75], "round_to": 8, "trials": 2,
           "data": {"dataset": str(data), "imgsz": IMGSZ, "val_images": 2, "test_images": 2},
           "importance": {"batches": 1, "batch": 2, "channel_choice": "gradient"},
           "rl": {"episodes": 1, "warmup_episodes": 1, "episodes_per_update": 1, "n_epochs": 1, "bn_batches": 1,
                  "bn_batch": 2, "lambda_flops": 0.05, "rerank_top": 2, "rerank_ft_steps": 1, "workers": 2,
                  "proxy_metric": "val_loss"},
           "finetune": {"prune_steps": 1, "steps_per_prune": 1, "final_steps": 1, "batch": 2, "crop_width": None,
                        "checkpoint_every": 1, "bn_batches": 1},
           "latency": {"runs": 1, "warmup": 0}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    extra = make_yolo_dataset(tmp_path / "extra", n_train=2, n_val=1, n_test=1, size=tuple(IMGSZ))
    assert main(["--config", str(tmp_path / "cfg.yaml"), "--out", str(run), "--no-progress",
                 "--mix", str(extra), "3"]) == 0
    assert json.loads((run / "results.json").read_text())["mix"] == [{"dataset": str(extra), "repeats": 3}]
    for name in ("table.md", "results.json", "summary.json", "pareto.png", "layer_sparsity.png", "dense.json",
                 "importance_t0.json", "importance_t1.json", "full/s75/search.json", "random/s75/t1/search.json"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    methods = ("uniform", "importance", "random", "global", "full")
    assert sorted((c["method"], c["trial"]) for c in summary["checkpoints"]) == sorted(
        (m, t) for m in methods for t in (0, 1))
    for ck in summary["checkpoints"]:
        model, meta = ua.load_checkpoint(run / ck["path"])
        assert meta["method"] == ck["method"] and abs(ck["sparsity"] - ck["level"]) <= 0.01  # every level met within 1 %
        assert tuple(ua.raw_forward(model, ua.example_input(tuple(IMGSZ))).shape[:2]) == (1, 7)
    res = json.loads((run / "results.json").read_text())
    assert {(r["method"], r["level"], r["trials"]) for r in res["aggregate"]} == {(m, 0.75, 2) for m in methods}
    # stage-1 channel scores choose the channels of the methods built on stage 1 (random replaces stage 2 only)
    assert {(r["method"], r["channel_choice"]) for r in res["records"]} == {
        ("uniform", "magnitude"), ("importance", "gradient"), ("random", "gradient"), ("global", "magnitude"),
        ("full", "gradient")}
    # random search: as many reward evaluations as PPO's episodes; re-ranked on the val split
    rnd = json.loads((run / "random" / "s75" / "search.json").read_text())
    ppo = json.loads((run / "full" / "s75" / "search.json").read_text())
    assert rnd["evaluations"] == len(rnd["history"]) == len(ppo["history"]) == 3
    assert res["selection_split"] == "val" and len(ppo["rerank"]) == 2
    # latencies: every model of the table round-robin in one process
    # (and the resolution baseline: the dense model at the default ladder of 64x192, i.e. 32x96)
    assert res["latency"]["models"] == 11 + len(res["resolution"]["sizes"]) == 12
    assert all(r["latency"]["interleaved"] for r in res["records"])
    # paired differences per trial, with the statement about the trial-to-trial spread
    pairs = {(p["a"], p["b"]): p for p in res["paired_differences"]}
    assert set(pairs) == {("full", "importance"), ("full", "random")}
    by = {(r["method"], r["trial"]): r["map50_95"] * 100 for r in res["records"]}
    assert pairs[("full", "importance")]["per_trial"] == [round(by[("full", t)] - by[("importance", t)], 2)
                                                         for t in (0, 1)]
    assert "full_minus_importance_at_75_points" in res["targets"] and "full_beats_importance_by_1_at_75" in res["targets"]
    table = (run / "table.md").read_text()
    assert "seed's \"RL\"" in table and "seed's \"no RL\"" in table and "`random`" in table and "`global`" in table
    assert "trial-to-trial spread" in table and "round-robin" in table
    assert list((run / "tb").rglob("events.out.tfevents*"))
    # re-running resumes: nothing is recomputed
    mtime = (run / "uniform" / "s75" / "model.pt").stat().st_mtime
    assert main(["--config", str(tmp_path / "cfg.yaml"), "--out", str(run), "--no-progress"]) == 0
    assert (run / "uniform" / "s75" / "model.pt").stat().st_mtime == mtime
    # --real-eval on a finished run: real-frame AP is added to every record without re-pruning
    from pruning_tools.data import generate_dataset

    real = tmp_path / "real_kitti"
    generate_dataset(real, frames=3, seed=4, progress=False)
    assert main(["--config", str(tmp_path / "cfg.yaml"), "--out", str(run), "--no-progress",
                 "--real-eval", str(real)]) == 0
    assert (run / "uniform" / "s75" / "model.pt").stat().st_mtime == mtime
    res = json.loads((run / "results.json").read_text())
    for rec in [res["dense"], *res["records"]]:
        assert rec["real"]["n_images"] == 3 and set(rec["real"]["classes"]) == {"Car", "Pedestrian", "Cyclist"}
    assert all("real" in row for row in res["aggregate"])
    table = (run / "table.md").read_text()
    assert "Car AP real (IoU .7)" in table and "Real-frame AP: " in table and "3 real frames" in table
