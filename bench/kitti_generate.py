"""Scene generator throughput: frames/s of ``generate_dataset`` including PNG/label writing (medians).

Runs per-frame mode (all nine conditions mixed) and sequence mode, each a few times, on one core
by default (OpenCV limited to one thread), and reports wall-clock and CPU-time frames/s.

Usage: ``python bench/kitti_generate.py [--quick] [--threads N] --json OUT``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))



def _run(out: Path, frames: int, sequence: bool, seed: int) -> tuple[float, float]:
    from pruning_tools.kitti.generator import generate_dataset

    w0, c0 = time.perf_counter(), time.process_time()
    generate_dataset(out, frames, seed=seed, sequence=sequence, segment_frames=10, progress=False)
    return time.perf_counter() - w0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    ap.add_argument("--threads", type=int, default=1, help="OpenCV threads (1 = per-core figure)")
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)
    import cv2

    cv2.setNumThreads(args.threads)
    frames = 18 if args.quick else 60
    runs = 2 if args.quick else 3
    res: dict = {"frames_per_run": frames, "runs": runs, "opencv_threads": args.threads}
    with tempfile.TemporaryDirectory() as d:
        _run(Path(d) / "warm", 3, False, 0)  # imports, caches
        for mode, seq in (("per_frame", False), ("sequence", True)):
            walls, cpus = [], []
            for r in range(runs):
                out = Path(d) / f"{mode}_{r}"
                wall, cpu = _run(out, frames, seq, r)
                walls.append(wall)
                cpus.append(cpu)
                size = sum(p.stat().st_size for p in (out / "training" / "image_2").iterdir())
                shutil.rmtree(out)
            res[mode] = {"fps_wall_median": frames / statistics.median(walls),
                         "fps_cpu_median": frames / statistics.median(cpus),
                         "ms_per_frame_wall_median": statistics.median(walls) / frames * 1e3,
                         "png_mb_per_frame": size / frames / 1e6}
    from sparse_perception.runtime.machine import machine_info

    res["machine"] = machine_info()
    res["quick"] = args.quick
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
