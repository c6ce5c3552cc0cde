"""replay / recorder: pure schedule and pacing, then real DDS round trips through subprocesses."""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sparse_perception.tools.replay import (
    Pacer,
    ReplayOptions,
    ReplaySchedule,
    ReplayStats,
    Scheduled,
    choose_qos,
    import_message_class,
    select_topics,
)

W, H = 1242, 375
IMAGE_TOPIC = "/replay_test/image_raw"
N_FRAMES = 40
PERIOD_NS = 100_000_000
T0_NS = 1_317_046_000_123_456_789  # KITTI-like epoch stamp


# ------------------------------------------------------------------------------- pure schedule
def _source(msgs: list[tuple[str, int, bytes]]):
    calls: list[int] = []

    def source(start_ns: int):
        calls.append(start_ns)
        return iter([m for m in msgs if m[1] >= start_ns])

    return source, calls


def _msgs() -> list[tuple[str, int, bytes]]:
    out = []
    for i in range(5):
        out.append(("/img", 1_000_000_000 + i * PERIOD_NS, b"i%d" % i))
        out.append(("/txt", 1_000_000_000 + i * PERIOD_NS + 20_000_000, b"t%d" % i))
    return out


def test_schedule_keeps_relative_times_and_rate_divides_them() -> None:
    src, _ = _source(_msgs())
    items = list(ReplaySchedule(src, 1_000_000_000))
    assert [i.topic for i in items] == ["/img", "/txt"] * 5
    assert [i.due_s for i in items] == pytest.approx([0.0, 0.02, 0.1, 0.12, 0.2, 0.22, 0.3, 0.32, 0.4, 0.42])
    assert items[3].data == b"t1" and items[3].stamp_ns == 1_120_000_000
    fast = list(ReplaySchedule(src, 1_000_000_000, rate=2.0))
    assert [i.due_s for i in fast] == pytest.approx([d / 2 for d in [i.due_s for i in items]])
    slow = list(ReplaySchedule(src, 1_000_000_000, rate=0.5))
    assert slow[-1].due_s == pytest.approx(0.84)


def test_schedule_start_offset_and_topic_filter() -> None:
    src, calls = _source(_msgs())
    items = list(ReplaySchedule(src, 1_000_000_000, start_offset_s=0.25, topics=["/img"]))
    assert calls == [1_250_000_000]
    assert [i.data for i in items] == [b"i3", b"i4"]
    assert [i.due_s for i in items] == pytest.approx([0.0, 0.1])  # counted from the first message played


def test_schedule_loop_continues_one_interval_after_the_last_message() -> None:
    src, calls = _source([("/a", 0, b"0"), ("/a", 100_000_000, b"1"), ("/a", 200_000_000, b"2")])
    it = iter(ReplaySchedule(src, 0, loop=True, rate=2.0))
    items = [next(it) for _ in range(7)]
    assert [i.loop for i in items] == [0, 0, 0, 1, 1, 1, 2]
    assert [i.data for i in items] == [b"0", b"1", b"2"] * 2 + [b"0"]
    # span 0.2 s + mean gap 0.1 s per pass, halved by rate 2
    assert [i.due_s for i in items] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3])
    assert len(calls) == 3
    assert list(ReplaySchedule(_source([])[0], 0, loop=True)) == []  # empty selection ends, no busy loop


def test_schedule_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rate"):
        ReplaySchedule(_source([])[0], 0, rate=0)
    with pytest.raises(ValueError, match="offset"):
        ReplaySchedule(_source([])[0], 0, start_offset_s=-1)
    with pytest.raises(ValueError, match="rate"):
        ReplayOptions(rate=-2)
    with pytest.raises(ValueError, match="qos"):
        ReplayOptions(qos="fast")
    with pytest.raises(ValueError, match="min subscribers"):
        ReplayOptions(min_subscribers=0)


def test_select_topics_include_exclude_and_errors() -> None:
    avail = ["/b", "/a", "/c"]
    assert select_topics(avail) == ["/a", "/b", "/c"]
    assert select_topics(avail, ["/c", "/a"]) == ["/a", "/c"]
    assert select_topics(avail, exclude=["/b"]) == ["/a", "/c"]
    with pytest.raises(ValueError, match=r"not in the bag: /zz; available: /a, /b, /c"):
        select_topics(avail, ["/zz"])
    with pytest.raises(ValueError, match="no topics left"):
        select_topics(avail, ["/a"], ["/a"])


