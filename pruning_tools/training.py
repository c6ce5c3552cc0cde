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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
import yaml
from torch import nn

IMG_EXTS = (".png", ".jpg", ".jpeg", ".bmp")


class DatasetError(ValueError):
    """A dataset is missing, empty or malformed; the message names the path."""


# ------------------------------------------------------------------------------------------ data
def letterbox_np(img: np.ndarray, new_shape: tuple[int, int] = (384, 1248), color: int = 114
                 ) -> tuple[np.ndarray, float, float, float]:
    """Resize keeping aspect ratio and pad to ``new_shape`` (centred).

    :return: (image HxWx3 uint8, scale, pad_x, pad_y).
    """
    h, w = img.shape[:2]
    r = min(new_shape[0] / h, new_shape[1] / w)
    nw, nh = int(round(w * r)), int(round(h * r))
    if (nw, nh) != (w, h):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    dw, dh = (new_shape[1] - nw) / 2, (new_shape[0] - nh) / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(color, color, color))
    return img, r, float(left), float(top)


def resolve_split_dir(data: str | Path, split: str) -> tuple[Path, Path]:
    """Locate ``images/<split>`` and ``labels/<split>`` of a dataset root or its ``data.yaml``.

    :raises DatasetError: when the folder is missing or holds no images.
    """
    data = Path(data)
    root = data
    if data.is_file():
        cfg = yaml.safe_load(data.read_text()) or {}
        root = Path(cfg.get("path") or data.parent)
        if not root.is_absolute():
            root = (data.parent / root).resolve()
        sub = cfg.get(split)
        img_dir = root / sub if isinstance(sub, str) else root / "images" / split
    else:
        img_dir = root / "images" / split
    if not img_dir.is_dir():
        raise DatasetError(f"dataset split folder not found: {img_dir}")
    parts = list(img_dir.parts)
    if "images" in parts:
        k = len(parts) - 1 - parts[::-1].index("images")
        parts[k] = "labels"
        lbl_dir = Path(*parts)
    else:
        lbl_dir = root / "labels" / split
    if not any(p.suffix.lower() in IMG_EXTS for p in img_dir.iterdir()):
        raise DatasetError(f"dataset split {split!r} is empty: no images in {img_dir}")
    return img_dir, lbl_dir


