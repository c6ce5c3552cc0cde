"""Stage 3: physical pruning in steps with fine-tuning at a reduced learning rate, resumable.

The final per-layer ratios are reached in ``prune_steps`` equal increments; after each increment
the model is fine-tuned for ``steps_per_prune`` batches (the last increment gets ``final_steps``
more). Every ``checkpoint_every`` batches the work state is written atomically:

* ``work.pt`` — the model (pruned structure + FP32 weights, :func:`save_checkpoint`) whose ``meta``
  holds the progress ``{"prune_step", "iter", "ratios_key"}``: a single file, so model and
  progress can never disagree;
* ``optim.pt`` — optimiser state tagged with the same progress (used only when it matches);
* ``state.json`` — a human-readable mirror of the progress.

Batches are a pure function of ``(seed, step)``, so a process killed at any point and restarted
continues where the last checkpoint left off and ends with the same model as an uninterrupted run.
The result is ``model.pt`` (FP32) in the output folder; a finished folder is returned as is.

CLI (used by the kill/resume test)::

    python -m pruning_tools.surgery.finetune --model BASE.pt --ratios ratios.json --data DATASET --out DIR
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pruning_tools.data.files import write_json
from pruning_tools.data.yolo import BatchStream
from pruning_tools.surgery.channels import PruningSpace, apply_ratios
from pruning_tools.train.loop import make_optimizer, recalibrate_bn, train_steps


@dataclass(frozen=True)
class FinetuneConfig:
    """Stage-3 settings.

    :param prune_steps: increments to reach the final ratios.
    :param steps_per_prune: fine-tune batches after each increment.
    :param final_steps: extra batches after the last increment.
    :param batch: images per batch.
    :param lr0: learning rate (reduced w.r.t. training from scratch).
    :param checkpoint_every: batches between work checkpoints.
    :param bn_batches: BatchNorm re-estimation batches after each pruning increment and at the end
        (pruning shifts activation statistics; a few fine-tune batches at BN momentum 0.03 would not).
    :param seed: data order/augmentation seed.
    :param distill_weight: weight of the knowledge-distillation loss against the dense model's head
        outputs beside the labels' detection loss (:mod:`pruning_tools.train.distill`); 0: off.
    :param distill_temperature: softening temperature of the teacher's (and student's) outputs.
    """

    prune_steps: int = 2
    steps_per_prune: int = 20
    final_steps: int = 20
    batch: int = 4
    lr0: float = 0.002
    checkpoint_every: int = 10
    bn_batches: int = 8
    seed: int = 0
    distill_weight: float = 0.0
    distill_temperature: float = 1.0

    def __post_init__(self) -> None:
        if not self.distill_weight >= 0:
            raise ValueError(f"distill_weight must be >= 0 (0: off), got {self.distill_weight}")
        if not self.distill_temperature > 0:
            raise ValueError(f"distill_temperature must be > 0, got {self.distill_temperature}")
        if self.prune_steps < 1:
            raise ValueError(f"prune_steps must be >= 1, got {self.prune_steps}")
        if self.steps_per_prune < 0 or self.final_steps < 0:
            raise ValueError("steps_per_prune and final_steps must be >= 0")
        if not self.lr0 > 0:
            raise ValueError(f"lr0 must be > 0, got {self.lr0}")
        if self.checkpoint_every < 1:
            raise ValueError("checkpoint_every must be >= 1")

    def steps_at(self, k: int) -> int:
        return self.steps_per_prune + (self.final_steps if k == self.prune_steps - 1 else 0)


def ratios_key(ratios: Sequence[float]) -> str:
    """Short stable hash of a ratio vector (identifies a work folder's job)."""
    return hashlib.sha256(json.dumps([round(float(r), 6) for r in ratios]).encode()).hexdigest()[:16]


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def prune_and_finetune(dense: nn.Module, space: PruningSpace, ratios: Sequence[float], stream: BatchStream,
                       out_dir: Path, cfg: FinetuneConfig, meta: dict[str, Any] | None = None,
                       channel_scores: dict[str, torch.Tensor] | None = None, progress: bool = True,
                       desc: str = "stage 3") -> tuple[nn.Module, dict[str, Any]]:
    """Prune ``dense`` (not modified) to ``ratios`` stepwise with fine-tuning; resume from ``out_dir``.

    With ``cfg.distill_weight > 0`` the loss adds knowledge distillation from ``dense`` (the teacher,
    a frozen copy rebuilt from ``dense`` on every start, never checkpointed).

    :return: (pruned model in eval mode, summary dict). ``out_dir/model.pt`` holds the result.
    """
    import copy

    from pruning_tools.train.distill import Distiller
    from pruning_tools.ultralytics_adapter import load_checkpoint, save_checkpoint

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ratios = np.asarray(ratios, dtype=np.float64)
    key = ratios_key(ratios)
    final_path, work_path, optim_path = out_dir / "model.pt", out_dir / "work.pt", out_dir / "optim.pt"
    if final_path.is_file():
        model, fmeta = load_checkpoint(final_path)
        if fmeta.get("ratios_key") == key:
            return model, fmeta.get("finetune", {})
    start_k, start_i, resumed = 0, 0, False
    model: nn.Module | None = None
    if work_path.is_file():
        try:
            model, wmeta = load_checkpoint(work_path)
            prog = wmeta.get("progress", {})
            if prog.get("ratios_key") == key:
                start_k, start_i, resumed = int(prog["prune_step"]), int(prog["iter"]), True
            else:
                model = None
        except Exception:  # noqa: BLE001 - a damaged work file just restarts the job
            model = None
    if model is None:
        model = copy.deepcopy(dense)
        apply_ratios(model, space, ratios * (1 / cfg.prune_steps), channel_scores)
        recalibrate_bn(model, stream, cfg.bn_batches, start=50_000)
    distiller = Distiller(dense, cfg.distill_weight, cfg.distill_temperature) if cfg.distill_weight > 0 else None
    total = sum(cfg.steps_at(k) for k in range(cfg.prune_steps))
    done_before = sum(cfg.steps_at(k) for k in range(start_k)) + start_i
    bar = tqdm(total=total, initial=done_before, desc=desc, unit="batch", disable=not progress, mininterval=1.0)
    t0 = time.monotonic()
    losses: list[float] = []
    k, i = start_k, start_i  # increment k is applied to `model`, i of its batches are done
    while True:
        steps = cfg.steps_at(k)
        opt = make_optimizer(model, cfg.lr0)
        if resumed and optim_path.is_file():
            saved = torch.load(optim_path, map_location="cpu", weights_only=True)
            if saved.get("progress") == {"prune_step": k, "iter": i, "ratios_key": key}:
                opt.load_state_dict(saved["state"])
        resumed = False
        offset = 100_000 * k  # distinct batch indices per increment

        def checkpoint(step: int, loss: float, k: int = k, opt: torch.optim.Optimizer = opt) -> None:
            it = step + 1
            if it % cfg.checkpoint_every == 0 or it == cfg.steps_at(k):
                prog = {"prune_step": k, "iter": it, "ratios_key": key}
                _atomic_torch_save({"progress": prog, "state": opt.state_dict()}, optim_path)
                save_checkpoint(model, work_path, {"progress": prog, **(meta or {})})
                write_json(out_dir / "state.json", {**prog, "total_batches": total, "updated": time.time()})

        if i < steps:
            # each increment's own cosine schedule (lr0 -> lr0/2); its batches start at `offset`. Until
            # 2026-12-03 the offset went into the schedule too, so every increment after the first ran flat
            # at lr0/2 (the zoo figures before that date were made so)
            _, ls = train_steps(model, stream, i, steps, steps, cfg.lr0, opt,
                                lrf=0.5, warmup=0, progress=bar, on_step=checkpoint,
                                distiller=distiller, batch_offset=offset)
            losses += ls
        if k + 1 >= cfg.prune_steps:
            break
        k, i = k + 1, 0
        apply_ratios(model, space, ratios * ((k + 1) / cfg.prune_steps), channel_scores)
        recalibrate_bn(model, stream, cfg.bn_batches, start=100_000 * k + 50_000)
        prog = {"prune_step": k, "iter": 0, "ratios_key": key}
        save_checkpoint(model, work_path, {"progress": prog, **(meta or {})})
        write_json(out_dir / "state.json", {**prog, "total_batches": total, "updated": time.time()})
    bar.close()
    recalibrate_bn(model, stream, cfg.bn_batches, start=100_000 * cfg.prune_steps + 50_000)
    model.eval()
    summary = {"config": asdict(cfg), "batches": total, "resumed_from": done_before, "wall_s": round(time.monotonic() - t0, 1),
               "final_loss": float(np.mean(losses[-5:])) if losses else None,
               "distill": ({**distiller.describe(), "final_kd_loss": (float(np.mean(distiller.history[-5:]))
                                                                      if distiller.history else None)}
                           if distiller is not None else None)}
    save_checkpoint(model, final_path, {**(meta or {}), "ratios_key": key, "finetune": summary})
    write_json(out_dir / "state.json", {"prune_step": cfg.prune_steps, "iter": 0, "ratios_key": key, "done": True,
                                         "total_batches": total, "updated": time.time()})
    work_path.unlink(missing_ok=True)
    optim_path.unlink(missing_ok=True)
    return model, summary


def main(argv: list[str] | None = None) -> int:
    """Prune + fine-tune one model (resumable); see the module docstring."""
    from pruning_tools.data.yolo import YoloDataset
    from pruning_tools.ultralytics_adapter import load_checkpoint

    p = argparse.ArgumentParser(prog="python -m pruning_tools.surgery.finetune", description="stage 3 for one model")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--ratios", type=Path, required=True, help="JSON list of per-layer ratios")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--imgsz", type=int, nargs=2, default=(384, 1248))
    p.add_argument("--crop-width", type=int, default=640)
    p.add_argument("--prune-steps", type=int, default=2)
    p.add_argument("--steps-per-prune", type=int, default=4)
    p.add_argument("--final-steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--checkpoint-every", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bn-batches", type=int, default=2)
    p.add_argument("--distill-weight", type=float, default=0.0, help="KD loss weight (0: off)")
    p.add_argument("--distill-temperature", type=float, default=1.0)
    p.add_argument("--sleep", type=float, default=0.0, help="pause per batch (tests use it to kill mid-run)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    dense, _ = load_checkpoint(a.model)
    space = PruningSpace(dense, tuple(a.imgsz))
    ratios = json.loads(a.ratios.read_text())
    ds = YoloDataset(a.data, "train", tuple(a.imgsz))
    stream = BatchStream(ds, a.batch, a.seed, a.crop_width or None)
    if a.sleep:
        orig = stream.get

        def slow_get(step: int) -> dict[str, torch.Tensor]:
            time.sleep(a.sleep)
            return orig(step)

        stream.get = slow_get  # type: ignore[method-assign]
    cfg = FinetuneConfig(prune_steps=a.prune_steps, steps_per_prune=a.steps_per_prune, final_steps=a.final_steps,
                         batch=a.batch, checkpoint_every=a.checkpoint_every, bn_batches=a.bn_batches,
                         seed=a.seed, distill_weight=a.distill_weight, distill_temperature=a.distill_temperature)
    _, summary = prune_and_finetune(dense, space, ratios, stream, a.out, cfg, progress=False)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
