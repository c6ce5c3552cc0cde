"""KITTI-aware 2D detection AP: KITTI's IoU per class, its moderate cut, DontCare regions.

Rules (after the KITTI object benchmark's 2D evaluation, Geiger et al. 2012; written here, with
COCO's greedy matching instead of the devkit's own assignment loop):

* **Per-class IoU** for ``ap_kitti``: Car 0.7, Pedestrian 0.5, Cyclist 0.5 (:data:`KITTI_IOU`).
* **Moderate cut**: ground truth counts when its box is at least 25 px high, occlusion <= 1 and
  truncation <= 0.30; ground truth of the class that fails the cut is *ignored* (a detection on it is
  neither a true nor a false positive), and so are neighbouring classes (Van for Car,
  Person_sitting for Pedestrian).
* **DontCare** regions: a detection that matches nothing and lies mostly inside one (intersection
  over the detection's area >= 0.5) is dropped, not counted as a false positive.
* Detections lower than the height cut that match nothing are dropped too.
* Matching is greedy in descending score order, each detection taking the unmatched counting
  ground-truth box of its class with the highest IoU (as COCO does).
* ``ap_kitti`` is AP|R40 (precision envelope sampled at recall 1/40 ... 1, KITTI's metric since
  2019); ``ap50`` and ``ap50_95`` use COCO's 101 recall points and IoU 0.50 / 0.50:0.05:0.95, on the same
  cut and ignore rules. ``map50``/``map50_95`` average the classes that have ground truth.

Plain numpy; the inputs are per-frame arrays so YOLO datasets (height cut and an ignore flag only,
no occlusion or truncation) use the same code.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparse_perception.runtime.metrics import IOU_THRESHOLDS, ap_from_pr, box_iou

__all__ = ["KITTI_IOU", "NEIGHBOURS", "R40", "FrameTruth", "KittiEvaluator", "truth_from_kitti"]

#: IoU a detection needs to count for ``ap_kitti``.
KITTI_IOU: dict[str, float] = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
#: KITTI types whose boxes are ignored (not counted, not penalised) when evaluating a class.
NEIGHBOURS: dict[str, tuple[str, ...]] = {"Car": ("Van",), "Pedestrian": ("Person_sitting",), "Cyclist": ()}
#: KITTI's AP|R40 recall points.
R40 = np.linspace(1.0 / 40, 1.0, 40)
_DONTCARE_IOA = 0.5


@dataclass
class FrameTruth:
    """Ground truth of one frame in image pixels.

    :param boxes: (G, 4) xyxy.
    :param types: G type names (``"Car"``, ``"Van"``, ...).
    :param occluded: (G,) KITTI occlusion state (0..3); -1 when unknown (YOLO datasets).
    :param truncated: (G,) truncation fraction; 0 when unknown.
    :param ignore: (G,) extra ignore flags (e.g. a YOLO label's sixth column).
    :param dontcare: (D, 4) xyxy DontCare regions.
    """

    boxes: np.ndarray
    types: list[str]
    occluded: np.ndarray
    truncated: np.ndarray
    ignore: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    dontcare: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        g = self.boxes.shape[0]
        self.occluded = np.asarray(self.occluded, np.int64).reshape(-1)
        self.truncated = np.asarray(self.truncated, np.float64).reshape(-1)
        self.ignore = np.zeros(g, bool) if np.size(self.ignore) == 0 else np.asarray(self.ignore, bool).reshape(-1)
        self.dontcare = np.asarray(self.dontcare, np.float64).reshape(-1, 4)
        if not (len(self.types) == g == self.occluded.size == self.truncated.size == self.ignore.size):
            raise ValueError(f"ground-truth sizes differ: boxes {g}, types {len(self.types)}, "
                             f"occluded {self.occluded.size}, truncated {self.truncated.size}, ignore {self.ignore.size}")


def truth_from_kitti(objects: Sequence[Any]) -> FrameTruth:
    """:class:`FrameTruth` from parsed KITTI label objects (:class:`pruning_tools.data.kitti_io.KittiObject`)."""
    care = [o for o in objects if o.type != "DontCare"]
    return FrameTruth(boxes=np.asarray([o.bbox for o in care], np.float64).reshape(-1, 4),
                      types=[o.type for o in care], occluded=[o.occluded for o in care],
                      truncated=[o.truncated for o in care],
                      dontcare=np.asarray([o.bbox for o in objects if o.type == "DontCare"], np.float64).reshape(-1, 4))


def _ioa(dets: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Intersection over the detection's area, (P, D)."""
    tl = np.maximum(dets[:, None, :2], regions[None, :, :2])
    br = np.minimum(dets[:, None, 2:], regions[None, :, 2:])
    inter = np.clip(br - tl, 0, None).prod(2)
    area = np.clip(dets[:, 2:] - dets[:, :2], 0, None).prod(1)
    return inter / np.maximum(area[:, None], 1e-12)


class KittiEvaluator:
    """Accumulates frames; :meth:`compute` gives per-class ``ap_kitti``, ``ap50``, ``ap50_95``.

    :param classes: class names evaluated (detections of other names are ignored).
    :param min_height: height cut in pixels (moderate: 25).
    :param max_occlusion: occlusion cut (moderate: 1); unknown occlusion (-1) passes.
    :param max_truncation: truncation cut (moderate: 0.30).
    :param iou: per-class IoU of ``ap_kitti`` (default :data:`KITTI_IOU`; 0.5 for other names).
    """

    def __init__(self, classes: Sequence[str] = ("Car", "Pedestrian", "Cyclist"), min_height: float = 25.0,
                 max_occlusion: int = 1, max_truncation: float = 0.30, iou: dict[str, float] | None = None) -> None:
        if not classes:
            raise ValueError("classes must not be empty")
        self.classes = [str(c) for c in classes]
        self.min_height = float(min_height)
        self.max_occlusion = int(max_occlusion)
        self.max_truncation = float(max_truncation)
        self.iou = {c: float((iou or KITTI_IOU).get(c, 0.5)) for c in self.classes}
        self.thresholds = {c: np.concatenate([[self.iou[c]], IOU_THRESHOLDS]) for c in self.classes}
        # per class: lists of (scores (P,), tp (P, T), valid (P, T)) and a ground-truth count
        self._scores: dict[str, list[np.ndarray]] = {c: [] for c in self.classes}
        self._tp: dict[str, list[np.ndarray]] = {c: [] for c in self.classes}
        self._valid: dict[str, list[np.ndarray]] = {c: [] for c in self.classes}
        self._n_gt: dict[str, int] = {c: 0 for c in self.classes}
        self.n_images = 0

    def _counts(self, truth: FrameTruth) -> np.ndarray:
        h = truth.boxes[:, 3] - truth.boxes[:, 1]
        occ_ok = (truth.occluded < 0) | (truth.occluded <= self.max_occlusion)
        return (h >= self.min_height) & occ_ok & (truth.truncated <= self.max_truncation) & ~truth.ignore

    def add(self, truth: FrameTruth, boxes: np.ndarray, scores: np.ndarray, names: Sequence[str]) -> None:
        """Add one frame.

        :param truth: its ground truth.
        :param boxes: (P, 4) xyxy detections in the same pixels.
        :param scores: (P,) confidences.
        :param names: P class names of the detections.
        :raises ValueError: sizes differ.
        """
        pb = np.asarray(boxes, np.float64).reshape(-1, 4)
        ps = np.asarray(scores, np.float64).reshape(-1)
        pn = np.asarray([str(n) for n in names], dtype=object)
        if not (pb.shape[0] == ps.size == pn.size):
            raise ValueError(f"detection sizes differ: boxes {pb.shape[0]}, scores {ps.size}, names {pn.size}")
        counts = self._counts(truth)
        types = np.asarray(truth.types, dtype=object)
        low = (pb[:, 3] - pb[:, 1]) < self.min_height
        in_dc = (_ioa(pb, truth.dontcare).max(1) >= _DONTCARE_IOA) if truth.dontcare.size else np.zeros(len(pb), bool)
        self.n_images += 1
        for c in self.classes:
            mine = types == c if types.size else np.zeros(0, bool)
            real = mine & counts
            ignored = (mine & ~counts) | np.isin(types, NEIGHBOURS.get(c, ())) if types.size else np.zeros(0, bool)
            self._n_gt[c] += int(real.sum())
            pidx = np.flatnonzero(pn == c)
            pidx = pidx[np.argsort(-ps[pidx], kind="mergesort")]
            thr = self.thresholds[c]
            tp = np.zeros((pidx.size, thr.size), bool)
            valid = np.ones((pidx.size, thr.size), bool)
            iou = box_iou(pb[pidx], truth.boxes) if pidx.size and truth.boxes.size else np.zeros((pidx.size, 0))
            for ti, t in enumerate(thr):
                taken = np.zeros(truth.boxes.shape[0], bool)
                for row, p in enumerate(pidx):
                    cand = iou[row] if iou.shape[1] else np.zeros(0)
                    ok = cand >= t - 1e-12
                    best = np.where(ok & real & ~taken, cand, -1.0)
                    if best.size and best.max() >= 0:
                        taken[int(best.argmax())] = True
                        tp[row, ti] = True
                    elif (best.size and (ok & ignored).any()) or low[p] or in_dc[p]:
                        valid[row, ti] = False  # on ignored truth, too low, or inside DontCare
            self._scores[c].append(ps[pidx])
            self._tp[c].append(tp)
            self._valid[c].append(valid)

    def compute(self) -> dict[str, Any]:
        """:return: ``{"classes": {name: {"ap_kitti", "ap50", "ap50_95", "n_gt", "iou"}}, "map50_95",
            "map50", "map_kitti", "n_images"}``; a class without counting ground truth has NaN APs and is left
            out of the means."""
        out: dict[str, Any] = {"classes": {}}
        for c in self.classes:
            n = self._n_gt[c]
            if not self._scores[c]:
                scores, tp, valid = np.zeros(0), np.zeros((0, self.thresholds[c].size), bool), np.zeros((0, 0), bool)
            else:
                scores, tp, valid = (np.concatenate(self._scores[c]), np.concatenate(self._tp[c]),
                                     np.concatenate(self._valid[c]))
            if n == 0:
                out["classes"][c] = {"ap_kitti": float("nan"), "ap50": float("nan"), "ap50_95": float("nan"),
                                     "n_gt": 0, "iou": self.iou[c]}
                continue
            aps = []
            for ti in range(self.thresholds[c].size):
                m = valid[:, ti] if valid.size else np.zeros(0, bool)
                # threshold 0 is the class's KITTI IoU (AP|R40); the rest are COCO's (101 points)
                aps.append(ap_from_pr(tp[m, ti], scores[m], n, R40) if ti == 0 else ap_from_pr(tp[m, ti], scores[m], n))
            out["classes"][c] = {"ap_kitti": float(aps[0]), "ap50": float(aps[1]), "ap50_95": float(np.mean(aps[1:])),
                                 "n_gt": int(n), "iou": self.iou[c]}
        have = [v for v in out["classes"].values() if v["n_gt"] > 0]
        nan = float("nan")
        out["map50_95"] = float(np.mean([v["ap50_95"] for v in have])) if have else nan
        out["map50"] = float(np.mean([v["ap50"] for v in have])) if have else nan
        out["map_kitti"] = float(np.mean([v["ap_kitti"] for v in have])) if have else nan
        out["n_images"] = self.n_images
        return out
