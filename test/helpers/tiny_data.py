"""Tiny YOLO-format datasets drawn on the fly for fast pruning tests (real PNGs + labels on disk).

Three classes with distinct looks (filled box, outlined box, disc) on a noisy road-coloured
background, so a tiny detector can learn something in a few steps.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

NAMES = ["Car", "Pedestrian", "Cyclist"]


def _frame(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    img = np.full((h, w, 3), 110, np.uint8)
    img[: h // 3] = (200, 170, 140)
    img = np.clip(img.astype(np.int16) + rng.integers(-12, 12, img.shape), 0, 255).astype(np.uint8)
    labels = []
    for _ in range(int(rng.integers(1, 4))):
        c = int(rng.integers(0, 3))
        bw, bh = int(rng.integers(w // 12, w // 5)), int(rng.integers(h // 6, h // 2))
        x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(h // 4, h - bh))
        if c == 0:
            cv2.rectangle(img, (x0, y0), (x0 + bw, y0 + bh), (30, 30, 200), -1)
        elif c == 1:
            cv2.rectangle(img, (x0, y0), (x0 + bw, y0 + bh), (40, 200, 40), 3)
        else:
            cv2.ellipse(img, (x0 + bw // 2, y0 + bh // 2), (bw // 2, bh // 2), 0, 0, 360, (220, 220, 30), -1)
        labels.append((c, (x0 + bw / 2) / w, (y0 + bh / 2) / h, bw / w, bh / h))
    return img, labels


def make_yolo_dataset(root: Path, n_train: int = 16, n_val: int = 6, n_test: int = 6,
                      size: tuple[int, int] = (96, 320), seed: int = 0) -> Path:
    """Write ``root/images/{train,val,test}``, ``root/labels/...`` and ``root/data.yaml``; returns root."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, labels = _frame(rng, *size)
            cv2.imwrite(str(root / "images" / split / f"{i:06d}.png"), img)
            (root / "labels" / split / f"{i:06d}.txt").write_text(
                "".join(f"{c} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n" for c, cx, cy, bw, bh in labels))
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                                    "test": "images/test", "names": NAMES}))
    return root


def tiny_prune_inputs(tmp_path: Path, n_train: int = 4, size: tuple[int, int] = (64, 192)) -> tuple[Path, Path]:
    """A tiny prune run's inputs: a dataset (``n_train`` / 2 / 2 frames) and a freshly initialised yolov5n
    baseline checkpoint (torch seed 0). :return: (dataset root, checkpoint)."""
    import torch

    from pruning_tools import ultralytics_adapter as ua

    data = make_yolo_dataset(tmp_path / "ds", n_train=n_train, n_val=2, n_test=2, size=tuple(size))
    torch.manual_seed(0)
    return data, ua.save_checkpoint(ua.build_model("yolov5n.yaml"), tmp_path / "base.pt")
