"""``recorder``: write received topics into a rosbag2 (mcap or sqlite3).

:class:`Recorder` subscribes with ``raw=True`` (serialized CDR, never deserialized), discovers
each topic's type from the ROS graph (it waits for the topic to appear), and writes the bytes
with rosbags; message definitions come from :func:`sparse_perception.tools.bag_types.typestore`
(standard types plus sparse_perception_msgs). The bag is built in a hidden temporary folder
beside ``out`` and renamed onto ``out`` only on a clean :meth:`Recorder.close`, so an
interrupted recording never leaves a half-written bag at ``out``. Usage: docs/replay.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from sparse_perception.tools.bag_integrity import seal_bag
from sparse_perception.runtime.partials import remove_stale_partials, salvage_stale_partials
from sparse_perception.tools.replay import QosChoice, import_message_class, rclpy_qos
from sparse_perception.tools.ros_cli import run_tool

STORAGES = ("mcap", "sqlite3")
QOS_MODES = ("auto", "reliable", "sensor")
#: rosbag2 metadata version written (8 is read by Humble and later).
BAG_VERSION = 8


def _policy_name(value: Any) -> str:
    return getattr(value, "name", str(value)).upper()


def subscription_qos(mode: str, publishers: Sequence[Any], depth: int = 10) -> Any:
    """rclpy ``QoSProfile`` for recording a topic.

    ``auto``: reliable when every publisher is reliable (else best effort, which matches both),
    transient local when every publisher is transient local (latched topics such as /tf_static
    are then received even when published before we subscribed). ``reliable``/``sensor``:
    reliable/best effort, volatile.

    :param publishers: ``TopicEndpointInfo`` of the topic's publishers (``qos_profile`` used).
    """
    if mode not in QOS_MODES:
        raise ValueError(f"qos must be one of {', '.join(QOS_MODES)}, got {mode!r}")
    profiles = [p.qos_profile for p in publishers]
    if mode == "auto":
        reliable = bool(profiles) and all(_policy_name(q.reliability) == "RELIABLE" for q in profiles)
        transient = bool(profiles) and all(_policy_name(q.durability) == "TRANSIENT_LOCAL" for q in profiles)
    else:
        reliable, transient = mode == "reliable", False
    return rclpy_qos(QosChoice(reliable=reliable, transient_local=transient, depth=depth))


def offered_qos(publishers: Sequence[Any]) -> list[Any]:
    """The publishers' QoS as rosbags ``Qos`` (stored as offered QoS in the bag metadata)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    def enum(kind: Any, value: Any, default: Any) -> Any:
        return getattr(kind, _policy_name(value), default)

    zero = QosTime(0, 0)
    return [Qos(history=enum(QosHistory, p.qos_profile.history, QosHistory.KEEP_LAST), depth=int(p.qos_profile.depth),
                reliability=enum(QosReliability, p.qos_profile.reliability, QosReliability.RELIABLE),
                durability=enum(QosDurability, p.qos_profile.durability, QosDurability.VOLATILE),
                deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=zero,
                avoid_ros_namespace_conventions=False) for p in publishers]


