#!/usr/bin/env python3
"""Does structured pruning make the model faster? ONNX Runtime CPU latency, dense vs pruned.

In one run: load the shipped baseline, prune it uniformly (structured: channels physically
removed, torch-pruning) to 50/75/90 % parameter sparsity and, for contrast, zero the same
fraction of weights (unstructured); export each to ONNX; measure ONNX Runtime CPU latency at
384x1248 with every model round-robin in one process (all sessions warmed up, then each round
times one inference of every model, order rotated per round; medians of >= 20 runs). Per level:
latency ratio dense/pruned, FLOPs ratio and their quotient (latency ratio / FLOPs ratio).

A structured latency ratio more than 10 % above its FLOPs ratio is not a real speed-up but noise
(a model cannot run faster than its arithmetic shrinks here): the bench then says the machine was
too noisy and measures all models again (``--attempts``); the JSON keeps every attempt.

    .venv/bin/python bench/prune_speed.py --quick --json bench/results/prune_speed.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGETS = {0.5: 1.8, 0.75: 3.0, 0.9: 4.5}
#: a structured latency ratio above this multiple of its FLOPs ratio is measurement noise
NOISE_LIMIT = 1.1


def machine_info() -> dict[str, object]:
    from sparse_perception.runtime.machine import machine_info as info

    return info()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer timed runs (20; about a minute)")
    p.add_argument("--attempts", type=int, default=3, help="measurements when the machine is too noisy")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "prune_speed.json")
    p.add_argument("--model", type=Path, default=REPO / "pruning_tools" / "assets" / "baseline_yolov5n.pt")
    p.add_argument("--levels", type=float, nargs="+", default=[0.5, 0.75, 0.9])
    p.add_argument("--imgsz", type=int, nargs=2, default=(384, 1248))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--round-to", type=int, default=16, help="kept channels are multiples of this")
    p.add_argument("--metric", choices=("params", "flops"), default="params",
                   help="what the levels are fractions of (structured); unstructured always zeroes weights")
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    a = p.parse_args(argv)

    import torch

    from pruning_tools import ultralytics_adapter as ua
    from pruning_tools.measure import count_flops, interleaved_latency
    from pruning_tools.pruning import PruningSpace, apply_ratios, unstructured_prune

    torch.set_num_threads(a.threads)
    runs = a.runs or (20 if a.quick else 40)
    warmup = a.warmup if a.warmup is not None else (3 if a.quick else 10)
    imgsz = (int(a.imgsz[0]), int(a.imgsz[1]))
    if a.model.is_file():
        model, _ = ua.load_checkpoint(a.model)
        source = str(a.model.relative_to(REPO) if a.model.is_relative_to(REPO) else a.model)
    else:
        print(f"note: {a.model} missing; using a freshly built yolov5n (latency does not depend on weights)")
        model, source = ua.build_model("yolov5n.yaml", 3).eval(), "build_model('yolov5n.yaml')"
    space = PruningSpace(model, imgsz, round_to=a.round_to, metric=a.metric)
    t0 = time.monotonic()
    out: dict[str, object] = {"benchmark": "prune_speed", "model": source, "imgsz": list(imgsz),
                              "threads": a.threads, "round_to": a.round_to, "metric": a.metric, "runs": runs, "warmup": warmup, "timing": "interleaved round-robin in one process, medians",
                              "machine": machine_info(),
                              "sparsity_definition": "fraction of the dense model's parameters removed (structured)"
                                                     " / zeroed (unstructured, prunable convs)"}
    with tempfile.TemporaryDirectory(prefix="prune_speed_") as tmp:
        paths: dict[str, Path] = {}
        stats: dict[str, dict[str, float]] = {}

        def export(m: torch.nn.Module, name: str) -> None:
            path = Path(tmp) / f"{name}.onnx"
            ua.export_onnx(m, path, imgsz=imgsz, class_names=ua.class_names(m))
            gflops, params = count_flops(m, imgsz)
            paths[name] = path
            stats[name] = {"gflops": round(gflops, 4), "params": params, "onnx_bytes": path.stat().st_size}

        export(model, "dense")
        levels = []
        from pruning_tools.pruning import PruningError

        for lv in a.levels:
            try:
                ratios = space.uniform(lv, max_ratio=0.95)
            except PruningError as exc:
                print(f"level {lv}: {exc}")
                levels.append({"level": lv, "error": str(exc)})
                continue
            s = copy.deepcopy(model)
            apply_ratios(s, space, ratios)
            export(s, f"structured_{int(lv * 100)}")
            export(unstructured_prune(copy.deepcopy(model), lv), f"unstructured_{int(lv * 100)}")
            levels.append({"level": lv, "layer_ratios_uniform": sorted({round(float(r), 4) for r in ratios})})
        attempts = []
        for attempt in range(1, a.attempts + 1):
            lat = interleaved_latency(paths, imgsz, a.threads, warmup, runs)
            noisy = []
            for lv in levels:
                if "error" in lv:
                    continue
                k = f"structured_{int(lv['level'] * 100)}"
                lr = lat["dense"]["median_ms"] / lat[k]["median_ms"]
                fr = stats["dense"]["gflops"] / stats[k]["gflops"]
                if lr > NOISE_LIMIT * fr:
                    noisy.append(f"{k}: latency ratio {lr:.2f} > {NOISE_LIMIT:.1f} x FLOPs ratio {fr:.2f}")
            attempts.append({"attempt": attempt, "medians_ms": {k: v["median_ms"] for k, v in lat.items()},
                             "too_noisy": noisy})
            if not noisy:
                break
            print(f"attempt {attempt}: machine too noisy ({'; '.join(noisy)}); measuring again", flush=True)
        out["attempts"] = attempts
        out["too_noisy"] = bool(attempts[-1]["too_noisy"])
        if out["too_noisy"]:
            print(f"machine still too noisy after {a.attempts} attempts: the figures below are not speed-ups")
        dense = {**lat["dense"], **stats["dense"]}
        out["dense"] = dense
        for name, v in lat.items():
            print(f"{name:>16}: {v['median_ms']:8.2f} ms  {stats[name]['gflops']:6.3f} GFLOPs  "
                  f"{stats[name]['params']:>9d} params", flush=True)
        for entry in levels:
            if "error" in entry:
                continue
            lv = entry["level"]
            st = {**lat[f"structured_{int(lv * 100)}"], **stats[f"structured_{int(lv * 100)}"]}
            un = {**lat[f"unstructured_{int(lv * 100)}"], **stats[f"unstructured_{int(lv * 100)}"]}
            lat_ratio = dense["median_ms"] / st["median_ms"]
            flops_ratio = dense["gflops"] / st["gflops"]
            target = TARGETS.get(round(lv, 2))
            entry.update({
                "structured": {**st, "sparsity": round(1 - st["params"] / dense["params"], 4),
                               "latency_ratio": round(lat_ratio, 3), "flops_ratio": round(flops_ratio, 3),
                               "latency_over_flops": round(lat_ratio / flops_ratio, 3),
                               "target_latency_ratio": target,
                               "meets_latency_target": None if target is None else lat_ratio >= target,
                               "meets_0.8_of_flops": lat_ratio >= 0.8 * flops_ratio},
                "unstructured": {**un, "latency_ratio": round(dense["median_ms"] / un["median_ms"], 3),
                                 "zeroed_fraction_of_prunable_conv_weights": lv},
            })
        out["levels"] = levels
    out["wall_s"] = round(time.monotonic() - t0, 1)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    tmp_json = a.json.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(out, indent=2) + "\n")
    os.replace(tmp_json, a.json)
    print(f"\n{'level':>6} {'lat ratio':>10} {'FLOPs ratio':>12} {'quotient':>9} {'unstruct':>9}")
    for lv in levels:
        if "error" in lv:
            continue
        s = lv["structured"]
        print(f"{lv['level']:>6.2f} {s['latency_ratio']:>10.2f} {s['flops_ratio']:>12.2f} "
              f"{s['latency_over_flops']:>9.2f} {lv['unstructured']['latency_ratio']:>9.2f}")
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
