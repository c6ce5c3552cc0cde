"""A prune run's report: Table 1 (shared by ``pruning-tools prune``'s ``table.md`` and the demo report),
paired differences, the issue targets, ``results.json`` / ``summary.json`` and the plots. No torch,
so the demo report imports it cheaply.

``dense`` is the dense baseline's measurement dict and ``aggregate`` the per (method, level) rows
of ``results.json`` (means, ``<key>_std`` and ``trials``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pruning_tools.pipeline import resolution as res_baseline
from pruning_tools.search.strategies import METHODS, reward_evaluations

#: Table 1 labels in the seed's meaning: its "no RL" column is the stage-1 budgets (``importance``),
#: its "RL" column the full pipeline (``full``); the method name (results.json) follows in backticks.
METHOD_LABELS = {"dense": "Dense baseline", **{name: f"{cls.label} `{name}`" for name, cls in METHODS.items()}}

#: the paired differences Table 1 reports: (minuend, subtrahend)
PAIRS = (("full", "importance"), ("full", "random"))


def aggregate_row(aggregate: Sequence[Mapping[str, Any]], method: str, level: float) -> Mapping[str, Any] | None:
    """The aggregate row of ``method`` at target ``level`` (``None`` when absent)."""
    return next((r for r in aggregate if r["method"] == method and abs(r["level"] - level) < 1e-9), None)


def _pm(row: Mapping[str, Any], key: str, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    s = fmt.format(row[key] * scale)
    return s + (f" ± {fmt.format(row[key + '_std'] * scale)}" if row.get("trials", 1) > 1 else "")


#: Real-frame columns: (header, class) — KITTI AP|R40 at the class's KITTI IoU.
REAL_COLUMNS = (("Car AP real (IoU .7)", "Car"), ("Ped. AP real (IoU .5)", "Pedestrian"))


def _real_cells(row: Mapping[str, Any], trials: int) -> list[str]:
    real = row.get("real") or {}
    cells = []
    for _, name in REAL_COLUMNS:
        cls = (real.get("classes") or {}).get(name)
        if not cls or cls.get("ap_kitti") is None:
            cells.append("–")
            continue
        s = f"{cls['ap_kitti'] * 100:.1f}"
        cells.append(s + (f" ± {cls.get('ap_kitti_std', 0.0) * 100:.1f}" if trials > 1 else ""))
    return cells


def comparison_table(dense: Mapping[str, Any], aggregate: Sequence[Mapping[str, Any]],
                     labels: Mapping[str, str] = METHOD_LABELS) -> list[str]:
    """Markdown lines (header, dense row, one row per aggregate row in its order); mean ± std where
    a row has more than one trial. mAP50-95/mAP50 come from the run's test split; where the dense row
    has real-frame results (``--real-eval``), real-frame Car/Pedestrian AP columns follow."""
    real = bool(dense.get("real"))
    extra_h = "".join(f" {h} |" for h, _ in REAL_COLUMNS) if real else ""
    extra_s = "---|" * len(REAL_COLUMNS) if real else ""
    lines = ["| Method | Target | Sparsity | mAP50-95 | mAP50 |" + extra_h + " Latency (ms) | Size (MB) | Params (M) | GFLOPs |",
             "|---|---|---|---|---|" + extra_s + "---|---|---|---|",
             f"| {labels['dense']} | 0 % | 0.0 % | {dense['map50_95'] * 100:.1f} | {dense['map50'] * 100:.1f} |"
             + ("".join(f" {c} |" for c in _real_cells(dense, 1)) if real else "")
             + f" {dense['latency_ms']:.1f} | {dense['size_mb']:.2f} | {dense['params'] / 1e6:.3f} | {dense['gflops']:.2f} |"]
    for r in aggregate:
        name = r.get("level_name") or f"{int(round(r['level'] * 100))} %"
        lines.append(f"| {labels[r['method']]} | {name} | "
                     f"{r['sparsity'] * 100:.1f} % | {_pm(r, 'map50_95', 100)} | {_pm(r, 'map50', 100)} |"
                     + ("".join(f" {c} |" for c in _real_cells(r, r.get("trials", 1))) if real else "")
                     + f" {_pm(r, 'latency_ms')} | {r['size_mb']:.2f} | {r['params'] / 1e6:.3f} | {r['gflops']:.2f} |")
    return lines


def paired_differences(records: Sequence[Mapping[str, Any]], a: str, b: str, level: float,
                       key: str = "map50_95") -> dict[str, Any] | None:
    """Per-trial paired difference ``a - b`` of ``key`` (in points) at ``level``.

    ``spread`` is the larger trial-to-trial std of the two methods; the difference *exceeds the
    spread* when ``|mean| > max(spread, std of the differences)`` with at least 2 paired trials.

    :return: ``{"a", "b", "level", "per_trial", "mean", "std", "spread", "trials", "exceeds_spread"}``
        or ``None`` when no trial has both methods.
    """
    import statistics

    def by_trial(m: str) -> dict[int, float]:
        return {int(r["trial"]): float(r[key]) * 100 for r in records
                if r["method"] == m and abs(float(r["level"]) - level) < 1e-9}

    ra, rb = by_trial(a), by_trial(b)
    trials = sorted(set(ra) & set(rb))
    if not trials:
        return None
    diffs = [ra[t] - rb[t] for t in trials]
    mean = statistics.fmean(diffs)
    sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    sa = statistics.stdev([ra[t] for t in trials]) if len(trials) > 1 else 0.0
    sb = statistics.stdev([rb[t] for t in trials]) if len(trials) > 1 else 0.0
    spread = max(sa, sb)
    return {"a": a, "b": b, "level": level, "per_trial": [round(d, 2) for d in diffs], "mean": round(mean, 2),
            "std": round(sd, 2), "spread": round(spread, 2), "trials": len(trials),
            "exceeds_spread": len(trials) > 1 and abs(mean) > max(spread, sd)}


def paired_lines(pairs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown: one line per paired difference with a plain statement about the spread."""
    out = []
    for p in pairs:
        per = ", ".join(f"{d:+.2f}" for d in p["per_trial"])
        if p["trials"] < 2:
            verdict = "one trial: no trial-to-trial spread to compare with"
        elif p["exceeds_spread"]:
            verdict = (f"exceeds the trial-to-trial spread (std {p['spread']:.2f} points, std of the differences "
                       f"{p['std']:.2f})")
        else:
            verdict = (f"does not exceed the trial-to-trial spread (std {p['spread']:.2f} points, std of the "
                       f"differences {p['std']:.2f})")
        out.append(f"* `{p['a']}` − `{p['b']}` at {int(round(p['level'] * 100))} %: mean {p['mean']:+.2f} mAP50-95 "
                   f"points over {p['trials']} trial(s) (per trial: {per}) — {verdict}.")
    return out

