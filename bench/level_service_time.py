"""The node's own per-frame engine time per level, quiet and beside a competing process, timed interleaved.

What the condition policy's simulator needs as service times (``pruning-tools train-policy --latency-json``):
the time the detector node's engine takes per frame at each level — ``EnginePool.detect`` as the node's image
callback calls it (letterbox to the zoo's input, ONNX Runtime, decode + NMS; the ``total_ms`` the node
reports as its inference time) — on real camera frames, and how much a competing process slows it (the
budget's load factor, measured instead of assumed). All levels of one pool, round-robin, in one process:

1. *quiet*: ``--runs`` rounds over the levels, the node's engine alone;
2. *loaded*: the same with :mod:`sparse_perception.tools.competing_load` running the zoo's dense level back
   to back with ``--load-threads`` threads (the heavy segment of ``bench/streaming_replay.py
   --load-schedule``).

Writes the JSON (per level: median / p95 quiet and loaded, the loaded/quiet factor) and, with
``--latency-json``, the quiet figures as ``{level: {"median": ms, "p95": ms}}`` for ``train-policy``.

    python bench/level_service_time.py --zoo ZOO/manifest.json --json OUT.json --latency-json LAT.json \\
        [--frames ../shared/data/kitti_tracking/training/image_02/0000] [--runs 30] [--load-threads 2]

Frames: the KITTI tracking sequence's PNGs where present (real 1242x375 camera frames), otherwise random
frames of that size (said in the JSON).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_block, module_versions, write_result  # noqa: E402

DEFAULT_FRAMES = REPO.parent / "shared" / "data" / "kitti_tracking" / "training" / "image_02" / "0000"


def _frames(folder: Path, count: int) -> tuple[list[np.ndarray], str]:
    files = sorted(folder.glob("*.png"))[:count] if folder.is_dir() else []
    if files:
        from pruning_tools.data.kitti_io import read_image

        return [read_image(f) for f in files], f"real KITTI camera frames: {len(files)} PNGs of {folder}"
    rng = np.random.default_rng(0)
    return ([rng.integers(0, 256, (375, 1242, 3), dtype=np.uint8) for _ in range(count)],
            f"random 1242x375 frames ({folder} absent)")


def _time_levels(pool, levels: list[str], frames: list[np.ndarray], warmup: int,
                 runs: int) -> dict[str, list[float]]:
    """The project's interleaved timing (:func:`pruning_tools.train.measure.round_robin`) over the levels; every
    level sees the same frame in a round. :return: per level the ``runs`` figures of ``timing["total_ms"]``
    (what the node reports as its inference time), warm-up calls left out."""
    from pruning_tools.train.measure import round_robin

    totals: dict[str, list[float]] = {lv: [] for lv in levels}

    def call(lv: str):  # noqa: ANN202 - a zero-argument callable for round_robin
        def run() -> None:
            img = frames[len(totals[lv]) % len(frames)]
            pool.swap(lv)
            totals[lv].append(float(pool.detect(img).timing["total_ms"]))
        return run

    round_robin([call(lv) for lv in levels], warmup, runs)
    return {lv: ts[warmup:] for lv, ts in totals.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", type=Path, required=True, help="engine zoo manifest.json")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "level_service_time.json")
    p.add_argument("--latency-json", type=Path, help="also write the quiet figures for train-policy --latency-json")
    p.add_argument("--frames", type=Path, default=DEFAULT_FRAMES, help="folder of camera PNGs")
    p.add_argument("--runs", type=int, default=30, help="rounds per phase (>= 20; default 30)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="the node's inference threads (default 2)")
    p.add_argument("--load-threads", type=int, default=2, help="competing process threads (default 2)")
    p.add_argument("--no-load", action="store_true", help="quiet phase only")
    a = p.parse_args(argv)
    if a.runs < 20:
        p.error("--runs must be >= 20 (medians of at least 20 runs)")
    from sparse_perception.runtime.engine_pool import EnginePool, RuntimeConfig
    from sparse_perception.tools.testing import ManagedProcess, python_cmd

    machine = machine_block()
    pool = EnginePool.from_manifest(a.zoo, cfg=RuntimeConfig(threads=a.threads))
    levels = pool.levels()
    frames, data = _frames(a.frames, a.warmup + a.runs)
    phases = {"quiet": _time_levels(pool, levels, frames, a.warmup, a.runs)}
    load_stats = None
    if not a.no_load:
        load = ManagedProcess(python_cmd("-m", "sparse_perception.tools.competing_load", "--manifest", str(a.zoo),
                                         "--rate", "0", "--threads", str(a.load_threads)))
        try:
            if not load.wait_for_output("competing_load: running", 60):
                raise SystemExit(f"competing load did not start:\n{load.output()[-2000:]}")
            time.sleep(1.0)
            phases["loaded"] = _time_levels(pool, levels, frames, a.warmup, a.runs)
        finally:
            load.stop(timeout=10)
        tail = load.output().strip().splitlines()
        load_stats = tail[-1] if tail else None
    pool.close()

    def stats(xs: list[float]) -> dict[str, float]:
        return {"median": float(np.median(xs)), "p95": float(np.percentile(xs, 95)), "n": len(xs)}

    table = {lv: {ph: stats(t[lv]) for ph, t in phases.items()} for lv in levels}
    dense = levels[0]
    for lv, row in table.items():
        row["speedup_vs_dense_quiet"] = table[dense]["quiet"]["median"] / row["quiet"]["median"]
        if "loaded" in row:
            row["load_factor"] = row["loaded"]["median"] / row["quiet"]["median"]
    if a.latency_json:
        lat = {lv: {"median": row["quiet"]["median"], "p95": row["quiet"]["p95"],
                    "source": "bench/level_service_time.py: EnginePool.detect total_ms, quiet, interleaved"}
               for lv, row in table.items()}
        from pruning_tools.data.files import atomic_write_text, strict_dumps

        a.latency_json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(a.latency_json, strict_dumps(lat, indent=2) + "\n")
    out = {"machine": machine, "versions": module_versions("numpy", "onnxruntime"), "zoo": str(a.zoo),
           "data": data, "threads": a.threads, "runs": a.runs, "levels": levels, "table": table,
           "competing_load": None if a.no_load else {"level": dense, "rate": "back to back",
                                                     "threads": a.load_threads, "result": load_stats},
           "metric": "EnginePool.detect total_ms (letterbox + ONNX Runtime + decode/NMS), the node's inference_ms; "
                     "all levels round-robin in one process (measure.round_robin: order rotated each round), medians"}
    lines = [f"{lv}: quiet {row['quiet']['median']:.1f} ms (p95 {row['quiet']['p95']:.1f})"
             + (f", loaded {row['loaded']['median']:.1f} ms (x{row['load_factor']:.2f})" if "loaded" in row else "")
             + f", speed-up vs {dense} x{row['speedup_vs_dense_quiet']:.2f}" for lv, row in table.items()]
    write_result(a.json, out, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
