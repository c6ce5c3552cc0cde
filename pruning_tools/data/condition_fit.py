"""Offline fit of the runtime condition estimator (:mod:`sparse_perception.runtime.condition_estimator`).

Reads generated KITTI-format scenes (``training/image_2`` + ``training/condition`` sidecars from
:func:`pruning_tools.data.generator.generate_dataset`), computes the estimator's image features,
and fits per axis (illumination, weather) nearest class centroids over standardised features. The
feature subset of each axis is chosen by greedy forward selection on leave-one-out accuracy of the
fit frames only. Writes the parameters JSON the runtime loads.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from sparse_perception.runtime.condition_estimator import FEATURE_NAMES, image_features
from sparse_perception.runtime.conditions import ILLUMINATIONS, WEATHERS


def load_generated(roots: Iterable[Path]) -> tuple[np.ndarray, list[str], list[str]]:
    """Features (N, F), illumination labels and weather labels of every frame under the roots."""
    import cv2

    feats, ill, wea = [], [], []
    for root in roots:
        tr = Path(root) / "training"
        for side in sorted((tr / "condition").glob("*.json")):
            img = cv2.imread(str(tr / "image_2" / f"{side.stem}.png"), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"cannot read image for {side}")
            c = json.loads(side.read_text())
            feats.append(image_features(img))
            ill.append(c["illumination"])
            wea.append(c["weather"])
    if not feats:
        raise ValueError(f"no generated frames (training/condition/*.json) under {list(roots)}")
    return np.stack(feats), ill, wea


def _centroids(z: np.ndarray, y: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    return np.stack([z[y == lab].mean(axis=0) for lab in labels])


def _loo_accuracy(z: np.ndarray, y: np.ndarray, labels: Sequence[str]) -> float:
    """Leave-one-out accuracy of nearest centroid on z (N, f)."""
    sums = {lab: z[y == lab].sum(axis=0) for lab in labels}
    counts = {lab: int((y == lab).sum()) for lab in labels}
    right = 0
    for i in range(len(z)):
        best, best_d = None, np.inf
        for lab in labels:
            n = counts[lab] - (y[i] == lab)
            if n <= 0:
                continue
            c = (sums[lab] - (z[i] if y[i] == lab else 0.0)) / n
            d = float(((z[i] - c) ** 2).sum())
            if d < best_d:
                best, best_d = lab, d
        right += best == y[i]
    return right / len(z)


def _select(z: np.ndarray, y: np.ndarray, labels: Sequence[str], max_features: int = 6) -> tuple[list[int], float]:
    chosen: list[int] = []
    best_acc = -1.0
    while len(chosen) < max_features:
        trial = [(f, _loo_accuracy(z[:, chosen + [f]], y, labels)) for f in range(z.shape[1]) if f not in chosen]
        f, acc = max(trial, key=lambda t: t[1])
        if acc <= best_acc:
            break
        chosen.append(f)
        best_acc = acc
    return chosen, best_acc


def fit(feats: np.ndarray, illumination: Sequence[str], weather: Sequence[str]) -> dict[str, Any]:
    """Fit the estimator's parameters (the JSON dict :class:`ConditionEstimator` takes)."""
    mean = feats.mean(axis=0)
    scale = np.maximum(feats.std(axis=0), 1e-6)
    z = (feats - mean) / scale
    out: dict[str, Any] = {"features": list(FEATURE_NAMES), "mean": mean.round(6).tolist(),
                           "scale": scale.round(6).tolist(), "frames": int(len(feats))}
    for axis, y_list, vocab in (("illumination", illumination, ILLUMINATIONS), ("weather", weather, WEATHERS)):
        y = np.asarray(y_list)
        labels = [lab for lab in vocab if (y == lab).any()]
        chosen, acc = _select(z, y, labels)
        cents = _centroids(z[:, chosen], y, labels)
        out[axis] = {"labels": labels, "features": chosen, "feature_names": [FEATURE_NAMES[i] for i in chosen],
                     "centroids": cents.round(6).tolist(), "loo_accuracy_fit": round(acc, 4)}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pruning_tools.data.condition_fit ROOT... --out JSON``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="+", type=Path, help="generated dataset folders (fit seeds)")
    ap.add_argument("--out", type=Path, required=True, help="parameters JSON to write")
    args = ap.parse_args(argv)
    try:
        feats, ill, wea = load_generated(args.roots)
    except ValueError as exc:
        ap.exit(2, f"error: {exc}\n")
    params = fit(feats, ill, wea)
    params["fit_data"] = [str(r) for r in args.roots]
    args.out.write_text(json.dumps(params, indent=1) + "\n")
    print(json.dumps({ax: params[ax]["feature_names"] + [params[ax]["loo_accuracy_fit"]] for ax in ("illumination", "weather")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
