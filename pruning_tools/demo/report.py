"""The demo's report: Table 1 in the seed's form, the engine zoo, live figures, per-condition accuracy.

Reads what the earlier stages wrote (``prune/results.json``, ``zoo/manifest.json``,
``policy/policy.json``, ``live/live.json``) and writes ``report.md``, ``report.json`` and PNG plots
into the run folder. Every figure comes from those files: nothing here measures or invents.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from pruning_tools.pipeline.report import METHOD_LABELS, aggregate_row, comparison_table, paired_lines
from sparse_perception.runtime.conditions import CONDITION_KEYS
from pruning_tools.data.files import strict_dumps

#: Table 1 in the seed's vocabulary: its "no RL" column is the stage-1 budgets (`importance`), its
#: "RL" column the full pipeline (`full`); the other rows are baselines the seed did not report.
SEED_LABELS = METHOD_LABELS


def device_info() -> dict[str, Any]:
    """The machine that measured the latencies (CPU model, cores, GPU if torch sees one, versions)."""
    from sparse_perception.runtime.machine import machine_info

    return machine_info(gpu=True)


def _f(v: Any, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    return "–" if v is None else fmt.format(float(v) * scale)


def rl_gain(results: dict[str, Any]) -> dict[str, float]:
    """RL minus no-RL mAP50-95 in points, per level: ``full`` minus ``importance`` (the seed's "no RL"
    is its stage-1 sparsity mapping; it reports +7.4 at 75 %, +8.3 at 90 %)."""
    out = {}
    agg = results.get("aggregate", [])
    for lv in sorted({r["level"] for r in agg}):
        full, no_rl = aggregate_row(agg, "full", lv), aggregate_row(agg, "importance", lv)
        if full and no_rl:
            name = full.get("level_name") or f"{int(round(lv * 100))}"  # "x2" (latency level) or "75" (%)
            out[name] = round((full["map50_95"] - no_rl["map50_95"]) * 100, 2)
    return out


def _real_ap(a: dict[str, Any], name: str) -> Any:
    return (((a.get("real") or {}).get("classes") or {}).get(name) or {}).get("ap_kitti")


def zoo_lines(manifest: dict[str, Any]) -> list[str]:
    arts = sorted(manifest.get("artifacts", []), key=lambda a: (a["sparsity"], a["precision"]))
    real = any(a.get("real") for a in arts)
    lines = ["| Level | Sparsity | Precision | Selected | mAP50-95 | mAP50 |"
             + (" Car AP real (IoU .7) | Ped. AP real (IoU .5) |" if real else "")
             + " Latency median (ms) | Size (MB) | Higher-precision layers |",
             "|---|---|---|---|---|---|" + ("---|---|" if real else "") + "---|---|---|"]
    for a in arts:
        lat = (a.get("latency_ms") or {}).get("median")
        fb = a.get("fallback_layers") or []
        lines.append(f"| {a['level']} | {a['sparsity'] * 100:.1f} % | {a['precision']} | "
                     f"{'yes' if a.get('selected') else 'no'} | {_f(a.get('map50_95'), 100)} | "
                     f"{_f(a.get('map50'), 100)} |"
                     + (f" {_f(_real_ap(a, 'Car'), 100)} | {_f(_real_ap(a, 'Pedestrian'), 100)} |" if real else "")
                     + f" {_f(lat)} | {a['size_bytes'] / 1e6:.2f} | {len(fb) if fb else '–'} |")
    real_data = next(((a.get("real") or {}).get("data") for a in arts if a.get("real")), None)
    if real_data:
        lines += ["", f"mAP50-95 / mAP50: the export's evaluation split of the run's dataset; real-frame AP: "
                      f"{real_data} (KITTI AP|R40, moderate cut, DontCare ignored)."]
    return lines


def ladder_lines(manifest: dict[str, Any]) -> list[str]:
    """The speed ladder the export kept (and the levels it left out): each level's selected engine, its
    measured speed-up over the dense engine (one interleaved timing of all of them) and why it is in or out.
    ``[]`` for a zoo written before the ladder existed."""
    ladder = manifest.get("ladder") or {}
    rows = [(r, True) for r in ladder.get("levels", [])] + [(r, False) for r in ladder.get("excluded", [])]
    if not rows:
        return []
    lines = ["| Level | Backend | Precision | Parameters removed | Speed-up target | Latency median (ms) | "
             "Speed-up vs dense | mAP50-95 (val) | In the zoo |", "|---|---|---|---|---|---|---|---|---|"]
    for r, kept in rows:
        tgt = r.get("speedup_target")
        sp = r.get("speedup_vs_dense")
        lines.append(f"| {r['level']} | {r['backend']} | {r.get('precision', '–')} | "
                     f"{_f(r.get('param_sparsity'), 100)} % | {'x' + format(tgt, 'g') if tgt else '–'} | "
                     f"{_f((r.get('latency_ms') or {}).get('median'), fmt='{:.2f}')} | "
                     f"{'–' if sp is None else f'{sp:.2f}x'} | {_f(r.get('map50_95'), 100)} | "
                     f"{'yes' if kept else 'no: ' + r.get('reason', '')} |")
    timing = ladder.get("timing") or {}
    lines += ["", "Every selected engine timed round-robin in one process "
                  f"({timing.get('runs', '?')} rounds, medians); a level stays only when it is faster than every "
                  "more accurate level kept (accuracy: the val-split mAP50-95 the precision search selected on)."]
    return lines


def condition_lines(manifest: dict[str, Any], live: dict[str, Any] | None) -> list[str]:
    """mAP50-95 per driving condition: each selected zoo artifact on the export's split (val: the
    split the bisection and the condition policy select on), and live."""
    sel = [a for a in manifest.get("artifacts", []) if a.get("selected")]
    sel.sort(key=lambda a: a["sparsity"])
    keys = [k for k in CONDITION_KEYS if any(k in (a.get("map_by_condition") or {}) for a in sel)
            or (live and k in live.get("accuracy", {}).get("by_condition", {}))]
    if not keys:
        return ["No per-condition figures (the dataset has no condition sidecars)."]
    head = "| Condition | " + " | ".join(f"{a['level']} ({a['precision']})" for a in sel) + " | live (node) |"
    lines = [head, "|---" * (len(sel) + 2) + "|"]
    for k in keys:
        cells = [_f(((a.get("map_by_condition") or {}).get(k) or {}).get("map50_95"), 100) for a in sel]
        lv = ((live or {}).get("accuracy", {}).get("by_condition", {}).get(k) or {}).get("map50_95")
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {_f(lv, 100)} |")
    return lines


def plot_conditions(manifest: dict[str, Any], path: Path) -> bool:
    """Bar chart: mAP50-95 per condition for each selected zoo artifact."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sel = sorted([a for a in manifest.get("artifacts", []) if a.get("selected")], key=lambda a: a["sparsity"])
    keys = [k for k in CONDITION_KEYS if any(k in (a.get("map_by_condition") or {}) for a in sel)]
    if not keys or not sel:
        return False
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(sel)
    x = np.arange(len(keys))
    for i, a in enumerate(sel):
        vals = [(((a.get("map_by_condition") or {}).get(k) or {}).get("map50_95") or 0.0) * 100 for k in keys]
        ax.bar(x + i * width, vals, width, label=f"{a['level']} ({a['precision']})")
    ax.set_xticks(x + width * (len(sel) - 1) / 2, keys, rotation=30, fontsize=8)
    ax.set_ylabel("mAP50-95 (%)")
    ax.set_title(f"Accuracy per driving condition ({(manifest.get('data') or {}).get('split', 'val')} split), "
                 "per zoo level")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def live_lines(live: dict[str, Any]) -> list[str]:
    fr, e2e, sw, diag = live["frames"], live["e2e_latency_ms"], live["swaps"], live.get("node_diagnostics", {})
    lines = [
        "| Figure | Value |", "|---|---|",
        f"| Frames in the bag / answered by the node | {fr['in_bag']} / {fr['answered']} |",
        f"| Frames dropped (node keeps only the newest frame) | {fr['dropped']} |",
        f"| Frames answered twice | {fr['duplicated']} |",
        f"| Detection stamps in publish order | {'yes' if fr['stamps_in_order'] else 'no'} |",
        f"| Throughput (answered frames per second of drive) | {_f(live.get('fps'))} |",
        f"| End-to-end latency p50 / p95 (ms) — {e2e['definition']} | {_f(e2e['p50'])} / {_f(e2e['p95'])} |",
        f"| Manual swaps through `~/set_sparsity` (failed) | {sw['n']} ({sw['failed']}) |",
        f"| Swap time p50 / max (ms, from the service response) | {_f(sw['swap_ms_p50'], fmt='{:.3f}')} / "
        f"{_f(sw['swap_ms_max'], fmt='{:.3f}')} |",
        f"| mAP50-95 / mAP50 of the live detections vs the bag's ground truth | "
        f"{_f(live['accuracy']['map50_95'], 100)} / {_f(live['accuracy']['map50'], 100)} |",
    ]
    for k, v in sorted(diag.items()):
        lines.append(f"| node /diagnostics: {k} | {v} |")
    return lines


