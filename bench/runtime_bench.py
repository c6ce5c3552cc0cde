"""Runtime micro-benchmark at 384x1248: letterbox, decode+NMS, EnginePool swap (medians).

Decode runs on as many predictions as the node's head gives (9,828 at 384x1248: one per cell at
strides 8/16/32, anchor-free) with the node's default thresholds.

Usage: ``python bench/runtime_bench.py [--quick] --json OUT``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_report.py, also for a test loading this file
from _report import write_result  # noqa: E402


def head_predictions(imgsz: tuple[int, int], strides: tuple[int, ...] = (8, 16, 32)) -> int:
    """Predictions of an Ultralytics (anchor-free) detect head: one per cell of each stride's grid."""
    return sum((imgsz[0] // s) * (imgsz[1] // s) for s in strides)


def _median_ms(fn, runs: int) -> float:
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)
    from runtime_models import tiny_zoo
    from sparse_perception.runtime.postprocess import decode, letterbox
    from sparse_perception.node.node_config import NodeConfig
    from sparse_perception.runtime.engine_pool import EnginePool, RuntimeConfig

    runs = 30 if args.quick else 200
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (375, 1242, 3), np.uint8)
    _, info = letterbox(img)
    n = head_predictions((384, 1248))  # what the node's Ultralytics head outputs: 9,828 at 384x1248
    raw = np.zeros((1, 7, n), np.float32)
    raw[0, 0] = rng.uniform(0, 1248, n)
    raw[0, 1] = rng.uniform(0, 384, n)
    raw[0, 2:4] = rng.uniform(5, 100, (2, n))
    raw[0, 4:] = rng.uniform(0, 0.3, (3, n)) ** 2
    raw[0, 4:, rng.choice(n, 200, replace=False)] = rng.uniform(0.3, 1.0, (3, 200)).T
    node = NodeConfig(model_path="node.onnx")  # the node defaults: conf 0.25, IoU 0.45, max 300 detections
    res = {"letterbox_ms": _median_ms(lambda: letterbox(img), runs),
           "decode_nms_ms_node_defaults": _median_ms(lambda: decode(raw, node.confidence_threshold, node.iou_threshold,
                                                                    node.max_detections, info), runs),
           "node_defaults": {"conf": node.confidence_threshold, "iou": node.iou_threshold,
                             "max_det": node.max_detections},
           "decode_nms_ms_conf0.001": _median_ms(lambda: decode(raw, 0.001, 0.6, 300, info), max(5, runs // 5)),
           "predictions": n}
    with tempfile.TemporaryDirectory() as d:
        pool = EnginePool.from_manifest(tiny_zoo(Path(d)), cfg=RuntimeConfig(warmup_runs=0, threads=1))
        swaps = [pool.swap(lv) for _ in range(runs) for lv in ("s75", "dense")]
        res["swap_ms_median"] = statistics.median(swaps)
        res["swap_ms_max"] = max(swaps)
        pool.close()
    res["quick"] = args.quick
    write_result(args.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
