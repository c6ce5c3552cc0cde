"""Condition policy vs every fixed level vs the oracle, streaming accuracy on held-out simulated drives.

Trains ``pruning-tools train-policy`` on a zoo manifest (default: the shipped bench zoo
``docs/bench/zoo/manifest.json``: per-condition mAP50-95 on its val split, latencies timed interleaved
by the export ladder) under a stated budget (default two 10 Hz cameras on one inference server and a
competing process slowing inference x1 / x1.6 / x2.4 in segments), then scores on drives held out from
training: the policy, each fixed level (always-dense and always-sparsest among them) and the oracle
(per segment of constant condition and load, the best fixed level under hindsight). Reports streaming
score (mean over camera instants of the used output's mAP x the staleness retention measured on the
real KITTI tracking drive, ``drive_sim.KITTI_STALENESS``), answered / dropped fractions, mean staleness, the share of the
dense -> oracle gap the policy closes; a PNG with the bars and one held-out drive's level over time
against condition and load. Simulated drives, not real ones.

    python bench/condition_policy.py --json bench/results/condition_policy.json [--timesteps 60000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_block, module_versions, write_result  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", type=Path, default=REPO / "docs" / "bench" / "zoo" / "manifest.json")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "condition_policy.json")
    p.add_argument("--timesteps", type=int, default=60000)
    p.add_argument("--eval-drives", type=int, default=20)
    p.add_argument("--cameras", type=int, default=2)
    p.add_argument("--rate-hz", type=float, default=10.0)
    p.add_argument("--loads", default="1,1.6,2.4")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="3,000 PPO steps, 4 held-out drives (make bench)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.quick:
        a.timesteps, a.eval_drives = 3000, 4
    from pruning_tools.train.policy import Budget, _loads, plot_comparison, train_policy

    machine = machine_block()
    budget = Budget(a.cameras, a.rate_hz, _loads(a.loads))
    with tempfile.TemporaryDirectory() as tmp:
        side = train_policy(a.zoo, Path(tmp) / "policy.zip", budget, a.timesteps, a.seed,
                            eval_drives=a.eval_drives, progress=not a.no_progress)
    res, trace = side["held_out"]["results"], side["held_out"]["trace"]
    png = plot_comparison(a.json.with_suffix(".png"), res, trace, side["levels"])
    fixed = {k: v["streaming_score"] for k, v in res.items() if k.startswith("fixed:")}
    out = {"machine": machine, "versions": module_versions("numpy", "torch", "stable_baselines3"),
           "zoo": str(a.zoo), "data": "simulated drives (held-out drive ids); per-condition mAP50-95 from the zoo "
                                      "manifest (its evaluation split), latencies interleaved from the manifest; "
                                      "staleness retention measured on real KITTI tracking 0000 "
                                      "(docs/bench/staleness_curve.json)",
           "budget": side["budget"], "levels": side["levels"], "latency_ms": side["latency_ms"],
           "timesteps": a.timesteps, "quick": a.quick, "seed": a.seed, "held_out_drives": side["held_out"]["drives"],
           "results": res, "gap_closed": side["held_out"]["gap_closed"],
           "best_fixed": max(fixed, key=fixed.get),
           "policy_minus_best_fixed": res["policy"]["streaming_score"] - max(fixed.values()),
           "trace": trace, "png": str(png)}
    summary = "\n".join(f"{k:>14}: score {v['streaming_score']:.4f}  answered {v['answered_fraction']:.3f}  "
                        f"dropped {v['dropped_fraction']:.3f}  staleness {v['mean_staleness_ms']:.0f} ms"
                        for k, v in res.items()) + f"\ngap closed (dense -> oracle): {out['gap_closed']}"
    write_result(a.json, out, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
