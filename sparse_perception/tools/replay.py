"""``replay``: publish a rosbag2's topics with the original timing.

Core (no ROS, unit-tested): :func:`select_topics`, :class:`ReplaySchedule` (bag messages →
due times relative to the start, rate factor, start offset, loop), :class:`Pacer` (sleeps until
each due time on the monotonic clock; due times are absolute from the start, so oversleeping
never accumulates), :func:`choose_qos` and :class:`ReplayStats` (counts, lateness percentiles).
Shell: :func:`play` creates one rclpy publisher per topic and publishes the recorded CDR bytes
unchanged (header stamps stay as recorded). Usage and measured accuracy: docs/replay.md.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from sparse_perception.tools.ros_cli import run_tool

#: Message types whose topics ``--wait-subscribers`` waits for.
IMAGE_TYPES = frozenset({"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"})
QOS_MODES = ("bag", "reliable", "sensor")
#: Loop period for a pass that holds a single message (seconds of bag time).
SINGLE_MESSAGE_PERIOD_S = 1.0
#: Longest wait at the end for reliable subscribers to acknowledge the last messages.
ACK_TIMEOUT_S = 5.0
_CHUNK_S = 0.05  # longest single sleep, so a stop request is noticed promptly


# ------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class ReplayOptions:
    """How to replay a bag (CLI flags converted at the edge).

    :param rate: playback speed factor (2.0 = twice as fast, half the duration).
    :param loop: start over after the last message, until stopped.
    :param topics: topics to publish (empty = all).
    :param exclude: topics never published.
    :param start_offset_s: skip this many seconds of bag time from the bag's start.
    :param qos: ``bag`` (offered QoS recorded in the bag, reliable when absent), ``reliable`` or
        ``sensor`` (best effort); durability follows the bag in every mode.
    :param qos_depth: keep-last history depth of every publisher.
    :param wait_subscribers_s: wait up to this long for each image topic to match a subscriber
        before the first message (0 = do not wait).
    :param min_subscribers: how many subscribers each image topic must have matched before the
        wait ends (e.g. 2 when a monitor and the node both listen).
    :param clock: also publish ``/clock`` (rosgraph_msgs/Clock) with each message's bag time.
    """

    rate: float = 1.0
    loop: bool = False
    topics: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    start_offset_s: float = 0.0
    qos: str = "bag"
    qos_depth: int = 10
    wait_subscribers_s: float = 5.0
    min_subscribers: int = 1
    clock: bool = False

    def __post_init__(self) -> None:
        if not self.rate > 0 or not np.isfinite(self.rate):
            raise ValueError(f"rate must be a positive number, got {self.rate!r}")
        if not self.start_offset_s >= 0:
            raise ValueError(f"start offset must be >= 0 s, got {self.start_offset_s!r}")
        if self.qos not in QOS_MODES:
            raise ValueError(f"qos must be one of {', '.join(QOS_MODES)}, got {self.qos!r}")
        if self.qos_depth < 1:
            raise ValueError(f"qos depth must be >= 1, got {self.qos_depth!r}")
        if not self.wait_subscribers_s >= 0:
            raise ValueError(f"wait for subscribers must be >= 0 s, got {self.wait_subscribers_s!r}")
        if not (isinstance(self.min_subscribers, int) and self.min_subscribers >= 1):
            raise ValueError(f"min subscribers must be an integer >= 1, got {self.min_subscribers!r}")


def select_topics(available: Iterable[str], topics: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[str]:
    """Topics to publish: ``topics`` (all when empty) minus ``exclude``, sorted.

    :raises ValueError: a requested topic is not in the bag, or nothing is left.
    """
    avail = sorted(set(available))
    missing = sorted(set(topics) - set(avail))
    if missing:
        raise ValueError(f"topic(s) not in the bag: {', '.join(missing)}; available: {', '.join(avail) or 'none'}")
    chosen = [t for t in avail if (not topics or t in topics) and t not in set(exclude)]
    if not chosen:
        raise ValueError("no topics left to publish after --topics/--exclude")
    return chosen


# ------------------------------------------------------------------------------------ schedule
@dataclass(frozen=True)
class Scheduled:
    """One message with the time it is due.

    :param due_s: seconds after the playback start (already divided by the rate).
    :param topic: topic name.
    :param stamp_ns: bag (receive) time of the message.
    :param data: the message as recorded (serialized CDR).
    :param loop: pass number, 0 for the first.
    """

    due_s: float
    topic: str
    stamp_ns: int
    data: bytes
    loop: int = 0


#: ``source(start_ns)`` yields ``(topic, bag_time_ns, data)`` from ``start_ns`` on, in time order.
MessageSource = Callable[[int], Iterable[tuple[str, int, bytes]]]


class ReplaySchedule:
    """Turns a bag's messages into :class:`Scheduled` items; no ROS, no sleeping.

    Due times count from the first selected message at or after ``bag_start_ns + start_offset``
    and are divided by ``rate``. With ``loop`` each further pass starts one mean message interval
    after the previous pass' last message (:data:`SINGLE_MESSAGE_PERIOD_S` for a single message),
    so the last and first messages are not published at once.

    :param source: re-iterable message source (called once per pass).
    :param bag_start_ns: the bag's start time (offsets count from it).
    :param rate: speed factor (> 0).
    :param start_offset_s: seconds of bag time to skip.
    :param loop: repeat forever (stop by leaving the iteration).
    :param topics: when given, only these topics are yielded.
    """

    def __init__(self, source: MessageSource, bag_start_ns: int, *, rate: float = 1.0, start_offset_s: float = 0.0,
                 loop: bool = False, topics: Iterable[str] | None = None) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        if not start_offset_s >= 0:
            raise ValueError(f"start offset must be >= 0, got {start_offset_s!r}")
        self.source = source
        self.start_ns = bag_start_ns + int(round(start_offset_s * 1e9))
        self.rate = float(rate)
        self.loop = loop
        self.topics = None if topics is None else frozenset(topics)

    def _pass(self) -> Iterator[tuple[str, int, bytes]]:
        for topic, t, data in self.source(self.start_ns):
            if t >= self.start_ns and (self.topics is None or topic in self.topics):
                yield topic, t, data

    def __iter__(self) -> Iterator[Scheduled]:
        offset_s, loop = 0.0, 0
        while True:
            first = last = None
            n = 0
            for topic, t, data in self._pass():
                first = t if first is None else first
                last, n = t, n + 1
                yield Scheduled(offset_s + (t - first) / 1e9 / self.rate, topic, t, data, loop)
            if not self.loop or n == 0:
                return
            span_s = (last - first) / 1e9
            gap_s = span_s / (n - 1) if n > 1 and span_s > 0 else SINGLE_MESSAGE_PERIOD_S
            offset_s += (span_s + gap_s) / self.rate
            loop += 1


class Pacer:
    """Waits until due times measured from :meth:`start` on a monotonic clock.

    Each wait targets ``t0 + due`` (absolute), so a late wake-up delays one message, not all later
    ones. ``clock``/``sleep`` are injectable for tests.

    :param stop: when set, :meth:`wait_until` returns ``None`` at once.
    """

    def __init__(self, stop: threading.Event | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.stop = stop or threading.Event()
        self.clock, self.sleep = clock, sleep
        self.t0: float | None = None

    def start(self) -> float:
        """Mark the playback start (now) and return it."""
        self.t0 = self.clock()
        return self.t0

    def wait_until(self, due_s: float) -> float | None:
        """Sleep until ``due_s`` after the start; return the lateness in seconds (>= 0), None if stopped."""
        if self.t0 is None:
            self.start()
        target = self.t0 + due_s
        while not self.stop.is_set():
            remaining = target - self.clock()
            if remaining <= 0:
                return -remaining
            self.sleep(min(remaining, _CHUNK_S))
        return None


# ----------------------------------------------------------------------------------------- QoS
@dataclass(frozen=True)
class QosChoice:
    """Publisher QoS in plain terms (converted to an rclpy ``QoSProfile`` by the shell)."""

    reliable: bool
    transient_local: bool
    depth: int


def choose_qos(mode: str, offered: Sequence[Any], depth: int = 10) -> QosChoice:
    """QoS for a replayed topic.

    ``offered`` are the topic's recorded offered profiles (rosbags ``Qos``; anything with
    ``reliability``/``durability`` enums whose ``name`` is ``RELIABLE``/``BEST_EFFORT`` and
    ``TRANSIENT_LOCAL``/``VOLATILE``). Durability is transient local when any recorded publisher
    offered it (a transient-local publisher also serves volatile subscribers), in every mode.
    ``bag``: reliable unless every recorded publisher was best effort (reliable when nothing was
    recorded); ``reliable``: reliable; ``sensor``: best effort.

    :raises ValueError: unknown mode.
    """
    if mode not in QOS_MODES:
        raise ValueError(f"qos must be one of {', '.join(QOS_MODES)}, got {mode!r}")
    rel = [getattr(q.reliability, "name", str(q.reliability)) for q in offered]
    dur = [getattr(q.durability, "name", str(q.durability)) for q in offered]
    transient = any(d == "TRANSIENT_LOCAL" for d in dur)
    if mode == "bag":
        reliable = not rel or not all(r == "BEST_EFFORT" for r in rel)
    else:
        reliable = mode == "reliable"
    return QosChoice(reliable=reliable, transient_local=transient, depth=depth)


# --------------------------------------------------------------------------------------- stats
@dataclass
class ReplayStats:
    """What a replay did: per-topic counts, lateness of each publish, wall time."""

    counts: dict[str, int] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    lateness_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    bag_span_s: float = 0.0
    passes: int = 0
    interrupted: bool = False
    #: messages not published because they failed a check (undecodable CDR), per topic
    corrupt: dict[str, int] = field(default_factory=dict)
    #: the storage check that ended the replay early (a chunk CRC mismatch), or ""
    storage_error: str = ""

    def record(self, topic: str, lateness_s: float) -> None:
        """Count one published message."""
        self.counts[topic] = self.counts.get(topic, 0) + 1
        self.lateness_s.append(lateness_s)

    def lateness_ms(self) -> dict[str, float]:
        """p50/p95/max lateness in milliseconds (zeros when nothing was published)."""
        if not self.lateness_s:
            return {"p50": 0.0, "p95": 0.0, "max": 0.0}
        arr = np.asarray(self.lateness_s) * 1e3
        return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)), "max": float(arr.max())}

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {"counts": dict(self.counts), "types": dict(self.types), "skipped": dict(self.skipped),
                "messages": sum(self.counts.values()), "wall_s": self.wall_s, "bag_span_s": self.bag_span_s,
                "passes": self.passes, "interrupted": self.interrupted, "lateness_ms": self.lateness_ms(),
                "corrupt": dict(self.corrupt), "storage_error": self.storage_error}

    def summary(self) -> str:
        """Multi-line human summary."""
        lat = self.lateness_ms()
        head = (f"replay: {'interrupted' if self.interrupted else 'done'}: {sum(self.counts.values())} messages in "
                f"{self.wall_s:.2f} s (bag span {self.bag_span_s:.2f} s, {self.passes} pass"
                f"{'es' if self.passes != 1 else ''})")
        width = max([len(t) for t in [*self.counts, *self.skipped]] + [5])
        lines = [head]
        lines += [f"  {t:<{width}}  {self.counts[t]:>6}  {self.types.get(t, '')}" for t in sorted(self.counts)]
        lines += [f"  {t:<{width}}  skipped  {why}" for t, why in sorted(self.skipped.items())]
        lines += [f"  {t:<{width}}  {n:>6}  corrupt (not published)" for t, n in sorted(self.corrupt.items())]
        if self.storage_error:
            lines.append(f"replay: stopped early: {self.storage_error}")
        lines.append(f"replay: lateness ms: p50 {lat['p50']:.2f}  p95 {lat['p95']:.2f}  max {lat['max']:.2f}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------- message types
def import_message_class(msgtype: str) -> type:
    """The installed Python class of ``pkg/msg/Name`` (or ``pkg/Name``).

    Uses ``rosidl_runtime_py.utilities.get_message`` when installed, else imports ``pkg.msg``.

    :raises ImportError: the package or the type is not importable here (reason in the message).
    """
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ImportError(f"malformed message type {msgtype!r}")
    pkg, kind, name = parts
    try:
        from rosidl_runtime_py.utilities import get_message  # type: ignore[import-not-found]
    except ImportError:
        get_message = None
    if get_message is not None:
        try:
            return get_message(f"{pkg}/{kind}/{name}")
        except (ValueError, AttributeError, ImportError) as exc:
            raise ImportError(f"{msgtype}: {exc}") from exc
    try:
        module = importlib.import_module(f"{pkg}.{kind}")
    except ImportError as exc:
        raise ImportError(f"{msgtype}: {exc}") from exc
    try:
        return getattr(module, name)
    except AttributeError:
        raise ImportError(f"{msgtype}: module {pkg}.{kind} has no {name!r}") from None


# ------------------------------------------------------------------------------------- rclpy shell
def _warn(text: str, out: TextIO | None = None) -> None:
    print(f"replay: warning: {text}", file=out or sys.stderr, flush=True)


def rclpy_qos(choice: QosChoice) -> Any:
    """The rclpy ``QoSProfile`` (keep-last) of a :class:`QosChoice`; shared with the recorder."""
    from rclpy.qos import HistoryPolicy, QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=choice.depth,
                      reliability=(QoSReliabilityPolicy.RELIABLE if choice.reliable
                                   else QoSReliabilityPolicy.BEST_EFFORT),
                      durability=(QoSDurabilityPolicy.TRANSIENT_LOCAL if choice.transient_local
                                  else QoSDurabilityPolicy.VOLATILE))


def checked_messages(reader: Any, conns: Sequence[Any], start_ns: int, stats: ReplayStats,
                     bag: Path | str = "bag") -> Iterator[tuple[str, int, bytes]]:
    """``(topic, stamp ns, CDR)`` of ``reader``'s messages that pass what the storage lets us check.

    A message whose CDR does not deserialise (typestore of :mod:`sparse_perception.tools.bag_types`)
    is skipped, counted in ``stats.corrupt`` and warned about (first three per topic); a chunk whose
    CRC does not match (MCAP, :mod:`sparse_perception.tools.bag_integrity`) ends the iteration with
    ``stats.storage_error`` set and a warning: the reader cannot go past it.
    """
    from rosbags.rosbag2 import ReaderError

    from sparse_perception.tools.bag_types import typestore

    ts = typestore()
    it = reader.messages(connections=conns, start=start_ns)
    while True:
        try:
            conn, t, data = next(it)
        except StopIteration:
            return
        except ReaderError as exc:
            stats.storage_error = f"bag {bag}: storage check failed ({exc}); later messages are not replayed"
            _warn(stats.storage_error)
            return
        if conn.msgtype in ts.types:
            try:
                ts.deserialize_cdr(data, conn.msgtype)
            except Exception as exc:  # noqa: BLE001 - rosbags raises struct/index/value errors on bad CDR
                n = stats.corrupt[conn.topic] = stats.corrupt.get(conn.topic, 0) + 1
                if n <= 3:
                    more = " (further ones only counted)" if n == 3 else ""
                    _warn(f"bag {bag}: {conn.topic} message at {t} ns does not deserialise as {conn.msgtype} "
                          f"({type(exc).__name__}: {str(exc)[:200]}); skipped{more}")
                continue
        yield conn.topic, t, data


def open_bag(bag: Path | str) -> Any:
    """Open a rosbag2 folder (or ``.mcap``/``.db3`` file) with rosbags.

    :raises ValueError: the path does not exist or is not a readable rosbag2 (message names it).
    """
    from rosbags.rosbag2 import Reader

    path = Path(bag)
    if not path.exists():
        raise ValueError(f"bag {path} does not exist")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises ReaderError, yaml and storage errors
        raise ValueError(f"cannot read bag {path}: {exc}") from exc
    from sparse_perception.tools.bag_integrity import sqlite_problems

    for db in sorted(path.glob("*.db3")) if path.is_dir() else [path] if path.suffix == ".db3" else []:
        problems = sqlite_problems(db)
        if problems:
            _warn(f"bag {path}: {db.name} fails sqlite's integrity check: {'; '.join(problems)[:300]}")
    return reader


def play(bag: Path | str, options: ReplayOptions = ReplayOptions(), *, node: Any = None,
         stop: threading.Event | None = None, log: TextIO = sys.stdout) -> ReplayStats:
    """Replay ``bag`` through rclpy publishers; returns when done (or ``stop`` is set).

    Uses ``node`` when given (the caller has initialised rclpy and spins nothing that matters
    here), else creates node ``replay`` in the default context (``rclpy.init`` must have run).
    Topics whose message type is not importable are skipped with one warning per type.

    :raises ValueError: unreadable bag or bad topic selection.
    """
    import rclpy.node

    stop = stop or threading.Event()
    stats = ReplayStats()
    reader = open_bag(bag)
    own_node = node is None
    pubs: dict[str, Any] = {}
    try:
        by_topic: dict[str, list[Any]] = {}
        for conn in reader.connections:
            by_topic.setdefault(conn.topic, []).append(conn)
        chosen = select_topics(by_topic, options.topics, options.exclude)
        if options.start_offset_s * 1e9 > reader.duration:
            raise ValueError(f"start offset {options.start_offset_s:g} s is past the end of bag {bag} "
                             f"({reader.duration / 1e9:.3f} s long)")
        if own_node:
            node = rclpy.node.Node("replay")
        bad_types: dict[str, list[str]] = {}
        for topic in chosen:
            msgtype = by_topic[topic][0].msgtype
            stats.types[topic] = msgtype
            try:
                cls = import_message_class(msgtype)
            except ImportError as exc:
                bad_types.setdefault(msgtype, []).append(topic)
                stats.skipped[topic] = f"{msgtype} not importable ({exc})"
                if len(bad_types[msgtype]) == 1:
                    _warn(f"message type {msgtype} is not importable here ({exc}); skipping its topic(s)")
                continue
            offered = [q for c in by_topic[topic] for q in getattr(c.ext, "offered_qos_profiles", []) or []]
            pubs[topic] = node.create_publisher(cls, topic, rclpy_qos(choose_qos(options.qos, offered,
                                                                                    options.qos_depth)))
        for msgtype, topics in bad_types.items():
            if len(topics) > 1:
                print(f"replay: skipped topics of {msgtype}: {', '.join(topics)}", file=log, flush=True)
        if not pubs:
            raise ValueError(f"bag {bag}: none of the selected topics has an importable message type")
        clock_pub = clock_cls = None
        if options.clock:
            try:
                clock_cls = import_message_class("rosgraph_msgs/msg/Clock")
                clock_pub = node.create_publisher(clock_cls, "/clock", 10)
            except ImportError as exc:
                _warn(f"--clock ignored: {exc}")
        _wait_for_subscribers(pubs, stats.types, options.wait_subscribers_s, stop, log, options.min_subscribers)

        conns = [c for t in pubs for c in by_topic[t]]

        def source(start_ns: int) -> Iterator[tuple[str, int, bytes]]:
            yield from checked_messages(reader, conns, start_ns, stats, bag)

        schedule = ReplaySchedule(source, reader.start_time, rate=options.rate, start_offset_s=options.start_offset_s,
                                  loop=options.loop, topics=pubs)
        print(f"replay: publishing {len(pubs)} topic(s) from {bag} at rate {options.rate:g}x"
              f"{' (loop)' if options.loop else ''}", file=log, flush=True)
        pacer = Pacer(stop)
        first_ns = last_ns = None
        t0 = pacer.start()
        for item in schedule:
            lateness = pacer.wait_until(item.due_s)
            if lateness is None:
                stats.interrupted = True
                break
            if clock_pub is not None:
                clock_pub.publish(_clock_msg(clock_cls, item.stamp_ns))
            pubs[item.topic].publish(item.data)
            stats.record(item.topic, lateness)
            stats.passes = item.loop + 1
            if item.loop == 0:
                first_ns = item.stamp_ns if first_ns is None else first_ns
                last_ns = item.stamp_ns
        stats.wall_s = time.monotonic() - t0
        if not stop.is_set():
            _wait_acked(pubs, ACK_TIMEOUT_S)
        stats.bag_span_s = 0.0 if first_ns is None else (last_ns - first_ns) / 1e9
        if stop.is_set():
            stats.interrupted = True
    finally:
        for pub in pubs.values():
            try:
                node.destroy_publisher(pub)
            except Exception:  # noqa: BLE001 - context may already be shut down on Ctrl-C
                pass
        if own_node and node is not None:
            node.destroy_node()
        reader.close()
    return stats


def _wait_acked(pubs: dict[str, Any], timeout_s: float) -> None:
    """Let reliable subscribers acknowledge the last (large, fragmented) messages before exiting."""
    from rclpy.duration import Duration

    deadline = time.monotonic() + timeout_s
    for topic, pub in pubs.items():
        left = max(deadline - time.monotonic(), 0.0)
        if not pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9))):
            _warn(f"subscribers of {topic} did not acknowledge every message within {timeout_s:g} s")


def _clock_msg(cls: type, stamp_ns: int) -> Any:
    msg = cls()
    msg.clock.sec, msg.clock.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return msg


def _wait_for_subscribers(pubs: dict[str, Any], types: dict[str, str], timeout_s: float, stop: threading.Event,
                          log: TextIO, minimum: int = 1) -> None:
    """Wait until every image topic's publisher matched ``minimum`` subscribers, or ``timeout_s`` passed."""
    images = [t for t in pubs if types.get(t) in IMAGE_TYPES]
    if timeout_s <= 0 or not images:
        return
    print(f"replay: waiting up to {timeout_s:g} s for subscribers on {', '.join(images)}", file=log, flush=True)
    t0 = time.monotonic()
    while not stop.is_set():
        waiting = [t for t in images if pubs[t].get_subscription_count() < minimum]
        if not waiting:
            print(f"replay: subscribers matched after {time.monotonic() - t0:.2f} s", file=log, flush=True)
            return
        if time.monotonic() - t0 >= timeout_s:
            _warn(f"no subscriber on {', '.join(waiting)} after {timeout_s:g} s; starting anyway")
            return
        time.sleep(0.02)


