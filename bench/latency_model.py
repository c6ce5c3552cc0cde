#!/usr/bin/env python3
"""How well does the latency model predict what pruned networks really cost? Predicted vs measured.

For each precision (ONNX Runtime CPU, FP32 and INT8 QDQ): the latency model of the shipped baseline
(:mod:`pruning_tools.quant.latency`: per-conv tables over kept input/output channels, from the cache
or measured now), then in ONE process, round-robin (every session warmed up, each round times one
inference of every model, order rotated; medians of ``--runs``): the dense network, the calibration
networks (dense, uniform 30 % / 60 %, ``--calibrate`` random ones) and ``--models`` evaluation
networks the fit never sees — half solved to random speed-ups x1.2..x3.5 from random per-layer
weights (what the strategies produce), half raw random per-layer ratios. The model's offset and
scale are fitted on the calibration networks only; the evaluation networks give the Spearman rank
correlation of predicted vs measured latency and the median relative error, of the latency (ms) and of
the speed-up over the dense network of the same round-robin (what levels are made of).

    .venv/bin/python bench/latency_model.py --quick --json bench/results/latency_model.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_block, spearman, write_result  # noqa: E402

TARGETS = {"spearman": 0.9, "median_rel_error": 0.10}


def evaluation_vectors(space, lm, n: int, seed: int, max_ratio: float = 0.9) -> dict:
    """``n`` ratio vectors: half solved to random speed-ups from random weights, half raw random ratios."""
    import numpy as np

    from pruning_tools.quant.latency import speedup_level

    rng = np.random.default_rng(seed)
    out = {}
    saved = space.metric, space.latency
    space.metric, space.latency = "latency", lm
    try:
        for k in range(n):
            if k % 2 == 0:
                x = float(rng.uniform(1.2, 3.5))
                target = min(speedup_level(x), space.max_sparsity(max_ratio) - 0.01)
                out[f"solved{k}_x{x:.2f}"] = space.solve(rng.uniform(0.05, 1.0, len(space)), target, max_ratio)
            else:
                out[f"random{k}"] = rng.uniform(0.0, 0.85, len(space)) * rng.uniform(0.3, 1.0)
    finally:
        space.metric, space.latency = saved
    return out


def op_profile(path: Path, imgsz: tuple[int, int], threads: int, runs: int = 10) -> dict:
    """Where the time goes: ONNX Runtime's profiler on one model, kernel time per operator type
    (ms per inference, the graph as ONNX Runtime runs it after fusion)."""
    import collections
    import json as _json
    import tempfile as _tempfile

    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.log_severity_level = 3
    so.enable_profiling = True
    with _tempfile.TemporaryDirectory(prefix="sp_prof_") as tmp:
        so.profile_file_prefix = str(Path(tmp) / "prof")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random((1, 3, *imgsz)).astype(np.float32)
        for _ in range(runs):
            sess.run(None, {sess.get_inputs()[0].name: x})
        events = _json.loads(Path(sess.end_profiling()).read_text())
    per: collections.Counter = collections.Counter()
    nodes: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            per[op] += e["dur"]
            nodes[op] += 1
    total = sum(per.values()) / runs / 1e3
    return {"kernel_ms": round(total, 3), "ops": {op: {"ms": round(d / runs / 1e3, 3), "nodes": nodes[op] // runs,
                                                        "share": round(d / runs / 1e3 / total, 4)}
                                                   for op, d in per.most_common(10)}}


def profiles(dense, space, precisions: list[str], a: argparse.Namespace) -> dict:
    """:func:`op_profile` of dense and of uniform 60 % pruning at each precision."""
    import tempfile as _tempfile

    import numpy as np

    from pruning_tools.quant.latency import export_for_timing, pruned_copy

    out = {}
    with _tempfile.TemporaryDirectory(prefix="sp_prof_models_") as tmp:
        for name, model in (("dense", dense), ("uniform60", pruned_copy(dense, space, np.full(len(space), 0.6)))):
            for prec in precisions:
                path = export_for_timing(model, Path(tmp) / f"{name}_{prec}.onnx", tuple(a.imgsz), prec)
                out[f"{name}_{prec}"] = op_profile(path, tuple(a.imgsz), a.threads)
    return out


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)


def run_precision(dense, space, precision: str, a: argparse.Namespace, log) -> dict:
    import numpy as np

    from pruning_tools.quant.latency import LatencyModel, LatencyTable, calibration_vectors, time_models

    table = LatencyTable.cached(precision, a.threads, a.cache_dir)
    lm = LatencyModel(space, table, a.grid)
    t0 = time.monotonic()
    measured_blocks = table.measure(lm.blocks(), progress=not a.no_progress, cache_dir=a.cache_dir)
    table_s = time.monotonic() - t0
    cal = calibration_vectors(space, a.calibrate, a.seed)
    lm.offset, lm.scale = 0.0, 1.0  # provisional (block sums) to solve the evaluation vectors; fitted below
    ev = evaluation_vectors(space, lm, a.models, a.seed + 1)
    vecs = {**{f"cal_{k}": v for k, v in cal.items()}, **ev}
    log(f"{precision}: {len(vecs)} networks round-robin, {a.runs} runs each")
    t0 = time.monotonic()
    ms = time_models(dense, space, vecs, tuple(a.imgsz), precision, a.threads, a.runs, a.warmup, log=log)
    timing_s = time.monotonic() - t0
    calib = lm.fit([(cal[k], ms[f"cal_{k}"]) for k in cal])
    dense_ms = ms["cal_dense"]
    rows = []
    for k, v in ev.items():
        pred = lm.predict(v)
        rows.append({"name": k, "predicted_ms": round(pred, 3), "measured_ms": ms[k],
                     "predicted_speedup": round(lm.dense_ms / pred, 4), "measured_speedup": round(dense_ms / ms[k], 4),
                     "param_sparsity": round(space.param_sparsity(v), 4)})
    p = np.array([r["predicted_ms"] for r in rows])
    m = np.array([r["measured_ms"] for r in rows])
    ps = np.array([r["predicted_speedup"] for r in rows])
    mss = np.array([r["measured_speedup"] for r in rows])
    res = {"precision": precision, "blocks": len(lm.blocks()), "blocks_measured_now": measured_blocks,
           "table_s": round(table_s, 1), "timing_s": round(timing_s, 1), "table_cache": str(table.path(a.cache_dir)),
           "calibration": calib, "dense_measured_ms": dense_ms, "dense_predicted_ms": round(lm.dense_ms, 3),
           "spearman": _round(spearman(list(p), list(m))),
           "median_rel_error": round(float(np.median(np.abs(p - m) / m)), 4),
           "speedup_spearman": _round(spearman(list(ps), list(mss))),
           "speedup_median_rel_error": round(float(np.median(np.abs(ps - mss) / mss)), 4),
           "measured_speedup_range": [round(float(mss.min()), 3), round(float(mss.max()), 3)], "models": rows}
    res["targets_met"] = {"spearman": res["spearman"] is not None and res["spearman"] >= TARGETS["spearman"],
                          "median_rel_error": res["median_rel_error"] <= TARGETS["median_rel_error"]}
    return res


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.4), squeeze=False)
    for ax, r in zip(axes[0], results):
        m = [x["measured_ms"] for x in r["models"]]
        p = [x["predicted_ms"] for x in r["models"]]
        lo, hi = min(m + p) * 0.9, max(m + p) * 1.1
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="predicted = measured")
        ax.scatter(m, p, s=18, label="evaluation networks")
        ax.set_xlabel("measured (ms, interleaved, median)")
        ax.set_ylabel("predicted (ms)")
        ax.set_title(f"{r['precision']}: Spearman {r['spearman']:.2f}, median error {r['median_rel_error']:.1%}",
                     fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Latency model vs measured, ONNX Runtime CPU (shipped baseline, random pruned networks)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="20 evaluation networks, 20 runs (a few minutes)")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "latency_model.json")
    p.add_argument("--model", type=Path, default=REPO / "pruning_tools" / "assets" / "baseline_yolov5n.pt")
    p.add_argument("--precision", nargs="+", choices=("fp32", "int8"), default=["fp32", "int8"])
    p.add_argument("--imgsz", type=int, nargs=2, default=(384, 1248))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--round-to", type=int, default=16)
    p.add_argument("--grid", type=int, default=5, help="table points per channel axis of each conv")
    p.add_argument("--models", type=int, default=None, help="evaluation networks (>= 20; default 20, 30 full)")
    p.add_argument("--calibrate", type=int, default=3, help="random calibration networks (plus dense, 2 uniform)")
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None, help="latency table cache (default ~/.cache/sparse_perception/latency)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-profile", action="store_true", help="skip the per-operator profile of dense and uniform 60 %%")
    a = p.parse_args(argv)
    a.models = a.models or (20 if a.quick else 30)
    a.runs = a.runs or (20 if a.quick else 40)

    import torch

    from pruning_tools import ultralytics_adapter as ua
    from pruning_tools.surgery.channels import PruningSpace

    torch.set_num_threads(a.threads)
    machine = machine_block()
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(f"[latency_model {time.monotonic() - t0:6.1f}s] {msg}", flush=True)

    dense, _ = ua.load_checkpoint(a.model)
    dense.eval()
    space = PruningSpace(dense, tuple(a.imgsz), a.round_to)
    results = [run_precision(dense, space, prec, a, log) for prec in a.precision]
    prof = None if a.no_profile else profiles(dense, space, a.precision, a)
    png = a.json.with_suffix(".png")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    plot(results, png)
    out = {"bench": "latency_model", "model": str(a.model), "imgsz": list(a.imgsz), "threads": a.threads,
           "round_to": a.round_to, "grid": a.grid, "runs": a.runs, "warmup": a.warmup, "quick": a.quick,
           "targets": TARGETS, "how": "one process, every network round-robin (order rotated per round), medians; "
                                      "offset/scale fitted on the calibration networks only",
           "results": results, "op_profile": prof, "plot": png.name, "machine": machine, "wall_s": round(time.monotonic() - t0, 1)}
    summary = "\n".join(
        f"{r['precision']}: Spearman {r['spearman']:.3f} (target >= 0.9), median error {r['median_rel_error']:.1%} "
        f"(<= 10 %); speed-up: Spearman {r['speedup_spearman']:.3f}, median error "
        f"{r['speedup_median_rel_error']:.1%}; measured speed-ups {r['measured_speedup_range']}" for r in results)
    write_result(a.json, out, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
