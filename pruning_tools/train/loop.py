"""Lightweight, deterministic, resumable training loop for YOLO detectors on YOLO-format data.

Used for the baseline (``pruning-tools train-baseline``), for the few fine-tune batches of the
stage-2 reward proxy and for stage-3 fine-tuning. The loss is Ultralytics' detection loss
(through :mod:`pruning_tools.ultralytics_adapter`); data handling is ours:

* images are letterboxed to the deployment input (default 384x1248, i.e. KITTI's 1242x375 frames
  at scale ~1.0), so objects are seen at the scale they have at deployment;
* ``crop_width`` takes random full-height crops of that letterboxed image (scale preserving,
  about half the compute of full-width batches on CPU);
* sample order and augmentation are a pure function of ``(seed, step)``, so a run resumed at step
  ``k`` continues exactly as the uninterrupted run would.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn

from pruning_tools.data.yolo import BatchStream, MixedDataset, YoloDataset

if TYPE_CHECKING:
    from pruning_tools.train.distill import Distiller


# ------------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters.

    :param epochs: passes over the data (ignored when ``steps`` is set).
    :param steps: exact number of optimiser steps.
    :param imgsz: letterbox size (H, W) — the deployment input.
    :param crop_width: random full-height crop width at full scale (None: full width).
    :param batch: images per step.
    :param lr0: initial learning rate (SGD, nesterov); cosine decay to ``lr0*lrf``.
    :param warmup_steps: linear warm-up steps.
    :param seed: seed of order/augmentation and torch.
    :param augment: flips + colour jitter.
    :param cache: cache decoded images in memory.
    :param max_images: use at most this many training images.
    """

    epochs: int = 10
    steps: int | None = None
    imgsz: tuple[int, int] = (384, 1248)
    crop_width: int | None = 640
    batch: int = 8
    lr0: float = 0.01
    lrf: float = 0.1
    momentum: float = 0.937
    weight_decay: float = 5e-4
    warmup_steps: int = 30
    seed: int = 0
    augment: bool = True
    cache: bool = False
    max_images: int | None = None
    split: str = "train"
    grad_clip: float = 10.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps is None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.steps is not None and self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if not self.lr0 > 0:
            raise ValueError(f"lr0 must be > 0, got {self.lr0}")
        if self.crop_width is not None and (self.crop_width < 32 or self.crop_width % 32):
            raise ValueError(f"crop_width must be a multiple of 32 >= 32, got {self.crop_width}")


def make_optimizer(model: nn.Module, lr: float, momentum: float = 0.937, weight_decay: float = 5e-4
                   ) -> torch.optim.Optimizer:
    """SGD (nesterov) with weight decay on conv weights only."""
    decay, no_decay = [], []
    for m in model.modules():
        for pname, p in m.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            (decay if pname == "weight" and not isinstance(m, nn.BatchNorm2d) else no_decay).append(p)
    return torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}], lr=lr, momentum=momentum, nesterov=True)