class Recorder:
    """Record ``topics`` seen by ``node`` into a rosbag2 at ``out``.

    Typical use (the caller spins ``node``; discovery runs on a 0.1 s timer of that node)::

        with Recorder(node, "run/detections_bag", ["/perception/detections"]) as rec:
            ...spin node...
        # bag complete at run/detections_bag; rec.counts -> {"/perception/detections": 412}

    or ``rec.start()`` ... ``rec.close()`` (returns the bag path). Leaving the ``with`` block on an
    exception calls :meth:`abort` (temporary bag removed, nothing at ``out``).

    :param node: an rclpy node (its clock stamps the messages: receive time, like ``ros2 bag record``).
    :param out: bag folder to create; must not exist.
    :param topics: topic names (absolute, or resolved against the node's namespace).
    :param storage: ``mcap`` or ``sqlite3``.
    :param qos: ``auto`` (adapt to the publishers), ``reliable`` or ``sensor``.
    :param depth: keep-last depth of the subscriptions.
    :param log: where progress lines go.
    :raises FileExistsError: ``out`` exists.
    :raises ValueError: bad storage/qos or no topics.
    """

    def __init__(self, node: Any, out: Path | str, topics: Sequence[str], *, storage: str = "mcap",
                 qos: str = "auto", depth: int = 10, log: TextIO | None = None) -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        if qos not in QOS_MODES:
            raise ValueError(f"qos must be one of {', '.join(QOS_MODES)}, got {qos!r}")
        if not topics:
            raise ValueError("no topics to record")
        self.node, self.out = node, Path(out)
        if self.out.exists():
            raise FileExistsError(f"output {self.out} exists; not overwriting")
        self.topics = [node.resolve_topic_name(t) for t in dict.fromkeys(topics)]
        self.storage, self.qos, self.depth = storage, qos, depth
        self.log = log or sys.stdout
        self.tmp = self.out.with_name(f".{self.out.name}.partial-{os.getpid()}")
        self.counts: dict[str, int] = {t: 0 for t in self.topics}
        self.types: dict[str, str] = {}
        self._skipped: set[str] = set()
        self._subs: dict[str, Any] = {}
        self._conns: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._writer: Any = None
        self._timer: Any = None
        self._closed = False
        self._io_stopped = False

    # ---------------------------------------------------------------------------------- lifecycle
    def start(self) -> Recorder:
        """Open the temporary bag and start discovering the topics."""
        from rosbags.rosbag2 import StoragePlugin, Writer

        if self._writer is not None:
            raise RuntimeError("recorder already started")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        for stale, kept in salvage_stale_partials(self.out):  # left by a killed recorder (its process is gone)
            files = sorted(p.name for p in kept.iterdir()) if kept.is_dir() else []
            self._print(f"warning: kept the partial bag of a killed recorder {stale.name} as {kept} "
                        f"(storage file(s) {files}; no metadata.yaml: its recorder never closed it)", err=True)
        for stale in remove_stale_partials(self.out):
            self._print(f"removed stale partial output {stale}")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.tmp, version=BAG_VERSION, storage_plugin=plugin)
        self._writer.open()
        self._print(f"recording {', '.join(self.topics)} -> {self.out} ({self.storage})")
        self._discover()
        self._timer = self.node.create_timer(0.1, self._discover)
        return self

    @property
    def total(self) -> int:
        """Messages written so far."""
        return sum(self.counts.values())

    def missing(self) -> list[str]:
        """Topics not subscribed yet (type not discovered, or skipped)."""
        return [t for t in self.topics if t not in self._subs]

    def close(self) -> Path:
        """Stop, finish the bag and move it to ``out``; returns ``out``.

        :raises FileExistsError: ``out`` appeared meanwhile (the bag stays at :attr:`tmp`).
        """
        self._stop_io()
        with self._lock:
            self._closed = True
            if self._writer is None:
                raise RuntimeError("recorder was not started")
            self._writer.close()
            self._writer = None
        seal_bag(self.tmp)  # chunk CRCs: replay can then tell a damaged chunk
        for t in self.missing():
            if t not in self._skipped:
                self._print(f"warning: topic {t} never appeared; nothing recorded for it", err=True)
        if self.out.exists():
            raise FileExistsError(f"output {self.out} appeared while recording; bag left at {self.tmp}")
        os.rename(self.tmp, self.out)
        return self.out

    def abort(self) -> None:
        """Stop and delete the temporary bag (nothing is written at ``out``)."""
        self._stop_io()
        with self._lock:
            self._closed = True
            writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - it is being thrown away
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # ---------------------------------------------------------------------------------- internals
    def _print(self, text: str, err: bool = False) -> None:
        print(f"recorder: {text}", file=sys.stderr if err else self.log, flush=True)

    def _stop_io(self) -> None:
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
            self._timer = None
        if not self._io_stopped:
            self._io_stopped = True
            for sub in self._subs.values():
                self.node.destroy_subscription(sub)

    def _discover(self) -> None:
        if self._closed:
            return
        pending = [t for t in self.topics if t not in self._subs and t not in self._skipped]
        if not pending:
            if self._timer is not None:
                self.node.destroy_timer(self._timer)
                self._timer = None
            return
        graph = dict(self.node.get_topic_names_and_types())
        for topic in pending:
            if topic in graph:
                self._subscribe(topic, graph[topic])

    def _subscribe(self, topic: str, msgtypes: list[str]) -> None:
        from sparse_perception.tools.bag_types import typestore

        if len(msgtypes) != 1:
            self._skip(topic, f"it has several types on the graph ({', '.join(msgtypes)})")
            return
        msgtype = msgtypes[0]
        try:
            cls = import_message_class(msgtype)
        except ImportError as exc:
            self._skip(topic, f"message type not importable ({exc})")
            return
        publishers = self.node.get_publishers_info_by_topic(topic)
        if not publishers:
            return  # only subscribers so far; the type is known, but wait for a publisher's QoS
        try:
            conn = self._writer.add_connection(topic, msgtype, typestore=typestore(),
                                               offered_qos_profiles=offered_qos(publishers))
        except Exception as exc:  # noqa: BLE001 - rosbags raises KeyError/TypesysError for unknown types
            self._skip(topic, f"no message definition for {msgtype} in the typestore ({exc!r})")
            return
        with self._lock:
            self._conns[topic] = conn
        self.types[topic] = msgtype
        self._subs[topic] = self.node.create_subscription(
            cls, topic, lambda data, t=topic: self._on_message(t, data),
            subscription_qos(self.qos, publishers, self.depth), raw=True)
        self._print(f"subscribed {topic} [{msgtype}]")

    def _skip(self, topic: str, why: str) -> None:
        self._skipped.add(topic)
        self._print(f"warning: not recording {topic}: {why}", err=True)

    def _on_message(self, topic: str, data: bytes) -> None:
        stamp = self.node.get_clock().now().nanoseconds
        with self._lock:
            if self._closed or self._writer is None:
                return
            self._writer.write(self._conns[topic], stamp, data)
            self.counts[topic] += 1


