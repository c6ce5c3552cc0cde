"""sparse_perception_msgs over real DDS between two processes."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy  # noqa: E402

from sparse_perception.tools.testing import managed_process, python_cmd  # noqa: E402
from sparse_perception_msgs.msg import Detection2DArray  # noqa: E402
from sparse_perception_msgs.srv import SetSparsity  # noqa: E402

pytestmark = pytest.mark.ros
PEER = str(Path(__file__).parent / "helpers" / "msgs_peer.py")


@pytest.fixture
def node():
    rclpy.init()
    n = Node("test_msgs_dds")
    yield n
    n.destroy_node()
    rclpy.shutdown()


def test_detection_array_arrives_intact_in_other_process(node: Node) -> None:
    received: list[Detection2DArray] = []
    qos = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.RELIABLE,
                     durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(Detection2DArray, "dds_test/detections", received.append, qos)
    with managed_process(python_cmd(PEER, "publish", "dds_test/detections", "5")) as peer:
        deadline = time.monotonic() + 30
        while len(received) < 5 and time.monotonic() < deadline and peer.alive():
            rclpy.spin_once(node, timeout_sec=0.1)
        assert len(received) == 5, f"got {len(received)} of 5 messages; peer output:\n{peer.output()}"
    for i, arr in enumerate(received):
        assert (arr.header.stamp.sec, arr.header.stamp.nanosec) == (1000 + i, 123_456_789)
        assert arr.header.frame_id == "camera_color_left"
        assert [d.results[0].class_id for d in arr.detections] == ["Car", "Pedestrian", "Cyclist"]
        assert [d.id for d in arr.detections] == [f"{i}:{k}" for k in range(3)]
        d = arr.detections[2]
        assert (d.bbox.center_x, d.bbox.center_y, d.bbox.size_x, d.bbox.size_y) == (102.5, 50.25, 20.0 + i, 10.0)
        assert d.results[0].score == pytest.approx(0.7)


def test_set_sparsity_service_across_processes(node: Node) -> None:
    client = node.create_client(SetSparsity, "dds_test/set_sparsity")
    with managed_process(python_cmd(PEER, "serve", "dds_test/set_sparsity")) as peer:
        assert client.wait_for_service(timeout_sec=30), peer.output()

        def call(level: str) -> SetSparsity.Response:
            fut = client.call_async(SetSparsity.Request(level=level))
            rclpy.spin_until_future_complete(node, fut, timeout_sec=15)
            assert fut.done(), "service did not answer"
            return fut.result()

        ok = call("s75")
        assert (ok.success, ok.active_level) == (True, "s75")
        assert ok.swap_time_ms == pytest.approx(0.25)
        bad = call("s99")
        assert not bad.success
        assert "unknown level 's99'" in bad.message and bad.active_level == "dense"


def test_request_defaults_mean_not_given() -> None:
    req = SetSparsity.Request()
    assert req.level == "" and req.sparsity == pytest.approx(-1.0)
