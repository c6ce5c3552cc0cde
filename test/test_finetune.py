"""Stage 3: stepwise physical pruning + fine-tuning, resumable after a kill at any point."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.tiny_data import make_yolo_dataset
from pruning_tools import ultralytics_adapter as ua
from pruning_tools.surgery.finetune import FinetuneConfig, prune_and_finetune
from pruning_tools.train.measure import count_flops
from pruning_tools.surgery.channels import PruningSpace
from pruning_tools.data.yolo import BatchStream, YoloDataset

IMGSZ = (64, 192)
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ft")
    data = make_yolo_dataset(root / "ds", n_train=6, n_val=1, n_test=1, size=IMGSZ)
    torch.manual_seed(0)
    model = ua.build_model("yolov5n.yaml").eval()
    ua.save_checkpoint(model, root / "dense.pt")
    space = PruningSpace(model, IMGSZ)
    ratios = space.uniform(0.6)
    (root / "ratios.json").write_text(json.dumps(ratios.tolist()))
    return {"root": root, "data": data, "model": model, "space": space, "ratios": ratios}


def _cmd(job: dict, out: Path, sleep: float) -> list[str]:
    return [sys.executable, "-m", "pruning_tools.surgery.finetune", "--model", str(job["root"] / "dense.pt"),
            "--ratios", str(job["root"] / "ratios.json"), "--data", str(job["data"]), "--out", str(out),
            "--imgsz", *map(str, IMGSZ), "--crop-width", "0", "--prune-steps", "2", "--steps-per-prune", "3",
            "--final-steps", "2", "--batch", "2", "--checkpoint-every", "1", "--sleep", str(sleep)]


def test_prune_and_finetune_reduces_cost_keeps_output(job: dict, tmp_path: Path) -> None:
    stream = BatchStream(YoloDataset(job["data"], "train", IMGSZ), batch=2, seed=0)
    cfg = FinetuneConfig(prune_steps=2, steps_per_prune=1, final_steps=1, batch=2)
    model, summary = prune_and_finetune(job["model"], job["space"], job["ratios"], stream, tmp_path, cfg,
                                        {"method": "test"}, progress=False)
    g0, p0 = count_flops(job["model"], IMGSZ)
    g1, p1 = count_flops(model, IMGSZ)
    assert p1 < 0.45 * p0 and g1 < g0
    x = torch.rand(1, 3, *IMGSZ)
    assert tuple(ua.raw_forward(model, x).shape) == tuple(ua.raw_forward(job["model"], x).shape)
    assert tuple(ua.raw_forward(model, x).shape[:2]) == (1, 7)
    back, meta = ua.load_checkpoint(tmp_path / "model.pt")
    assert meta["method"] == "test" and summary["batches"] == 3
    assert not (tmp_path / "work.pt").exists()
    # a finished folder is returned as is
    again, _ = prune_and_finetune(job["model"], job["space"], job["ratios"], stream, tmp_path, cfg, progress=False)
    torch.testing.assert_close(ua.raw_forward(again, x), ua.raw_forward(back, x))


@pytest.mark.slow
def test_resume_after_kill(job: dict, tmp_path: Path) -> None:
    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    import os

    env = {**os.environ, **env}
    subprocess.run(_cmd(job, ref_out, 0.0), check=True, cwd=REPO, env=env, capture_output=True, timeout=300)
    proc = subprocess.Popen(_cmd(job, out, 0.4), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill after a few batches of the second increment
            state = out / "state.json"
            if state.is_file():
                st = json.loads(state.read_text())
                if st.get("prune_step") == 1 and st.get("iter", 0) >= 1:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("fine-tune never reached the second increment")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not (out / "model.pt").exists() and (out / "work.pt").exists()
    res = subprocess.run(_cmd(job, out, 0.0), check=True, cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["resumed_from"] >= 4  # 3 batches of increment 0 + >= 1 of increment 1
    a, _ = ua.load_checkpoint(out / "model.pt")
    b, _ = ua.load_checkpoint(ref_out / "model.pt")
    x = torch.rand(1, 3, *IMGSZ)
    torch.testing.assert_close(ua.raw_forward(a, x), ua.raw_forward(b, x), rtol=1e-3, atol=1e-3)


def test_every_increment_runs_its_own_learning_rate_schedule(job: dict, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Each increment's batches start at lr0 and decay (cosine) towards lr0/2 over that increment, on batches of its
    own. Until 2026-12-03 the increment's batch offset entered the schedule, and every increment after the first
    ran flat at lr0/2."""
    from pruning_tools.train import loop

    lrs: list[float] = []
    real_lr_at = loop.lr_at

    def recording_lr_at(*args: float) -> float:
        lrs.append(real_lr_at(*args))
        return lrs[-1]

    monkeypatch.setattr(loop, "lr_at", recording_lr_at)
    taken: list[int] = []
    stream = BatchStream(YoloDataset(job["data"], "train", IMGSZ), batch=2, seed=0)
    real_get = stream.get
    stream.get = lambda step: (taken.append(step), real_get(step))[1]  # type: ignore[method-assign]
    cfg = FinetuneConfig(prune_steps=2, steps_per_prune=2, final_steps=3, batch=2, lr0=0.002, bn_batches=1)
    prune_and_finetune(job["model"], job["space"], job["ratios"], stream, tmp_path, cfg, progress=False)
    trained = [s for s in taken if s % 100_000 < 50_000]  # the rest are BatchNorm re-estimation batches
    assert trained == [0, 1, 100_000, 100_001, 100_002, 100_003, 100_004]
    first, last = lrs[:2], lrs[2:]
    assert first[0] == pytest.approx(0.002) and last[0] == pytest.approx(0.002), lrs
    assert all(a > b for a, b in zip(last, last[1:])) and last[-1] > 0.001, lrs