class YoloDataset:
    """Letterboxed images and YOLO labels of one split.

    :param data: dataset root (``images/``, ``labels/``) or its ``data.yaml``.
    :param split: ``train`` / ``val`` / ``test``.
    :param imgsz: network input (H, W).
    :param indices: use only these image indices (sorted file order), e.g. a held-out slice.
    :param cache: keep decoded letterboxed images in memory.
    """

    def __init__(self, data: str | Path, split: str, imgsz: tuple[int, int] = (384, 1248),
                 indices: list[int] | None = None, cache: bool = False) -> None:
        self.img_dir, self.lbl_dir = resolve_split_dir(data, split)
        files = sorted(p for p in self.img_dir.iterdir() if p.suffix.lower() in IMG_EXTS)
        if indices is not None:
            files = [files[i] for i in indices]
        if not files:
            raise DatasetError(f"no images selected from {self.img_dir}")
        self.files = files
        self.imgsz = (int(imgsz[0]), int(imgsz[1]))
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.files)

    def labels_raw(self, i: int) -> np.ndarray:
        """:return: (n, 5) class, cx, cy, w, h normalised to the original image."""
        path = self.lbl_dir / f"{self.files[i].stem}.txt"
        if not path.is_file():
            return np.zeros((0, 5), np.float32)
        rows = []
        for ln, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 5:
                raise DatasetError(f"{path}:{ln}: expected 'class cx cy w h', got {line!r}")
            rows.append([float(v) for v in parts[:5]])
        return np.asarray(rows, np.float32).reshape(-1, 5)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """:return: (letterboxed RGB uint8 HxWx3, labels (n,5) class + x1,y1,x2,y2 in letterbox pixels)."""
        if i in self._cache:
            return self._cache[i]
        img = cv2.imread(str(self.files[i]), cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError(f"cannot read image {self.files[i]}")
        h0, w0 = img.shape[:2]
        lb, r, px, py = letterbox_np(img, self.imgsz)
        lb = cv2.cvtColor(lb, cv2.COLOR_BGR2RGB)
        lab = self.labels_raw(i)
        out = np.zeros((len(lab), 5), np.float32)
        if len(lab):
            out[:, 0] = lab[:, 0]
            out[:, 1] = (lab[:, 1] - lab[:, 3] / 2) * w0 * r + px
            out[:, 2] = (lab[:, 2] - lab[:, 4] / 2) * h0 * r + py
            out[:, 3] = (lab[:, 1] + lab[:, 3] / 2) * w0 * r + px
            out[:, 4] = (lab[:, 2] + lab[:, 4] / 2) * h0 * r + py
        if self.cache:
            self._cache[i] = (lb, out)
        return lb, out


class MixedDataset:
    """Several datasets sampled as one, each repeated a whole number of times per epoch.

    Used to train on a few real frames together with many generated ones: ``repeats`` sets how
    often each dataset's images appear in one pass (e.g. 40 real frames x 25 beside 1000
    generated frames x 1 gives real frames half of every batch on average).

    :param datasets: the parts (each with ``__len__`` and ``load``).
    :param repeats: one positive whole number per part.
    :raises ValueError: lengths differ or a repeat is below 1.
    """

    def __init__(self, datasets: list[YoloDataset], repeats: list[int]) -> None:
        if len(datasets) != len(repeats) or not datasets:
            raise ValueError(f"need one repeat per dataset, got {len(datasets)} datasets and {len(repeats)} repeats")
        if any(int(r) < 1 for r in repeats):
            raise ValueError(f"repeats must be whole numbers >= 1, got {list(repeats)}")
        self.parts = list(datasets)
        self.repeats = [int(r) for r in repeats]
        sizes = [len(d) * r for d, r in zip(self.parts, self.repeats)]
        self._ends = np.cumsum(sizes)

    def __len__(self) -> int:
        return int(self._ends[-1])

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        k = int(np.searchsorted(self._ends, i, side="right"))
        start = 0 if k == 0 else int(self._ends[k - 1])
        part = self.parts[k]
        return part.load((i - start) % len(part))


def _augment(img: np.ndarray, lab: np.ndarray, rng: np.random.Generator, crop_width: int | None,
             hflip: float, hsv: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    lab = lab.copy()
    if crop_width and crop_width < w:
        x0 = int(rng.integers(0, w - crop_width + 1))
        img = img[:, x0:x0 + crop_width]
        if len(lab):
            bw = lab[:, 3] - lab[:, 1]
            lab[:, [1, 3]] = np.clip(lab[:, [1, 3]] - x0, 0, crop_width)
            keep = (lab[:, 3] - lab[:, 1]) >= np.maximum(2.0, 0.4 * bw)
            lab = lab[keep]
        w = crop_width
    if hflip and rng.random() < hflip:
        img = img[:, ::-1]
        if len(lab):
            lab[:, [1, 3]] = w - lab[:, [3, 1]]
    img = np.ascontiguousarray(img)
    if hsv:
        gain = 1.0 + rng.uniform(-hsv, hsv, 3)
        hsv_img = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv_img[..., 0] = (hsv_img[..., 0] * (1 + (gain[0] - 1) * 0.05)) % 180
        hsv_img[..., 1:] = np.clip(hsv_img[..., 1:] * gain[1:], 0, 255)
        img = cv2.cvtColor(hsv_img.astype(np.uint8), cv2.COLOR_HSV2RGB)
    return img, lab


def collate(samples: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack samples into an Ultralytics loss batch (boxes normalised cx,cy,w,h)."""
    imgs = np.stack([s[0] for s in samples])
    h, w = imgs.shape[1:3]
    img = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div_(255.0)
    idx, cls, boxes = [], [], []
    for b, (_, lab) in enumerate(samples):
        if not len(lab):
            continue
        idx.append(np.full(len(lab), b, np.float32))
        cls.append(lab[:, :1])
        xyxy = lab[:, 1:5]
        boxes.append(np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2 / w, (xyxy[:, 1] + xyxy[:, 3]) / 2 / h,
                               (xyxy[:, 2] - xyxy[:, 0]) / w, (xyxy[:, 3] - xyxy[:, 1]) / h], 1))
    if idx:
        return {"img": img, "batch_idx": torch.from_numpy(np.concatenate(idx)),
                "cls": torch.from_numpy(np.concatenate(cls)).float(),
                "bboxes": torch.from_numpy(np.concatenate(boxes)).float()}
    return {"img": img, "batch_idx": torch.zeros(0), "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4)}


class BatchStream:
    """Deterministic batches: the batch at ``step`` depends only on (seed, step).

    :param dataset: the data.
    :param batch: images per batch.
    :param seed: seed of order and augmentation.
    :param crop_width: random full-height crop width (None: full width).
    :param augment: flips and colour jitter.
    """

    def __init__(self, dataset: YoloDataset | MixedDataset, batch: int, seed: int = 0, crop_width: int | None = None,
                 augment: bool = True, hflip: float = 0.5, hsv: float = 0.3) -> None:
        if len(dataset) == 0:
            raise DatasetError("empty dataset")
        self.dataset, self.batch, self.seed = dataset, max(1, int(batch)), int(seed)
        self.crop_width, self.augment, self.hflip, self.hsv = crop_width, augment, hflip, hsv
        self._perm_epoch, self._perm = -1, np.arange(0)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.dataset) // self.batch)

    def indices(self, step: int) -> list[int]:
        n = len(self.dataset)
        per_epoch = self.steps_per_epoch
        epoch, k = divmod(step, per_epoch)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            self._perm_epoch = epoch
        return [int(self._perm[(k * self.batch + j) % n]) for j in range(self.batch)]

    def get(self, step: int) -> dict[str, torch.Tensor]:
        samples = []
        for j, i in enumerate(self.indices(step)):
            img, lab = self.dataset.load(i)
            if self.augment or self.crop_width:
                rng = np.random.default_rng([self.seed, step, j, 7])
                img, lab = _augment(img, lab, rng, self.crop_width, self.hflip if self.augment else 0.0,
                                    self.hsv if self.augment else 0.0)
            samples.append((img, lab))
        return collate(samples)

    def iter_from(self, step: int) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield self.get(step)
            step += 1


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
                on_step: Callable[[int, float], None] | None = None) -> tuple[torch.optim.Optimizer, list[float]]:
    """Run optimiser steps ``start..stop-1`` of a ``total``-step schedule.

    :param progress: optional tqdm-like bar updated once per step.
    :param on_step: callback ``(step, loss)`` after each step (e.g. periodic checkpoints).
    :return: (optimizer, per-step losses).
    """
    from pruning_tools.ultralytics_adapter import detection_loss, reset_criterion

    reset_criterion(model)
    opt = optimizer or make_optimizer(model, lr0)
    model.train()
    losses: list[float] = []
    for step in range(start, stop):
        lr = lr_at(step, total, lr0, lrf, warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = stream.get(step)
        loss, _ = detection_loss(model, batch)
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
