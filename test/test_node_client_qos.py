"""The client's image publisher QoS: reliable, keep last 1 (the ``node_bench --soak`` stall).

With a keep-last-10 image publisher, lock-step 1242x375 bgr8 frames stalled after about 2,000
frames under load: a lost fragment of a 1.4 MB sample was only repaired at FastDDS' periodic
heartbeat (3 s), because a writer piggybacks a heartbeat on a sample only when its history is
full and a volatile writer drops acknowledged samples, so a depth-10 history never fills in
lock-step. With depth 1 every sample carries a heartbeat and a lost fragment is re-sent at once
(docs/node.md, Benchmark). The stall itself needs thousands of frames on a loaded machine to
show, so this test pins the QoS and checks that full-size frames still travel lock-step.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from sparse_perception.tools.node_client import FRAME_QOS, DetectorClient, image_msg, stamp_ns  # noqa: E402
from sparse_perception.tools.testing import wait_for  # noqa: E402

pytestmark = pytest.mark.ros


def test_image_publisher_is_reliable_keep_last_1_and_carries_full_frames() -> None:
    client = DetectorClient(name="qos_test_client", subscribe_status=False)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("qos_test_sink", context=ctx)
    got: list[int] = []
    lock = threading.Lock()

    def on_image(msg: Image) -> None:
        with lock:
            got.append(stamp_ns(msg.header))

    # the node's own image subscription with image_reliability: reliable (detector_node.image_qos)
    node.create_subscription(Image, "image_raw", on_image,
                             QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    spinner = threading.Thread(target=lambda: _spin(executor, ctx), daemon=True)
    spinner.start()
    try:
        qos = client.image_pub.qos_profile
        assert qos.history == QoSHistoryPolicy.KEEP_LAST and qos.depth == 1, qos
        assert qos.reliability == QoSReliabilityPolicy.RELIABLE, qos
        assert FRAME_QOS.depth == 1
        assert client.wait_for_subscriber(20), "sink never matched the image publisher"
        frame = np.random.default_rng(1).integers(0, 255, (375, 1242, 3), dtype=np.uint8)  # 1.4 MB bgr8
        msg = image_msg(frame, 0)
        for i in range(30):
            ns = 7_000_000_000 + i
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)
            client.publish(msg)
            assert wait_for(lambda: ns in got, 10), f"frame {i} not delivered within 10 s"
        assert got[-30:] == [7_000_000_000 + i for i in range(30)]
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        spinner.join(timeout=2.0)
        client.close()


def _spin(executor: SingleThreadedExecutor, ctx: object) -> None:
    while ctx.ok():  # type: ignore[attr-defined]
        try:
            executor.spin_once(timeout_sec=0.05)
        except Exception:  # noqa: BLE001 - context shut down while spinning
            if not ctx.ok():  # type: ignore[attr-defined]
                return
            raise
