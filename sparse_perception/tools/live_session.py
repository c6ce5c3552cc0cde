"""A live session: the detector node as a real process, a bag replayed into it, swaps, the policy.

Used by ``make demo`` (:mod:`pruning_tools.demo.run`); usable on its own::

    python -m sparse_perception.tools.live_session --manifest ZOO/manifest.json --bag BAG \\
        --policy POLICY.zip --out DIR

What happens, in order:

1. ``detector_node`` starts (namespace ``/perception``, zoo manifest, ``autostart``, manual mode,
   reliable image QoS for the bag player) and the recorder starts writing
   ``detections``/``engine_status``/``driving_condition`` into ``DIR/detections_bag``.
2. ``replay`` publishes the bag with its original timing. During the first ``manual_fraction`` of
   the drive a client swaps levels through ``~/set_sparsity`` every ``swap_period_s`` seconds;
   then it asks for ``auto`` and the condition policy picks the level from ``/driving_condition``.
3. Everything the node published is matched by image stamp with the bag's ground truth and
   condition: frames answered/dropped, end-to-end latency (image published by the replay →
   its detections published by the node, from DDS source timestamps), swap times, mAP per driving condition and phase, the levels
   the policy chose per condition. Results go to ``DIR/live.json`` and ``DIR/timeline.png``.

Only processes started here are stopped (by pid); ROS isolation variables come from the caller.
"""
from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparse_perception.tools.node_client import stamp_ns
from sparse_perception.tools.testing import ManagedProcess, python_cmd, wait_for

#: Topics of the bags written by ``pruning-tools kitti to-bag``.
IMAGE_TOPIC = "/kitti/camera_color_left/image_raw"
GT_TOPIC = "/kitti/ground_truth"
CONDITION_TOPIC = "/driving_condition"
NAMESPACE = "/perception"


class LiveSessionError(RuntimeError):
    """The node, the replay or the recorder failed; the message says which and why."""


@dataclass(frozen=True)
class LiveConfig:
    """Settings of one live session.

    :param manifest: engine zoo manifest.
    :param bag: rosbag2 folder written by ``pruning-tools kitti to-bag``.
    :param out: output folder (created).
    :param policy: trained policy (.zip with its .json sidecar, or a score-table .json); ``None``
        skips the auto phase.
    :param manual_fraction: share of the drive driven by manual swaps before ``auto``.
    :param swap_period_s: seconds between two manual swaps.
    :param cooldown_s: policy cooldown passed to the node.
    :param hysteresis: agreeing policy decisions in a row before a switch (passed to the node).
    :param rate: replay rate factor.
    :param threads: inference threads of the node.
    """

    manifest: Path
    bag: Path
    out: Path
    policy: Path | None = None
    manual_fraction: float = 0.4
    swap_period_s: float = 2.0
    cooldown_s: float = 2.0
    hysteresis: float = 3.0
    rate: float = 1.0
    threads: int = 2

    def __post_init__(self) -> None:
        if not 0.0 <= self.manual_fraction <= 1.0:
            raise ValueError(f"manual_fraction must be in [0, 1], got {self.manual_fraction}")
        if self.swap_period_s <= 0 or self.rate <= 0:
            raise ValueError("swap_period_s and rate must be > 0")


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def bag_summary(bag: Path) -> dict[str, Any]:
    """Image stamps, ground truth and condition per stamp, and the drive's duration from a bag."""
    from rosbags.highlevel import AnyReader

    from sparse_perception.tools.bag_types import typestore
    from sparse_perception.runtime.conditions import Condition
    from sparse_perception.node.ros_convert import detections_from_msg

    stamps: list[int] = []
    gt: dict[int, Any] = {}
    cond: dict[int, str] = {}
    with AnyReader([Path(bag)], default_typestore=typestore()) as reader:
        conns = [c for c in reader.connections if c.topic in (IMAGE_TOPIC, GT_TOPIC, CONDITION_TOPIC)]
        if not any(c.topic == IMAGE_TOPIC for c in conns):
            raise LiveSessionError(f"{bag}: no {IMAGE_TOPIC} topic (is it a `pruning-tools kitti to-bag` bag?)")
        for conn, _t, raw in reader.messages(connections=conns):
            if conn.topic == IMAGE_TOPIC:  # only the stamp is needed: never deserialize the pixels
                stamps.append(cdr_header_stamp(raw))
                continue
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == GT_TOPIC:
                boxes, _scores, names = detections_from_msg(msg)
                gt[stamp_ns(msg.header)] = (boxes, names)
            else:
                cond[stamp_ns(msg.header)] = Condition.from_codes(int(msg.illumination), int(msg.weather)).key
    stamps.sort()
    return {"stamps": stamps, "gt": gt, "condition": cond,
            "duration_s": (stamps[-1] - stamps[0]) / 1e9 if len(stamps) > 1 else 0.0}


