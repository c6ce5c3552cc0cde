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
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def run_load(manifest: Path, level: str | None = None, rate_hz: float = 10.0, threads: int = 1,
             duration_s: float = 0.0, stop: Any = None) -> dict[str, Any]:
    """Run the load until ``stop()`` is true (or ``duration_s`` passed when > 0); :return: its figures.

    :raises ValueError: unknown level, a non-ONNX artifact, a negative rate or threads < 1.
    """
    import onnxruntime as ort

    from sparse_perception.runtime.zoo import load_manifest

    if rate_hz < 0 or threads < 1:
        raise ValueError(f"rate must be >= 0 and threads >= 1, got rate {rate_hz}, threads {threads}")
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
    period = 1.0 / rate_hz if rate_hz > 0 else 0.0
    t_start = time.monotonic()
    next_due = t_start
    stop = stop or (lambda: False)
    while not stop() and not (duration_s > 0 and time.monotonic() - t_start >= duration_s):
        now = time.monotonic()
        if now < next_due:
            time.sleep(min(next_due - now, 0.05))
            continue
        x = rng.random(shape, dtype=np.float32)
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t0) * 1e3)
        next_due = max(next_due + period, time.monotonic()) if period else time.monotonic()
    wall = time.monotonic() - t_start
    return {"frames": len(times), "wall_s": round(wall, 3), "achieved_hz": len(times) / wall if wall > 0 else 0.0,
            "mean_ms": float(np.mean(times)) if times else None, "p50_ms": float(np.median(times)) if times else None,
            "rate_hz": rate_hz, "threads": threads, "level": level, "artifact": str(art.path),
            "input_shape": list(shape)}


def main(argv: list[str] | None = None) -> int:
    """CLI: run until SIGINT/SIGTERM, then print the figures as one JSON line."""
    ap = argparse.ArgumentParser(prog="competing_load", description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True, help="engine zoo manifest.json")
    ap.add_argument("--level", help="level to run (default: the zoo's first ONNX level, usually dense)")
    ap.add_argument("--rate", type=float, default=10.0, help="frames per second (default 10; 0 = back to back)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    ap.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (default 0: until a signal)")
    a = ap.parse_args(argv)
    stopped = {"v": False}

    def on_signal(_sig: int, _frm: Any) -> None:
        stopped["v"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        print("competing_load: running", flush=True)
        res = run_load(a.manifest, a.level, a.rate, a.threads, a.duration, stop=lambda: stopped["v"])
    except (ValueError, FileNotFoundError) as exc:
        print(f"competing_load: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
