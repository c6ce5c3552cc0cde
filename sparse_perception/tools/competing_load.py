"""A competing process: a second camera's inference beside the node, on the same CPU cores.

The compute budget the condition policy is trained for (``pruning-tools train-policy``'s
``budget``: two cameras at 10 Hz on one machine) needs a second consumer of the cores during a
replay. This process is that consumer, real and stated: it loads one ONNX artifact of the zoo
(default the dense level, ``selected`` for ONNX Runtime) and runs it on a fresh random frame of the
artifact's input size at ``--rate`` Hz (a camera; a frame that cannot start on time starts as soon
as the previous one ends, nothing is queued), with ``--threads`` intra-op threads, until SIGINT or
SIGTERM; then prints one JSON line ``{"frames", "mean_ms", "p50_ms", "rate_hz", "level", ...}``.

    python -m sparse_perception.tools.competing_load --manifest ZOO/manifest.json [--level dense] \\
        [--rate 10] [--threads 1]

``--rate 0`` runs back to back (a saturating load). Only ONNX Runtime and numpy are used (no rclpy).

A load that changes over a drive (the policy's budget: a competing process whose demand comes and goes
in segments) is a ``--schedule`` of ``SECONDS:RATE`` segments, RATE in Hz, ``0`` back to back or
``off`` (idle)::

    python -m sparse_perception.tools.competing_load --manifest ZOO/manifest.json --threads 2 \
        --schedule 4:off,5:0,6.5:off

With a schedule the process loads its session, prints ``competing_load: running`` and idles until it
receives SIGUSR1; each SIGUSR1 starts the schedule from its first segment (a replay harness sends one
as each pass's first frame is published, so every pass meets the same load at the same drive time);
after the last segment it idles until the next SIGUSR1. The JSON line then also has ``segments``
(frames and mean ms per segment, summed over the starts) and ``starts``.
"""
from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LoadSchedule:
    """Segments ``(seconds, rate)`` of a changing load; rate in Hz, 0 back to back, None idle."""

    segments: tuple[tuple[float, float | None], ...]

    @classmethod
    def parse(cls, text: str) -> "LoadSchedule":
        """``"4:off,5:0,6.5:off"`` -> segments.

        :raises ValueError: an empty schedule, a malformed segment, a duration <= 0 or a negative rate (named).
        """
        segs: list[tuple[float, float | None]] = []
        for part in (p.strip() for p in str(text).split(",")):
            secs, sep, rate = part.partition(":")
            try:
                if not sep:
                    raise ValueError
                dur = float(secs)
                hz = None if rate.strip().lower() == "off" else float(rate)
            except ValueError:
                raise ValueError(f"schedule segment {part!r}: want SECONDS:RATE (RATE in Hz, 0 back to back, "
                                 f"'off' idle)") from None
            if not (math.isfinite(dur) and dur > 0) or (hz is not None and not (math.isfinite(hz) and hz >= 0)):
                raise ValueError(f"schedule segment {part!r}: seconds must be > 0 and the rate >= 0 Hz or 'off'")
            segs.append((dur, hz))
        if not segs:
            raise ValueError("empty schedule")
        return cls(tuple(segs))

    @property
    def duration_s(self) -> float:
        return float(sum(d for d, _ in self.segments))

    def at(self, t: float) -> tuple[int, float | None]:
        """``(segment index, rate)`` at ``t`` seconds after a start; ``(-1, None)`` past the end (idle)."""
        edge = 0.0
        for i, (dur, hz) in enumerate(self.segments):
            edge += dur
            if t < edge:
                return i, hz
        return -1, None

    def describe(self) -> str:
        return ", ".join(f"{d:g} s {'idle' if hz is None else 'back to back' if hz == 0 else f'at {hz:g} Hz'}"
                         for d, hz in self.segments)


