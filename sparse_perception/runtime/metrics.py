"""COCO-style detection mAP (numpy only).

IoU thresholds 0.50:0.05:0.95; per class and IoU threshold predictions are matched greedily in
descending score order to the unmatched ground-truth box of the same class with the highest IoU
(>= threshold); AP is the 101-point interpolated area under the precision envelope. Classes without
ground truth are left out of the mean. Ignored ground truth (``gt_ignore``, e.g. KITTI DontCare or
too-small boxes) counts neither as a miss nor turns a prediction matching it into a false positive:
such predictions are dropped from the PR curve.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["IOU_THRESHOLDS", "MapAccumulator", "box_iou", "ap_from_pr"]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes -> (N, M)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl, 0, None).prod(2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def ap_from_pr(tp: np.ndarray, scores: np.ndarray, n_gt: int, recall_points: np.ndarray = _RECALL_POINTS) -> float:
    """Interpolated AP from per-prediction true-positive flags and scores.

    :param recall_points: recall values at which the precision envelope is sampled; COCO's 101
        points ``0, 0.01, ..., 1`` by default, KITTI's 40 points ``1/40, ..., 1`` for AP|R40.
    """
    if n_gt == 0:
        return float("nan")
    if tp.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="mergesort")
    tp = tp[order].astype(np.float64)
    ctp = np.cumsum(tp)
    cfp = np.cumsum(1.0 - tp)
    recall = ctp / n_gt
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    # precision envelope (monotone non-increasing from the right)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, recall_points, side="left")
    q = np.zeros(np.size(recall_points))
    valid = idx < recall.size
    q[valid] = envelope[idx[valid]]
    return float(q.mean())


class MapAccumulator:
    """Accumulates per-image predictions and ground truth; :meth:`compute` gives COCO-style mAP.

    :param num_classes: number of classes (class ids ``0 .. num_classes-1``).
    :param class_names: optional names (default ``"0"``, ``"1"``, ...).
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names, expected {num_classes}")
        self.num_classes = int(num_classes)
        self.class_names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(num_classes)]
        # per record: (condition, scores (P,), classes (P,), tp (P, T) bool, valid (P,) bool, n_gt per class (C,))
        self._records: list[tuple[str | None, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return len(self._records)

    def add(self, pred_boxes: np.ndarray, pred_scores: np.ndarray, pred_classes: np.ndarray,
            gt_boxes: np.ndarray, gt_classes: np.ndarray, gt_ignore: np.ndarray | None = None,
            condition: str | None = None) -> None:
        """Add one image.

        :param pred_boxes: (P, 4) xyxy.
        :param pred_scores: (P,).
        :param pred_classes: (P,) integer class ids.
        :param gt_boxes: (G, 4) xyxy in the same pixel frame.
        :param gt_classes: (G,) integer class ids.
        :param gt_ignore: (G,) bool; True marks boxes to ignore.
        :param condition: condition key (e.g. ``"night_fog"``) for per-condition mAP.
        :raises ValueError: inconsistent shapes or class ids out of range.
        """
        pb = np.asarray(pred_boxes, np.float64).reshape(-1, 4) if np.size(pred_boxes) else np.zeros((0, 4))
        ps = np.asarray(pred_scores, np.float64).reshape(-1)
        pc = np.asarray(pred_classes).reshape(-1).astype(np.int64)
        gb = np.asarray(gt_boxes, np.float64).reshape(-1, 4) if np.size(gt_boxes) else np.zeros((0, 4))
        gc = np.asarray(gt_classes).reshape(-1).astype(np.int64)
        gi = np.zeros(gc.shape, bool) if gt_ignore is None else np.asarray(gt_ignore, bool).reshape(-1)
        if not (pb.shape[0] == ps.shape[0] == pc.shape[0]):
            raise ValueError(f"prediction sizes differ: boxes {pb.shape[0]}, scores {ps.shape[0]}, classes {pc.shape[0]}")
        if not (gb.shape[0] == gc.shape[0] == gi.shape[0]):
            raise ValueError(f"ground-truth sizes differ: boxes {gb.shape[0]}, classes {gc.shape[0]}, ignore {gi.shape[0]}")
        for name, c in (("pred_classes", pc), ("gt_classes", gc)):
            if c.size and (c.min() < 0 or c.max() >= self.num_classes):
                raise ValueError(f"{name} out of range [0, {self.num_classes}): {np.unique(c).tolist()}")
        t = IOU_THRESHOLDS.size
        tp = np.zeros((pb.shape[0], t), bool)
        valid = np.ones((pb.shape[0], t), bool)  # False: matched an ignored GT -> dropped
        n_gt = np.bincount(gc[~gi], minlength=self.num_classes)
        if pb.shape[0] and gb.shape[0]:
            iou_all = box_iou(pb, gb)
            for c in np.unique(pc):
                pidx = np.flatnonzero(pc == c)
                pidx = pidx[np.argsort(-ps[pidx], kind="mergesort")]
                gidx = np.flatnonzero(gc == c)
                if gidx.size == 0:
                    continue
                iou = iou_all[np.ix_(pidx, gidx)]
                ign = gi[gidx]
                for ti, thr in enumerate(IOU_THRESHOLDS):
                    taken = np.zeros(gidx.size, bool)
                    for row, p in enumerate(pidx):
                        cand = iou[row].copy()
                        cand[taken | (cand < thr - 1e-12)] = -1.0
                        # prefer a real (non-ignored) GT; fall back to an ignored one
                        real = np.where(~ign, cand, -1.0)
                        j = int(real.argmax())
                        if real[j] >= 0:
                            taken[j] = True
                            tp[p, ti] = True
                            continue
                        ig = np.where(ign, cand, -1.0)
                        j = int(ig.argmax()) if ig.size else -1
                        if j >= 0 and ig[j] >= 0:
                            valid[p, ti] = False  # ignored GT may absorb several predictions
        self._records.append((condition, ps, pc, tp, valid, n_gt))

    def _map(self, records: list[Any]) -> tuple[float, float, dict[str, dict[str, float]]]:
        per_class: dict[str, dict[str, float]] = {}
        if not records:
            return float("nan"), float("nan"), per_class
        scores = np.concatenate([r[1] for r in records])
        classes = np.concatenate([r[2] for r in records])
        tp = np.concatenate([r[3] for r in records]) if scores.size else np.zeros((0, IOU_THRESHOLDS.size), bool)
        valid = np.concatenate([r[4] for r in records]) if scores.size else np.zeros((0, IOU_THRESHOLDS.size), bool)
        n_gt = np.sum([r[5] for r in records], axis=0)
        aps50_95, aps50 = [], []
        for c in range(self.num_classes):
            sel = classes == c
            if n_gt[c] == 0:
                per_class[self.class_names[c]] = {"ap50_95": float("nan"), "ap50": float("nan"), "n_gt": 0}
                continue
            aps = []
            for ti in range(IOU_THRESHOLDS.size):
                m = sel & valid[:, ti]
                aps.append(ap_from_pr(tp[m, ti], scores[m], int(n_gt[c])))
            ap = float(np.mean(aps))
            per_class[self.class_names[c]] = {"ap50_95": ap, "ap50": float(aps[0]), "n_gt": int(n_gt[c])}
            aps50_95.append(ap)
            aps50.append(aps[0])
        if not aps50_95:
            return float("nan"), float("nan"), per_class
        return float(np.mean(aps50_95)), float(np.mean(aps50)), per_class

    def compute(self) -> dict[str, Any]:
        """mAP overall, per class and per condition.

        :return: ``{"map50_95", "map50", "per_class": {name: {"ap50_95", "ap50", "n_gt"}},
            "by_condition": {key: {"map50_95", "map50", "n_images"}}, "n_images"}``; mAP is NaN where
            no ground truth exists.
        """
        m, m50, per_class = self._map(self._records)
        groups: dict[str, list[Any]] = defaultdict(list)
        for r in self._records:
            if r[0] is not None:
                groups[r[0]].append(r)
        by_cond = {}
        for key in sorted(groups):
            cm, cm50, _ = self._map(groups[key])
            by_cond[key] = {"map50_95": cm, "map50": cm50, "n_images": len(groups[key])}
        return {"map50_95": m, "map50": m50, "per_class": per_class, "by_condition": by_cond,
                "n_images": len(self._records)}
