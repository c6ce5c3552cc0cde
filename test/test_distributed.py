"""``pruning-tools prune --ray``: a real two-node Ray cluster on loopback, same answers as a local run,
a worker node killed mid-run, and no Ray at all without ``--ray``."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers.tiny_data import make_yolo_dataset

ray = pytest.importorskip("ray")

IMGSZ = [64, 192]
UNITS = 5  # 1 level x 5 methods (uniform, importance, random, global, full) x 1 trial


def test_parse_address(monkeypatch: pytest.MonkeyPatch) -> None:
    from pruning_tools.pipeline.ray_executor import parse_address

    assert parse_address("local") == ("local", None)
    assert parse_address("10.1.2.3:6379") == ("10.1.2.3:6379", "10.1.2.3")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ValueError, match="RAY_ADDRESS"):
        parse_address("auto")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert parse_address("auto") == ("auto", "127.0.0.1")
    for bad in ("", "head", "head:", ":6379", "head:99999", "head:port"):
        with pytest.raises(ValueError, match="ADDRESS"):
            parse_address(bad)


def test_without_ray_flag_ray_is_not_imported(repo_root: Path) -> None:
    code = ("import sys; import pruning_tools.cli, pruning_tools.pipeline.prune, pruning_tools.search.agent, pruning_tools.search.env, "
            "pruning_tools.demo.run; sys.exit(1 if 'ray' in sys.modules else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:] or "ray was imported"


def test_pack_dataset_ships_the_slices_units_read(tmp_path: Path) -> None:
    from pruning_tools.pipeline.ray_executor import pack_dataset, unpack
    from pruning_tools.pipeline.config import config_from_dict

    data = make_yolo_dataset(tmp_path / "ds", n_train=5, n_val=3, n_test=4, size=tuple(IMGSZ))
    cfg = config_from_dict({"data": {"dataset": str(data), "imgsz": IMGSZ, "train_images": 2, "test_images": 1}})
    files = pack_dataset(data, cfg)
    imgs = sorted(k for k in files if k.startswith("images/"))
    assert [k.split("/")[1] for k in imgs].count("train") == 2
    assert [k.split("/")[1] for k in imgs].count("val") == 3
    assert [k.split("/")[1] for k in imgs].count("test") == 1
    assert "data.yaml" in files and yaml.safe_load(files["data.yaml"])["names"]
    unpack(files, tmp_path / "out")
    assert (tmp_path / "out" / imgs[0]).read_bytes() == (data / imgs[0]).read_bytes()
    with pytest.raises(ValueError, match="outside"):
        unpack({"../evil": b"x"}, tmp_path / "out2")


# ------------------------------------------------------------------------ real clusters
@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pruning_tools import ultralytics_adapter as ua

    tmp = tmp_path_factory.mktemp("ray_cfg")
    data = make_yolo_dataset(tmp / "ds", n_train=6, n_val=2, n_test=2, size=tuple(IMGSZ))
    torch.manual_seed(0)
    base = ua.save_checkpoint(ua.build_model("yolov5n.yaml"), tmp / "base.pt")
    cfg = {"name": "tiny", "baseline": str(base), "levels": [0.75], "round_to": 8, "threads": 1,
           "data": {"dataset": str(data), "imgsz": IMGSZ, "val_images": 2, "test_images": 2},
           "importance": {"batches": 1, "batch": 2},
           "rl": {"episodes": 2, "warmup_episodes": 2, "episodes_per_update": 2, "n_epochs": 1, "bn_batches": 1,
                  "bn_batch": 2, "rerank_top": 1, "rerank_ft_steps": 1},
           "finetune": {"prune_steps": 2, "steps_per_prune": 2, "final_steps": 2, "batch": 2, "crop_width": None,
                        "checkpoint_every": 1},
           "latency": {"runs": 1, "warmup": 0}}
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "cfg.yaml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, repo_root: Path):
    from helpers.ray_cluster import LoopbackRayCluster

    c = LoopbackRayCluster(Path(tmp_path_factory.mktemp("ray")), repo_root)
    try:
        yield c
    finally:
        c.stop()


def _prune_cmd(cfg: Path, out: Path, address: str) -> list[str]:
    return [sys.executable, "-m", "pruning_tools.cli", "prune", "--config", str(cfg), "--out", str(out),
            "--no-progress", "--ray", address]


def _results(run: Path) -> dict[tuple, dict]:
    recs = json.loads((run / "results.json").read_text())["records"]
    return {(r["method"], r["level"], r["trial"]): r for r in recs}


@pytest.mark.slow
def test_two_node_cluster_runs_the_prune_with_the_same_answers_as_locally(
        cluster, tiny_cfg: Path, tmp_path: Path, repo_root: Path) -> None:
    from pruning_tools import ultralytics_adapter as ua
    from pruning_tools.pipeline.cli import main

    cluster.add_node()  # the second node (killed by the next test)
    nodes = cluster.wait_nodes(2)
    assert {n["address"] for n in nodes} == {"127.0.0.1"}, nodes
    run = tmp_path / "ray_run"
    out = subprocess.run(_prune_cmd(tiny_cfg, run, cluster.address), cwd=repo_root, env=cluster.env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "2 node(s), 2 CPU(s)" in out.stdout and "reward evaluations" in out.stdout
    on_ray = _results(run)
    assert len(on_ray) == UNITS and all((run / r["checkpoint"]).is_file() for r in on_ray.values())
    assert (run / "full" / "s75" / "search.json").is_file() and list((run / "tb").rglob("events.out.tfevents*"))

    local = tmp_path / "local_run"
    assert main(["--config", str(tiny_cfg), "--out", str(local), "--no-progress"]) == 0
    here = _results(local)
    assert here.keys() == on_ray.keys()
    for u, r in here.items():
        assert on_ray[u]["ratios"] == r["ratios"], u
        assert on_ray[u]["map50_95"] == r["map50_95"] and on_ray[u]["map50"] == r["map50"], u
        assert on_ray[u]["sparsity"] == r["sparsity"], u
        # mAP of this untrained tiny model is ~0 at 64x192; the fine-tuned weights are the sharp check
        assert on_ray[u]["finetune"]["final_loss"] == r["finetune"]["final_loss"], u
        a, _ = ua.load_checkpoint(run / on_ray[u]["checkpoint"])
        b, _ = ua.load_checkpoint(local / r["checkpoint"])
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(va, vb), (u, k)
    ray_search = json.loads((run / "full" / "s75" / "search.json").read_text())
    local_search = json.loads((local / "full" / "s75" / "search.json").read_text())
    assert [h["reward"] for h in ray_search["history"]] == [h["reward"] for h in local_search["history"]]
    assert ray_search["proxy_evaluations"] == local_search["proxy_evaluations"] > 1

    # resumable: a second --ray run recomputes nothing
    mtime = (run / "uniform" / "s75" / "model.pt").stat().st_mtime
    out = subprocess.run(_prune_cmd(tiny_cfg, run, cluster.address), cwd=repo_root, env=cluster.env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert out.stdout.count("done earlier (resume)") == UNITS
    assert (run / "uniform" / "s75" / "model.pt").stat().st_mtime == mtime


@pytest.mark.slow
def test_run_finishes_when_a_worker_node_is_killed_mid_run(cluster, tiny_cfg: Path, tmp_path: Path,
                                                           repo_root: Path) -> None:
    victim = (cluster.workers() or [cluster.add_node()])[-1]  # the two-node test's second node
    victim_id = cluster.node_ids[victim.pid]
    run = tmp_path / "run"
    log_path = tmp_path / "prune.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(_prune_cmd(tiny_cfg, run, cluster.address), cwd=repo_root, env=cluster.env,
                                stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.monotonic()
        while f"started on node {victim_id}" not in log_path.read_text():  # a unit runs on the victim
            assert proc.poll() is None and time.monotonic() - t0 < 600, log_path.read_text()[-3000:]
            time.sleep(0.5)
        cluster.kill(victim)
        killed_with = len(list(run.glob("*/s*/result.json")))
        assert proc.wait(900) == 0, log_path.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    text = log_path.read_text()
    assert killed_with < UNITS
    assert text.count("started on node") > UNITS, text[-3000:]  # the victim's unit started again elsewhere
    recs = _results(run)
    assert len(recs) == UNITS
    for r in recs.values():
        assert (run / r["checkpoint"]).is_file() and (run / Path(r["checkpoint"]).parent / "result.json").is_file()