class FakeClock:
    """Monotonic clock whose sleeps overshoot by a fixed amount."""

    def __init__(self, overshoot: float) -> None:
        self.now, self.overshoot = 100.0, overshoot

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s + self.overshoot


def test_pacer_targets_absolute_times_so_oversleeping_does_not_accumulate() -> None:
    clock = FakeClock(overshoot=0.004)
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    pacer.start()
    late = []
    for k in range(100):
        late.append(pacer.wait_until(k * 0.1))
        clock.now += 0.001  # publishing takes 1 ms
    # each wait overshoots once by 4 ms; a relative sleep would have drifted by ~0.5 s after 100 frames
    assert max(late) == pytest.approx(0.004, abs=1e-9)
    assert clock.now - 100.0 == pytest.approx(9.9 + 0.004 + 0.001, abs=1e-6)
    assert pacer.wait_until(0.0) == pytest.approx(9.9 + 0.005)  # already past due: returns the lateness


def test_pacer_stop_event_ends_a_long_wait_promptly() -> None:
    stop = threading.Event()
    pacer = Pacer(stop)
    pacer.start()
    threading.Timer(0.2, stop.set).start()
    t = time.monotonic()
    assert pacer.wait_until(30.0) is None
    assert time.monotonic() - t < 2.0


def test_choose_qos_modes() -> None:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    z = QosTime(0, 0)

    def q(rel: QosReliability, dur: QosDurability) -> Qos:
        return Qos(QosHistory.KEEP_LAST, 1, rel, dur, z, z, QosLiveliness.AUTOMATIC, z, False)

    latched = [q(QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL)]
    sensor = [q(QosReliability.BEST_EFFORT, QosDurability.VOLATILE)]
    assert choose_qos("bag", latched, 3) == type(choose_qos("bag", [], 3))(True, True, 3)
    assert choose_qos("bag", sensor).reliable is False
    assert choose_qos("bag", []).reliable is True and choose_qos("bag", []).transient_local is False
    assert choose_qos("reliable", sensor).reliable is True
    assert choose_qos("sensor", latched) == type(choose_qos("bag", []))(False, True, 10)
    with pytest.raises(ValueError):
        choose_qos("nope", [])


def test_stats_summary_and_percentiles() -> None:
    stats = ReplayStats(types={"/a": "std_msgs/msg/String"}, skipped={"/foo": "foo_msgs/msg/Bar not importable"})
    for k in range(100):
        stats.record("/a", k / 1000)
    assert stats.lateness_ms()["p50"] == pytest.approx(49.5)
    assert stats.lateness_ms()["max"] == pytest.approx(99.0)
    text = stats.summary()
    assert "/a" in text and "100" in text and "/foo" in text and "skipped" in text and "p95" in text
    assert stats.as_dict()["messages"] == 100
    assert Scheduled(0.0, "/a", 1, b"").loop == 0


def test_import_message_class() -> None:
    pytest.importorskip("std_msgs")
    from std_msgs.msg import String

    assert import_message_class("std_msgs/msg/String") is String
    assert import_message_class("std_msgs/String") is String
    with pytest.raises(ImportError, match="foo_msgs"):
        import_message_class("foo_msgs/msg/Bar")
    with pytest.raises(ImportError, match="NoSuchType"):
        import_message_class("std_msgs/msg/NoSuchType")


