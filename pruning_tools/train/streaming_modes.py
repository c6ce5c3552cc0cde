"""Score a per-mode replay (``sparse_perception.tools.streaming_replay``) with the streaming evaluator.

Every pass's recorded detections are scored against the drive's ground-truth bag with
:func:`pruning_tools.train.streaming.evaluate_streaming_bags` (each ground-truth instant matched
with the latest output available by then plus one frame period; KITTI IoU rules). Per mode, over its
rounds: sAP per class (mean over rounds), ``sap_mean`` (mean over the classes with ground truth —
KITTI's ``map_kitti`` of the streaming pairing), frames answered, mean staleness, and the levels
that produced the answers. :func:`compare` adds the issue's targets (``auto`` >= the best fixed level
+ 1.0 point and >= always-dense); :func:`plot_modes` draws sAP per mode and, for an ``auto`` pass,
the level over time against the estimated condition (PNG).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pruning_tools.train.streaming import CLASSES, evaluate_streaming_bags

__all__ = ["score_passes", "compare", "pass_trace", "plot_modes", "modes_lines", "TARGET_POINTS"]

#: The issue's margin: auto must beat the best fixed level by this many sAP points.
TARGET_POINTS = 1.0
AUTO = "auto"


def _nanmean(xs: Sequence[float | None]) -> float | None:
    v = [float(x) for x in xs if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else None


def pass_trace(bag: Path, det_topic: str, cond_topic: str) -> dict[str, list[Any]]:
    """Per detections message of a recorded pass: input stamp (ns) and level; per estimate: stamp and condition key."""
    from rosbags.highlevel import AnyReader

    from sparse_perception.runtime.conditions import Condition
    from sparse_perception.tools.bag_types import typestore

    levels: list[tuple[int, str]] = []
    conds: list[tuple[int, str]] = []
    with AnyReader([Path(bag)], default_typestore=typestore()) as reader:
        conns = [c for c in reader.connections if c.topic in (det_topic, cond_topic)]
        for conn, _t, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            ns = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
            if conn.topic == det_topic:
                levels.append((ns, str(msg.level)))
            else:
                conds.append((ns, Condition.from_codes(int(msg.illumination), int(msg.weather)).key))
    levels.sort()
    conds.sort()
    return {"level_stamps": [s for s, _ in levels], "levels": [lv for _, lv in levels],
            "condition_stamps": [s for s, _ in conds], "conditions": [c for _, c in conds]}


def score_passes(gt_bag: Path, passes: dict[str, Any], *, period_s: float | None = None) -> dict[str, Any]:
    """Score every pass of a ``streaming_replay`` run (its ``passes.json`` dict) against ``gt_bag``.

    :return: ``{"modes": {mode: {...per-mode figures...}}, "passes": [...per-pass reports...], "data", "budget"}``.
    :raises ValueError: no passes.
    """
    if not passes.get("passes"):
        raise ValueError("no passes to score")
    det_topic = passes.get("detections_topic", "/perception/detections")
    cond_topic = passes.get("estimated_condition_topic", "/perception/estimated_condition")
    per_pass = []
    for p in passes["passes"]:
        rep = evaluate_streaming_bags(Path(gt_bag), Path(p["bag"]), period_s=period_s, det_topic=det_topic,
                                      model=f"mode {p['mode']}")
        trace = pass_trace(Path(p["bag"]), det_topic, cond_topic)
        per_pass.append({"mode": p["mode"], "round": p["round"], "bag": p["bag"], "sap": rep["sap"], "ap": rep["ap"],
                         "sap_mean": rep["sap_detail"]["map_kitti"], "ap_mean": rep["ap_detail"]["map_kitti"],
                         "n_gt": {c: rep["sap_detail"]["classes"][c]["n_gt"] for c in CLASSES},
                         "frames": rep["frames"], "answered": rep["answered"], "with_output": rep["with_output"],
                         "on_time": rep["on_time"], "mean_staleness_ms": rep["mean_staleness_ms"],
                         "clock": rep["clock"], "levels": rep["levels"], "period_s": rep["period_s"],
                         "node_mean_inference_ms": p.get("node_mean_inference_ms"), "trace": trace})
    modes: dict[str, Any] = {}
    for mode in passes.get("modes") or sorted({p["mode"] for p in per_pass}):
        ps = [p for p in per_pass if p["mode"] == mode]
        if not ps:
            continue
        levels: dict[str, int] = {}
        for p in ps:
            for lv, n in p["levels"].items():
                levels[lv] = levels.get(lv, 0) + n
        modes[mode] = {"rounds": len(ps), "sap": {c: _nanmean([p["sap"][c] for p in ps]) for c in CLASSES},
                       "ap": {c: _nanmean([p["ap"][c] for p in ps]) for c in CLASSES},
                       "sap_mean": _nanmean([p["sap_mean"] for p in ps]),
                       "sap_mean_per_round": [p["sap_mean"] for p in ps],
                       "ap_mean": _nanmean([p["ap_mean"] for p in ps]),
                       "frames": ps[0]["frames"], "answered": _nanmean([p["answered"] for p in ps]),
                       "answered_per_round": [p["answered"] for p in ps],
                       "with_output": _nanmean([p["with_output"] for p in ps]),
                       "mean_staleness_ms": _nanmean([p["mean_staleness_ms"] for p in ps]),
                       "node_mean_inference_ms": _nanmean([p["node_mean_inference_ms"] for p in ps]),
                       "levels": levels}
    return {"modes": modes, "passes": per_pass, "gt_bag": str(gt_bag), "budget": passes.get("budget"),
            "competing_load": passes.get("competing_load"), "metric": "sAP = KITTI AP|R40 (Car IoU 0.7, "
            "Pedestrian/Cyclist 0.5, moderate) of each ground-truth instant matched with the latest output available "
            "by its camera time + one frame period; sap_mean over the classes with ground truth"}


def compare(scored: dict[str, Any], dense: str | None = None, target_points: float = TARGET_POINTS) -> dict[str, Any]:
    """The issue's targets on a scored run: ``auto`` vs the best fixed level (+``target_points``) and vs dense.

    :param dense: the always-dense mode (default: the first fixed mode, the zoo's order puts dense first).
    :return: ``{"best_fixed", "best_fixed_sap", "dense", "auto_sap", "auto_minus_best_fixed_points",
        "auto_minus_dense_points", "target_met", ...}`` (auto figures ``None`` without an auto pass).
    """
    modes = scored["modes"]
    fixed = {m: v["sap_mean"] for m, v in modes.items() if m != AUTO and v["sap_mean"] is not None}
    if not fixed:
        return {"best_fixed": None, "target_met": None, "why": "no fixed-level pass with a score"}
    best = max(fixed, key=fixed.get)
    dense = dense if dense in fixed else next(iter(fixed))
    auto = (modes.get(AUTO) or {}).get("sap_mean")
    out = {"best_fixed": best, "best_fixed_sap": fixed[best], "dense": dense, "dense_sap": fixed[dense],
           "auto_sap": auto, "target_points": target_points}
    if auto is None:
        return out | {"target_met": None, "why": "no auto pass"}
    d_best, d_dense = 100 * (auto - fixed[best]), 100 * (auto - fixed[dense])
    met = d_best >= target_points and d_dense >= 0
    why = [] if met else ([f"auto is {d_best:+.2f} sAP points from the best fixed level {best} "
                           f"(target +{target_points:g})"] if d_best < target_points else []) + \
        ([f"auto is {d_dense:+.2f} points below always-dense"] if d_dense < 0 else [])
    return out | {"auto_minus_best_fixed_points": d_best, "auto_minus_dense_points": d_dense, "target_met": met,
                  "why": "; ".join(why)}


def modes_lines(scored: dict[str, Any], cmp: dict[str, Any] | None = None) -> list[str]:
    """A markdown table: per mode sAP per class and mean (x100), answered, mean staleness, levels used."""
    lines = ["| Mode | " + " | ".join(f"sAP {c}" for c in CLASSES) + " | sAP mean | AP mean (own frame) | "
             "Answered (mean per round) | Mean staleness (ms) | Answers by level (all rounds) |", "|---" * (len(CLASSES) + 6) + "|"]

    def f(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}"

    for mode, v in scored["modes"].items():
        lv = ", ".join(f"{k} {n}" for k, n in sorted(v["levels"].items(), key=lambda kv: -kv[1]))
        st = v["mean_staleness_ms"]
        lines.append(f"| {mode} | " + " | ".join(f(v["sap"][c]) for c in CLASSES) + f" | {f(v['sap_mean'])} | "
                     f"{f(v['ap_mean'])} | {v['answered']:.0f} / {v['frames']} | {'–' if st is None else f'{st:.0f}'} "
                     f"| {lv or '–'} |")
    if cmp and cmp.get("auto_sap") is not None:
        lines += ["", f"auto − best fixed level ({cmp['best_fixed']}): {cmp['auto_minus_best_fixed_points']:+.2f} sAP "
                      f"points (target ≥ +{cmp['target_points']:g}); auto − always-dense ({cmp['dense']}): "
                      f"{cmp['auto_minus_dense_points']:+.2f} points (target ≥ 0) — "
                      + ("**met**" if cmp["target_met"] else f"**not met**: {cmp['why']}") + "."]
    return lines


def plot_modes(scored: dict[str, Any], path: Path, levels: Sequence[str] | None = None) -> Path:
    """PNG: sAP per mode (bars, one dot per round) and, for the first ``auto`` pass, the level of each answer over
    drive time against the estimated condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = scored["modes"]
    auto = next((p for p in scored["passes"] if p["mode"] == AUTO), None)
    fig, axes = plt.subplots(1 if auto is None else 2, 1, figsize=(10, 3.4 if auto is None else 6.4), squeeze=False)
    a1 = axes[0][0]
    names = list(modes)
    vals = [100 * (modes[m]["sap_mean"] or 0.0) for m in names]
    a1.bar(names, vals, color=["tab:orange" if m == AUTO else "tab:blue" for m in names], alpha=0.8)
    for i, m in enumerate(names):
        rs = [100 * x for x in modes[m]["sap_mean_per_round"] if x is not None]
        a1.plot([i] * len(rs), rs, "k.", ms=4)
        a1.text(i, vals[i], f"{vals[i]:.1f}\n{modes[m]['answered']:.0f}/{modes[m]['frames']}", ha="center",
                va="bottom", fontsize=7)
    a1.set_ylabel("sAP mean (x100)")
    a1.set_title("Streaming AP per mode (answered / frames above each bar)", fontsize=9)
    a1.set_ylim(0, max(vals + [1.0]) * 1.3)
    if auto is not None:
        a2 = axes[1][0]
        tr = auto["trace"]
        lv_order = list(levels or sorted(set(tr["levels"])))
        t_all = tr["level_stamps"] + tr["condition_stamps"]
        t0 = min(t_all) if t_all else 0
        ts = [(s - t0) / 1e9 for s in tr["level_stamps"]]
        y = [lv_order.index(lv) if lv in lv_order else -1 for lv in tr["levels"]]
        a2.step(ts, y, where="post", color="tab:green", label="level (auto)")
        a2.set_yticks(range(len(lv_order)), lv_order)
        a2.set_ylabel("level")
        a3 = a2.twinx()
        keys = sorted(set(tr["conditions"]))
        tc = [(s - t0) / 1e9 for s in tr["condition_stamps"]]
        a3.plot(tc, [keys.index(c) for c in tr["conditions"]], ".", color="tab:purple", ms=3,
                label="estimated condition")
        a3.set_yticks(range(len(keys)), keys, fontsize=7)
        a3.set_ylim(-0.5, max(len(keys), 1) - 0.5 + 0.5)
        a2.set_xlabel("drive time (s)")
        a2.set_title(f"auto (round {auto['round']}): level over time against the estimated condition", fontsize=9)
        h1, l1 = a2.get_legend_handles_labels()
        h2, l2 = a3.get_legend_handles_labels()
        a2.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