# ------------------------------------------------------------------------------------- run report
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (0 for one value) — every ``<key>`` / ``<key>_std`` pair of results.json."""
    arr = np.array([float(v) for v in values])
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def aggregate(cfg: Any, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (strategy, level) with records: means and stds over trials (and real-frame AP)."""
    agg: list[dict[str, Any]] = []
    for lv in cfg.targets:
        for method in cfg.methods:
            rs = [r for r in records if r["method"] == method and abs(r["level"] - lv) < 1e-9]
            if not rs:
                continue
            row: dict[str, Any] = {"method": method, "level": lv, "trials": len(rs)}
            if rs[0].get("level_name"):
                row["level_name"] = rs[0]["level_name"]
            for k in ("map50_95", "map50", "latency_ms", "gflops", "params", "size_mb", "sparsity"):
                row[k], row[f"{k}_std"] = mean_std([r[k] for r in rs])
            if all(r.get("real") for r in rs):
                row["real"] = mean_real([r["real"] for r in rs])
            if all("speedup_measured" in r for r in rs):
                row["speedup_target"] = rs[0].get("speedup_target")
                row["speedup_measured"], row["speedup_measured_std"] = mean_std([r["speedup_measured"] for r in rs])
                row["speedup_predicted"], _ = mean_std([r.get("speedup_predicted", float("nan")) for r in rs])
                row["speedup_missed_trials"] = sum(bool(r["speedup_missed"]) for r in rs)
            agg.append(row)
    return agg


