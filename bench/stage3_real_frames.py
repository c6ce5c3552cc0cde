#!/usr/bin/env python3
"""Continue a pruned level's distilled stage-3 fine-tuning and keep snapshots, to ask how long stage 3 must
be for REAL frames, and whether distilling on unlabelled real camera frames helps.

Each step is the zoo's stage-3 step (``pruning_tools.train.loop``: Ultralytics' detection loss on a batch of
the generated training scenes mixed with the real KITTI training frames, plus the KD term against the dense
model, :mod:`pruning_tools.train.distill`); with ``--unlabelled DIR`` a second batch of DIR's images adds the
KD term alone (no labels: the dense teacher's outputs are the only targets). Snapshots (BatchNorm
re-estimated on the labelled stream) go to ``OUT/stepNNN.pt``; score them with ``bench/baseline_tracking.py``,
which chooses on the real VAL frames and only reports the test frames::

    .venv/bin/python bench/stage3_real_frames.py --student runs/zoo/full/x1.5/model.pt \\
        --data runs/zoo/data/yolo --mix runs/real_yolo 8 --steps 600 --out runs/s3_labelled
    .venv/bin/python bench/stage3_real_frames.py ... --unlabelled raw_frames/ --out runs/s3_unlabelled
    .venv/bin/python bench/baseline_tracking.py --models runs/zoo/full/x1.5/model.pt runs/s3_*/step*.pt ...

Measured figures: docs/pruning.md, "Stage 3 on real frames".
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_report.py

from _report import module_versions, write_result  # noqa: E402
from pruning_tools.data.yolo import IMG_EXTS, BatchStream, MixedDataset, YoloDataset, letterbox_np  # noqa: E402


class ImageFolder:
    """The images of a folder (recursively), letterboxed, without labels: KD-only training frames."""

    def __init__(self, root: Path, imgsz: tuple[int, int]) -> None:
        self.files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMG_EXTS)
        if not self.files:
            raise SystemExit(f"stage3_real_frames: no images under {root}")
        self.imgsz = imgsz
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        if i not in self._cache:
            img = cv2.imread(str(self.files[i]), cv2.IMREAD_COLOR)
            if img is None:
                raise SystemExit(f"stage3_real_frames: cannot read {self.files[i]}")
            lb = cv2.cvtColor(letterbox_np(img, self.imgsz)[0], cv2.COLOR_BGR2RGB)
            self._cache[i] = (lb, np.zeros((0, 5), np.float32))
        return self._cache[i]


def main(argv: list[str] | None = None) -> int:
    from pruning_tools.train.distill import Distiller
    from pruning_tools.train.loop import make_optimizer, recalibrate_bn, train_steps
    from pruning_tools.ultralytics_adapter import load_checkpoint, save_checkpoint

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--student", type=Path, required=True, help="a pruned level's model.pt (a prune run's unit)")
    p.add_argument("--teacher", type=Path, default=REPO / "pruning_tools" / "assets" / "baseline_yolov5n.pt")
    p.add_argument("--data", type=Path, required=True, help="the run's generated YOLO dataset (train split)")
    p.add_argument("--mix", nargs=2, action="append", default=[], metavar=("DIR", "REPEATS"),
                   help="labelled datasets mixed in, as `pruning-tools prune --mix`")
    p.add_argument("--unlabelled", type=Path, default=None, help="a folder of camera frames for KD-only batches")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--save-every", type=int, default=150)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr0", type=float, default=0.002, help="cosine to lr0/2, as stage 3")
    p.add_argument("--crop-width", type=int, default=640, help="0: full width")
    p.add_argument("--imgsz", type=int, nargs=2, default=(384, 1248), metavar=("H", "W"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    if a.steps < 1 or a.save_every < 1:
        p.error("--steps and --save-every must be >= 1")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    imgsz = (int(a.imgsz[0]), int(a.imgsz[1]))
    student, meta = load_checkpoint(a.student)
    teacher, _ = load_checkpoint(a.teacher)
    distiller = Distiller(teacher, 1.0, 1.0)
    parts = [YoloDataset(a.data, "train", imgsz)] + [YoloDataset(d, "train", imgsz, cache=True) for d, _ in a.mix]
    stream = BatchStream(MixedDataset(parts, [1, *(int(r) for _, r in a.mix)]), a.batch, a.seed, a.crop_width or None)
    unlabelled = (BatchStream(ImageFolder(a.unlabelled, imgsz), a.batch, a.seed + 1, a.crop_width or None)
                  if a.unlabelled else None)
    opt = make_optimizer(student, a.lr0)
    a.out.mkdir(parents=True, exist_ok=True)
    t0, losses = time.monotonic(), []

    def on_step(step: int, loss: float) -> None:
        losses.append(loss)
        if (step + 1) % 25 == 0:
            print(f"step {step + 1}/{a.steps} loss {np.mean(losses[-25:]):.3f} ({time.monotonic() - t0:.0f} s)",
                  flush=True)
        if (step + 1) % a.save_every == 0 or step + 1 == a.steps:
            recalibrate_bn(student, stream, 8, start=900_000 + step)  # leaves it in eval mode
            save_checkpoint(student, a.out / f"step{step + 1}.pt",
                            {**meta, "stage3_continued": {"from": str(a.student), "steps": step + 1,
                                                          "mix": a.mix, "unlabelled": str(a.unlabelled or "")}})
            student.train()

    # the zoo's stage-3 step (cosine lr0 -> lr0/2, no warm-up, gradient clip 10), optionally with a KD-only batch
    train_steps(student, stream, 0, a.steps, a.steps, a.lr0, opt, lrf=0.5, warmup=0, on_step=on_step,
                distiller=distiller, unlabelled=unlabelled)
    history = [{"step": k + 1, "loss": loss, "kd": kd, "kd_unlabelled": ukd}
               for k, (loss, kd, ukd) in enumerate(zip(losses, distiller.history,
                                                       distiller.unlabelled_history or [None] * len(losses)))]
    wall = round(time.monotonic() - t0, 1)
    write_result(a.out / "history.json", {"args": {k: str(v) for k, v in vars(a).items()}, "history": history,
                                          "wall_s": wall, "versions": module_versions("torch", "ultralytics")},
                 summary=json.dumps({"out": str(a.out), "wall_s": wall}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