def cdr_header_stamp(data: bytes) -> int:
    """Header stamp (ns) of a serialized message whose first field is ``std_msgs/Header``.

    Reads only the 4-byte encapsulation and the stamp (int32 sec, uint32 nanosec), so a 1.4 MB
    image is never deserialized just to learn its stamp.
    """
    if len(data) < 12:
        raise ValueError(f"serialized message too short for a header ({len(data)} bytes)")
    order = "<" if data[1] & 1 else ">"  # CDR_LE / PL_CDR_LE have the low bit set
    sec, nsec = struct.unpack_from(order + "iI", data, 4)
    return sec * 1_000_000_000 + nsec


class _Watcher:
    """rclpy side of the session: the client plus taps on images, detections and diagnostics.

    Latency uses the DDS source timestamps (the writers' wall clock, one host): image published by
    the replay → its detections published by the node.
    """

    def __init__(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, QoSReliabilityPolicy
        from sensor_msgs.msg import Image

        from sparse_perception.tools.node_client import DetectorClient
        from sparse_perception_msgs.msg import Detection2DArray

        self.client = DetectorClient(namespace=NAMESPACE, image_topic=IMAGE_TOPIC, name="demo_live_client")
        self.image_seen: dict[int, int] = {}  # stamp -> source timestamp of the image (replay publish time)
        self.det_published: dict[int, int] = {}  # stamp -> source timestamp of its detections (node publish time)
        self.diagnostics: list[Any] = []
        self.status_log: list[tuple[int, str, str]] = []  # (receipt ns, level, mode)
        self._lock = threading.Lock()
        node = self.client.node
        reliable = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE)
        node.create_subscription(Image, IMAGE_TOPIC, self._on_image, reliable, raw=True)
        node.create_subscription(Detection2DArray, f"{NAMESPACE}/detections", self._on_detections, 100)
        node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)

    def _on_image(self, data: bytes, info: Any) -> None:
        with self._lock:
            self.image_seen.setdefault(cdr_header_stamp(data), int(info["source_timestamp"]))

    def _on_detections(self, msg: Any, info: Any) -> None:
        with self._lock:
            self.det_published.setdefault(stamp_ns(msg.header), int(info["source_timestamp"]))

    def poll_status(self) -> None:
        st = self.client.latest_status()
        if st is not None and (not self.status_log or self.status_log[-1][1:] != (st.level, st.mode)):
            self.status_log.append((time.time_ns(), st.level, st.mode))

    def close(self) -> None:
        self.client.close()


def detector_cmd(manifest: Path, policy: Path | None, cooldown_s: float, hysteresis: int, threads: int,
                 log_level: str = "info", params: tuple[str, ...] = (), remaps: tuple[str, ...] = ()) -> list[str]:
    """The detector node as a child process under :data:`NAMESPACE`, autostarted in manual mode on the
    reliable :data:`IMAGE_TOPIC`; ``params`` (``name:=value``) and ``remaps`` (``from:=to``) are added."""
    base = [f"engine_manifest:={manifest}", "autostart:=true", f"image_topic:={IMAGE_TOPIC}",
            "image_reliability:=reliable", "policy_mode:=manual", f"cooldown_s:={cooldown_s}",
            f"hysteresis:={hysteresis}", f"threads:={threads}", *params]
    if policy is not None:
        base.append(f"policy_path:={policy}")
    args = ["--ros-args", "--log-level", f"detector:={log_level}", "-r", f"__ns:={NAMESPACE}"]
    for r in remaps:
        args += ["-r", r]
    for p in base:
        args += ["-p", p]
    return python_cmd("-m", "sparse_perception.node.detector_node", *args)


def _node_cmd(cfg: LiveConfig, log_level: str = "info") -> list[str]:
    return detector_cmd(cfg.manifest, cfg.policy, cfg.cooldown_s, cfg.hysteresis, cfg.threads, log_level,
                        remaps=(f"driving_condition:={CONDITION_TOPIC}",))


