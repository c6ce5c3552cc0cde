"""Drive a running ``detector`` node over real DDS from another process (tests, benchmarks).

One rclpy context per client, spun by a background executor thread, so tests can wait on
plain Python conditions. Shared by the process-level twins (test_detector_node.py), the
launch tests and bench/node_bench.py.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from sparse_perception.node.ros_convert import bgr_to_image, time_from_ns
from sparse_perception.tools.testing import wait_for
from sparse_perception_msgs.msg import Detection2DArray, DrivingCondition, EngineStatus
from sparse_perception_msgs.srv import SetSparsity

TRANSITIONS = {
    "configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
    "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP,
    "shutdown": Transition.TRANSITION_UNCONFIGURED_SHUTDOWN,
    "inactive_shutdown": Transition.TRANSITION_INACTIVE_SHUTDOWN,
    "active_shutdown": Transition.TRANSITION_ACTIVE_SHUTDOWN,
}
LATCHED = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                     durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
#: QoS of the client's image publisher: reliable, **keep last 1** (the node keeps only the newest
#: frame too). Depth 1 is what keeps lost fragments cheap: a FastDDS writer piggybacks a heartbeat
#: on a sample only when its history is full (or a send buffer's worth of bytes went out), and a
#: volatile writer drops acknowledged samples, so a lock-step depth-10 writer never fills its
#: history and a lost fragment of a 1.4 MB frame waited for the periodic heartbeat (3 s) before
#: it was repaired. That was the ``node_bench --soak`` stall (docs/node.md, Benchmark).
FRAME_QOS = QoSProfile(depth=1, history=QoSHistoryPolicy.KEEP_LAST, reliability=QoSReliabilityPolicy.RELIABLE,
                       durability=QoSDurabilityPolicy.VOLATILE)


def stamp_ns(header: Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def image_msg(img: np.ndarray, ns: int, frame_id: str = "camera", encoding: str = "bgr8") -> Image:
    """``sensor_msgs/Image`` of an HxWx3 uint8 array with stamp ``ns`` (:func:`ros_convert.bgr_to_image`)."""
    return bgr_to_image(img, Header(stamp=time_from_ns(int(ns)), frame_id=frame_id), encoding)


class DetectorClient:
    """Client of the node ``<namespace>/detector``.

    :param namespace: the node's namespace ("" for the root).
    :param image_topic: where to publish frames (relative to the namespace).
    """

    def __init__(self, namespace: str = "", image_topic: str = "image_raw", name: str = "detector_test_client",
                 subscribe_status: bool = True) -> None:
        self.prefix = f"{namespace.rstrip('/')}/" if namespace else ""
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.detections: list[tuple[int, Detection2DArray]] = []  # (wall-clock receipt ns, message)
        self.statuses: list[EngineStatus] = []
        self._lock = threading.Lock()
        n, p = self.node, self.prefix
        self.image_pub = n.create_publisher(Image, image_topic if image_topic.startswith("/") else p + image_topic,
                                            FRAME_QOS)
        self.condition_pub = n.create_publisher(DrivingCondition, p + "driving_condition", 10)
        n.create_subscription(Detection2DArray, p + "detections", self._on_det, 100)
        if subscribe_status:
            self.subscribe_status()
        self.change_client = n.create_client(ChangeState, p + "detector/change_state")
        self.state_client = n.create_client(GetState, p + "detector/get_state")
        self.swap_client = n.create_client(SetSparsity, p + "detector/set_sparsity")
        self.param_client = n.create_client(SetParameters, p + "detector/set_parameters")
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(n)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def subscribe_status(self) -> None:
        self.node.create_subscription(EngineStatus, self.prefix + "engine_status", self.statuses.append, LATCHED)

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - context shut down while spinning
                if not self.context.ok():
                    return
                raise

    def _on_det(self, msg: Detection2DArray) -> None:
        with self._lock:
            self.detections.append((time.time_ns(), msg))

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self._thread.join(timeout=2.0)

    # ---------------------------------------------------------------- calls
    def _call(self, client: Any, request: Any, timeout: float) -> Any:
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} not available after {timeout} s")
        fut = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not fut.done() and time.monotonic() < deadline:
            time.sleep(0.005)
        if not fut.done():
            raise TimeoutError(f"service {client.srv_name} did not answer within {timeout} s")
        return fut.result()

    def change_state(self, transition: str, timeout: float = 60.0) -> bool:
        req = ChangeState.Request()
        req.transition.id = TRANSITIONS[transition]
        return bool(self._call(self.change_client, req, timeout).success)

    def state(self, timeout: float = 30.0) -> str:
        """The node's lifecycle state. ``get_state`` is read-only, so an unanswered request is sent again:
        a request written right after discovery can be lost before the server's reader has matched."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                return str(self._call(self.state_client, GetState.Request(), max(0.1, min(5.0, left)))
                           .current_state.label)
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise

    def set_sparsity(self, level: str = "", sparsity: float = -1.0, timeout: float = 10.0) -> SetSparsity.Response:
        return self._call(self.swap_client, SetSparsity.Request(level=level, sparsity=sparsity), timeout)

    def set_parameter(self, name: str, value: Any, timeout: float = 10.0) -> tuple[bool, str]:
        msg: ParameterMsg = Parameter(name, value=value).to_parameter_msg()
        res = self._call(self.param_client, SetParameters.Request(parameters=[msg]), timeout).results[0]
        return bool(res.successful), str(res.reason)

    # ---------------------------------------------------------------- data
    def wait_for_subscriber(self, timeout: float = 20.0) -> bool:
        return wait_for(lambda: self.image_pub.get_subscription_count() > 0, timeout)

    def wait_ready(self, timeout: float = 60.0, shape: tuple[int, int] = (32, 96)) -> bool:
        """Wait until the node is subscribed *and* answers: probe frames (stamp 1 s + k ns) every 0.2 s.

        A best-effort subscriber can miss the first frames while discovery completes on its side,
        so seeing a matched subscription is not enough before lock-step publishing. The answer to
        *any* probe counts: on a loaded machine a full-size probe can take longer than 0.2 s, and
        with the keep-last-1 image QoS each new probe replaces the previous one.
        """
        if not self.wait_for_subscriber(timeout):
            return False
        probe = np.zeros((*shape, 3), np.uint8)
        deadline = time.monotonic() + timeout
        with self._lock:
            first = len(self.detections)
        sent: set[int] = set()

        def answered() -> bool:
            with self._lock:
                return any(stamp_ns(m.header) in sent for _, m in self.detections[first:])

        k = 0
        while time.monotonic() < deadline:
            k += 1
            sent.add(1_000_000_000 + k)
            self.publish(image_msg(probe, 1_000_000_000 + k))
            if wait_for(answered, min(0.2 * k, 2.0), period=0.005):  # back off up to 2 s per probe
                return True
        return False

    def publish(self, msg: Image) -> None:
        self.image_pub.publish(msg)

    def received(self) -> list[Detection2DArray]:
        with self._lock:
            return [m for _, m in self.detections]

    def wait_for_stamp(self, ns: int, timeout: float = 10.0) -> Detection2DArray | None:
        """Wait for the detections of the frame stamped ``ns`` (among the 5 latest)."""
        found = self.wait_for_stamp_receipt(ns, timeout)
        return found[1] if found else None

    def wait_for_stamp_receipt(self, ns: int, timeout: float = 10.0) -> tuple[int, Detection2DArray] | None:
        """Like :meth:`wait_for_stamp`; :return: (wall-clock receipt ns, message) or None."""
        found: list[tuple[int, Detection2DArray]] = []

        def check() -> bool:
            with self._lock:
                for t, m in reversed(self.detections[-5:]):
                    if stamp_ns(m.header) == ns:
                        found.append((t, m))
                        return True
            return False

        return found[0] if wait_for(check, timeout, period=0.0005) else None

    def latest_status(self) -> EngineStatus | None:
        return self.statuses[-1] if self.statuses else None