def policy_lines(live: dict[str, Any]) -> list[str]:
    chosen = live.get("policy", {}).get("levels_by_condition", {})
    if not chosen:
        return ["The policy phase produced no frames."]
    levels = live["levels"]
    by_phase = live["accuracy"].get("by_phase", {})
    auto_cond = (by_phase.get("auto") or {}).get("by_condition", {})
    lines = ["| Condition | " + " | ".join(f"frames at {lv}" for lv in levels) + " | live mAP50-95 (auto) |",
             "|---" * (len(levels) + 2) + "|"]
    for k in [c for c in CONDITION_KEYS if c in chosen]:
        lines.append(f"| {k} | " + " | ".join(str(chosen[k].get(lv, 0)) for lv in levels)
                     + f" | {_f((auto_cond.get(k) or {}).get('map50_95'), 100)} |")
    return lines


def streaming_lines(policy: dict[str, Any]) -> list[str]:
    """The streaming table of the policy's held-out simulated drives: per mode (policy, each fixed level,
    oracle) streaming score, camera instants answered, frames dropped, mean staleness."""
    held = policy.get("held_out") or {}
    res = held.get("results") or {}
    if not res:
        return ["The policy file holds no held-out comparison (an observation-version-1 policy?)."]
    lines = ["| Mode | Streaming score (sAP-like, x100) | Instants answered | Frames dropped | Mean staleness (ms) |",
             "|---|---|---|---|---|"]
    for name, v in res.items():
        lines.append(f"| {'auto (policy)' if name == 'policy' else name} | {_f(v['streaming_score'], 100)} | "
                     f"{v['answered_fraction'] * 100:.1f} % | {v['dropped_fraction'] * 100:.1f} % | "
                     f"{v['mean_staleness_ms']:.0f} |")
    gap = held.get("gap_closed")
    lines += ["", f"Held-out drives {len(held.get('drives', []))} (ids never trained on); the policy closes "
                  f"{'–' if gap is None else f'{gap * 100:.0f} %'} of the always-dense → oracle gap."]
    return lines


