"""Replay one drive through the detector node once per mode, under a stated compute budget, recording each pass.

The node-driving half of the per-mode streaming comparison (scoring: :mod:`pruning_tools.train.streaming_modes`;
bench: ``bench/streaming_replay.py``; demo: the live stage). Usable on its own::

    python -m sparse_perception.tools.streaming_replay --manifest ZOO/manifest.json --bag GT_BAG \\
        --policy POLICY --out DIR [--modes dense s50 auto] [--rounds 2] [--load-rate 10]

What happens:

1. One ``detector_node`` process starts (namespace ``/perception``, every level preloaded, manual mode,
   ``condition_source: estimator`` — real drives carry no condition topic, so the condition comes from the
   camera in every mode, and every mode pays the estimator's cost alike — and the policy file when given).
2. The compute budget: the node serves this camera at the bag's rate (10 Hz for KITTI) while a *competing
   process* (:mod:`sparse_perception.tools.competing_load`) runs a second camera's inference on the same
   cores — the zoo's dense level at ``load_rate`` Hz with ``load_threads`` threads — for the whole session
   (``load_rate: None`` leaves the node alone). That is the policy's stated budget (two 10 Hz cameras on one
   machine) as a real process; the simulator's x1.6 / x2.4 slow-downs are not imposed on top.
3. For each round, the modes run one after the other (the order alternates between rounds, so drift of a
   noisy shared machine falls on every mode): ``~/set_sparsity`` sets the mode (a level, or ``auto``, which
   starts each pass from the zoo's first level, dense, until the policy's first switch),
   a recorder starts writing ``detections``/``detector/estimated_condition``/``engine_status`` and ``/clock`` into
   ``DIR/passes/rRR_<mode>/``, the bag is replayed with its own timing (``--clock``, which aligns the
   recording's clock with the camera's: see :mod:`pruning_tools.train.streaming`), and the recorder stops.
4. ``DIR/passes.json`` lists the passes (mode, round, bag, wall time, what the node reported).

Only processes started here are stopped (by process group); ROS isolation variables come from the caller.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sparse_perception.tools.competing_load import LoadSchedule
from sparse_perception.tools.live_session import (IMAGE_TOPIC, NAMESPACE, LiveSessionError, _tail, detector_cmd,
                                                   wait_recording)
from sparse_perception.tools.testing import ManagedProcess, python_cmd, wait_for

AUTO = "auto"
#: Topics recorded for every pass (``/clock`` from ``replay --clock`` aligns the clocks).
DETECTIONS_TOPIC = f"{NAMESPACE}/detections"
ESTIMATED_TOPIC = f"{NAMESPACE}/detector/estimated_condition"  # the node's private ~/estimated_condition
PASS_TOPICS = (DETECTIONS_TOPIC, ESTIMATED_TOPIC, f"{NAMESPACE}/engine_status", "/clock")


@dataclass(frozen=True)
class ReplayModesConfig:
    """Settings of one per-mode replay session.

    :param manifest: engine zoo manifest.
    :param bag: ground-truth bag (``pruning-tools kitti to-bag``), replayed once per mode and round.
    :param out: output folder (created; earlier passes in it are replaced).
    :param modes: levels of the zoo and/or ``"auto"``; empty = every level, then ``auto`` when a policy is given.
    :param policy: the condition policy (needed for ``auto``).
    :param rounds: passes per mode; the mode order is reversed every other round.
    :param load_rate: Hz of the competing process (a second camera's dense inference); ``None``: no load.
    :param load_threads: its ONNX Runtime threads.
    :param load_level: the level it runs (default the zoo's first, dense).
    :param load_schedule: a load that changes over the drive instead of a constant ``load_rate``:
        ``SECONDS:RATE`` segments (:class:`~sparse_perception.tools.competing_load.LoadSchedule`), restarted
        as each pass's first frame is published, so every pass meets the same load at the same drive time.
    :param threads: the node's inference threads.
    :param cooldown_s: policy cooldown (node parameter).
    :param hysteresis: agreeing policy decisions before a switch (node parameter).
    :param rate: replay rate factor (1 = the drive's own timing).
    :param settle_s: pause after each replay for the last answers before the recorder stops.
    """

    manifest: Path
    bag: Path
    out: Path
    modes: tuple[str, ...] = ()
    policy: Path | None = None
    rounds: int = 1
    load_rate: float | None = 10.0
    load_threads: int = 1
    load_level: str | None = None
    load_schedule: str | None = None
    threads: int = 2
    cooldown_s: float = 1.0
    hysteresis: float = 2.0
    rate: float = 1.0
    settle_s: float = 1.5

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if AUTO in self.modes and self.policy is None:
            raise ValueError("mode 'auto' needs a policy file (policy=...)")
        if self.load_rate is not None and self.load_rate < 0:
            raise ValueError(f"load_rate must be >= 0 Hz (0: back to back) or None, got {self.load_rate}")
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if self.load_schedule is not None:
            LoadSchedule.parse(self.load_schedule)  # raises ValueError naming the bad segment

    def budget_text(self) -> str:
        if self.load_rate is None and self.load_schedule is None:
            return "the node alone: one camera at the bag's rate"
        how = ("in segments from each pass's first frame: " + LoadSchedule.parse(self.load_schedule).describe()
               if self.load_schedule is not None else "back to back" if self.load_rate == 0
               else f"at {self.load_rate:g} Hz")
        return (f"one camera at the bag's rate on the node + a competing process running a second camera's "
                f"inference ({self.load_level or 'dense'} level of the same zoo {how}, {self.load_threads} "
                f"thread(s)) on the same cores")


def mode_order(modes: list[str], rounds: int) -> list[tuple[int, str]]:
    """``(round, mode)`` in run order: the modes in order, reversed every other round (ABC CBA ABC ...)."""
    out = []
    for r in range(rounds):
        seq = modes if r % 2 == 0 else list(reversed(modes))
        out += [(r, m) for m in seq]
    return out


def _node_cmd(cfg: ReplayModesConfig) -> list[str]:
    return detector_cmd(Path(cfg.manifest).resolve(), None if cfg.policy is None else Path(cfg.policy).resolve(),
                        cfg.cooldown_s, cfg.hysteresis, cfg.threads, "warn", params=("condition_source:=estimator",))


def _load_cmd(cfg: ReplayModesConfig) -> list[str]:
    cmd = ["-m", "sparse_perception.tools.competing_load", "--manifest", str(Path(cfg.manifest).resolve()),
           "--threads", str(cfg.load_threads)]
    cmd += ["--schedule", cfg.load_schedule] if cfg.load_schedule is not None else ["--rate", str(cfg.load_rate)]
    if cfg.load_level:
        cmd += ["--level", cfg.load_level]
    return python_cmd(*cmd)


def run_modes(cfg: ReplayModesConfig, log: Any = print) -> dict[str, Any]:
    """Run every pass (see the module docstring), logging each one as it ends; :return: the ``passes.json`` dict.

    :raises LiveSessionError: the node, the load, a replay or a recorder failed (named, with its output's end).
    """
    from sparse_perception.tools.node_client import DetectorClient

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    passes_dir = out / "passes"
    if passes_dir.exists():
        shutil.rmtree(passes_dir)
    passes_dir.mkdir()
    procs: list[ManagedProcess] = []
    client = None
    passes: list[dict[str, Any]] = []
    load_out = ""
    t_session = time.monotonic()
    try:
        node = ManagedProcess(_node_cmd(cfg), log_path=out / "node.log")
        procs.append(node)
        client = DetectorClient(namespace=NAMESPACE, image_topic=IMAGE_TOPIC, name="streaming_replay_client")
        if not wait_for(lambda: client.latest_status() is not None or not node.alive(), 180, period=0.2) \
                or not node.alive():
            raise LiveSessionError(f"detector node did not come up (no engine_status):\n{_tail(node)}")
        levels = list(client.latest_status().available_levels)
        modes = list(cfg.modes) or levels + ([AUTO] if cfg.policy is not None else [])
        unknown = [m for m in modes if m != AUTO and m not in levels]
        if unknown:
            raise ValueError(f"modes {unknown} are not levels of the zoo (have {levels})")
        load = None
        if cfg.load_rate is not None or cfg.load_schedule is not None:
            load = ManagedProcess(_load_cmd(cfg), log_path=out / "competing_load.log")
            procs.append(load)
            if not load.wait_for_output("competing_load: running", 60):
                raise LiveSessionError(f"competing load did not start:\n{_tail(load)}")
            time.sleep(1.0)  # its session is loaded and running
        order = mode_order(modes, cfg.rounds)
        log(f"streaming replay: {len(order)} passes ({', '.join(modes)} x {cfg.rounds} round(s)) of {cfg.bag}; "
            f"budget: {cfg.budget_text()}")
        for k, (rnd, mode) in enumerate(order, 1):
            if mode == AUTO:  # auto starts every pass from the same level (the zoo's first, dense), not the last mode's
                client.set_sparsity(levels[0])
            resp = client.set_sparsity(mode)
            if not resp.success:
                raise LiveSessionError(f"set_sparsity({mode!r}) refused: {resp.message}")
            want = "auto" if mode == AUTO else "manual"
            wait_for(lambda: (st := client.latest_status()) is not None and st.mode == want
                     and (mode == AUTO or st.level == mode), 10, period=0.05)
            rec_bag = passes_dir / f"r{rnd:02d}_{mode}"
            recorder = ManagedProcess(python_cmd("-m", "sparse_perception.cli", "record", "--out", str(rec_bag),
                                                 "--topics", *PASS_TOPICS), log_path=out / f"recorder_r{rnd}_{mode}.log")
            procs.append(recorder)
            wait_recording(recorder, DETECTIONS_TOPIC, f"recorder ({mode}, round {rnd})")
            t0 = time.monotonic()
            replay = ManagedProcess(python_cmd("-m", "sparse_perception.cli", "replay", str(cfg.bag), "--rate",
                                               str(cfg.rate), "--qos", "reliable", "--clock", "--wait-subscribers",
                                               "30", "--min-subscribers", "1"),
                                    log_path=out / f"replay_r{rnd}_{mode}.log")
            procs.append(replay)
            if load is not None and cfg.load_schedule is not None:
                # the schedule starts with the drive's first frame (replay prints this line just before it)
                if not replay.wait_for_output("replay: publishing", 60):
                    raise LiveSessionError(f"replay ({mode}, round {rnd}) did not start publishing:\n{_tail(replay)}")
                os.kill(load.pid, signal.SIGUSR1)
            wait_for(lambda: not replay.alive(), 3600, period=0.1)
            if replay.proc.returncode != 0:
                raise LiveSessionError(f"replay ({mode}, round {rnd}) exited with {replay.proc.returncode}:\n"
                                       f"{_tail(replay)}")
            time.sleep(cfg.settle_s)
            st = client.latest_status()
            rc = recorder.stop(timeout=20)
            procs.remove(recorder)
            procs.remove(replay)
            if rc not in (0, None) or not (rec_bag / "metadata.yaml").is_file():
                raise LiveSessionError(f"recorder ({mode}, round {rnd}) exited with {rc} and wrote no bag:\n"
                                       f"{_tail(recorder)}")
            passes.append({"mode": mode, "round": rnd, "bag": str(rec_bag), "wall_s": round(time.monotonic() - t0, 2),
                           "node_mean_inference_ms": float(st.mean_inference_ms) if st else None,
                           "level_at_end": st.level if st else None})
            log(f"streaming replay: pass {k}/{len(order)} {mode} (round {rnd}) done in {passes[-1]['wall_s']:.1f} s"
                + (f", node mean inference {st.mean_inference_ms:.1f} ms" if st else ""))
        node_alive = node.alive()
        if load is not None:
            load.stop(timeout=10)
            load_out = load.output().strip().splitlines()[-1] if load.output().strip() else ""
    finally:
        if client is not None:
            client.close()
        for p in reversed(procs):
            p.stop()
    try:
        load_stats = json.loads(load_out) if load_out.startswith("{") else None
    except json.JSONDecodeError:
        load_stats = None
    res = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
           "levels": levels, "modes": modes, "budget": cfg.budget_text(), "competing_load": load_stats,
           "node_alive_at_end": node_alive, "passes": passes, "detections_topic": DETECTIONS_TOPIC,
           "estimated_condition_topic": ESTIMATED_TOPIC, "wall_s": round(time.monotonic() - t_session, 1)}
    (out / "passes.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    return res


def main(argv: list[str] | None = None) -> int:
    """CLI: run the passes (ROS isolation variables are applied unless already set) and print passes.json."""
    ap = argparse.ArgumentParser(prog="streaming_replay", description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--bag", type=Path, required=True, help="ground-truth bag (pruning-tools kitti to-bag)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--policy", type=Path, help="condition policy (for mode auto)")
    ap.add_argument("--modes", nargs="+", default=[], help="levels and/or auto (default: every level, then auto)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--load-rate", type=float, default=10.0, help="competing process Hz (default 10; 0: back to back)")
    ap.add_argument("--no-load", action="store_true", help="no competing process: the node alone")
    ap.add_argument("--load-threads", type=int, default=1)
    ap.add_argument("--load-schedule", help="SECONDS:RATE segments of the competing load from each pass's first "
                                            "frame (e.g. 4:off,5:0,6.5:off) instead of --load-rate")
    ap.add_argument("--rate", type=float, default=1.0)
    args = ap.parse_args(argv)
    import os

    from sparse_perception.tools.testing import apply_ros_isolation

    if "ROS_DOMAIN_ID" not in os.environ:
        apply_ros_isolation()
    try:
        res = run_modes(ReplayModesConfig(args.manifest, args.bag, args.out, tuple(args.modes), args.policy,
                                          args.rounds, None if args.no_load else args.load_rate, args.load_threads,
                                          load_schedule=args.load_schedule, rate=args.rate))
    except (LiveSessionError, ValueError) as exc:
        print(f"streaming_replay: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
