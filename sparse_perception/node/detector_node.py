"""``detector``: lifecycle node serving a preloaded engine zoo with sparsity hot-swap.

Thin ROS shell: callbacks convert messages with :mod:`sparse_perception.node.ros_convert`, call
:class:`sparse_perception.runtime.detector_core.DetectorCore` (engine pool, swaps, policy, frame
stats) and publish. Interface, QoS and semantics: docs/node.md.
"""
from __future__ import annotations

import functools
import os
import sys
import threading
import time
import traceback
from typing import Any, Callable, TypeVar

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterUninitializedException
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from sparse_perception.node import ros_convert as rc
from sparse_perception.node.adaptive_qos import follow
from sparse_perception.node.dds_profile import profile_env
from sparse_perception.node.node_config import DYNAMIC_TYPED, NodeConfig, build_runtime
from sparse_perception.node.ros_session import parent_watch, ros_session
from sparse_perception.runtime.condition_estimator import ConditionEstimator
from sparse_perception.runtime.detector_core import DetectorCore
from sparse_perception.runtime.frame_stats import FrameStats
from sparse_perception.runtime.latest_frame import LatestFrameWorker

from sparse_perception_msgs.msg import Detection2DArray, DrivingCondition, EngineStatus
from sparse_perception_msgs.srv import SetSparsity

LATCHED = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                     durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
#: ``~/set_sparsity`` keeps this many pending requests (the rclpy default, 10, drops the rest of a burst)
SERVICE_DEPTH = 1000
SERVICE_QOS = QoSProfile(depth=SERVICE_DEPTH, reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.VOLATILE)
_F = TypeVar("_F", bound=Callable[..., Any])


def contained(what: str, on_error: Callable[..., Any] | None = None) -> Callable[[_F], _F]:
    """Keep any exception inside a callback: log it with its traceback, count it, answer ``on_error``.

    An exception leaving a callback ends the executor's ``spin_once`` and with it the process;
    no input may do that. ``on_error(*args, message)`` builds the answer of a service or
    parameter callback (``None`` for subscriptions and timers).
    """
    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def guarded(self: DetectorNode, *args: Any) -> Any:
            try:
                return fn(self, *args)
            except Exception as exc:  # noqa: BLE001 - the process must survive any one callback
                self.stats.on_callback_error()
                message = f"{what} failed, node keeps running: {type(exc).__name__}: {exc}"
                self.get_logger().error(f"{message}\n{traceback.format_exc()}")
                return on_error(*args, message) if on_error is not None else None
        return guarded  # type: ignore[return-value]
    return wrap


def _service_error(req: Any, resp: Any, message: str) -> Any:
    resp.success, resp.message = False, message
    return resp


#: keep-last depth of the image subscription: SensorData's (REP 2003). Newest-wins is the inference hand-off's
#: job (runtime/latest_frame.py); a depth of 1 here replaced frames that arrived together before the callback
#: took them, uncounted as such (docs/node.md, "Frames lost before the callback").
IMAGE_DEPTH = qos_profile_sensor_data.depth


def image_qos(reliability: str) -> QoSProfile:
    """Image subscription QoS: keep last :data:`IMAGE_DEPTH`, volatile, reliable or best effort."""
    return QoSProfile(depth=IMAGE_DEPTH, history=qos_profile_sensor_data.history,
                      durability=qos_profile_sensor_data.durability,
                      reliability=QoSReliabilityPolicy.RELIABLE if reliability == "reliable"
                      else QoSReliabilityPolicy.BEST_EFFORT)


