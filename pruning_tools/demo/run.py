"""``make demo`` / ``make table``: the whole product, end to end, on embedded defaults.

Stages (each resumable: rerunning the same command skips finished stages; a failure stops with
the stage's name and the cause)::

    data     generate a KITTI-format dataset (or convert a real KITTI root) -> YOLO dataset;
             generate a driving sequence with changing conditions -> rosbag2
    prune    pruning-tools prune: 50/75/90 %, uniform / importance (no RL) / random / global / full (RL)
    export   pruning-tools export: FP32/FP16/INT8 bisection -> engine zoo + manifest
    policy   pruning-tools train-policy: PPO condition policy on the zoo's measured figures
    live     detector node (real process) <- replayed bag; manual swaps, then the policy;
             detections recorded into a bag; with --kitti-tracking also the real tracking drive
             replayed once per mode (each level, auto) under a competing load, scored by streaming AP
    report   report.md + report.json + PNG plots in the run folder

    python -m pruning_tools.demo.run [--profile quick|full] [--run-dir DIR] [--kitti-root DIR]
        [--kitti-tracking ROOT [--tracking-sequence SSSS]]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pruning_tools.assets import CONFIGS
from pruning_tools.cli import set_offline_env
from pruning_tools.demo.stages import Stage, StageError, StageRunner

#: Conditions of the demo drive, one per segment, in order (night and fog are the hard ones).
SEQUENCE_CONDITIONS = ("day_clear", "dusk_rain", "night_clear", "day_fog", "night_fog", "day_clear")


@dataclass(frozen=True)
class Profile:
    """Sizes of one demo profile.

    :param prune_config: file in ``pruning_tools/configs``.
    :param frames: generated object frames (train/val/test 80/10/10).
    :param sequence_frames: frames of the generated drive (10 Hz).
    :param segment_frames: frames per driving-condition segment of the drive.
    :param export_quick: ``pruning-tools export --quick`` (fewer calibration/eval images).
    :param policy_timesteps: PPO timesteps of the condition policy.
    :param manual_fraction: share of the drive driven by manual swaps before the policy takes over.
    :param tracking_modes: modes of the real-drive replay (``--kitti-tracking``); empty: every level, then auto.
    """

    name: str
    prune_config: str
    frames: int
    sequence_frames: int
    segment_frames: int
    export_quick: bool
    policy_timesteps: int
    manual_fraction: float = 0.4
    swap_period_s: float = 2.0
    tracking_modes: tuple[str, ...] = ()


PROFILES = {
    "quick": Profile("quick", "quick.yaml", frames=480, sequence_frames=300, segment_frames=50,
                     export_quick=True, policy_timesteps=30_000),
    "full": Profile("full", "full.yaml", frames=3000, sequence_frames=900, segment_frames=150,
                    export_quick=False, policy_timesteps=100_000),
}


class Demo:
    """The demo's stages over one run folder.

    :param run_dir: run folder (resumable).
    :param profile: sizes.
    :param kitti_root: a real KITTI object root to prune/evaluate on instead of generated scenes.
    :param seed: seed of the generated data.
    :param real_eval: a real KITTI object root for real-frame AP columns (prune table, zoo, report).
    :param kitti_tracking: a KITTI tracking root: the live stage also replays its sequence
        ``tracking_sequence`` through the node once per mode and the report gets its streaming table.
    """

    def __init__(self, run_dir: Path, profile: Profile, kitti_root: Path | None = None, seed: int = 0,
                 real_eval: Path | None = None, kitti_tracking: Path | None = None,
                 tracking_sequence: str = "0000") -> None:
        self.run_dir, self.profile, self.kitti_root, self.seed = Path(run_dir), profile, kitti_root, seed
        self.real_eval = Path(real_eval).resolve() if real_eval is not None else None
        self.kitti_tracking = Path(kitti_tracking).resolve() if kitti_tracking is not None else None
        self.tracking_sequence = tracking_sequence
        self.py = sys.executable
        # the offline YOLO_* switches come from pruning-tools itself (cli.set_offline_env) in every child
        env = {"YOLO_CONFIG_DIR": str(self.run_dir / ".ultralytics"), "MPLBACKEND": "Agg"}
        self.runner = StageRunner(self.run_dir, self.stages(), env=env)

    def stages(self) -> list[Stage]:
        return [
            Stage("data", "KITTI-format dataset and a driving-sequence bag", self.stage_data),
            Stage("prune", "pruning at 50/75/90 % (uniform, importance, random, global, full)", self.stage_prune),
            Stage("export", "quantise (FP32/FP16/INT8 bisection) and export the engine zoo", self.stage_export),
            Stage("policy", "train the condition-driven sparsity policy (PPO)", self.stage_policy),
            Stage("live", "detector node on the replayed drive: swaps, then the policy", self.stage_live),
            Stage("report", "report (markdown, JSON, PNG)", self.stage_report),
        ]

    # ------------------------------------------------------------------------------------ paths
    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    def baseline_split_file(self) -> Path | None:
        """The shipped baseline's real train/val/test frame ids as a split file (``None`` if it records none), so
        a real root's frames it was trained on never land in the test split."""
        from pruning_tools.train.evaluate import baseline_real_splits
        from pruning_tools.assets import DEFAULT_BASELINE

        splits = baseline_real_splits(DEFAULT_BASELINE)
        if not splits:
            return None
        path = self.data_dir / "baseline_splits.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(splits, indent=1) + "\n")
        return path

    def real_train_mix(self, r: StageRunner, n_train: int) -> list[Any]:
        """With ``--real-eval`` on generated scenes: the real frames the shipped baseline was trained on (and only
        those: they are left out of every real-frame figure) as a YOLO dataset that pruning mixes into its
        training batches, about half of each batch, as when the baseline was trained. ``[]`` otherwise."""
        from pruning_tools.train.evaluate import baseline_real_splits
        from pruning_tools.data import convert_kitti
        from pruning_tools.assets import DEFAULT_BASELINE

        train_ids = baseline_real_splits(DEFAULT_BASELINE).get("train", [])
        if self.real_eval is None or self.kitti_root is not None or not train_ids:
            return []
        from pruning_tools.data.kitti_dataset import KittiObjectDataset

        have = set(KittiObjectDataset(self.real_eval).ids)
        ids = [i for i in train_ids if i in have]
        if not ids:
            return []
        out = self.data_dir / "real_train_yolo"
        if out.exists():
            shutil.rmtree(out)
        convert_kitti(self.real_eval, out, split=(1.0, 0.0, 0.0), only_ids=ids, progress=False)
        repeats = max(1, round(n_train / len(ids)))
        r.log(f"pruning mixes in the baseline's {len(ids)} real training frames x {repeats} ({out})")
        return [str(out), repeats]

    def real_args(self) -> list[str]:
        return ["--real-eval", str(self.real_eval)] if self.real_eval is not None else []

    def cli(self, *args: str) -> list[str]:
        return [self.py, "-m", "pruning_tools.cli", *args]

    # ------------------------------------------------------------------------------------ stages
    def stage_data(self, r: StageRunner) -> dict[str, Any]:
        from pruning_tools.data import convert_kitti, generate_dataset, raw_drive_to_bag

        p = self.profile
        yolo = self.data_dir / "yolo"
        for d in (yolo, self.data_dir / "kitti", self.data_dir / "sequence", self.data_dir / "sequence_bag"):
            if d.exists():  # a half-finished earlier attempt: start this stage over
                shutil.rmtree(d)
        if self.kitti_root is not None:
            source = f"real KITTI object data at {self.kitti_root}"
            r.log(f"converting {source}")
            split_file = self.baseline_split_file()
            if split_file is not None:
                r.log("frames the shipped baseline was trained/selected on keep their train/val split "
                      f"({split_file})")
            convert_kitti(self.kitti_root, yolo, split_file=split_file)
        else:
            source = f"generated KITTI-format scenes ({p.frames} frames, seed {self.seed})"
            r.log(f"generating {p.frames} scenes")
            generate_dataset(self.data_dir / "kitti", frames=p.frames, seed=self.seed)
            convert_kitti(self.data_dir / "kitti", yolo)
        r.log(f"generating a {p.sequence_frames}-frame drive: {' -> '.join(SEQUENCE_CONDITIONS)}")
        drive = generate_dataset(self.data_dir / "sequence", frames=p.sequence_frames, seed=self.seed + 1000,
                                 sequence=True, conditions=list(SEQUENCE_CONDITIONS),
                                 segment_frames=p.segment_frames)
        bag = raw_drive_to_bag(drive, self.data_dir / "sequence_bag")
        splits = json.loads((yolo / "splits.json").read_text()) if (yolo / "splits.json").is_file() else {}
        mix = self.real_train_mix(r, len(splits.get("train", [])))
        return {"source": source, "dataset": str(yolo), "drive": str(drive), "bag": str(bag), "mix": mix,
                "split_sizes": {k: len(v) for k, v in splits.items() if isinstance(v, list)},
                "sequence_frames": p.sequence_frames, "sequence_conditions": list(SEQUENCE_CONDITIONS)}

    def stage_prune(self, r: StageRunner) -> dict[str, Any]:
        data = r.result("data")
        run = self.run_dir / "prune"
        mix = ["--mix", *(str(v) for v in data["mix"])] if data.get("mix") else []
        r.sh(self.cli("prune", "--config", str(CONFIGS / self.profile.prune_config), "--out", str(run),
                      "--data", data["dataset"], *mix, *self.real_args()), "prune")
        res = json.loads((run / "results.json").read_text())
        return {"run": str(run), "targets": res.get("targets", {}), "wall_s": res.get("wall_s"),
                "evaluator": res.get("evaluator")}

    def stage_export(self, r: StageRunner) -> dict[str, Any]:
        run, zoo = r.result("prune")["run"], self.run_dir / "zoo"
        args = ["export", "--run", run, "--zoo", str(zoo), "--overwrite"]
        if self.profile.export_quick:
            args.append("--quick")
        args += self.real_args()
        r.sh(self.cli(*args), "export")
        manifest = json.loads((zoo / "manifest.json").read_text())
        excluded = [r["level"] for r in (manifest.get("ladder") or {}).get("excluded", [])]
        if excluded:
            r.log(f"left out of the zoo's speed ladder (not faster than a more accurate level): {excluded}")
        return {"zoo": str(zoo), "manifest": str(zoo / "manifest.json"),
                "artifacts": len(manifest.get("artifacts", [])), "excluded_levels": excluded}

    def stage_policy(self, r: StageRunner) -> dict[str, Any]:
        manifest = r.result("export")["manifest"]
        out = self.run_dir / "policy" / "policy.zip"
        r.sh(self.cli("train-policy", "--zoo", manifest, "--out", str(out), "--timesteps",
                      str(self.profile.policy_timesteps), "--seed", str(self.seed), "--eval-drives", "6",
                      "--no-progress"), "policy")
        side = json.loads(out.with_suffix(".json").read_text())
        return {"policy": str(out), "mean_reward_per_step": side.get("mean_reward_per_step"),
                "budget": side.get("budget"), "gap_closed": (side.get("held_out") or {}).get("gap_closed"),
                "timesteps": side.get("timesteps")}

    def stage_live(self, r: StageRunner) -> dict[str, Any]:
        from sparse_perception.tools.testing import apply_ros_isolation

        # This process and its children (node, replay, recorder) get their own DDS domain.
        env = apply_ros_isolation(ros_home=self.run_dir / "ros_home")
        r.log(f"ROS isolation: ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, localhost discovery")
        from sparse_perception.tools.live_session import LiveConfig, run_live_session

        p = self.profile
        cfg = LiveConfig(manifest=Path(r.result("export")["manifest"]), bag=Path(r.result("data")["bag"]),
                         out=self.run_dir / "live", policy=Path(r.result("policy")["policy"]),
                         manual_fraction=p.manual_fraction, swap_period_s=p.swap_period_s)
        res = run_live_session(cfg, log=r.log)
        out = {"live_json": str(self.run_dir / "live" / "live.json"), "frames": res["frames"],
               "swaps": {k: v for k, v in res["swaps"].items() if k != "calls"}}
        if self.kitti_tracking is not None:
            out["tracking"] = self.live_tracking(r, cfg.manifest, cfg.policy)
        return out

    def live_tracking(self, r: StageRunner, manifest: Path, policy: Path | None) -> dict[str, Any]:
        """The real tracking drive through the node once per mode (every level, then ``auto`` with the policy and
        ``condition_source: estimator``) beside a competing process (a second camera's dense inference at 10 Hz),
        each pass scored with the streaming evaluator; writes ``live/tracking/streaming_modes.json`` + PNG."""
        from pruning_tools.data.bag import tracking_to_bag
        from pruning_tools.data.files import strict_dumps
        from pruning_tools.train.streaming_modes import compare, plot_modes, score_passes
        from sparse_perception.tools.streaming_replay import ReplayModesConfig, run_modes

        out = self.run_dir / "live" / "tracking"
        bag = self.data_dir / f"tracking_{self.tracking_sequence}_bag"
        if bag.exists() and not (bag / "metadata.yaml").is_file():
            shutil.rmtree(bag)
        if not bag.exists():
            r.log(f"real drive: KITTI tracking sequence {self.tracking_sequence} of {self.kitti_tracking} -> {bag}")
            tracking_to_bag(self.kitti_tracking, self.tracking_sequence, bag, progress=False)
        passes = run_modes(ReplayModesConfig(manifest, bag, out, modes=tuple(self.profile.tracking_modes), policy=policy,
                                             rounds=1, load_rate=10.0), log=r.log)
        scored = score_passes(bag, passes)
        cmp = compare(scored, dense=passes["levels"][0] if passes["levels"] else None)
        png = plot_modes(scored, out / "modes.png", passes["levels"])
        js = out / "streaming_modes.json"
        js.write_text(strict_dumps({"data": f"real KITTI tracking sequence {self.tracking_sequence} "
                                            f"({self.kitti_tracking}), every frame, real camera stamps",
                                    "budget": passes["budget"], "competing_load": passes["competing_load"],
                                    "levels": passes["levels"], "rounds": 1, "compare": cmp, **scored},
                                   indent=2) + "\n")
        if cmp.get("auto_sap") is not None:
            r.log(f"real drive: auto sAP {100 * cmp['auto_sap']:.1f} vs best fixed {cmp['best_fixed']} "
                  f"{100 * cmp['best_fixed_sap']:.1f} (target met: {cmp['target_met']})")
        return {"json": str(js), "png": str(png), "bag": str(bag), "compare": cmp}

    def stage_report(self, r: StageRunner) -> dict[str, Any]:
        from pruning_tools.demo.report import write_report

        paths = write_report(self.run_dir, {s.name: r.result(s.name) for s in self.stages() if s.name != "report"},
                             profile=asdict(self.profile), wall_times=r.wall_times())
        return {k: str(v) for k, v in paths.items()}

    def run(self, fresh_from: str | None = None) -> dict[str, Any]:
        results = self.runner.run(fresh_from=fresh_from)
        report = Path(results["report"]["markdown"])
        print("\n" + report.read_text())
        print(f"report: {report} (JSON and PNG plots beside it)")
        return results


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (``pruning-tools demo`` and ``python -m pruning_tools.demo.run``)."""
    ap = argparse.ArgumentParser(prog="pruning-tools demo", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="quick",
                    help="quick (default, ~15 min on 2 cores) or full (the seed's Table 1 setting; hours)")
    ap.add_argument("--run-dir", type=Path, help="run folder (default demo_runs/<profile>); rerun to resume")
    ap.add_argument("--kitti-root", type=Path, help="real KITTI object root (training/image_2, label_2) "
                                                    "to prune and evaluate on instead of generated scenes")
    ap.add_argument("--real-eval", type=Path, help="real KITTI object root: real-frame AP columns in Table 1, the zoo "
                                                   "and the report (the baseline's real train/val frames left out)")
    ap.add_argument("--kitti-tracking", type=Path, help="KITTI tracking root (training/image_02, label_02): the live "
                                                       "stage also replays its sequence through the node per mode "
                                                       "and the report gets a real streaming table")
    ap.add_argument("--tracking-sequence", default="0000", help="sequence of --kitti-tracking (default 0000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated data (default 0)")
    ap.add_argument("--fresh-from", choices=("data", "prune", "export", "policy", "live", "report"),
                    help="forget this stage and the later ones, then run")
    args = ap.parse_args(argv)
    set_offline_env()
    if args.kitti_root is not None and not (args.kitti_root / "training" / "label_2").is_dir() \
            and not (args.kitti_root / "label_2").is_dir():
        print(f"demo: --kitti-root {args.kitti_root} has no training/label_2 folder", file=sys.stderr)
        return 2
    if args.real_eval is not None and not (args.real_eval / "training" / "label_2").is_dir() \
            and not (args.real_eval / "label_2").is_dir():
        print(f"demo: --real-eval {args.real_eval} has no training/label_2 folder", file=sys.stderr)
        return 2
    if args.kitti_tracking is not None and not (args.kitti_tracking / "training" / "label_02"
                                                / f"{args.tracking_sequence}.txt").is_file():
        print(f"demo: --kitti-tracking {args.kitti_tracking} has no training/label_02/{args.tracking_sequence}.txt",
              file=sys.stderr)
        return 2
    run_dir = args.run_dir or Path("demo_runs") / args.profile
    try:
        Demo(run_dir, PROFILES[args.profile], args.kitti_root, args.seed, args.real_eval, args.kitti_tracking,
             args.tracking_sequence).run(args.fresh_from)
    except StageError as exc:
        print(f"\ndemo stopped: {exc}\nFix the cause and rerun the same command: finished stages are kept.",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
