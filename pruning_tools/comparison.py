"""The pruning comparison's rows as a table: shared by ``pruning-tools prune`` (``table.md``) and the
demo report (Table 1). Plain Python, no torch, so the report can import it cheaply.

``dense`` is the dense baseline's measurement dict and ``aggregate`` the per (method, level) rows
of ``results.json`` (means, ``<key>_std`` and ``trials``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from pruning_tools.methods import METHODS

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
        lines.append(f"| {labels[r['method']]} | {int(round(r['level'] * 100))} % | "
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