def run_load(manifest: Path, level: str | None = None, rate_hz: float = 10.0, threads: int = 1,
             duration_s: float = 0.0, stop: Any = None, schedule: LoadSchedule | None = None,
             started: Any = None) -> dict[str, Any]:
    """Run the load until ``stop()`` is true (or ``duration_s`` passed when > 0); :return: its figures.

    :param schedule: a changing load instead of ``rate_hz``: idle until ``started()`` returns a new start
        time (``time.monotonic()`` of a start; a later value restarts the schedule), then its segments.
    :raises ValueError: unknown level, a non-ONNX artifact, a negative rate or threads < 1.
    """
    import onnxruntime as ort

    from sparse_perception.runtime.zoo import load_manifest

    if rate_hz < 0 or threads < 1:
        raise ValueError(f"rate must be >= 0 and threads >= 1, got rate {rate_hz}, threads {threads}")
    if schedule is not None and started is None:
        raise ValueError("a schedule needs a start trigger (started)")
    m = load_manifest(manifest)
    levels = m.levels("onnxruntime")
    if not levels:
        raise ValueError(f"{manifest}: no ONNX Runtime artifact to run as a competing load")
    level = level or levels[0]
    if level not in levels:
        raise ValueError(f"{manifest}: level {level!r} has no ONNX Runtime artifact (have {levels})")
    art = m.select(level, "onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(art.path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(0)
    shape = tuple(int(x) for x in art.input_shape)
    times: list[float] = []
    per_segment: list[list[float]] = [[] for _ in (schedule.segments if schedule else ())]
    t_start = time.monotonic()
    next_due = t_start
    stop = stop or (lambda: False)
    begun: float | None = None  # the schedule's current start
    starts = 0
    while not stop() and not (duration_s > 0 and time.monotonic() - t_start >= duration_s):
        now = time.monotonic()
        seg, rate = -1, rate_hz
        if schedule is not None:
            s0 = started()
            if s0 is not None and s0 != begun:
                begun, starts, next_due = s0, starts + 1, now
            seg, rate = schedule.at(now - begun) if begun is not None else (-1, None)
            if rate is None:  # idle (before a start, an 'off' segment, past the end)
                time.sleep(0.005)
                next_due = now
                continue
        if now < next_due:
            time.sleep(min(next_due - now, 0.005 if schedule is not None else 0.05))
            continue
        x = rng.random(shape, dtype=np.float32)
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        ms = (time.perf_counter() - t0) * 1e3
        times.append(ms)
        if seg >= 0:
            per_segment[seg].append(ms)
        period = 1.0 / rate if rate > 0 else 0.0
        next_due = max(next_due + period, time.monotonic()) if period else time.monotonic()
    wall = time.monotonic() - t_start
    out = {"frames": len(times), "wall_s": round(wall, 3), "achieved_hz": len(times) / wall if wall > 0 else 0.0,
           "mean_ms": float(np.mean(times)) if times else None, "p50_ms": float(np.median(times)) if times else None,
           "rate_hz": None if schedule is not None else rate_hz, "threads": threads, "level": level,
           "artifact": str(art.path), "input_shape": list(shape)}
    if schedule is not None:
        out.update(schedule=schedule.describe(), starts=starts, segments=[
            {"seconds": d, "rate_hz": hz, "frames": len(ts), "mean_ms": float(np.mean(ts)) if ts else None}
            for (d, hz), ts in zip(schedule.segments, per_segment)])
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: run until SIGINT/SIGTERM, then print the figures as one JSON line."""
    ap = argparse.ArgumentParser(prog="competing_load", description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True, help="engine zoo manifest.json")
    ap.add_argument("--level", help="level to run (default: the zoo's first ONNX level, usually dense)")
    ap.add_argument("--rate", type=float, default=10.0, help="frames per second (default 10; 0 = back to back)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    ap.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (default 0: until a signal)")
    ap.add_argument("--schedule", help="SECONDS:RATE segments, e.g. 4:off,5:0,6.5:off (RATE Hz, 0 back to back, "
                                       "off idle); each SIGUSR1 starts them (instead of --rate)")
    a = ap.parse_args(argv)
    stopped = {"v": False}
    start = {"t": None}

    def on_signal(_sig: int, _frm: Any) -> None:
        stopped["v"] = True

    def on_start(_sig: int, _frm: Any) -> None:
        start["t"] = time.monotonic()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGUSR1, on_start)
    try:
        schedule = LoadSchedule.parse(a.schedule) if a.schedule else None
        print("competing_load: running" + (f" (schedule: {schedule.describe()}; waiting for SIGUSR1)"
                                           if schedule else ""), flush=True)
        res = run_load(a.manifest, a.level, a.rate, a.threads, a.duration, stop=lambda: stopped["v"],
                       schedule=schedule, started=lambda: start["t"])
    except (ValueError, FileNotFoundError) as exc:
        print(f"competing_load: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