def tracking_lines(tr: dict[str, Any]) -> list[str]:
    """The real drive's per-mode streaming section (``live/tracking/streaming_modes.json``)."""
    from pruning_tools.train.streaming_modes import modes_lines

    load = tr.get("competing_load") or {}
    lines = [f"Data: {tr.get('data')}. Each mode replayed the drive once through the node (`condition_source: "
             f"estimator`: no condition topic; modes one after the other), under the budget: {tr.get('budget')}"
             + (f" — it ran {load['frames']} frames at {load['achieved_hz']:.1f} Hz, {load['mean_ms']:.1f} ms each"
                if load.get("frames") and load.get("mean_ms") is not None else "") + ". "
             "sAP: each ground-truth instant matched with the latest detections available by its camera time + "
             "one frame period (KITTI AP|R40, Car IoU 0.7, Pedestrian/Cyclist 0.5, moderate), x100; AP (own "
             "frame): each frame with its own detections whenever they came.", "", *modes_lines(tr, tr.get("compare"))]
    return lines


def write_report(run_dir: Path, stages: dict[str, dict[str, Any]], profile: dict[str, Any],
                 wall_times: dict[str, float]) -> dict[str, Path]:
    """Write ``report.md``, ``report.json`` and the plots; return their paths.

    :param stages: results of the earlier stages (``data``, ``prune``, ``export``, ``policy``, ``live``).
    """
    run_dir = Path(run_dir)
    prune = json.loads((Path(stages["prune"]["run"]) / "results.json").read_text())
    manifest = json.loads(Path(stages["export"]["manifest"]).read_text())
    live = json.loads(Path(stages["live"]["live_json"]).read_text()) if stages.get("live") else None
    policy = json.loads(Path(stages["policy"]["policy"]).with_suffix(".json").read_text())
    dev = device_info()
    plots: dict[str, Path] = {}
    for name, src in (("pareto", Path(stages["prune"]["run"]) / "pareto.png"),
                      ("layer_sparsity", Path(stages["prune"]["run"]) / "layer_sparsity.png"),
                      ("bisection", Path(stages["export"]["zoo"]) / "bisection.png"),
                      ("live_timeline", run_dir / "live" / "timeline.png"),
                      ("policy_levels", Path(stages["policy"]["policy"]).with_suffix(".png")),
                      ("tracking_modes", Path(((stages.get("live") or {}).get("tracking") or {}).get("png", "-")))):
        if src.is_file():
            dst = run_dir / f"{name}.png"
            if src.resolve() != dst.resolve():
                shutil.copy2(src, dst)
            plots[name] = dst
    if plot_conditions(manifest, run_dir / "conditions.png"):
        plots["conditions"] = run_dir / "conditions.png"

    gains = rl_gain(prune)
    data = stages["data"]
    lat_dev = next(((a.get("latency_ms") or {}).get("device") for a in manifest.get("artifacts", [])), None)
    md = [f"# sparse_perception demo report — profile `{profile['name']}`", "",
          f"Written {time.strftime('%Y-%m-%d %H:%M:%S %Z')} in `{run_dir}`.", "",
          f"* **Data**: {data['source']}; splits {data.get('split_sizes')}; live drive: {data['sequence_frames']} "
          f"generated frames at 10 Hz through {' → '.join(data['sequence_conditions'])}.",
          f"* **Device that measured the latencies**: {dev['cpu']} ({dev['cpu_count']} cores"
          f"{', GPU ' + dev['gpu'] if dev.get('gpu') else ', no GPU'}); ONNX Runtime CPU"
          f"{' (' + lat_dev + ')' if lat_dev else ''}.",
          "* **Versions**: " + ", ".join(f"{k} {v}" for k, v in dev["versions"].items() if v),
          *([f"* **Weights licence**: {manifest['data']['weights_licence']} (inherited from the shipped baseline "
             "by every pruned and exported model here)."] if (manifest.get("data") or {}).get("weights_licence")
            else []), "",
          "## Table 1 — pruning at equal targets", "",
          f"mAP50-95 / mAP50: test split of {data['source']} at "
          f"{prune['config']['data']['imgsz'][0]}x{prune['config']['data']['imgsz'][1]}; latency: "
          f"ONNX Runtime CPU FP32, all models round-robin in one process, median; "
          f"{prune['config']['trials']} trial(s), mean ± std where more than one; selection on the val split; "
          f"evaluator: "
          f"{prune.get('evaluator')}. "
          + ("Levels = speed-ups over the dense model (FP32 here) solved on the latency model, then measured "
             "(speed-up table below)." if prune["config"].get("target_metric") == "latency"
             else "Sparsity target = fraction of parameters removed."), "",
          *comparison_table(prune["dense"], prune.get("aggregate", []), SEED_LABELS), "",
          *([f"Real-frame AP columns: {prune['dense']['real']['data']} — KITTI AP|R40 at IoU 0.7 (Car) / 0.5 "
             "(Pedestrian), moderate cut, DontCare ignored; frames no model here was trained or selected on.", ""]
            if prune["dense"].get("real") else []),
          "RL minus no-RL (`full` − `importance`), mAP50-95 points: "
          + (", ".join(f"{k}{' %' if k.isdigit() else ''}: {v:+.2f}" for k, v in gains.items()) or "–")
          + " (the seed reports +7.4 at 75 % and +8.3 at 90 % on real KITTI with long training).", "",
          *paired_lines(prune.get("paired_differences") or []), ""]
    if profile["name"] == "quick":
        rl = prune["config"].get("rl", {})
        md += [f"*Quick profile*: one trial, {rl.get('episodes')} PPO episodes (+{rl.get('warmup_episodes')} warm-up) "
               "per level and as many random-search evaluations, and a few dozen fine-tuning batches per level, so "
               "these figures show the mechanics, not converged accuracy; "
               "`pruning_tools/configs/medium.yaml` (3 trials, 300 episodes) and `make table` are the real runs.",
               ""]
    md += ["![mAP vs latency](pareto.png)", "", "## Engine zoo (quantisation by constrained bisection)", "",
           f"Accuracy-drop bound δ = {manifest.get('data', {}).get('delta_points')} mAP50-95 points; "
           f"{len(manifest.get('artifacts', []))} artifacts; the node preloads the selected one per level.", "",
           *zoo_lines(manifest), "", *((["### Speed ladder", "", *lad, ""]) if (lad := ladder_lines(manifest)) else []),
           "## Accuracy per driving condition", "", *condition_lines(manifest, live), ""]
    if "conditions" in plots:
        md += ["![per-condition accuracy](conditions.png)", ""]
    md += ["## Condition policy — streaming table", "",
           f"PPO, {policy.get('timesteps')} timesteps; observation: the condition and the node's measured load; "
           f"reward: streaming accuracy under the budget — {(policy.get('budget') or {}).get('text', '–')} — every "
           "camera instant scored with the latest output available then (per-condition mAP50-95 of the level that "
           "made it x a staleness decay; dropped and late frames cost). Simulated drives (latencies: the zoo's "
           "interleaved figures), not the live run.", "", *streaming_lines(policy), ""]
    if "policy_levels" in plots:
        md += ["![policy: level over time against the condition](policy_levels.png)", ""]
    if live is not None:
        md += ["## Live node", "",
               f"`detector_node` ran as its own process; `replay` published the drive's bag with its original timing; "
               f"for the first {int(live['config']['manual_fraction'] * 100)} % of the drive a client swapped levels "
               f"through `~/set_sparsity` every {live['config']['swap_period_s']} s, then asked for `auto` and the "
               f"policy chose levels from `/driving_condition`. Detections were recorded into `{live['recorded_bag']}`.",
               "", *live_lines(live), "", "### Levels the policy chose, per condition", "", *policy_lines(live), ""]
        if "live_timeline" in plots:
            md += ["![live timeline](live_timeline.png)", ""]
    tracking = None
    if ((stages.get("live") or {}).get("tracking") or {}).get("json"):
        tracking = json.loads(Path(stages["live"]["tracking"]["json"]).read_text())
        md += ["## Real drive — streaming table per mode", "", *tracking_lines(tracking), ""]
        if "tracking_modes" in plots:
            md += ["![real drive: sAP per mode, auto's level over time against the estimated condition]"
                   "(tracking_modes.png)", ""]
    md += ["## Stage wall times", "", "| Stage | Wall (s) |", "|---|---|",
           *(f"| {k} | {v:.0f} |" for k, v in wall_times.items()), ""]
    md_path, js_path = run_dir / "report.md", run_dir / "report.json"
    md_path.write_text("\n".join(md))
    report = {"profile": profile, "device": dev, "data": data, "table1": {"dense": prune["dense"], "aggregate": prune.get("aggregate", [])}, "rl_minus_no_rl_points": gains,
              "prune_targets": prune.get("targets"), "zoo": manifest.get("artifacts"), "zoo_ladder": manifest.get("ladder"),
              "policy": {k: policy.get(k) for k in ("timesteps", "budget", "obs_version", "mean_reward_per_step")}
              | {"held_out": {k: v for k, v in (policy.get("held_out") or {}).items() if k != "trace"}},
              "live": {k: v for k, v in (live or {}).items() if k != "per_frame"},
              "real_drive_streaming": None if tracking is None else
              {k: v for k, v in tracking.items() if k != "passes"},
              "wall_s": wall_times, "plots": {k: str(v) for k, v in plots.items()}}
    js_path.write_text(strict_dumps(report, indent=2) + "\n")
    return {"markdown": md_path, "json": js_path, **plots}
