"""Streaming drive simulator: cameras, a keep-newest frame queue, per-level latency distributions.

The model behind the condition policy's reward (``pruning-tools train-policy``). It follows the
streaming-perception idea of Li, Wang and Ramanan ("Towards Streaming Perception", ECCV 2020):
every camera instant is scored with the *latest output available then* — a level that cannot keep
up answers late (stale boxes) or has its frames overwritten in the queue (dropped), and both cost
accuracy. The scoring rule is the one of :mod:`pruning_tools.train.streaming` (one frame period of
grace; staleness = instant - input stamp of the output used), here on simulated time.

The compute budget: ``cameras`` cameras at ``rate_hz`` share one inference server (the node
processes one frame at a time); each camera's subscription keeps only its newest frame (depth 1:
a frame not taken before the next one arrives is dropped); the server takes the oldest waiting
frame. Service time of a frame at a level = the level's interleaved median latency x ``load`` (a
competing process: 1 = the node alone) x a log-normal spread fitted to the level's p95/median.

An instant's score = (the per-condition mAP50-95 of the level that produced the output used) x
``staleness_retention(staleness)``, 0 with no output yet. The retention curve is *measured on a real
drive*: :data:`KITTI_STALENESS` (``bench/staleness_curve.py`` -> ``docs/bench/staleness_curve.json``:
KITTI tracking sequence 0000, raw drive 2011_09_26_drive_0005, each ground-truth frame paired with the
shipped dense baseline's detections of k = 0..5 frames earlier, mAP50-95 under KITTI's rules, staleness
from the drive's real camera stamps). One frame (103 ms) of staleness keeps 54 % of the accuracy, two
keep 24 %: objects move a box width in 100-200 ms on a city street, so a stale box misses at IoU 0.5-0.95.
(Before, an ``exp(-staleness / tau)`` with ``tau`` 0.25-1 s kept 80-90 % after 100 ms and made the
always-dense level, stale by 160 ms on average under load, look best.) The same ratio is applied to every
level: the sparse levels' ONNX files of the bench zoo were not at hand to measure their own curves, and the
ground truth used as a perfect detector falls even faster (0.39 after one frame), so the fall is the scene's
motion, not the detector's. Between measured points the curve is linear; past the last it holds.
:func:`simulate_window` is a pure function of its inputs and an RNG, so the oracle can replay a window or
a segment under every level.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["ServerState", "WindowResult", "simulate_window", "staleness_retention", "lognormal_sigma",
           "KITTI_STALENESS", "STALENESS_SOURCE"]

#: (staleness ms, accuracy retained) measured by ``bench/staleness_curve.py`` on the real KITTI tracking
#: sequence 0000 (154 frames, real stamps; frames 5..153 scored for every k): the shipped dense baseline's
#: mAP50-95 with its detections k = 0..5 frames stale over its mAP50-95 on its own frames (0.277).
#: Re-measure with ``python bench/staleness_curve.py --json docs/bench/staleness_curve.json``.
KITTI_STALENESS: tuple[tuple[float, float], ...] = (
    (0.0, 1.0), (103.3, 0.543), (206.5, 0.236), (309.8, 0.101), (413.1, 0.050), (516.3, 0.021))
STALENESS_SOURCE = ("docs/bench/staleness_curve.json: real KITTI tracking 0000 (2011_09_26_drive_0005), dense "
                    "baseline mAP50-95 with detections k=0..5 frames stale / k=0")


def lognormal_sigma(median_ms: float, p95_ms: float | None) -> float:
    """Spread of the log-normal service time whose median and 95th percentile are given (>= 0.03)."""
    if not p95_ms or p95_ms <= median_ms:
        return 0.03
    return max(0.03, math.log(p95_ms / median_ms) / 1.645)


def staleness_retention(staleness_s: float,
                        curve: tuple[tuple[float, float], ...] = KITTI_STALENESS) -> float:
    """Share of a level's accuracy kept by boxes ``staleness_s`` old (linear between the measured points of
    ``curve``, held past the last)."""
    xs = [x for x, _ in curve]
    ys = [y for _, y in curve]
    return float(np.interp(max(0.0, 1000.0 * float(staleness_s)), xs, ys))


@dataclass
class ServerState:
    """What carries over between windows: the server's busy time, the frame in service, the waiting
    frames (camera -> stamp), recent outputs per camera ``(input stamp, available at, level)`` and the
    instants whose grace (one period) ends in a later window."""

    busy_until: float = 0.0
    in_service: tuple[int, float, int] | None = None  # (camera, stamp, level)
    waiting: dict[int, float] = field(default_factory=dict)
    outputs: dict[int, list[tuple[float, float, int]]] = field(default_factory=dict)
    unscored: list[tuple[float, int]] = field(default_factory=list)

    def copy(self) -> "ServerState":
        return replace(self, waiting=dict(self.waiting), outputs={c: list(v) for c, v in self.outputs.items()},
                       unscored=list(self.unscored))


@dataclass(frozen=True)
class WindowResult:
    """One decision window: mean instant score, frames arrived/processed/dropped/late, staleness."""

    score: float
    arrived: int
    processed: int
    dropped: int
    late: int
    answered_instants: int
    instants: int
    mean_staleness_ms: float
    mean_service_ms: float


def simulate_window(state: ServerState, t0: float, duration_s: float, level: int, latency_ms: np.ndarray,
                    sigma: np.ndarray, accuracy: np.ndarray, load: float, rate_hz: float, cameras: int,
                    rng: np.random.Generator | None,
                    curve: tuple[tuple[float, float], ...] = KITTI_STALENESS) -> WindowResult:
    """Advance ``state`` (in place) over ``[t0, t0 + duration_s)`` with ``level`` active.

    Frames arriving in the window are queued; instants whose grace ends in the window are scored.

    :param latency_ms: per level median service time (ms) on the node alone.
    :param sigma: per level log-normal spread (used when ``rng`` is given).
    :param accuracy: per level accuracy under the current condition.
    :param load: service-time multiplier of the competing load (>= 1 slows the server).
    :param rng: draws the spread; ``None``: every service takes its median x load.
    :param curve: staleness (ms) -> accuracy retained (default: :data:`KITTI_STALENESS`, measured).
    """
    period = 1.0 / rate_hz
    end = t0 + duration_s
    timeline: list[tuple[float, int, int]] = []  # (time, kind 0=score 1=arrival, camera); scores first on ties
    for c in range(cameras):
        off = c * period / cameras
        t = math.ceil((t0 - off) / period - 1e-9) * period + off
        while t < end - 1e-9:
            timeline.append((t, 1, c))
            if t + period < end - 1e-9:
                timeline.append((t + period, 0, c))
            else:
                state.unscored.append((t, c))
            t += period
    carried = [u for u in state.unscored if u[0] + period < end - 1e-9 and u[0] < t0 - 1e-9]
    state.unscored = [u for u in state.unscored if u not in carried]
    timeline += [(t + period, 0, c) for t, c in carried]
    timeline.sort()
    arrived = processed = dropped = late = answered = scored = 0
    score = 0.0
    stale: list[float] = []
    service: list[float] = []

    def start_next(now: float) -> None:
        # the server takes the oldest waiting frame as soon as it is free
        if state.in_service is None and state.waiting:
            cam = min(state.waiting, key=lambda c: state.waiting[c])
            stamp = state.waiting.pop(cam)
            s = latency_ms[level] * load
            if rng is not None and sigma[level] > 0:
                s *= float(np.exp(rng.normal(0.0, sigma[level])))
            service.append(s)
            state.busy_until = max(now, state.busy_until) + s / 1000.0
            state.in_service = (cam, stamp, level)

    def finish_until(now: float) -> None:
        nonlocal processed, late
        while state.in_service is not None and state.busy_until <= now + 1e-12:
            cam, stamp, lv = state.in_service
            done = state.busy_until
            state.in_service = None
            processed += 1
            if done - stamp > period + 1e-12:
                late += 1
            hist = state.outputs.setdefault(cam, [])
            hist.append((stamp, done, lv))
            del hist[:-16]
            start_next(done)

    for t, kind, cam in timeline:
        finish_until(t)
        if kind == 1:
            arrived += 1
            if cam in state.waiting:
                dropped += 1  # keep-newest: the waiting frame is overwritten
            state.waiting[cam] = t
            start_next(t)
            continue
        instant = t - period
        scored += 1
        # the output available last by t among this camera's outputs of input stamp <= instant
        used = None
        for stamp, done, lv in state.outputs.get(cam, []):
            if stamp <= instant + 1e-12 and done <= t + 1e-12 and (used is None or done >= used[1]):
                used = (stamp, done, lv)
        if used is not None:
            st = instant - used[0]
            score += float(accuracy[used[2]]) * staleness_retention(st, curve)
            stale.append(st)
            answered += 1
    return WindowResult(score / scored if scored else 0.0, arrived, processed, dropped, late, answered, scored,
                        1000.0 * float(np.mean(stale)) if stale else 0.0,
                        float(np.mean(service)) if service else 0.0)