class DetectorNode(LifecycleNode):
    """Lifecycle node ``detector``: preloads engines on configure, hot-swaps them while active."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("detector", **kwargs)
        for name, default, desc in NodeConfig.parameters():  # () declares a typed, unset string array
            self.declare_parameter(name, Parameter.Type.STRING_ARRAY if default == () else default,
                                   ParameterDescriptor(description=desc, dynamic_typing=name in DYNAMIC_TYPED))
        self._image_group = MutuallyExclusiveCallbackGroup()
        self._control_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self.core = DetectorCore(self.get_logger(), on_status=self._publish_status)
        self.cfg: NodeConfig | None = None
        self.finalized = False
        self._subs: list[Any] = []
        self._image_sub: Any = None
        self._reliability = "reliable"
        self._qos_lock = threading.Lock()  # the QoS event and the diagnostics tick may both re-create
        self._timer: Any = None
        self._status_pub: Any = None
        self._pubs: dict[str, Any] = {}
        self._worker = LatestFrameWorker(self._process_image, name="detector-inference")
        self.create_service(SetSparsity, "~/set_sparsity", self._on_set_sparsity, qos_profile=SERVICE_QOS,
                            callback_group=self._control_group)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    @property
    def stats(self) -> FrameStats:
        return self.core.stats

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            cfg, pool, controller = build_runtime({name: self._value(name) for name, _, _ in NodeConfig.parameters()})
        except Exception as exc:  # noqa: BLE001 - any failure is a FAILURE transition with its reason
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        estimator = None
        if cfg.condition_source == "estimator":
            try:
                estimator = ConditionEstimator.load()
            except ValueError as exc:
                pool.close()
                self.get_logger().error(f"configure failed: {exc}")
                return TransitionCallbackReturn.FAILURE
        self.cfg = cfg
        self.core.load(pool, controller, cfg.policy_mode, estimator)
        self._pubs["detections"] = self.create_lifecycle_publisher(Detection2DArray, "detections", 10)
        if rc.VISION_MSGS is not None:
            self._pubs["vision"] = self.create_lifecycle_publisher(rc.VISION_MSGS.Detection2DArray,
                                                                   "detections_vision", 10)
        if cfg.publish_debug_image:
            self._pubs["debug"] = self.create_lifecycle_publisher(Image, "debug_image", qos_profile_sensor_data)
        self._pubs["diagnostics"] = self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10)
        if estimator is not None:
            self._pubs["condition"] = self.create_lifecycle_publisher(DrivingCondition, "~/estimated_condition", 10)
        self._status_pub = self.create_publisher(EngineStatus, "engine_status", LATCHED)
        self._publish_status()
        self.get_logger().info(f"configured: levels {pool.levels()}, active {pool.active_level!r}, "
                               f"mode {self.core.mode}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.cfg is not None
        try:
            self._start_io()
        except Exception as exc:  # noqa: BLE001 - back to inactive with nothing half-made (engines kept)
            self._stop_io()
            self.get_logger().error(f"activate failed: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"active: subscribed to {self._image_sub.topic_name} ({self._reliability}, "
                               f"image_reliability {self.cfg.image_reliability})")
        return super().on_activate(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: free everything, so 'unconfigured' holds no engines and parameters unlock."""
        self._stop_io()
        self._release()
        self.get_logger().error(f"error in state {state.label!r}: I/O stopped, engines freed (unconfigured)")
        return TransitionCallbackReturn.SUCCESS

    def _start_io(self) -> None:
        assert self.cfg is not None
        self._worker.start()
        self._subscribe_image(follow(self.cfg.image_reliability, "reliable", ()))
        self._follow_publishers()  # auto: the publishers already there decide
        self._subs = []
        if self.cfg.condition_source == "topic":  # estimator: the condition comes from the frames
            self._subs.append(self.create_subscription(DrivingCondition, "driving_condition", self._on_condition,
                                                       10, callback_group=self._control_group))
        self._timer = self.create_timer(self.cfg.diagnostics_period_s, self._publish_diagnostics,
                                        callback_group=self._timer_group)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_io()
        self.get_logger().info("inactive: I/O stopped, engines kept loaded")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_io()
        self._release()
        self.get_logger().info("cleaned up: engines freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_io()
        self._release()
        self.finalized = True  # main() stops spinning and the process exits with 0
        self.get_logger().info("shut down")
        return TransitionCallbackReturn.SUCCESS

    def _value(self, name: str) -> Any:
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:  # typed parameter left unset (allowed_levels)
            return []

    def _subscribe_image(self, reliability: str) -> None:
        """(Re-)create the image subscription with ``reliability``; its incompatible-QoS event re-checks."""
        assert self.cfg is not None
        if self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
        self._reliability = reliability
        self._image_sub = self.create_subscription(
            CompressedImage if self.cfg.compressed else Image, self.cfg.image_topic, self._on_image,
            image_qos(reliability), callback_group=self._image_group,
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=lambda _event: self._follow_publishers()))

    @contained("image QoS check")
    def _follow_publishers(self) -> None:
        """``image_reliability: auto``: match the publishers now on the topic (adaptive_qos.follow)."""
        with self._qos_lock:
            if self.cfg is None or self._image_sub is None or self.cfg.image_reliability != "auto":
                return
            pubs = ["best_effort" if p.qos_profile.reliability == QoSReliabilityPolicy.BEST_EFFORT else "reliable"
                    for p in self.get_publishers_info_by_topic(self._image_sub.topic_name)]
            want = follow("auto", self._reliability, pubs)
            if want != self._reliability:
                self.get_logger().info(f"image QoS: {self._reliability} -> {want} to match the publishers "
                                       f"on {self._image_sub.topic_name} ({', '.join(pubs)})")
                self._subscribe_image(want)

    def _stop_io(self) -> None:
        with self._qos_lock:
            if self._image_sub is not None:
                self.destroy_subscription(self._image_sub)
                self._image_sub = None
        if not self._worker.stop(timeout=30.0):  # a waiting frame is discarded, the one in flight finishes
            self.get_logger().error("inference thread did not finish its frame within 30 s")
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None

    def _release(self) -> None:
        self.core.release()  # waits for a frame in flight
        self.cfg = None
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        if self._status_pub is not None:
            self.destroy_publisher(self._status_pub)
            self._status_pub = None

    # ------------------------------------------------------------------ data path
    @contained("image callback")
    def _on_image(self, msg: Image | CompressedImage, info: Any) -> None:
        """The executor's part: count the frame and hand it to the inference thread (keep-newest), at once.

        Inference in this callback lost about half of a 10 Hz camera's frames under the
        MultiThreadedExecutor (runtime/latest_frame.py); a frame still waiting when the next one arrives
        is replaced and counted as dropped."""
        t0 = time.perf_counter()
        # rclpy's MessageInfo is a dict (TypedDict)
        self.stats.on_received(str(info.get("publisher_gid")), info.get("publication_sequence_number"))
        if self._worker.offer((msg, t0)):  # None: deactivating (the worker has stopped), the frame is let go
            self.stats.on_overwritten()

    @contained("image processing")
    def _process_image(self, item: tuple[Image | CompressedImage, float]) -> None:
        """The inference thread's part: decode, detect, publish (latency counted from the callback's entry)."""
        msg, t0 = item
        try:
            img = rc.image_to_bgr(msg)
        except Exception as exc:  # noqa: BLE001 - every decode failure is a logged, counted bad frame
            self.stats.on_error()
            stamp = f"{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}"
            self.get_logger().error(f"bad image (stamp {stamp}, frame_id {msg.header.frame_id!r}) skipped: {exc}")
            return
        with self.core.infer_lock:  # cleanup waits for this frame; publishers live as long as the pool
            if self.core.pool is None:
                return
            try:
                result = self.core.pool.detect(img)
            except Exception as exc:  # noqa: BLE001 - one failing frame must not take the node down
                self.stats.on_error()
                self.get_logger().error(f"inference failed on stamp {msg.header.stamp.sec}: {exc}")
                return
            self._pubs["detections"].publish(rc.to_detections(result, msg.header))
            if "vision" in self._pubs:
                self._pubs["vision"].publish(rc.to_vision_detections(result, msg.header))
            if "debug" in self._pubs:
                self._pubs["debug"].publish(rc.bgr_to_image(rc.draw_boxes(img, result), msg.header))
            if "condition" in self._pubs:
                condition = self.core.estimate_condition(img)
                if condition is not None:
                    self._pubs["condition"].publish(rc.condition_to_msg(condition, msg.header.stamp))
        # engine time = letterbox + inference + decode/NMS (runtime.DetectionResult.timing)
        self.stats.on_processed((time.perf_counter() - t0) * 1e3, float(result.timing["total_ms"]))

    @contained("driving_condition callback")
    def _on_condition(self, msg: DrivingCondition) -> None:
        try:
            condition = rc.condition_from_msg(msg)
        except ValueError as exc:
            self.get_logger().error(f"bad driving_condition ignored: {exc}")
            return
        self.core.on_condition(condition)

    @contained("set_sparsity", _service_error)
    def _on_set_sparsity(self, req: SetSparsity.Request, resp: SetSparsity.Response) -> SetSparsity.Response:
        resp.success, resp.message, resp.swap_time_ms = self.core.set_sparsity(req.level, req.sparsity)
        resp.active_level = self.core.active_level()
        if resp.success:  # one severity per call site (rclpy's logger rule)
            self.get_logger().info(f"set_sparsity: {resp.message}")
        else:
            self.get_logger().warning(f"set_sparsity rejected: {resp.message}")
        return resp

    @contained("set_parameters", lambda params, message: SetParametersResult(successful=False, reason=message))
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        reason = self.core.apply_parameters([(p.name, p.value) for p in params])  # all checked before any applies
        return SetParametersResult(successful=reason is None, reason=reason or "")

    # ------------------------------------------------------------------ status
    def _publish_status(self) -> None:
        status = self.core.engine_status()
        if self._status_pub is not None and status is not None:
            self._status_pub.publish(rc.engine_status(*status))

    @contained("diagnostics timer")
    def _publish_diagnostics(self) -> None:
        self._follow_publishers()
        self.core.refresh_status()  # the latched status carries the live inference mean
        diag = self.core.diagnostics()
        if diag is None:
            return
        values, warn = diag
        self._pubs["diagnostics"].publish(rc.diagnostics(
            f"{self.get_fully_qualified_name()}: detector", f"{values['backend']}:{values['device']}", values,
            DiagnosticStatus.WARN if warn else DiagnosticStatus.OK, f"level {values['active_level']}"))


