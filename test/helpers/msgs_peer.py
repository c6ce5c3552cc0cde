"""Peer process for test_msgs_dds: publishes detections or serves SetSparsity.

Usage: python msgs_peer.py publish TOPIC COUNT | serve SERVICE
Prints READY once its endpoint exists.
"""
from __future__ import annotations

import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

from sparse_perception_msgs.msg import BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesis
from sparse_perception_msgs.srv import SetSparsity

QOS = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
LEVELS = {"dense": 0.0, "s50": 0.5, "s75": 0.75}


def make_array(i: int) -> Detection2DArray:
    arr = Detection2DArray()
    arr.header.stamp.sec = 1000 + i
    arr.header.stamp.nanosec = 123_456_789
    arr.header.frame_id = "camera_color_left"
    for k in range(3):
        det = Detection2D()
        det.header = arr.header
        det.id = f"{i}:{k}"
        det.bbox = BoundingBox2D(center_x=100.5 + k, center_y=50.25, theta=0.0, size_x=20.0 + i, size_y=10.0)
        det.results = [ObjectHypothesis(class_id=["Car", "Pedestrian", "Cyclist"][k], score=0.5 + 0.1 * k)]
        arr.detections.append(det)
    return arr


def main() -> None:
    mode = sys.argv[1]
    with rclpy.init():
        node = Node("msgs_peer")
        if mode == "publish":
            topic, count = sys.argv[2], int(sys.argv[3])
            pub = node.create_publisher(Detection2DArray, topic, QOS)
            for i in range(count):
                pub.publish(make_array(i))
            print("READY", flush=True)
        else:
            def handle(req: SetSparsity.Request, resp: SetSparsity.Response) -> SetSparsity.Response:
                if req.level in LEVELS:
                    resp.success, resp.active_level, resp.swap_time_ms = True, req.level, 0.25
                    resp.message = f"switched to {req.level}"
                else:
                    resp.success, resp.active_level = False, "dense"
                    resp.message = f"unknown level {req.level!r}; available: {sorted(LEVELS)}"
                return resp

            node.create_service(SetSparsity, sys.argv[2], handle)
            print("READY", flush=True)
        try:
            rclpy.spin(node)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass


if __name__ == "__main__":
    main()
