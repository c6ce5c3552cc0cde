"""Real drive through the node, per mode, under a stated compute budget: streaming AP, answered frames, staleness.

A ground-truth bag (default: ``pruning-tools kitti to-bag`` of the KITTI tracking sequence 0000 in
``../shared/data/kitti_tracking``: 154 real frames, real camera stamps, 711 labelled boxes) is replayed through
one detector-node process once per mode — each fixed level of the zoo, and ``auto`` with the condition
policy and ``condition_source: estimator`` (no condition topic) — while a competing process runs a second
camera's inference (the zoo's dense level at 10 Hz, 1 thread) on the same cores: the policy's budget
(two 10 Hz cameras on one machine) as a real process. Modes run in alternation (ABC, CBA, ...) over
``--rounds``. Each pass's detections are recorded and scored with the streaming evaluator
(:mod:`pruning_tools.train.streaming`): sAP per class, mean over the classes with ground truth, frames
answered, mean staleness; the issue's targets (``auto`` >= best fixed level + 1.0 sAP point and >= always-dense)
are judged. JSON + PNG (sAP per mode; auto's level over time against the estimated condition).

    python bench/streaming_replay.py --zoo ZOO/manifest.json --policy POLICY.zip --json OUT.json [--rounds 2]

Without ``--zoo`` a zoo is built from the shipped baseline (dense, s50, s75 uniform at 384x1248, not
fine-tuned: plumbing-grade accuracy, stated in the JSON). Without ``--policy`` only the fixed levels run.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO / "test"))  # helpers.zoo_builder
from _report import machine_block, module_versions, write_result  # noqa: E402

DEFAULT_TRACKING = REPO.parent / "shared" / "data" / "kitti_tracking"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", type=Path, help="engine zoo manifest (default: build one from the shipped baseline)")
    p.add_argument("--policy", type=Path, help="condition policy (.zip + .json sidecar, or a score-table .json)")
    p.add_argument("--bag", type=Path, help="ground-truth bag (default: to-bag of --kitti-tracking/--sequence)")
    p.add_argument("--kitti-tracking", type=Path, default=DEFAULT_TRACKING)
    p.add_argument("--sequence", default="0000")
    p.add_argument("--modes", nargs="+", default=[], help="levels and/or auto (default: every level, then auto)")
    p.add_argument("--rounds", type=int, default=2, help="passes per mode, in alternation (default 2; --quick 1)")
    p.add_argument("--load-rate", type=float, default=10.0, help="competing process Hz (default 10; 0: back to back)")
    p.add_argument("--no-load", action="store_true", help="no competing process (the node alone)")
    p.add_argument("--load-schedule", help="competing load in SECONDS:RATE segments from each pass's first frame "
                                           "(e.g. 4:off,5:0,6.5:off; RATE Hz, 0 back to back, off idle)")
    p.add_argument("--load-threads", type=int, default=1, help="competing process threads (default 1)")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "streaming_replay.json")
    p.add_argument("--quick", action="store_true", help="one round")
    p.add_argument("--work", type=Path, help="keep the passes here (default: a temporary folder)")
    a = p.parse_args(argv)
    import os

    os.environ.setdefault("YOLO_OFFLINE", "1")
    from pruning_tools.train.streaming_modes import compare, modes_lines, plot_modes, score_passes
    from sparse_perception.tools.streaming_replay import ReplayModesConfig, run_modes
    from sparse_perception.tools.testing import apply_ros_isolation

    machine = machine_block()
    if "ROS_DOMAIN_ID" not in os.environ:
        apply_ros_isolation()
    with tempfile.TemporaryDirectory(prefix="streaming_replay_") as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        bag = a.bag
        if bag is None:
            if not (a.kitti_tracking / "training" / "label_02" / f"{a.sequence}.txt").is_file():
                why = (f"no KITTI tracking sequence {a.sequence} under {a.kitti_tracking} (give --kitti-tracking "
                       "ROOT or --bag BAG)")
                write_result(a.json, {"machine": machine, "skipped": why}, f"streaming_replay: skipped: {why}")
                return 0  # `make bench` on a machine without ../shared: nothing to replay, said so in the JSON
            from pruning_tools.data.bag import tracking_to_bag

            bag = work / f"tracking_{a.sequence}_bag"
            if not bag.exists():
                tracking_to_bag(a.kitti_tracking, a.sequence, bag)
        zoo_note = "given"
        if a.zoo is None:
            from helpers.zoo_builder import build_zoo

            a.zoo = build_zoo(work / "zoo", imgsz=(384, 1248))
            zoo_note = ("built by test/helpers/zoo_builder.py from the shipped baseline: dense + uniform s50/s75 at "
                        "384x1248, not fine-tuned (the pruned levels' accuracy is plumbing-grade)")
        rounds = 1 if a.quick else a.rounds
        cfg = ReplayModesConfig(a.zoo, bag, work / "passes_run", tuple(a.modes), a.policy, rounds,
                                None if a.no_load else a.load_rate, a.load_threads,
                                load_schedule=None if a.no_load else a.load_schedule)
        passes = run_modes(cfg)
        scored = score_passes(bag, passes)
        cmp = compare(scored, dense=passes["levels"][0] if passes["levels"] else None)
        png = plot_modes(scored, a.json.with_suffix(".png"), passes["levels"])
    auto_trace = next((p["trace"] for p in scored["passes"] if p["mode"] == "auto"), None)
    for ps in scored["passes"]:
        ps.pop("trace", None)
    out = {"machine": machine, "versions": module_versions("numpy", "onnxruntime", "rclpy"),
           "data": f"ground-truth bag {bag} (given with --bag)" if a.bag else f"real KITTI tracking sequence {a.sequence} "
                   f"({a.kitti_tracking}), every frame, its real camera stamps",
           "zoo": str(a.zoo), "zoo_note": zoo_note, "policy": str(a.policy) if a.policy else None,
           "budget": passes["budget"], "competing_load": passes["competing_load"], "rounds": rounds,
           "levels": passes["levels"], "modes": scored["modes"], "passes": scored["passes"], "compare": cmp,
           "metric": scored["metric"], "auto_trace": auto_trace, "png": str(png), "wall_s": passes["wall_s"]}
    summary = "\n".join(modes_lines(scored, cmp)) + f"\nPNG: {png}"
    write_result(a.json, out, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