def write_report(run: Path, cfg: Any, dense_res: dict[str, Any], records: list[dict[str, Any]], layers: Sequence[str],
                 latency: dict[str, Any], baseline: str, mix: Sequence[tuple[Path, int]], evaluator: Any, wall_s: float,
                 log: Any = print, resolution: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write ``results.json``, ``table.md``, ``summary.json`` and the plots of a prune run; return the results.

    :param records: every unit's result (latencies already interleaved).
    :param latency: how the latencies were measured.
    :param resolution: the resolution baseline's records (:func:`pruning_tools.pipeline.resolution.measure_ladder`,
        latencies from the same round-robin); none: no resolution section.
    """
    from pruning_tools.pipeline.config import config_to_dict
    from pruning_tools.data.files import write_json

    agg = aggregate(cfg, records)
    pairs = [d for lv in cfg.targets for a, b in PAIRS if a in cfg.methods and b in cfg.methods
             for d in [paired_differences(records, a, b, lv)] if d is not None]
    results = {"config": config_to_dict(cfg), "baseline": baseline,
               "mix": [{"dataset": str(d), "repeats": r} for d, r in mix],
               "evaluator": evaluator, "dense": dense_res,
               "records": records, "aggregate": agg, "paired_differences": pairs, "latency": latency,
               "selection_split": "val", "report_split": dense_res.get("split", "test"), "layers": list(layers),
               "wall_s": wall_s, "targets": targets(dense_res, agg, pairs)}
    text = table(cfg, dense_res, agg, pairs)
    if resolution:
        comp = res_baseline.comparison(dense_res, agg, resolution, records)
        results["resolution"] = {"sizes": list(resolution), "comparison": comp, "how": res_baseline.HOW,
                                 "data": {"map50_95": map_frames(cfg), "real_car": (dense_res.get("real") or {}).get("data")}}
        results["targets"].update({f"resolution_{k}": v for k, v in res_baseline.summary(comp).items()})
        text += "\n" + "\n".join(res_baseline.table_lines(dense_res, resolution, comp, cfg.data.imgsz, map_frames(cfg),
                                                          METHOD_LABELS)) + "\n"
    write_json(run / "results.json", results)
    (run / "table.md").write_text(text)
    summary = {"run_dir": str(run), "baseline": baseline, "imgsz": list(cfg.data.imgsz),
               "dense": {"map50_95": dense_res["map50_95"], "map50": dense_res["map50"]},
               "checkpoints": [{"method": r["method"], "level": r["level"], "trial": r["trial"],
                                "sparsity": r["sparsity"], "map50_95": r["map50_95"], "map50": r["map50"],
                                "latency_ms": r["latency_ms"], "path": r["checkpoint"],
                                **{k: r[k] for k in ("level_name", "target_metric", "speedup_target",
                                                     "speedup_measured", "speedup_missed") if k in r}}
                               for r in records]}
    write_json(run / "summary.json", summary)
    try:
        plots(run, cfg, dense_res, records, layers, resolution)
    except Exception as exc:  # noqa: BLE001 - plots must not lose the results
        log(f"plotting failed: {type(exc).__name__}: {exc}")
    return results


def mean_real(reals: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean (and std) over trials of real-frame summaries."""
    out: dict[str, Any] = {"data": reals[0].get("data"), "n_images": reals[0].get("n_images"), "classes": {}}
    for k in ("map_kitti", "map50", "map50_95"):
        out[k], out[f"{k}_std"] = mean_std([r[k] for r in reals])
    for name in reals[0].get("classes", {}):
        cls: dict[str, Any] = {"n_gt": reals[0]["classes"][name]["n_gt"]}
        for k in ("ap_kitti", "ap50", "ap50_95"):
            cls[k], cls[f"{k}_std"] = mean_std([r["classes"][name][k] for r in reals])
        out["classes"][name] = cls
    return out