def wait_recording(recorder: ManagedProcess, topic: str, what: str = "recorder") -> None:
    """Block until ``recorder`` holds its ``topic`` subscription, then a moment for DDS to match it with the
    publisher: a replay started before that loses its first frames (a fixed sleep lost whole drives on a
    loaded machine). :raises LiveSessionError: it never subscribed (with its output's end)."""
    if not recorder.wait_for_output(f"subscribed {topic} ", 120):
        raise LiveSessionError(f"{what} never subscribed {topic}:\n{_tail(recorder)}")
    time.sleep(1.0)


def _tail(proc: ManagedProcess, n: int = 25) -> str:
    return "\n".join(proc.output().splitlines()[-n:])


def run_live_session(cfg: LiveConfig, log: Any = print) -> dict[str, Any]:
    """Run the session described in the module docstring and return (and write) its results.

    :raises LiveSessionError: naming the process that failed, with the end of its output.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    bag = bag_summary(cfg.bag)
    n_frames = len(bag["stamps"])
    log(f"live: bag {cfg.bag} — {n_frames} frames, {bag['duration_s']:.1f} s, "
        f"{len(bag['gt'])} ground-truth frames, {len(set(bag['condition'].values()))} conditions")
    rec_bag = out / "detections_bag"
    if rec_bag.exists():
        shutil.rmtree(rec_bag)
    procs: list[ManagedProcess] = []
    watcher: _Watcher | None = None
    swaps: list[dict[str, Any]] = []
    try:
        node = ManagedProcess(_node_cmd(cfg), log_path=out / "node.log")
        procs.append(node)
        watcher = _Watcher()
        client = watcher.client
        if not wait_for(lambda: client.latest_status() is not None or not node.alive(), 180, period=0.2) \
                or not node.alive():
            raise LiveSessionError(f"detector node did not come up (no engine_status):\n{_tail(node)}")
        levels = list(client.latest_status().available_levels)
        log(f"live: detector active with levels {levels} (initial {client.latest_status().level})")
        recorder = ManagedProcess(python_cmd("-m", "sparse_perception.cli", "record", "--out", str(rec_bag),
                                             "--topics", f"{NAMESPACE}/detections", f"{NAMESPACE}/engine_status",
                                             CONDITION_TOPIC), log_path=out / "recorder.log")
        procs.append(recorder)
        wait_recording(recorder, f"{NAMESPACE}/detections")
        replay = ManagedProcess(python_cmd("-m", "sparse_perception.cli", "replay", str(cfg.bag), "--rate",
                                           str(cfg.rate), "--qos", "reliable", "--wait-subscribers", "30",
                                           "--min-subscribers", "2"),  # the node and our watcher
                                log_path=out / "replay.log")
        procs.append(replay)
        # the first image the client sees starts the drive clock
        if not wait_for(lambda: bool(watcher.image_seen) or not replay.alive(), 60, period=0.05):
            raise LiveSessionError(f"replay published no image within 60 s:\n{_tail(replay)}")
        t_start = time.monotonic()
        drive_s = bag["duration_s"] / cfg.rate
        manual_until = t_start + cfg.manual_fraction * drive_s
        manual_levels = levels[1:] + levels[:1]  # start away from the initial level
        k, next_swap, auto_requested = 0, t_start + cfg.swap_period_s / 2, False
        t_auto = None
        from tqdm import tqdm

        bar = tqdm(total=n_frames, desc="live replay", unit="frame")
        while replay.alive():
            now = time.monotonic()
            watcher.poll_status()
            bar.update(len(watcher.image_seen) - bar.n)
            if now < manual_until and now >= next_swap and manual_levels:
                level = manual_levels[k % len(manual_levels)]
                t0 = time.monotonic()
                resp = client.set_sparsity(level)
                swaps.append({"t_s": round(now - t_start, 3), "level": level, "success": bool(resp.success),
                              "swap_ms": float(resp.swap_time_ms), "call_ms": (time.monotonic() - t0) * 1e3,
                              "message": resp.message})
                k += 1
                next_swap = now + cfg.swap_period_s
            elif now >= manual_until and not auto_requested and cfg.policy is not None:
                resp = client.set_sparsity("auto")
                if not resp.success:
                    raise LiveSessionError(f"set_sparsity('auto') refused: {resp.message}")
                auto_requested, t_auto = True, time.time_ns()
                log(f"live: t={now - t_start:.1f} s — policy in charge (auto)")
            time.sleep(0.02)
        bar.update(len(watcher.image_seen) - bar.n)
        bar.close()
        if replay.proc.returncode != 0:
            raise LiveSessionError(f"replay exited with {replay.proc.returncode}:\n{_tail(replay)}")
        # let the last frames come through, then stop recorder and node
        time.sleep(2.0)
        watcher.poll_status()
        rc = recorder.stop(timeout=20)
        if rc not in (0, None) or not (rec_bag / "metadata.yaml").is_file():
            raise LiveSessionError(f"recorder exited with {rc} and wrote no bag:\n{_tail(recorder)}")
        node_alive = node.alive()
        results = _analyse(cfg, bag, watcher, swaps, t_auto, levels)
        results["node_alive_at_end"] = node_alive
        results["recorded_bag"] = str(rec_bag)
        results["replay_output"] = _tail(replay, 12)
    finally:
        if watcher is not None:
            watcher.close()
        for p in reversed(procs):
            p.stop()
    (out / "live.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    try:
        plot_timeline(results, out / "timeline.png")
        results["timeline_png"] = str(out / "timeline.png")
    except Exception as exc:  # noqa: BLE001 - a plot must not lose the measurements
        log(f"live: timeline plot failed: {type(exc).__name__}: {exc}")
    return results


def _level_at(status_log: list[tuple[int, str, str]], t_ns: int) -> tuple[str, str]:
    level, mode = (status_log[0][1], status_log[0][2]) if status_log else ("?", "?")
    for t, lv, md in status_log:
        if t > t_ns:
            break
        level, mode = lv, md
    return level, mode


def _analyse(cfg: LiveConfig, bag: dict[str, Any], w: _Watcher, swaps: list[dict[str, Any]], t_auto: int | None,
             levels: list[str]) -> dict[str, Any]:
    from sparse_perception.runtime.metrics import MapAccumulator
    from sparse_perception.node.ros_convert import detections_from_msg
    from sparse_perception.runtime.zoo import load_manifest

    names = list(load_manifest(cfg.manifest).class_names)
    index = {n: i for i, n in enumerate(names)}
    stamps = set(bag["stamps"])
    received = [(stamp_ns(m.header), t, m) for t, m in list(w.client.detections)]
    received = [r for r in received if r[0] in stamps]  # drive frames only
    dets: dict[int, tuple[int, Any]] = {}
    for ns, t_recv, msg in received:
        dets.setdefault(ns, (t_recv, msg))
    duplicates = len(received) - len(dets)
    answered = sorted(dets)
    order_ok = [ns for ns, _t, _m in received] == answered
    overall = MapAccumulator(len(names), names)
    by_phase = {"manual": MapAccumulator(len(names), names), "auto": MapAccumulator(len(names), names)}
    chosen: dict[str, Counter] = defaultdict(Counter)
    per_frame = []
    for ns in answered:
        t_recv, msg = dets[ns]
        boxes, scores, cls = detections_from_msg(msg)
        pred_cls = np.array([index.get(c, -1) for c in cls], np.int64)
        keep = pred_cls >= 0
        level, mode = _level_at(w.status_log, t_recv)
        level = msg.level or level  # the engine that produced this frame, from the message
        cond = bag["condition"].get(ns)
        phase = "auto" if (t_auto is not None and t_recv >= t_auto and mode == "auto") else "manual"
        if ns in bag["gt"]:
            gb, gn = bag["gt"][ns]
            gc = np.array([index.get(c, -1) for c in gn], np.int64)
            gk = gc >= 0
            args = (boxes[keep], scores[keep], pred_cls[keep], gb[gk], gc[gk], np.zeros(int(gk.sum()), bool))
            overall.add(*args, condition=cond)
            by_phase[phase].add(*args, condition=cond)
        if phase == "auto" and cond:
            chosen[cond][level] += 1
        per_frame.append({"t_s": (ns - bag["stamps"][0]) / 1e9, "level": level, "mode": mode, "condition": cond,
                          "e2e_ms": (w.det_published[ns] - w.image_seen[ns]) / 1e6
                          if ns in w.image_seen and ns in w.det_published else None,
                          "detections": int(len(scores))})
    e2e = [f["e2e_ms"] for f in per_frame if f["e2e_ms"] is not None]
    acc = overall.compute() if len(overall) else {}
    phases = {k: v.compute() for k, v in by_phase.items() if len(v)}
    diag = _last_diagnostics(w.diagnostics)
    swap_ms = [s["swap_ms"] for s in swaps if s["success"]]
    cond_order = []
    for ns in bag["stamps"]:
        c = bag["condition"].get(ns)
        if c and (not cond_order or cond_order[-1] != c):
            cond_order.append(c)
    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "levels": levels,
        "frames": {"in_bag": len(bag["stamps"]), "seen_by_client": len(w.image_seen), "answered": len(answered),
                   "dropped": len(bag["stamps"]) - len(answered), "duplicated": duplicates,
                   "stamps_in_order": order_ok},
        "e2e_latency_ms": {"p50": _pct(e2e, 50), "p95": _pct(e2e, 95), "max": max(e2e) if e2e else None,
                           "n": len(e2e), "definition": "image published by the replay -> its detections published by the node "
                                         "(DDS source timestamps)"},
        "fps": len(answered) / bag["duration_s"] * cfg.rate if bag["duration_s"] else None,
        "node_diagnostics": diag,
        "swaps": {"n": len(swaps), "failed": sum(not s["success"] for s in swaps),
                  "swap_ms_p50": _pct(swap_ms, 50), "swap_ms_max": max(swap_ms) if swap_ms else None,
                  "calls": swaps},
        "accuracy": {"map50_95": acc.get("map50_95"), "map50": acc.get("map50"),
                     "by_condition": acc.get("by_condition", {}),
                     "by_phase": {k: {"map50_95": v["map50_95"], "map50": v["map50"],
                                      "by_condition": v.get("by_condition", {})} for k, v in phases.items()}},
        "policy": {"auto_from_s": None if t_auto is None else
                   round((t_auto - min(w.image_seen.values())) / 1e9, 2) if w.image_seen else None,
                   "levels_by_condition": {k: dict(v) for k, v in chosen.items()},
                   "status_changes": [{"t_ns": t, "level": lv, "mode": md} for t, lv, md in w.status_log]},
        "condition_sequence": cond_order,
        "per_frame": per_frame,
    }


def _last_diagnostics(arrays: list[Any]) -> dict[str, str]:
    for arr in reversed(arrays):
        for st in arr.status:
            if "detector" in st.name:
                return {kv.key: kv.value for kv in st.values}
    return {}


def plot_timeline(results: dict[str, Any], path: Path) -> None:
    """Level, condition and end-to-end latency over the drive (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = results["per_frame"]
    if not frames:
        raise ValueError("no answered frames to plot")
    levels = results["levels"]
    t = [f["t_s"] for f in frames]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    y = [levels.index(f["level"]) if f["level"] in levels else -1 for f in frames]
    a1.step(t, y, where="post", color="tab:green", label="active level")
    auto = [ti for ti, f in zip(t, frames) if f["mode"] == "auto"]
    if auto:
        a1.axvspan(min(auto), max(auto), color="tab:blue", alpha=0.08, label="policy (auto)")
    a1.set_yticks(range(len(levels)), levels)
    seg_start, seg = t[0], frames[0]["condition"]
    for ti, f in zip(t, frames):
        if f["condition"] != seg:
            a1.axvline(ti, color="grey", lw=0.6, ls=":")
            a1.text(seg_start, len(levels) - 0.4, seg or "?", fontsize=7)
            seg_start, seg = ti, f["condition"]
    a1.text(seg_start, len(levels) - 0.4, seg or "?", fontsize=7)
    a1.set_ylim(-0.5, len(levels))
    a1.set_ylabel("sparsity level")
    a1.legend(fontsize=7, loc="lower right")
    e2e = [(ti, f["e2e_ms"]) for ti, f in zip(t, frames) if f["e2e_ms"] is not None]
    if e2e:
        a2.plot(*zip(*e2e), ".", ms=3)
    a2.set_ylabel("end-to-end latency (ms)")
    a2.set_xlabel("drive time (s)")
    a2.grid(alpha=0.3)
    fig.suptitle("Live session: level chosen, driving condition, latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """CLI: run one live session (ROS isolation variables are applied unless already set)."""
    ap = argparse.ArgumentParser(prog="live_session", description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--bag", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--policy", type=Path)
    ap.add_argument("--manual-fraction", type=float, default=0.4)
    ap.add_argument("--swap-period", type=float, default=2.0)
    ap.add_argument("--rate", type=float, default=1.0)
    args = ap.parse_args(argv)
    import os

    from sparse_perception.tools.testing import apply_ros_isolation

    if "ROS_DOMAIN_ID" not in os.environ:
        apply_ros_isolation()
    try:
        res = run_live_session(LiveConfig(args.manifest, args.bag, args.out, args.policy, args.manual_fraction,
                                          args.swap_period, rate=args.rate))
    except (LiveSessionError, ValueError) as exc:
        print(f"live_session: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: res[k] for k in ("frames", "e2e_latency_ms", "swaps")}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