def _retrieve_late_errors(executor: MultiThreadedExecutor, node: DetectorNode) -> None:
    """Fetch the errors of callback tasks the stopped spin loop never looked at.

    rclpy raises a finished task's error on the *next* ``spin_once``; the last ones (an entity used
    while the executor shut down: "cannot use Destroyable because destruction was requested") would
    otherwise print "The following exception was never retrieved" when the task is collected. They
    are logged at debug level: the node is stopping and nothing they did is lost. Reads the
    executor's task lists (``_futures``, ``_tasks``; absent: nothing to do).
    """
    pending = list(getattr(executor, "_futures", ())) + [t[0] for t in getattr(executor, "_tasks", ())]
    for task in pending:
        if task.done() and not task.cancelled() and task.exception() is not None:
            node.get_logger().debug(f"callback error at shutdown: {task.exception()}")


def main(args: list[str] | None = None) -> int:
    """Entry point of ``detector_node`` / ``sparse-perception node``.

    SIGINT and SIGTERM (``kill``, ``docker stop``, ``systemctl stop``, launch) end the node the
    same way: the spin loop stops, the lifecycle ``shutdown`` transition frees the engines, and
    the process exits with 0. rclpy's own handlers are not installed: they would invalidate the
    context under the spin loop. A second signal ends the process at once. The parent's end
    (``ros2 launch`` killed or SIGTERMed, ros2/launch#666) ends the node the same way unless
    ``exit_with_parent`` is false.
    """
    if args is not None:  # `sparse-perception node ARGS`: rcl expects the program name first
        args = ["detector_node", *args]
    dds = profile_env()  # the shipped FastDDS profile where the user set none (before rclpy.init)
    os.environ.update(dds)
    with ros_session(args, second_signal_kills=True) as stop:
        node = DetectorNode()
        if dds:
            node.get_logger().info(f"FastDDS profile {next(iter(dds.values()))} (none was set; {', '.join(dds)})")
        orphaned = parent_watch(node.get_parameter("exit_with_parent").value)
        executor = MultiThreadedExecutor(num_threads=4)
        try:
            if node.get_parameter("autostart").value and not stop.is_set():
                if node.trigger_configure() == TransitionCallbackReturn.SUCCESS and not stop.is_set():
                    node.trigger_activate()
            executor.add_node(node)
            while not node.finalized and not stop.is_set():
                executor.spin_once(timeout_sec=0.1)
                if orphaned():
                    node.get_logger().warning("parent process ended (ros2/launch#666): shutting down")
                    break
        except ExternalShutdownException:  # the context was shut down from elsewhere
            pass
        finally:
            executor.shutdown()
            _retrieve_late_errors(executor, node)
            if not node.finalized:
                if node.context.ok():
                    node.trigger_shutdown()  # on_shutdown: waits for a frame in flight, frees engines
                else:
                    node._release()
            node.destroy_node()
    return 0


if __name__ == "__main__":
    sys.exit(main())
