"""Streaming accuracy: what the detections topic says at each camera instant.

After Li, Wang and Ramanan, "Towards Streaming Perception" (ECCV 2020): every ground-truth instant
is matched with the *latest output the system had produced by then*, so a detector that answers
late is scored on stale boxes and one that drops frames is scored on whatever it said last
(nothing at all before its first answer). Their sAP averages COCO AP over these pairings; here the
pairing is the same and the AP is KITTI's (:class:`pruning_tools.train.kitti_ap.KittiEvaluator`:
Car IoU 0.7, Pedestrian/Cyclist 0.5, moderate cut, DontCare), so ``sap`` and ``ap`` compare with
every other figure of ``pruning-tools evaluate``.

Rule (one frame period of grace, as the issue states it): for a ground-truth frame with camera time
``t``, the output used is, among detection messages whose *input* stamp is ``<= t`` and which were
*available* by ``t + period_s``, the one available last (ties: the later input stamp). "Available"
is the time the output was published, on the camera clock (see below). When none is available the
frame is scored with no detections (its objects are all misses).

When was an output published? A detections message carries its input image's header stamp (the
camera time), never its own publication time. In a bag recorded by ``sparse_perception.tools.recorder``
the bag time of each message is the recorder's *receive* time (wall clock, a ROS time of 2026 while
KITTI's camera stamps are from 2011), so the two clocks are aligned with the image topic when the
recording holds it: ``offset = min over frames (image receive time - image stamp)`` (the replay
publishes each frame at its camera time plus one constant; the fastest delivery is taken as zero
transport delay) — or, lighter, with ``/clock`` as ``sparse_perception.tools.replay --clock`` publishes
it (the bag time of each replayed message: receive time - clock value, same minimum) — and a detection's availability is ``receive time - offset``. Without the image
topic the offset is taken from the detections themselves (their fastest answer counted as
instantaneous) — optimistic, and the result says so (``"clock": "detections"``). Staleness of a
frame = ``t - input stamp of the output used``.

Plain-Python API (no rclpy; bags read with rosbags):

* :class:`GroundTruthFrame` (stamp, :class:`~pruning_tools.train.kitti_ap.FrameTruth`) and
  :class:`StampedDetections` (input stamp, availability, boxes, scores, names);
* :func:`streaming_match(gt_frames, detections, period_s) <streaming_match>` -> :class:`StreamingResult`
  (per frame: index of the output used or ``None``, staleness, whether its own answer came);
* :func:`streaming_report(gt_frames, detections, period_s, model=, data=) <streaming_report>` -> the JSON dict
  ``{"sap": {"Car", "Pedestrian", "Cyclist"}, "ap": {...}, "frames", "answered", "with_output",
  "on_time", "mean_staleness_ms", "period_s", "model", "data", ...}`` (``ap``: the same frames, each
  matched with its own detections, whenever they came; ``answered``: frames whose own detections
  are in the recording; ``with_output``: frames with any output available under the rule;
  ``on_time``: frames whose own answer was the one used);
* :func:`read_ground_truth_bag` / :func:`read_detections_bag` and :func:`evaluate_streaming_bags`
  for bags (``pruning-tools evaluate --streaming --gt-bag GT --detections-bag DET --json OUT``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pruning_tools.data.kitti_tracking import format_gt_id, parse_gt_id
from pruning_tools.train.kitti_ap import FrameTruth, KittiEvaluator

__all__ = ["GroundTruthFrame", "StampedDetections", "StreamingResult", "streaming_match", "streaming_report",
           "read_ground_truth_bag", "read_detections_bag", "evaluate_streaming_bags", "parse_gt_id", "format_gt_id",
           "GT_TOPIC", "DETECTIONS_TOPIC", "IMAGE_TOPIC"]

CLASSES = ("Car", "Pedestrian", "Cyclist")
#: Topics of ``pruning-tools kitti to-bag`` bags and of the node (default namespace).
GT_TOPIC = "/kitti/ground_truth"
IMAGE_TOPIC = "/kitti/camera_color_left/image_raw"
DETECTIONS_TOPIC = "/detector/detections"
#: ``sparse_perception.tools.replay --clock`` publishes each message's bag time here (a light way to align clocks).
CLOCK_TOPIC = "/clock"

@dataclass
class GroundTruthFrame:
    """One ground-truth frame: camera stamp (ns) and its truth."""

    stamp_ns: int
    truth: FrameTruth


@dataclass
class StampedDetections:
    """One detections message.

    :param stamp_ns: its input image's stamp (the header stamp the node copies), camera clock.
    :param available_ns: when it was published, on the camera clock.
    :param boxes: (P, 4) xyxy; :param scores: (P,); :param names: P class names.
    :param level: the engine level that produced it (``Detection2DArray.level``), for the record.
    """

    stamp_ns: int
    available_ns: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    names: list[str] = field(default_factory=list)
    level: str = ""


@dataclass
class StreamingResult:
    """:func:`streaming_match`'s pairing.

    :param used: per ground-truth frame, index into the detections of the output used, or ``None``.
    :param own: per frame, index of the detections answering that frame itself (any time), or ``None``.
    :param staleness_ms: per frame, ``t - stamp of the output used`` in ms (NaN when none).
    """

    used: list[int | None]
    own: list[int | None]
    staleness_ms: np.ndarray

    @property
    def frames(self) -> int:
        return len(self.used)

    @property
    def with_output(self) -> int:
        return sum(u is not None for u in self.used)

    @property
    def answered(self) -> int:
        return sum(o is not None for o in self.own)

    @property
    def on_time(self) -> int:
        return sum(u is not None and u == o for u, o in zip(self.used, self.own))

    @property
    def mean_staleness_ms(self) -> float:
        s = self.staleness_ms[np.isfinite(self.staleness_ms)]
        return float(s.mean()) if s.size else float("nan")


def streaming_match(gt_frames: Sequence[GroundTruthFrame], detections: Sequence[StampedDetections],
                    period_s: float) -> StreamingResult:
    """Pair each ground-truth frame with the latest output available by its time plus one period.

    :param gt_frames: ground-truth frames (any order).
    :param detections: detections messages (any order); several with one stamp: the first available counts
        as that frame's own answer.
    :param period_s: the grace (one camera frame period, e.g. 0.1 s at 10 Hz); >= 0.
    :raises ValueError: negative period.
    """
    if not period_s >= 0:
        raise ValueError(f"period_s must be >= 0, got {period_s}")
    grace = int(round(period_s * 1e9))
    n = len(detections)
    avail = np.asarray([d.available_ns for d in detections], np.int64)
    stamp = np.asarray([d.stamp_ns for d in detections], np.int64)
    # order by availability, then input stamp: the last admissible entry is the output used
    order = np.lexsort((stamp, avail)) if n else np.zeros(0, np.int64)
    own_of: dict[int, int] = {}
    for i in order:
        own_of.setdefault(int(stamp[i]), int(i))
    used: list[int | None] = []
    own: list[int | None] = []
    stale = np.full(len(gt_frames), np.nan)
    for k, g in enumerate(gt_frames):
        t = int(g.stamp_ns)
        ok = order[(avail[order] <= t + grace) & (stamp[order] <= t)] if n else order
        u = int(ok[-1]) if ok.size else None
        used.append(u)
        own.append(own_of.get(t))
        if u is not None:
            stale[k] = (t - int(stamp[u])) / 1e6
    return StreamingResult(used, own, stale)


def _ap(gt_frames: Sequence[GroundTruthFrame], dets: Sequence[StampedDetections | None],
        classes: Sequence[str]) -> dict[str, Any]:
    ev = KittiEvaluator(classes)
    for g, d in zip(gt_frames, dets):
        if d is None:
            ev.add(g.truth, np.zeros((0, 4)), np.zeros(0), [])
        else:
            ev.add(g.truth, d.boxes, d.scores, d.names)
    return ev.compute()


def streaming_report(gt_frames: Sequence[GroundTruthFrame], detections: Sequence[StampedDetections],
                     period_s: float, *, model: str = "", data: str = "",
                     classes: Sequence[str] = CLASSES) -> dict[str, Any]:
    """The ``evaluate --streaming`` JSON of a run (see the module docstring).

    ``sap``/``ap`` hold each class's ``ap_kitti`` (AP|R40 at KITTI's IoU); ``sap_detail``/``ap_detail``
    the full :meth:`KittiEvaluator.compute` results (ap50, ap50_95, n_gt).
    """
    gt_frames = sorted(gt_frames, key=lambda g: g.stamp_ns)
    if not gt_frames:
        raise ValueError("no ground-truth frames to evaluate")
    res = streaming_match(gt_frames, detections, period_s)
    s = _ap(gt_frames, [None if u is None else detections[u] for u in res.used], classes)
    a = _ap(gt_frames, [None if o is None else detections[o] for o in res.own], classes)

    def per_class(r: dict[str, Any]) -> dict[str, float]:
        return {c: r["classes"][c]["ap_kitti"] for c in classes}

    return {"sap": per_class(s), "ap": per_class(a), "frames": res.frames, "answered": res.answered,
            "with_output": res.with_output, "on_time": res.on_time, "mean_staleness_ms": res.mean_staleness_ms,
            "staleness_ms": [None if not np.isfinite(v) else float(v) for v in res.staleness_ms],
            "period_s": float(period_s), "model": model, "data": data, "metric": "ap_kitti (AP|R40, KITTI IoU)",
            "sap_detail": s, "ap_detail": a}


# ------------------------------------------------------------------------------------------------ bags


def _stamp_of(t: Any) -> int:
    return int(t.sec) * 1_000_000_000 + int(t.nanosec)


def _stamp(header: Any) -> int:
    return _stamp_of(header.stamp)


def _boxes(msg: Any) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    from sparse_perception.node.ros_convert import detections_from_msg

    boxes, scores, names = detections_from_msg(msg)
    return boxes, scores, names, [str(d.id) for d in msg.detections]


def _open(bag: Path) -> Any:
    from rosbags.highlevel import AnyReader

    from sparse_perception.tools.bag_types import typestore

    bag = Path(bag)
    if not bag.exists():
        raise FileNotFoundError(f"{bag}: no such bag")
    return AnyReader([bag], default_typestore=typestore())


def read_ground_truth_bag(bag: Path, topic: str = GT_TOPIC) -> tuple[list[GroundTruthFrame], float]:
    """Ground-truth frames of a ``kitti to-bag`` bag and its median frame period (s).

    Ids written by :func:`format_gt_id` give occlusion and truncation; class ``DontCare`` entries are
    DontCare regions; other ids count as fully visible, untruncated.

    :raises ValueError: no ground-truth topic.
    """
    frames: list[GroundTruthFrame] = []
    with _open(bag) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            raise ValueError(f"{bag}: no {topic} topic (a `pruning-tools kitti to-bag` bag with labels?)")
        for conn, _t, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            boxes, _s, names, ids = _boxes(msg)
            care = [i for i, n in enumerate(names) if n != "DontCare"]
            meta = [parse_gt_id(ids[i]) for i in care]
            truth = FrameTruth(boxes[care], [names[i] for i in care],
                               [int(m.get("occluded", -1)) for m in meta], [m.get("truncated", 0.0) for m in meta],
                               dontcare=boxes[[i for i, n in enumerate(names) if n == "DontCare"]])
            frames.append(GroundTruthFrame(_stamp(msg.header), truth))
    frames.sort(key=lambda g: g.stamp_ns)
    if not frames:
        raise ValueError(f"{bag}: {topic} holds no messages")
    gaps = np.diff([g.stamp_ns for g in frames])
    period = float(np.median(gaps)) / 1e9 if gaps.size else 0.1
    return frames, period


def read_detections_bag(bag: Path, topic: str = DETECTIONS_TOPIC,
                        image_topic: str = IMAGE_TOPIC) -> tuple[list[StampedDetections], str]:
    """Detections recorded by ``sparse_perception.tools.recorder``, with availability on the camera clock.

    :return: ``(detections, clock)``; ``clock`` is ``"images"`` when the image topic aligned the clocks,
        ``"clock"`` when ``/clock`` (replay ``--clock``) did, ``"detections"`` when the fastest answer was taken as instantaneous (see the module docstring).
    :raises ValueError: no detections topic.
    """
    from sparse_perception.tools.live_session import cdr_header_stamp

    recv: list[tuple[int, Any]] = []
    offsets: dict[str, list[int]] = {"images": [], "clock": []}
    with _open(bag) as reader:
        names = {c.topic for c in reader.connections}
        if topic not in names:
            raise ValueError(f"{bag}: no {topic} topic (have {sorted(names)})")
        conns = [c for c in reader.connections if c.topic in (topic, image_topic, CLOCK_TOPIC)]
        for conn, t, raw in reader.messages(connections=conns):
            if conn.topic == image_topic:
                offsets["images"].append(int(t) - cdr_header_stamp(raw))  # never deserialise the pixels
                continue
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == CLOCK_TOPIC:
                offsets["clock"].append(int(t) - _stamp_of(msg.clock))
            else:
                recv.append((int(t), msg))
    clock = "images" if offsets["images"] else "clock" if offsets["clock"] else ""
    if clock:
        offset = min(offsets[clock])
    else:
        offset = min((t - _stamp(m.header) for t, m in recv), default=0)
        clock = "detections"
    out = []
    for t, m in recv:
        b, s, n, _ids = _boxes(m)
        out.append(StampedDetections(_stamp(m.header), t - offset, b, s, n, str(getattr(m, "level", ""))))
    return out, clock


def evaluate_streaming_bags(gt_bag: Path, det_bag: Path, *, period_s: float | None = None,
                            det_topic: str = DETECTIONS_TOPIC, image_topic: str = IMAGE_TOPIC,
                            model: str = "") -> dict[str, Any]:
    """:func:`streaming_report` of a recorded run against a ground-truth bag.

    :param period_s: grace; default the ground truth's median frame period.
    """
    gt, period = read_ground_truth_bag(gt_bag)
    dets, clock = read_detections_bag(det_bag, det_topic, image_topic)
    wanted = {g.stamp_ns for g in gt}
    res = streaming_report(gt, dets, period if period_s is None else period_s, model=model or str(det_bag),
                           data=f"{gt_bag} ({len(gt)} frames)")
    levels: dict[str, int] = {}
    for d in dets:
        levels[d.level] = levels.get(d.level, 0) + 1
    res.update(clock=clock, detections=len(dets), detections_matching_gt=sum(d.stamp_ns in wanted for d in dets),
               levels=levels)
    return res