def targets(dense_res: dict[str, Any], agg: list[dict[str, Any]],
            pairs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The issue targets judged on the aggregate rows and paired differences (results.json ``targets``)."""
    out: dict[str, Any] = {}
    # issue 12: full - importance >= +1.0 points at 75 %, >= +2.0 at 90 % (mean over trials); full >= random
    for p in pairs or []:
        lv = int(round(p["level"] * 100))
        out[f"{p['a']}_minus_{p['b']}_at_{lv}_points"] = p["mean"]
        out[f"{p['a']}_minus_{p['b']}_at_{lv}_exceeds_trial_spread"] = p["exceeds_spread"]
        if p["b"] == "importance" and lv in (75, 90):
            need = 1.0 if lv == 75 else 2.0
            out[f"full_beats_importance_by_{need:g}_at_{lv}"] = p["mean"] >= need
        if p["b"] == "random":
            out[f"full_at_least_random_at_{lv}"] = p["mean"] >= 0.0
    full75, uni75, full50 = (aggregate_row(agg, m, lv) for m, lv in (("full", 0.75), ("uniform", 0.75),
                                                                     ("full", 0.5)))
    if full75 and uni75:
        gain = (full75["map50_95"] - uni75["map50_95"]) * 100
        out["full_minus_uniform_at_75_points"] = round(gain, 2)
        out["full_beats_uniform_by_7_at_75"] = gain >= 7.0
    if full50 and dense_res["map50_95"] > 0:
        keep = full50["map50_95"] / dense_res["map50_95"]
        out["full_keeps_fraction_of_dense_at_50"] = round(keep, 4)
        out["full_keeps_98pct_at_50"] = keep >= 0.98
    # real frames (issue targets: full keeps >= 95 % of the dense Car AP at 50 %, >= 85 % at 75 %)
    dense_car = ((dense_res.get("real") or {}).get("classes") or {}).get("Car", {}).get("ap_kitti")
    for lv, need in ((0.5, 0.95), (0.75, 0.85)):
        row = aggregate_row(agg, "full", lv)
        car = ((row or {}).get("real") or {}).get("classes", {}).get("Car", {}).get("ap_kitti")
        if dense_car and car is not None:
            keep = car / dense_car
            out[f"real_car_ap_kept_fraction_at_{int(lv * 100)}"] = round(keep, 4)
            out[f"real_car_ap_keeps_{int(need * 100)}pct_at_{int(lv * 100)}"] = keep >= need
    return out


def _search_claim(c: Any) -> str:
    """The reward-evaluation budget, claimed only for the searching methods that ran (PPO is ``full``)."""
    ran = [label for m, label in (("full", "PPO"), ("random", "random search")) if m in tuple(c.methods)]
    if not ran:
        return ""
    return f"; {' and '.join(ran)}: {reward_evaluations(c.rl)} reward evaluations{' each' if len(ran) > 1 else ''}"


def table(cfg: Any, dense_res: dict[str, Any], agg: list[dict[str, Any]],
          pairs: list[dict[str, Any]] | None = None) -> str:
    """``table.md``: the caption (data, latency method, trials), Table 1 and the paired differences."""
    c = cfg
    real = (dense_res.get("real") or {}).get("data")
    split = dense_res.get("split", "test")
    on = "test split" if split == "test" else "val split (the dataset has no test split: the same frames the choices were made on)"
    lines = [f"# Pruning comparison — {c.name}", "",
             f"mAP50-95 / mAP50: {on} of `{c.data.dataset or 'generated scenes'}` at "
             f"{c.data.imgsz[0]}x{c.data.imgsz[1]} (every choice — re-ranking, search — used the val split); "
             f"latency: ONNX Runtime CPU, {c.latency.threads} threads, all models round-robin in one process, "
             f"median of {c.latency.runs} runs each; {c.trials} trial(s) (mean ± std); sparsity = fraction of "
             f"{'conv FLOPs' if c.target_metric == 'flops' else 'parameters'} removed"
             f"{'; levels are speed-ups over dense solved on the latency model (' + c.latency.precision + ')' if c.target_metric == 'latency' else ''}; same fine-tuning for "
             f"every method{_search_claim(c)}. "
             "The seed's \"no RL\" column is `importance`, its \"RL\" column `full`.", "",
             *comparison_table(dense_res, agg)]
    speed = [r for r in agg if "speedup_measured" in r]
    if speed:
        lines += ["", f"Speed-ups over the dense model at {c.latency.precision} (levels solved on the latency model, "
                      "then every pruned model measured interleaved with dense; a level more than "
                      f"{c.latency.miss_tolerance:.0%} short of its speed-up is **missed**, never relabelled):", "",
                  "| method | level | predicted | measured | trials missed |", "|---|---|---|---|---|"]
        for r in speed:
            lines.append(f"| {r['method']} | {r['level_name']} | x{r['speedup_predicted']:.2f} | "
                         f"x{r['speedup_measured']:.2f} ± {r['speedup_measured_std']:.2f} | "
                         f"{r['speedup_missed_trials']}/{r['trials']}{' **missed**' if r['speedup_missed_trials'] else ''} |")
    if pairs:
        lines += ["", "Paired differences (same trial = same seed, data order and stage-1 gradients):", "",
                  *paired_lines(pairs)]
    if real:
        lines += ["", f"Real-frame AP: {real} — KITTI AP|R40 at IoU 0.7 (Car) / 0.5 (Pedestrian), moderate "
                      "cut, DontCare ignored (`pruning-tools evaluate`)."]
    return "\n".join(lines) + "\n"


def map_frames(cfg: Any) -> str:
    """Which frames the table's mAP comes from, in words."""
    n = cfg.data.test_images
    return (f"test split of `{cfg.data.dataset or 'generated scenes'}`" + (f", up to {n} images" if n else "")
            + f", at {cfg.data.imgsz[0]}x{cfg.data.imgsz[1]} unless said")


def plots(run: Path, cfg: Any, dense_res: dict[str, Any], records: list[dict[str, Any]], layers: Sequence[str],
          resolution: Sequence[dict[str, Any]] | None = None) -> None:
    """``pareto.png`` (mAP vs measured latency: every method and the resolution baseline; a second panel
    with real-frame Car AP where the run has it) and ``layer_sparsity.png`` (per-layer ratios per strategy
    and level). Latency is relative to the dense model's (medians of the same round-robin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = cfg
    colors = {"uniform": "tab:blue", "importance": "tab:orange", "random": "tab:gray", "global": "tab:purple",
              "full": "tab:green"}
    sizes = list(resolution or [])
    d_lat = float(dense_res["latency_ms"])
    panels = [("map50_95", "mAP50-95 (test split, %)")]
    if res_baseline.curve(dense_res, sizes, "real_car") and all(res_baseline.car_ap(r) is not None for r in records):
        panels.append(("real_car", "Car AP real KITTI frames (IoU .7, %)"))

    def val(r: Mapping[str, Any], key: str) -> float:
        v = res_baseline.car_ap(r) if key == "real_car" else r[key]
        return float(v) * 100

    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for ax, (key, ylabel) in zip(axes[0], panels):
        ax.scatter([1.0], [val(dense_res, key)], c="k", marker="*", s=120, label="dense", zorder=3)
        for method in c.methods:
            rs = sorted([r for r in records if r["method"] == method], key=lambda r: r["latency_ms"])
            if rs:
                ax.plot([r["latency_ms"] / d_lat for r in rs], [val(r, key) for r in rs], "o-",
                        color=colors.get(method), label=METHOD_LABELS[method])
                for r in rs:
                    ax.annotate(r.get("level_name") or f"{int(round(r['level'] * 100))}%",
                                (r["latency_ms"] / d_lat, val(r, key)), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
        pts = res_baseline.curve(dense_res, sizes, key)
        if len(pts) > 1:
            pts = sorted(pts, key=lambda p: p["latency_ms"])
            ax.plot([p["latency_ms"] / d_lat for p in pts], [p["value"] * 100 for p in pts], "s--", color="k",
                    alpha=0.7, ms=4, label="dense at smaller inputs (resolution baseline)")
            for p in pts:
                if p["name"] != "dense":
                    ax.annotate(p["name"], (p["latency_ms"] / d_lat, p["value"] * 100), fontsize=6, xytext=(3, -9),
                                textcoords="offset points", alpha=0.8)
        ax.set_xlabel(f"measured latency / dense latency (ONNX Runtime CPU, round-robin; dense at "
                      f"{c.data.imgsz[0]}x{c.data.imgsz[1]} = 1)")
        ax.set_ylabel(ylabel)
        ax.set_title("mAP vs measured latency" if key == "map50_95" else "real Car AP vs measured latency")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(run / "pareto.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(len(c.targets), 1, figsize=(10, 2.6 * len(c.targets)), squeeze=False)
    x = np.arange(len(layers))
    for ax, lv in zip(axes[:, 0], c.targets):
        for method in c.methods:
            r = next((r for r in records if r["method"] == method and r["level"] == lv and r["trial"] == 0), None)
            if r is not None:
                ax.plot(x, r["ratios"], ".-", color=colors.get(method), label=METHOD_LABELS[method], lw=1)
        ax.set_ylabel(f"ratio @ {int(lv * 100)}%")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("layer (coupled channel group, model order)")
    fig.suptitle("Per-layer channel ratios per method")
    fig.tight_layout()
    fig.savefig(run / "layer_sparsity.png", dpi=110)
    plt.close(fig)
