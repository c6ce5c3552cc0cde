"""Driving condition estimated from the camera image (no ROS, no torch).

API::

    est = ConditionEstimator.load()            # shipped parameters (condition_estimator.json)
    cond = est.update(bgr_image)               # per frame: smoothed Condition (vocabulary of conditions.py)
    raw = est.classify(bgr_image)              # one frame, no smoothing: (illumination, weather)
    feats = image_features(bgr_image)          # the feature vector (used offline to fit)

Method: cheap image statistics on a 1/8-downsampled grey/HSV image (mean and percentiles of
brightness, sky-band brightness, dark-pixel fraction, contrast, edge energy, saturation, dark
channel) classified per axis by a nearest class centroid in standardised feature space. The centroids
and scales are fitted offline on generated scenes (``pruning_tools/data/condition_fit.py``) and
shipped as ``sparse_perception/runtime/condition_estimator.json``. :meth:`ConditionEstimator.update`
smooths with a running vote over the last ``window`` frames plus hysteresis: the reported label only
changes when another label holds a strict majority of the window, so the policy is not flapped
frame by frame.
"""
from __future__ import annotations

import json
from collections import Counter, deque
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sparse_perception.runtime.conditions import ILLUMINATIONS, WEATHERS, Condition

PARAMS_PATH = Path(__file__).with_name("condition_estimator.json")

FEATURE_NAMES: tuple[str, ...] = (
    "mean", "p10", "p50", "p90", "sky_mean", "dark_frac", "std", "edge", "sat_mean", "dark_channel", "bright_frac",
)
_STEP = 8  # downsample factor (stride slicing: 1242x375 -> 156x47)


def image_features(bgr: np.ndarray) -> np.ndarray:
    """Feature vector (see :data:`FEATURE_NAMES`) of a BGR ``uint8`` image (H, W, 3), values in [0, 1]."""
    img = np.asarray(bgr)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < _STEP or img.shape[1] < _STEP:
        raise ValueError(f"expected a BGR image (H>={_STEP}, W>={_STEP}, 3), got shape {img.shape}")
    small = img[::_STEP, ::_STEP].astype(np.float32) / 255.0
    b, g, r = small[..., 0], small[..., 1], small[..., 2]
    grey = 0.114 * b + 0.587 * g + 0.299 * r
    mx = small.max(axis=2)
    mn = small.min(axis=2)
    sat = np.where(mx > 1e-3, (mx - mn) / np.maximum(mx, 1e-3), 0.0)
    p10, p50, p90 = np.percentile(grey, (10, 50, 90))
    sky = grey[: max(1, grey.shape[0] // 4)]
    edge = float(np.abs(np.diff(grey, axis=1)).mean() + np.abs(np.diff(grey, axis=0)).mean())
    return np.array([
        grey.mean(), p10, p50, p90, sky.mean(), (grey < 0.1).mean(), grey.std(), edge,
        sat.mean(), mn.mean(), (grey > 0.8).mean(),
    ], dtype=np.float64)


class _Centroids:
    """Nearest centroid classifier over standardised features."""

    def __init__(self, labels: Sequence[str], centroids: np.ndarray, features: Sequence[int]):
        self.labels = list(labels)
        self.centroids = np.asarray(centroids, dtype=np.float64)
        self.features = list(features)

    def predict(self, z: np.ndarray) -> str:
        d = ((self.centroids - z[self.features]) ** 2).sum(axis=1)
        return self.labels[int(np.argmin(d))]


class ConditionEstimator:
    """Per-frame (illumination, weather) classifier with temporal smoothing.

    :param params: dict as written by the offline fit (``mean``, ``scale``, ``illumination`` and
        ``weather`` blocks with ``labels``, ``centroids`` and ``features``).
    :param window: frames in the running vote (>= 1).
    """

    def __init__(self, params: dict[str, Any], window: int = 9):
        if int(window) != window or window < 1:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        try:
            self.mean = np.asarray(params["mean"], dtype=np.float64)
            self.scale = np.asarray(params["scale"], dtype=np.float64)
            self._axes = {ax: _Centroids(params[ax]["labels"], params[ax]["centroids"], params[ax]["features"])
                          for ax in ("illumination", "weather")}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad condition estimator parameters: {exc!r}") from exc
        if self.mean.shape != (len(FEATURE_NAMES),) or self.scale.shape != self.mean.shape or (self.scale <= 0).any():
            raise ValueError("bad condition estimator parameters: mean/scale must have one positive value per feature")
        for ax, vocab in (("illumination", ILLUMINATIONS), ("weather", WEATHERS)):
            c = self._axes[ax]
            if set(c.labels) - set(vocab) or c.centroids.shape != (len(c.labels), len(c.features)):
                raise ValueError(f"bad condition estimator parameters for {ax}: labels {c.labels}")
        self.window = int(window)
        self._hist: dict[str, deque[str]] = {ax: deque(maxlen=self.window) for ax in self._axes}
        self._current: dict[str, str | None] = {ax: None for ax in self._axes}

    @classmethod
    def load(cls, path: Path | str | None = None, window: int = 9) -> "ConditionEstimator":
        """Load parameters from ``path`` (default: the shipped :data:`PARAMS_PATH`)."""
        p = Path(path) if path is not None else PARAMS_PATH
        try:
            params = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read condition estimator parameters {p}: {exc}") from exc
        return cls(params, window=window)

    def classify_features(self, feats: np.ndarray) -> tuple[str, str]:
        """Unsmoothed (illumination, weather) of one feature vector."""
        z = (np.asarray(feats, dtype=np.float64) - self.mean) / self.scale
        return self._axes["illumination"].predict(z), self._axes["weather"].predict(z)

    def classify(self, bgr: np.ndarray) -> tuple[str, str]:
        """Unsmoothed (illumination, weather) of one BGR frame."""
        return self.classify_features(image_features(bgr))

    def reset(self) -> None:
        """Forget the vote history (e.g. on a new drive)."""
        for ax in self._hist:
            self._hist[ax].clear()
            self._current[ax] = None

    def update(self, bgr: np.ndarray) -> Condition:
        """Classify one frame, add it to the vote and return the smoothed :class:`Condition`.

        ``ambient_light`` is the frame's mean brightness in [0, 1]; other values are unknown (-1).
        """
        feats = image_features(bgr)
        raw = dict(zip(("illumination", "weather"), self.classify_features(feats)))
        for ax, label in raw.items():
            hist = self._hist[ax]
            hist.append(label)
            cur = self._current[ax]
            if cur is None:
                self._current[ax] = label
                continue
            top, n = Counter(hist).most_common(1)[0]
            if top != cur and n * 2 > len(hist):  # hysteresis: a strict majority is needed to switch
                self._current[ax] = top
        return Condition(str(self._current["illumination"]), str(self._current["weather"]),
                         ambient_light=round(float(feats[0]), 4))
