"""Detector evaluation on a YOLO-format dataset (as written by ``pruning-tools kitti convert``).

:class:`EvalSet` reads a split once (images decoded and letterboxed, labels in original pixels,
condition keys from ``conditions.json``) and evaluates any number of inference functions on it —
the policy/pruning loops call this many times. :func:`evaluate_detector` is the one-shot wrapper.

An inference function takes the letterboxed ``(1, 3, H, W)`` float32 RGB batch and returns the raw
head output ``(1, 4 + nc, N)`` (a wrapped torch model or an ONNX Runtime session alike). Decoding and
NMS are :func:`sparse_perception.postprocess.decode`; mAP is
:class:`sparse_perception.metrics.MapAccumulator` (COCO-style), in original image pixels.

Label files: one object per line ``class cx cy w h`` (normalised); an optional sixth column ``1``
marks a box to ignore (DontCare / too hard), which neither counts as a miss nor makes a matching
prediction a false positive.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from sparse_perception.metrics import MapAccumulator
from sparse_perception.postprocess import LetterboxInfo, decode, letterbox

__all__ = ["EvalSet", "evaluate_detector", "read_labels"]

InferFn = Callable[[np.ndarray], np.ndarray]
_IMG_EXT = (".png", ".jpg", ".jpeg", ".bmp")


def read_labels(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one YOLO label file.

    :return: ``(boxes xyxy float32 (G,4) in pixels, classes int64 (G,), ignore bool (G,))``.
    :raises ValueError: malformed line (names file and line).
    """
    boxes, classes, ignore = [], [], []
    if path.is_file():
        for ln, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (5, 6):
                raise ValueError(f"{path}:{ln}: expected 'class cx cy w h [ignore]', got {line!r}")
            try:
                c = int(float(parts[0]))
                cx, cy, w, h = (float(v) for v in parts[1:5])
                ig = len(parts) == 6 and float(parts[5]) != 0.0
            except ValueError as exc:
                raise ValueError(f"{path}:{ln}: not a number in {line!r}") from exc
            boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
            classes.append(c)
            ignore.append(ig)
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64), np.asarray(ignore, bool))


@dataclass
class _Item:
    stem: str
    batch: np.ndarray
    info: LetterboxInfo
    gt_boxes: np.ndarray
    gt_classes: np.ndarray
    gt_ignore: np.ndarray
    condition: str | None


class EvalSet:
    """A dataset split loaded once into memory (letterboxed batches + labels) for repeated evaluation.

    :param dataset_dir: YOLO dataset root (with ``data.yaml``, ``images/<split>``, ``labels/<split>``).
    :param split: ``"train"``, ``"val"`` or ``"test"``.
    :param imgsz: network ``(height, width)``.
    :param limit: use only the first ``limit`` images (sorted by name).
    :param progress: show a progress bar while loading.
    :raises FileNotFoundError: missing dataset/split folder.
    :raises ValueError: malformed labels or names.
    """

    def __init__(self, dataset_dir: str | Path, split: str = "val", imgsz: tuple[int, int] = (384, 1248),
                 limit: int | None = None, progress: bool = True) -> None:
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {split!r}")
        root = Path(dataset_dir)
        if root.is_file() and root.suffix in (".yaml", ".yml"):
            root = root.parent
        self.root = root
        self.split = split
        self.imgsz = (int(imgsz[0]), int(imgsz[1]))
        self.class_names = self._names(root)
        img_dir = root / "images" / split
        if not img_dir.is_dir():
            raise FileNotFoundError(f"{img_dir}: no image folder for split {split!r}")
        lab_dir = root / "labels" / split
        cond_path = root / "conditions.json"
        conditions: dict[str, str] = json.loads(cond_path.read_text()) if cond_path.is_file() else {}
        files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in _IMG_EXT)
        if limit is not None:
            files = files[: max(0, int(limit))]
        self.items: list[_Item] = []
        from tqdm import tqdm

        for p in tqdm(files, desc=f"load {split}", unit="img", disable=not progress, leave=False):
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"{p}: cannot decode image")
            batch, info = letterbox(img, self.imgsz)
            h, w = img.shape[:2]
            boxes, classes, ignore = read_labels(lab_dir / f"{p.stem}.txt", w, h)
            if classes.size and (classes.min() < 0 or classes.max() >= len(self.class_names)):
                raise ValueError(f"{lab_dir / (p.stem + '.txt')}: class id out of range for {len(self.class_names)} names")
            self.items.append(_Item(p.stem, batch, info, boxes, classes, ignore, conditions.get(p.stem)))

    @staticmethod
    def _names(root: Path) -> list[str]:
        data = root / "data.yaml"
        if not data.is_file():
            raise FileNotFoundError(f"{data}: dataset has no data.yaml")
        cfg = yaml.safe_load(data.read_text()) or {}
        names = cfg.get("names")
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names, key=int)]
        if not isinstance(names, list) or not names:
            raise ValueError(f"{data}: 'names' must be a non-empty list or mapping")
        return [str(n) for n in names]

    def __len__(self) -> int:
        return len(self.items)

    def batches(self) -> Iterator[np.ndarray]:
        """Yield the cached ``(1, 3, H, W)`` float32 batches (e.g. for BN re-calibration)."""
        for it in self.items:
            yield it.batch

    def evaluate(self, infer_fn: InferFn, conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300,
                 progress: bool = False) -> dict[str, Any]:
        """mAP of ``infer_fn`` on this split.

        :return: :meth:`MapAccumulator.compute` result plus ``"split"``, ``"class_names"``, ``"imgsz"``.
        """
        acc = MapAccumulator(len(self.class_names), self.class_names)
        from tqdm import tqdm

        for it in tqdm(self.items, desc=f"mAP {self.split}", unit="img", disable=not progress, leave=False):
            raw = np.asarray(infer_fn(it.batch))
            if raw.ndim != 3 or raw.shape[1] != 4 + len(self.class_names):
                raise ValueError(f"inference output shape {raw.shape} does not fit (1, {4 + len(self.class_names)}, N) "
                                 f"for {len(self.class_names)} classes")
            det = decode(raw, conf_thres, iou_thres, max_det, it.info)
            acc.add(det.boxes, det.scores, det.class_ids, it.gt_boxes, it.gt_classes, it.gt_ignore, it.condition)
        res = acc.compute()
        res.update(split=self.split, class_names=list(self.class_names), imgsz=list(self.imgsz))
        return res


def evaluate_detector(infer_fn: InferFn, dataset_dir: str | Path, split: str = "val",
                      imgsz: tuple[int, int] = (384, 1248), conf_thres: float = 0.001, iou_thres: float = 0.6,
                      max_det: int = 300, limit: int | None = None, progress: bool = True,
                      max_images: int | None = None) -> dict[str, Any]:
    """Evaluate ``infer_fn`` once on a dataset split (loads the split, then :meth:`EvalSet.evaluate`).

    :param max_images: alias of ``limit``.
    """
    if limit is None:
        limit = max_images
    es = EvalSet(dataset_dir, split, imgsz, limit=limit, progress=progress)
    return es.evaluate(infer_fn, conf_thres, iou_thres, max_det, progress=progress)