# ------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``replay`` / ``sparse-perception replay``."""
    p = argparse.ArgumentParser(prog="replay", description="Publish a rosbag2's topics with the original timing "
                                "(raw CDR passed through, header stamps as recorded).")
    p.add_argument("bag", type=Path, help="rosbag2 folder (mcap or sqlite3) or a .mcap/.db3 file")
    p.add_argument("--rate", "-r", type=float, default=1.0, help="speed factor (2 = twice as fast); default 1")
    p.add_argument("--loop", "-l", action="store_true", help="start over after the last message until Ctrl-C")
    p.add_argument("--topics", nargs="+", default=[], metavar="T", help="publish only these topics")
    p.add_argument("--exclude", nargs="+", default=[], metavar="T", help="never publish these topics")
    p.add_argument("--start-offset", type=float, default=0.0, metavar="S", help="skip S seconds of bag time")
    p.add_argument("--qos", choices=QOS_MODES, default="bag",
                   help="bag: offered QoS recorded in the bag (reliable when absent); reliable; sensor: best effort")
    p.add_argument("--qos-depth", type=int, default=10, metavar="N", help="keep-last depth (default 10)")
    p.add_argument("--wait-subscribers", type=float, default=5.0, metavar="SECONDS",
                   help="wait up to SECONDS for a subscriber on every image topic before starting (0: no wait; "
                        "default 5)")
    p.add_argument("--min-subscribers", type=int, default=1, metavar="N",
                   help="with --wait-subscribers: wait for N subscribers on every image topic (default 1)")
    p.add_argument("--clock", action="store_true", help="also publish /clock with each message's bag time")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``replay`` / ``sparse-perception replay``; 0 on success (also after Ctrl-C), 2 on bad input."""
    return run_tool(build_parser(), argv, _run, _check)


def _options(args: argparse.Namespace) -> ReplayOptions:
    return ReplayOptions(rate=args.rate, loop=args.loop, topics=tuple(args.topics), exclude=tuple(args.exclude),
                         start_offset_s=args.start_offset, qos=args.qos, qos_depth=args.qos_depth,
                         wait_subscribers_s=args.wait_subscribers, min_subscribers=args.min_subscribers,
                         clock=args.clock)


def _check(args: argparse.Namespace) -> None:
    _options(args)
    open_bag(args.bag).close()  # fail fast, before DDS starts


def _run(args: argparse.Namespace, stop: threading.Event) -> int:
    stats = play(args.bag, _options(args), stop=stop)
    print(stats.summary(), flush=True)
    return 1 if stats.storage_error else 0


if __name__ == "__main__":
    sys.exit(main())