def lr_at(step: int, total: int, lr0: float, lrf: float, warmup: int) -> float:
    """Cosine schedule with linear warm-up."""
    if warmup and step < warmup:
        return lr0 * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return lr0 * (lrf + (1 - lrf) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def train_steps(model: nn.Module, stream: BatchStream, start: int, stop: int, total: int, lr0: float,
                optimizer: torch.optim.Optimizer | None = None, lrf: float = 0.1, warmup: int = 0,
                grad_clip: float = 10.0, progress: Any = None,
                on_step: Callable[[int, float], None] | None = None,
                distiller: Distiller | None = None, batch_offset: int = 0,
                unlabelled: BatchStream | None = None) -> tuple[torch.optim.Optimizer, list[float]]:
    """Run optimiser steps ``start..stop-1`` of a ``total``-step schedule.

    :param batch_offset: step ``k`` trains on ``stream.get(batch_offset + k)`` (distinct batches for several
        schedules over one stream, e.g. stage 3's increments); the learning rate follows ``k`` alone.
    :param progress: optional tqdm-like bar updated once per step.
    :param on_step: callback ``(step, loss)`` after each step (e.g. periodic checkpoints).
    :param distiller: adds its weighted KD loss against the teacher on the same batch
        (:mod:`pruning_tools.train.distill`); its per-image values go to ``distiller.history``.
    :param unlabelled: with ``distiller``, a second stream whose batch at each step adds the KD term alone (its
        frames carry no labels: the teacher's outputs are the only targets); per-image values go to
        ``distiller.unlabelled_history``.
    :return: (optimizer, per-step losses: detection + weighted KD (+ unlabelled KD), per labelled image).
    """
    if unlabelled is not None and distiller is None:
        raise ValueError("unlabelled batches need a distiller: their only targets are the teacher's outputs")
    from pruning_tools.ultralytics_adapter import detection_loss, head_outputs, reset_criterion

    reset_criterion(model)
    opt = optimizer or make_optimizer(model, lr0)
    model.train()
    losses: list[float] = []
    for step in range(start, stop):
        lr = lr_at(step, total, lr0, lrf, warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = stream.get(batch_offset + step)
        if distiller is None:
            loss, _ = detection_loss(model, batch)
        else:
            preds = head_outputs(model, batch["img"])
            loss, _ = detection_loss(model, batch, preds)
            kd = distiller.loss(batch["img"], preds)
            loss = loss + kd.total
            distiller.history.append(float(kd.total.detach()) / max(1, batch["img"].shape[0]))
            if unlabelled is not None:
                img = unlabelled.get(batch_offset + step)["img"]
                ukd = distiller.loss(img, head_outputs(model, img)).total
                loss = loss + ukd
                distiller.unlabelled_history.append(float(ukd.detach()) / max(1, img.shape[0]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        val = float(loss.detach()) / max(1, batch["img"].shape[0])
        losses.append(val)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{val:.3f}", lr=f"{lr:.4f}")
        if on_step is not None:
            on_step(step, val)
    model.eval()
    return opt, losses


@torch.no_grad()
def recalibrate_bn(model: nn.Module, stream: BatchStream, batches: int, start: int = 0) -> None:
    """Re-estimate BatchNorm running statistics on ``batches`` batches (cumulative average)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns or batches <= 0:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for k in range(batches):
        model(stream.get(start + k)["img"])
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()


def train_detector(model: nn.Module, data: Path, cfg: TrainConfig, progress: bool = True,
                   on_step: Callable[[int, float], None] | None = None,
                   mix: list[tuple[Path, int]] | None = None) -> dict[str, Any]:
    """Train ``model`` in place (see :class:`TrainConfig`).

    :param mix: further datasets ``(root, repeats)`` whose ``cfg.split`` is sampled together with
        ``data`` (which counts once per epoch), see :class:`MixedDataset`.
    :return: summary with steps, images, final/first losses and wall time.
    """
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    ds: YoloDataset | MixedDataset = YoloDataset(data, cfg.split, cfg.imgsz, cache=cfg.cache)
    if cfg.max_images is not None and cfg.max_images < len(ds):
        ds = YoloDataset(data, cfg.split, cfg.imgsz, indices=list(range(cfg.max_images)), cache=cfg.cache)
    images = len(ds)
    if mix:
        extra = [YoloDataset(root, cfg.split, cfg.imgsz, cache=True) for root, _ in mix]
        images += sum(len(d) for d in extra)
        ds = MixedDataset([ds, *extra], [1, *(r for _, r in mix)])
    stream = BatchStream(ds, cfg.batch, cfg.seed, cfg.crop_width, cfg.augment)
    total = cfg.steps if cfg.steps is not None else cfg.epochs * stream.steps_per_epoch
    t0 = time.monotonic()
    bar = tqdm(total=total, desc="train", unit="step", disable=not progress, mininterval=2.0)
    opt = make_optimizer(model, cfg.lr0, cfg.momentum, cfg.weight_decay)
    _, losses = train_steps(model, stream, 0, total, total, cfg.lr0, opt, cfg.lrf,
                            min(cfg.warmup_steps, total // 3), cfg.grad_clip, bar, on_step)
    bar.close()
    return {"steps": total, "images": images, "batch": cfg.batch, "first_loss": losses[0] if losses else None,
            "final_loss": float(np.mean(losses[-10:])) if losses else None, "wall_s": round(time.monotonic() - t0, 1)}