def test_bad_bag_path_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sparse_perception.tools.replay import main

    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope" in err and "does not exist" in err
    (tmp_path / "notabag").mkdir()
    assert main([str(tmp_path / "notabag")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("replay: error: cannot read bag") and "notabag" in err


# -------------------------------------------------------------------------------------- bag fixture
def _frame(i: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[:, :, 0] = i
    img[i % H, :, 1] = 255
    return img


def write_test_bag(path: Path, storage: str = "mcap") -> Path:
    """Images at 10 Hz, std_msgs/String, a made-up foo_msgs/msg/Bar and (latched) tf2_msgs/TFMessage."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import get_types_from_msg, get_typestore

    from sparse_perception.tools.bag_types import STORE

    ts = get_typestore(STORE)  # a custom store: foo_msgs exists only here
    ts.register(get_types_from_msg("int32 a\nstring b", "foo_msgs/msg/Bar"))
    Image, Header, Time = (ts.types[n] for n in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                 "builtin_interfaces/msg/Time"))
    String, Bar = ts.types["std_msgs/msg/String"], ts.types["foo_msgs/msg/Bar"]
    TF, TS, Tr, V3, Qt = (ts.types[n] for n in ("tf2_msgs/msg/TFMessage", "geometry_msgs/msg/TransformStamped",
                                                "geometry_msgs/msg/Transform", "geometry_msgs/msg/Vector3",
                                                "geometry_msgs/msg/Quaternion"))
    z = QosTime(0, 0)
    latched = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, z, z,
                  QosLiveliness.AUTOMATIC, z, False)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as w:
        c_img = w.add_connection(IMAGE_TOPIC, "sensor_msgs/msg/Image", typestore=ts)
        c_str = w.add_connection("/replay_test/chatter", "std_msgs/msg/String", typestore=ts)
        c_bar = w.add_connection("/replay_test/foo", "foo_msgs/msg/Bar", typestore=ts)
        c_bar2 = w.add_connection("/replay_test/foo2", "foo_msgs/msg/Bar", typestore=ts)
        c_tf = w.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=ts, offered_qos_profiles=[latched])
        h0 = Header(stamp=Time(sec=T0_NS // 10**9, nanosec=T0_NS % 10**9), frame_id="base_link")
        tf = TF(transforms=[TS(header=h0, child_frame_id="camera_color_left",
                               transform=Tr(translation=V3(x=1.0, y=0.0, z=1.5), rotation=Qt(x=0.0, y=0.0, z=0.0,
                                                                                              w=1.0)))])
        w.write(c_tf, T0_NS, ts.serialize_cdr(tf, "tf2_msgs/msg/TFMessage"))
        for i in range(N_FRAMES):
            t = T0_NS + i * PERIOD_NS
            hdr = Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="camera_color_left")
            img = Image(header=hdr, height=H, width=W, encoding="bgr8", is_bigendian=0, step=W * 3,
                        data=_frame(i).reshape(-1))
            w.write(c_img, t, ts.serialize_cdr(img, "sensor_msgs/msg/Image"))
            w.write(c_str, t + 1_000_000, ts.serialize_cdr(String(data=f"frame {i}"), "std_msgs/msg/String"))
            if i % 10 == 0:
                w.write(c_bar, t + 2_000_000, ts.serialize_cdr(Bar(a=i, b="x"), "foo_msgs/msg/Bar"))
                w.write(c_bar2, t + 3_000_000, ts.serialize_cdr(Bar(a=-i, b="y"), "foo_msgs/msg/Bar"))
    return path


@pytest.fixture(scope="module")
def test_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_bag(tmp_path_factory.mktemp("replay") / "bag")


# -------------------------------------------------------------------------------------- ROS tests
@pytest.fixture
def ros_node():
    rclpy = pytest.importorskip("rclpy")
    from rclpy.node import Node

    rclpy.init()
    node = Node("test_replay")
    yield node
    node.destroy_node()
    rclpy.shutdown()


def _receive_replay(node, bag: Path, *args: str, timeout: float = 45.0):
    """Subscribe to the image and chatter topics, run replay, return (frames, arrivals, chatter, output, rc)."""
    import rclpy
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from sparse_perception.tools.testing import managed_process, python_cmd

    frames: list = []
    arrivals: list[float] = []
    chatter: list[str] = []

    def on_image(msg: Image) -> None:
        arrivals.append(time.monotonic())
        frames.append(msg)

    qos = QoSProfile(depth=N_FRAMES, reliability=QoSReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, IMAGE_TOPIC, on_image, qos)
    node.create_subscription(String, "/replay_test/chatter", lambda m: chatter.append(m.data), qos)
    with managed_process(python_cmd("-m", "sparse_perception.cli", "replay", str(bag), *args)) as proc:
        deadline = time.monotonic() + timeout
        while proc.alive() and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.01)
        end = time.monotonic() + 1.0  # late deliveries
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.01)
        rc = proc.proc.returncode
        out = proc.output()
    return frames, arrivals, chatter, out, rc


@pytest.mark.ros
def test_replay_publishes_every_frame_in_order_with_recorded_timing(ros_node, test_bag: Path) -> None:
    pytest.importorskip("sensor_msgs")
    frames, arrivals, chatter, out, rc = _receive_replay(ros_node, test_bag)
    assert rc == 0, out
    assert len(frames) == N_FRAMES, f"got {len(frames)} of {N_FRAMES} frames\n{out}"
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in frames]
    assert stamps == [T0_NS + i * PERIOD_NS for i in range(N_FRAMES)]  # in order, stamps as recorded
    for i in (0, 17, N_FRAMES - 1):
        m = frames[i]
        assert (m.width, m.height, m.encoding, m.step, m.header.frame_id) == (W, H, "bgr8", W * 3, "camera_color_left")
        assert np.array_equal(np.asarray(m.data, np.uint8).reshape(H, W, 3), _frame(i))
    assert chatter == [f"frame {i}" for i in range(N_FRAMES)]
    periods_ms = np.diff(arrivals) * 1e3
    median = float(np.median(periods_ms))
    span = arrivals[-1] - arrivals[0]
    print(f"inter-arrival ms: median {median:.2f} p5 {np.percentile(periods_ms, 5):.2f} "
          f"p95 {np.percentile(periods_ms, 95):.2f}; span {span:.3f} s (recorded 3.900 s)\n{out}")
    assert abs(median - 100.0) < 15.0, periods_ms
    assert 3.4 < span < 4.6
    # unknown type: one warning for the type even though two topics use it; tf2_msgs likewise when absent
    assert len(re.findall(r"warning: message type foo_msgs/msg/Bar", out)) == 1, out
    assert "/replay_test/foo2" in out and "skipped" in out
    try:
        import tf2_msgs  # noqa: F401
    except ImportError:
        assert len(re.findall(r"warning: message type tf2_msgs/msg/TFMessage", out)) == 1, out
    assert re.search(r"lateness ms: p50 [\d.]+\s+p95 [\d.]+", out), out
    assert re.search(rf"{re.escape(IMAGE_TOPIC)}\s+{N_FRAMES}\s", out), out


@pytest.mark.ros
def test_rate_two_halves_the_duration_and_topic_filter_applies(ros_node, tmp_path: Path) -> None:
    pytest.importorskip("sensor_msgs")
    bag = write_test_bag(tmp_path / "bag_sqlite", storage="sqlite3")
    frames, arrivals, chatter, out, rc = _receive_replay(ros_node, bag, "--rate", "2", "--topics", IMAGE_TOPIC)
    assert rc == 0, out
    assert len(frames) == N_FRAMES, out
    assert chatter == []  # filtered out
    assert "foo_msgs" not in out  # not selected, so no warning either
    span = arrivals[-1] - arrivals[0]
    median = float(np.median(np.diff(arrivals) * 1e3))
    print(f"rate 2: span {span:.3f} s (recorded 3.900 s), median period {median:.2f} ms\n{out}")
    assert 1.7 < span < 2.4 and abs(median - 50.0) < 12.0


@pytest.mark.ros
def test_replay_start_offset_skips_the_beginning(ros_node, test_bag: Path) -> None:
    frames, _, chatter, out, rc = _receive_replay(ros_node, test_bag, "--start-offset", "3.0", "--rate", "4")
    assert rc == 0, out
    first = frames[0].header.stamp.sec * 10**9 + frames[0].header.stamp.nanosec
    assert len(frames) == 10 and first == T0_NS + 30 * PERIOD_NS, out
    assert chatter[0] == "frame 30"


@pytest.mark.ros
def test_loop_with_clock_runs_until_sigint_and_ends_cleanly(ros_node, test_bag: Path) -> None:
    import rclpy
    from rosgraph_msgs.msg import Clock
    from std_msgs.msg import String

    from sparse_perception.tools.testing import managed_process, python_cmd

    chatter: list[str] = []
    clock_ns: list[int] = []
    ros_node.create_subscription(String, "/replay_test/chatter", lambda m: chatter.append(m.data), 100)
    ros_node.create_subscription(Clock, "/clock", lambda m: clock_ns.append(m.clock.sec * 10**9 + m.clock.nanosec),
                                 100)
    cmd = python_cmd("-m", "sparse_perception.cli", "replay", str(test_bag), "--loop", "--rate", "8", "--clock",
                     "--topics", "/replay_test/chatter")
    with managed_process(cmd) as proc:
        # no image topic, so no wait for subscribers: the first messages may go before discovery
        deadline = time.monotonic() + 30
        while chatter.count("frame 3") < 2 and proc.alive() and time.monotonic() < deadline:
            rclpy.spin_once(ros_node, timeout_sec=0.01)
        assert proc.alive(), proc.output()
        rc = proc.stop()
        log = proc.log_path.read_text()
    assert rc == 0, log
    assert "replay: interrupted" in log and "lateness ms" in log, log
    k = chatter.index("frame 39")
    assert chatter[k + 1:k + 4] == ["frame 0", "frame 1", "frame 2"], chatter  # the loop restarts at the beginning
    assert clock_ns and min(clock_ns) >= T0_NS and max(clock_ns) < T0_NS + N_FRAMES * PERIOD_NS


# ------------------------------------------------------------------------------------------ recorder
@pytest.mark.ros
def test_recorder_writes_every_message_and_renames_on_sigint(ros_node, tmp_path: Path) -> None:
    import rclpy
    from rclpy.duration import Duration
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
    from rosbags.rosbag2 import Reader
    from sensor_msgs.msg import Image

    from sparse_perception.tools.bag_types import typestore
    from sparse_perception.tools.testing import managed_process, python_cmd, wait_for
    from sparse_perception_msgs.msg import Detection2DArray

    from helpers.msgs_peer import make_array

    n = 6
    latched = QoSProfile(depth=n, reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    reliable = QoSProfile(depth=n, reliability=QoSReliabilityPolicy.RELIABLE)
    det_pub = ros_node.create_publisher(Detection2DArray, "/rec_test/detections", latched)
    img_pub = ros_node.create_publisher(Image, "/rec_test/image", reliable)
    out = tmp_path / "rec_bag"
    cmd = python_cmd("-m", "sparse_perception.cli", "record", "--out", str(out), "--storage", "sqlite3",
                     "--topics", "/rec_test/detections", "/rec_test/image")
    with managed_process(cmd) as proc:
        def ready() -> bool:
            rclpy.spin_once(ros_node, timeout_sec=0.02)
            return img_pub.get_subscription_count() > 0 and det_pub.get_subscription_count() > 0
        assert wait_for(ready, 30), proc.output()
        assert proc.wait_for_output("subscribed /rec_test/image", 10), proc.output()
        for i in range(n):
            det_pub.publish(make_array(i))
            img = Image(height=H, width=W, encoding="bgr8", step=W * 3)
            img.header.stamp.sec, img.header.frame_id = 500 + i, "camera_color_left"
            img.data = _frame(i).tobytes()
            img_pub.publish(img)
            time.sleep(0.05)
        # reliable writers repair losses on their next heartbeat (FastDDS: 3 s); wait for the acks
        assert det_pub.wait_for_all_acked(Duration(seconds=15)) and img_pub.wait_for_all_acked(Duration(seconds=15))
        time.sleep(0.3)
        assert not out.exists()  # still being written into the temporary folder
        rc = proc.stop()
        log = proc.log_path.read_text()
    assert rc == 0, log
    assert out.is_dir() and not list(tmp_path.glob(".rec_bag.partial-*")), log
    ts = typestore()
    with Reader(out) as reader:
        got: dict[str, list] = {}
        for conn, _, raw in reader.messages():
            got.setdefault(conn.topic, []).append(ts.deserialize_cdr(raw, conn.msgtype))
        types = {c.topic: c.msgtype for c in reader.connections}
        tl = [q.durability.name for c in reader.connections if c.topic == "/rec_test/detections"
              for q in c.ext.offered_qos_profiles]
    assert types == {"/rec_test/detections": "sparse_perception_msgs/msg/Detection2DArray",
                     "/rec_test/image": "sensor_msgs/msg/Image"}
    assert tl == ["TRANSIENT_LOCAL"]
    assert len(got["/rec_test/detections"]) == n and len(got["/rec_test/image"]) == n, (
        [a.header.stamp.sec for a in got["/rec_test/detections"]], log)
    for i, arr in enumerate(got["/rec_test/detections"]):
        ref = make_array(i)
        assert (arr.header.stamp.sec, arr.header.stamp.nanosec, arr.header.frame_id) == (1000 + i, 123_456_789,
                                                                                          "camera_color_left")
        assert [d.results[0].class_id for d in arr.detections] == [d.results[0].class_id for d in ref.detections]
        assert [d.bbox.size_x for d in arr.detections] == pytest.approx([d.bbox.size_x for d in ref.detections])
        assert arr.detections[1].results[0].score == pytest.approx(0.6)
    for i, img in enumerate(got["/rec_test/image"]):
        assert (img.header.stamp.sec, img.width, img.height, img.encoding) == (500 + i, W, H, "bgr8")
        assert np.array_equal(img.data.reshape(H, W, 3), _frame(i))
    assert f"wrote {2 * n} messages" in log


@pytest.mark.ros
def test_recorder_refuses_existing_output_and_duration_ends_it(tmp_path: Path) -> None:
    from rosbags.rosbag2 import Reader

    from sparse_perception.tools.recorder import main
    from sparse_perception.tools.testing import managed_process, python_cmd, wait_for

    existing = tmp_path / "exists"
    existing.mkdir()
    assert main(["--out", str(existing), "--topics", "/x"]) == 2
    out = tmp_path / "empty_bag"
    with managed_process(python_cmd("-m", "sparse_perception.cli", "record", "--out", str(out), "--duration", "1",
                                    "--topics", "/never_published")) as proc:
        assert wait_for(lambda: not proc.alive(), 30), proc.output()
        log = proc.output()
    assert proc.proc.returncode == 0, log
    assert "/never_published never appeared" in log
    with Reader(out) as reader:
        assert reader.message_count == 0


def test_recorder_bad_topic_name_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 24 item 6: `recorder --topics 'bad topic!!'` exited 1 with an RCLError traceback."""
    pytest.importorskip("rclpy")
    from sparse_perception.tools.recorder import main

    assert main(["--out", str(tmp_path / "bag"), "--topics", "/ok", "bad topic!!"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'bad topic!!' is not a valid ROS topic name" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bag").exists()


def _image_bag(path: Path, n: int = 12) -> Path:
    """An MCAP bag of ``n`` 640x480 random images (rosbags closes a chunk every ~1 MB: several chunks)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from sparse_perception.tools.bag_types import typestore

    ts = typestore()
    Image, Header, Time = (ts.types[k] for k in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                 "builtin_interfaces/msg/Time"))
    rng = np.random.default_rng(0)
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=ts)
        for i in range(n):
            img = Image(header=Header(stamp=Time(sec=i, nanosec=0), frame_id="cam"), height=480, width=640,
                        encoding="bgr8", is_bigendian=0, step=1920,
                        data=rng.integers(0, 255, 480 * 1920, dtype=np.uint8))
            w.write(c, (i + 1) * 10**8, ts.serialize_cdr(img, "sensor_msgs/msg/Image"))
    return path


def _read_checked(bag: Path) -> tuple[int, Any]:
    from sparse_perception.tools.replay import ReplayStats, checked_messages, open_bag

    stats, reader = ReplayStats(), open_bag(bag)
    try:
        return sum(1 for _ in checked_messages(reader, list(reader.connections), 0, stats, bag)), stats
    finally:
        reader.close()


def test_random_bytes_mid_bag_are_caught_by_the_sealed_chunk_crcs(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 24 item 6: 4 kB of random bytes mid-file were replayed as a corrupted image without a word."""
    from sparse_perception.tools.bag_integrity import seal_bag

    bag = _image_bag(tmp_path / "bag")
    assert seal_bag(bag) >= 3  # rosbags wrote CRC 0 ("not computed") in every chunk
    assert seal_bag(bag) == 0  # idempotent
    assert _read_checked(bag)[0] == 12  # intact: every message
    mcap = next(bag.glob("*.mcap"))
    raw = bytearray(mcap.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 4096] = np.random.default_rng(1).integers(0, 255, 4096, dtype=np.uint8).tobytes()
    mcap.write_bytes(bytes(raw))
    n, stats = _read_checked(bag)
    assert n < 12 and "Chunk checksum mismatch" in stats.storage_error
    assert "storage check failed" in capsys.readouterr().err


def test_undecodable_messages_are_skipped_and_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer

    from sparse_perception.tools.bag_types import typestore

    bag = tmp_path / "bad_cdr"
    with Writer(bag, version=8, storage_plugin=StoragePlugin.SQLITE3) as w:
        c = w.add_connection("/chatter", "std_msgs/msg/String", typestore=typestore())
        w.write(c, 1, typestore().serialize_cdr(typestore().types["std_msgs/msg/String"](data="ok"),
                                                "std_msgs/msg/String"))
        w.write(c, 2, b"\x00\x01\x00\x00\xff\xff\xff\x7f")  # a string length of 2 GB in 8 bytes
    n, stats = _read_checked(bag)
    assert n == 1 and stats.corrupt == {"/chatter": 1}
    assert "does not deserialise as std_msgs/msg/String" in capsys.readouterr().err
