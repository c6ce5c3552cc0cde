"""sparse_perception_msgs round-trip through rosbag2 files written and read with rosbags."""
from __future__ import annotations

from pathlib import Path

import pytest

from sparse_perception.tools.bag_types import typestore

rosbags_writer = pytest.importorskip("rosbags.rosbag2")


def _messages(ts):
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    Hyp = ts.types["sparse_perception_msgs/msg/ObjectHypothesis"]
    Box = ts.types["sparse_perception_msgs/msg/BoundingBox2D"]
    Det = ts.types["sparse_perception_msgs/msg/Detection2D"]
    Arr = ts.types["sparse_perception_msgs/msg/Detection2DArray"]
    Cond = ts.types["sparse_perception_msgs/msg/DrivingCondition"]
    out = []
    for i in range(4):
        h = Header(stamp=Time(sec=1_317_046_000 + i, nanosec=964_389_445), frame_id="camera_color_left")
        det = Det(header=h, results=[Hyp(class_id="Cyclist", score=0.875)],
                  bbox=Box(center_x=10.0 * i, center_y=5.5, theta=0.0, size_x=3.0, size_y=4.0), id=f"{i}")
        out.append(("/detections", Arr(header=h, detections=[det] * (i + 1), level=f"s{25 * i}",
                                        engine_time_ms=1.5 * i), i))
        out.append(("/driving_condition", Cond(header=h, illumination=2, weather=2, visibility_m=80.0,
                                               ambient_light=0.125, ego_speed_mps=13.75, scene_density=float(i)), i))
    return out


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_custom_msgs_round_trip_through_bag(tmp_path: Path, storage: str) -> None:
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    ts = typestore()
    msgs = _messages(ts)
    bag = tmp_path / "bag"
    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    with Writer(bag, version=8, storage_plugin=plugin) as writer:
        conns = {}
        for topic, msg, _ in msgs:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msg.__msgtype__, typestore=ts)
        for topic, msg, i in msgs:
            writer.write(conns[topic], 1_000_000_000 * i, ts.serialize_cdr(msg, msg.__msgtype__))

    with Reader(bag) as reader:
        assert {c.msgtype for c in reader.connections} == {
            "sparse_perception_msgs/msg/Detection2DArray", "sparse_perception_msgs/msg/DrivingCondition"}
        back = [(c.topic, ts.deserialize_cdr(raw, c.msgtype), t // 1_000_000_000)
                for c, t, raw in reader.messages()]
    assert len(back) == len(msgs)
    for (topic, msg, i), (btopic, bmsg, bi) in zip(sorted(msgs, key=lambda m: (m[2], m[0])),
                                                   sorted(back, key=lambda m: (m[2], m[0]))):
        assert (topic, i) == (btopic, bi)
        assert bmsg == msg