def _drain(executor: Any, rec: Recorder, max_s: float = 1.0) -> None:
    """Take what already arrived (callbacks ready) before closing, for at most ``max_s``."""
    deadline, idle = time.monotonic() + max_s, 0
    while idle < 3 and time.monotonic() < deadline:
        before = rec.total
        executor.spin_once(timeout_sec=0.01)
        idle = idle + 1 if rec.total == before else 0


# ------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``recorder`` / ``sparse-perception record``."""
    p = argparse.ArgumentParser(prog="recorder", description="Record topics (raw CDR) into a rosbag2.")
    p.add_argument("--out", "-o", type=Path, required=True, help="bag folder to create (must not exist)")
    p.add_argument("--topics", nargs="+", required=True, metavar="T", help="topics to record")
    p.add_argument("--storage", choices=STORAGES, default="mcap", help="storage plugin (default mcap)")
    p.add_argument("--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (0: until Ctrl-C)")
    p.add_argument("--max-messages", type=int, default=0, metavar="N",
                   help="stop after N messages in total (0: no limit)")
    p.add_argument("--qos", choices=QOS_MODES, default="auto",
                   help="auto: adapt to the publishers (default); reliable; sensor: best effort")
    p.add_argument("--qos-depth", type=int, default=10, metavar="N", help="keep-last depth (default 10)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``recorder`` / ``sparse-perception record``: 0 on a clean end, 2 on bad input."""
    return run_tool(build_parser(), argv, _run, _check)


def _check(args: argparse.Namespace) -> None:
    if args.out.exists():
        raise FileExistsError(f"output {args.out} exists; not overwriting")
    from rclpy.exceptions import InvalidTopicNameException
    from rclpy.validate_topic_name import validate_topic_name

    for topic in args.topics:
        try:
            validate_topic_name(topic)
        except InvalidTopicNameException as exc:
            first = str(exc).splitlines()[0]
            raise ValueError(f"--topics: {topic!r} is not a valid ROS topic name ({first})") from None
    if args.duration < 0 or args.max_messages < 0 or args.qos_depth < 1:
        raise ValueError("--duration and --max-messages must be >= 0, --qos-depth >= 1")


def _run(args: argparse.Namespace, stop: threading.Event) -> int:
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    node = Node("recorder")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    rec = Recorder(node, args.out, args.topics, storage=args.storage, qos=args.qos, depth=args.qos_depth)
    rec.start()
    t0 = time.monotonic()
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)
            if args.duration and time.monotonic() - t0 >= args.duration:
                break
            if args.max_messages and rec.total >= args.max_messages:
                break
        _drain(executor, rec)
    except BaseException:
        rec.abort()
        raise
    out = rec.close()
    node.destroy_node()
    print(f"recorder: wrote {rec.total} messages in {time.monotonic() - t0:.2f} s to {out}")
    for topic in rec.topics:
        print(f"  {topic:<40} {rec.counts[topic]:>6}  {rec.types.get(topic, '(not recorded)')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
