"""``detector``: lifecycle node serving a preloaded engine zoo with sparsity hot-swap.

Thin ROS shell: callbacks convert messages with :mod:`sparse_perception.node.image_codec` and
:mod:`sparse_perception.node.ros_convert`, run :class:`sparse_perception.runtime.engine_pool.EnginePool` and
publish. Interface, QoS and semantics: docs/node.md.
"""
from __future__ import annotations

import functools
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, TypeVar

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image

from sparse_perception.node import ros_convert as rc
from sparse_perception.node.node_config import (DYNAMIC_TYPED, FrameStats, NodeConfig, UnknownLevelError, build_controller,
                                           build_pool)
from sparse_perception.runtime.policy import PolicyController
from sparse_perception.runtime.engine_pool import EnginePool

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


def image_qos(reliability: str) -> QoSProfile:
    """Image subscription QoS keeping only the newest frame (depth 1), reliable or best effort."""
    return QoSProfile(depth=1, history=qos_profile_sensor_data.history, durability=qos_profile_sensor_data.durability,
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
        self._infer_lock = threading.Lock()  # held by inference and by cleanup, never by swaps
        self._swap_lock = threading.RLock()  # serialises swaps, mode changes and policy updates
        self.cfg: NodeConfig | None = None
        self.pool: EnginePool | None = None  # while configured
        self._controller: PolicyController | None = None  # while configured with a policy_path
        self._mode = "manual"
        self._last_condition: Any = None
        self._last_swap_ns, self._last_swap_ms = 0, 0.0
        self.stats = FrameStats()
        self.finalized = False
        self._subs: list[Any] = []
        self._timer: Any = None
        self._status_pub: Any = None
        self._pubs: dict[str, Any] = {}
        self.create_service(SetSparsity, "~/set_sparsity", self._on_set_sparsity, qos_profile=SERVICE_QOS,
                            callback_group=self._control_group)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            params = {name: self._value(name) for name, _, _ in NodeConfig.parameters()}
            cfg = NodeConfig.from_params(params)
            pool = build_pool(cfg)
        except Exception as exc:  # noqa: BLE001 - any failure is a FAILURE transition with its reason
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        try:
            controller = build_controller(cfg, pool.levels(), pool.active_level)
        except Exception as exc:  # noqa: BLE001
            pool.close()
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.cfg, self.pool, self._mode, self.stats = cfg, pool, cfg.policy_mode, FrameStats()
        self._controller = controller
        self._pubs["detections"] = self.create_lifecycle_publisher(Detection2DArray, "detections", 10)
        if rc.VISION_MSGS is not None:
            self._pubs["vision"] = self.create_lifecycle_publisher(rc.VISION_MSGS.Detection2DArray,
                                                                   "detections_vision", 10)
        if cfg.publish_debug_image:
            self._pubs["debug"] = self.create_lifecycle_publisher(Image, "debug_image", qos_profile_sensor_data)
        self._pubs["diagnostics"] = self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10)
        self._status_pub = self.create_publisher(EngineStatus, "engine_status", LATCHED)
        self._publish_status()
        self.get_logger().info(f"configured: levels {pool.levels()}, active {pool.active_level!r}, "
                               f"mode {self._mode}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.cfg is not None
        msg_type = CompressedImage if self.cfg.compressed else Image
        self._subs = [
            self.create_subscription(msg_type, self.cfg.image_topic, self._on_image,
                                     image_qos(self.cfg.image_reliability),
                                     callback_group=self._image_group),
            self.create_subscription(DrivingCondition, "driving_condition", self._on_condition, 10,
                                     callback_group=self._control_group),
        ]
        self._timer = self.create_timer(self.cfg.diagnostics_period_s, self._publish_diagnostics,
                                        callback_group=self._timer_group)
        self.get_logger().info(f"active: subscribed to {self._subs[0].topic_name}")
        return super().on_activate(state)

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

    def _stop_io(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None

    def _release(self) -> None:
        with self._infer_lock:  # waits for a frame in flight
            with self._swap_lock:
                if self.pool is not None:
                    self.pool.close()
                self.pool, self.cfg, self._controller = None, None, None
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        if self._status_pub is not None:
            self.destroy_publisher(self._status_pub)
            self._status_pub = None

    # ------------------------------------------------------------------ data path
    @contained("image callback")
    def _on_image(self, msg: Image | CompressedImage, info: Any) -> None:
        t0 = time.perf_counter()
        gid = info.get("publisher_gid") if isinstance(info, dict) else None
        self.stats.on_received(str(gid), info.get("publication_sequence_number") if isinstance(info, dict) else None)
        try:
            img = rc.image_to_bgr(msg)
        except Exception as exc:  # noqa: BLE001 - every decode failure is a logged, counted bad frame
            self.stats.on_error()
            stamp = f"{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}"
            self.get_logger().error(f"bad image (stamp {stamp}, frame_id {msg.header.frame_id!r}) skipped: {exc}")
            return
        with self._infer_lock:  # cleanup waits for this frame; publishers live as long as the pool
            if self.pool is None:
                return
            try:
                result = self.pool.detect(img)
            except Exception as exc:  # noqa: BLE001 - one failing frame must not take the node down
                self.stats.on_error()
                self.get_logger().error(f"inference failed on stamp {msg.header.stamp.sec}: {exc}")
                return
            self._pubs["detections"].publish(rc.to_detections(result, msg.header))
            if "vision" in self._pubs:
                self._pubs["vision"].publish(rc.to_vision_detections(result, msg.header))
            if "debug" in self._pubs:
                self._pubs["debug"].publish(rc.bgr_to_image(rc.draw_boxes(img, result), msg.header))
        # engine time = letterbox + inference + decode/NMS (runtime.DetectionResult.timing)
        self.stats.on_processed((time.perf_counter() - t0) * 1e3, float(result.timing["total_ms"]))

    @contained("driving_condition callback")
    def _on_condition(self, msg: DrivingCondition) -> None:
        try:
            self._last_condition = rc.condition_from_msg(msg)
        except ValueError as exc:
            self.get_logger().error(f"bad driving_condition ignored: {exc}")
            return
        if self._mode == "auto":
            self._apply_policy()

    def _apply_policy(self) -> None:
        """Feed the latest condition to the controller (auto mode) and swap when it proposes a level."""
        with self._swap_lock:
            if self._controller is None or self._last_condition is None or self.pool is None or self._mode != "auto":
                return
            level = self._controller.update(self._last_condition, time.monotonic(), self.stats.mean_inference_ms())
            if level and level != self.pool.active_level:
                ok, message, _ = self._swap(level, None, "auto")
                if ok:
                    self.get_logger().info(f"policy ({self._last_condition.key}): {message}")
                else:
                    self.get_logger().error(f"policy ({self._last_condition.key}) proposal failed: {message}")

    # ------------------------------------------------------------------ swapping
    def _swap(self, level: str, sparsity: float | None, mode: str) -> tuple[bool, str, float]:
        """Swap to ``level`` (or the level closest to ``sparsity``); returns (ok, message, ms)."""
        with self._swap_lock:
            if self.pool is None:
                return False, "node not configured: no engines loaded (configure it first)", 0.0
            if mode == "auto" and self._mode != "auto":  # a manual request won the race
                return False, "manual mode: policy proposal ignored", 0.0
            before = self.pool.active_level
            try:
                if sparsity is not None:
                    ms = float(self.pool.swap_to_sparsity(sparsity))
                    level = self.pool.active_level
                else:
                    ms = float(self.pool.swap(level)) if level != before else 0.0
            except (UnknownLevelError, ValueError) as exc:
                return False, str(exc), 0.0
            if mode == "manual" and self._controller is not None:
                self._controller.manual()  # a manual choice holds until 'auto'
            self._mode = mode
            if ms or level != before:
                self._last_swap_ns, self._last_swap_ms = time.time_ns(), ms
            self._publish_status()
            return True, f"active level {level!r} ({mode})" + (f", swapped in {ms:.3f} ms" if ms else ""), ms

    def _set_auto(self) -> tuple[bool, str]:
        with self._swap_lock:
            if self.pool is None:
                return False, "node not configured: no engines loaded (configure it first)"
            if self._controller is None:
                return False, "auto mode needs a policy: set the 'policy_path' parameter and reconfigure"
            if self._mode != "auto":
                self._controller.auto(self.pool.active_level)
            self._mode = "auto"
            self._publish_status()
            self._apply_policy()
        return True, "auto mode: the condition-driven policy chooses the level"

    @contained("set_sparsity", _service_error)
    def _on_set_sparsity(self, req: SetSparsity.Request, resp: SetSparsity.Response) -> SetSparsity.Response:
        if req.level == "auto":
            resp.success, resp.message = self._set_auto()
        elif req.level or req.sparsity >= 0:
            resp.success, resp.message, resp.swap_time_ms = self._swap(
                req.level, None if req.level else float(req.sparsity), "manual")
        else:
            resp.success, resp.message = False, "give a level name, 'auto', or a sparsity in [0, 1)"
        resp.active_level = self.pool.active_level if self.pool is not None else ""
        if resp.success:  # one severity per call site (rclpy's logger rule)
            self.get_logger().info(f"set_sparsity: {resp.message}")
        else:
            self.get_logger().warning(f"set_sparsity rejected: {resp.message}")
        return resp

    @contained("set_parameters", lambda params, message: SetParametersResult(successful=False, reason=message))
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            if p.name == "sparsity_level" and self.pool is not None and p.value:
                ok, message = self._set_auto() if p.value == "auto" else self._swap(p.value, None, "manual")[:2]
                if not ok:
                    return SetParametersResult(successful=False, reason=message)
            elif p.name != "sparsity_level" and self.pool is not None:
                return SetParametersResult(successful=False, reason=f"{p.name!r} applies on configure: "
                                           "deactivate and clean up first")
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ status
    def _publish_status(self) -> None:
        if self._status_pub is None or self.pool is None:
            return
        status = dict(self.pool.status())
        status["mean_inference_ms"] = self.stats.mean_inference_ms()
        self._status_pub.publish(rc.engine_status(status, self._mode, self.pool.levels(), self._last_swap_ns,
                                                  self._last_swap_ms))

    @contained("diagnostics timer")
    def _publish_diagnostics(self) -> None:
        if self.pool is None:
            return
        values: dict[str, Any] = {**self.stats.snapshot(), "active_level": self.pool.active_level,
                                  "mode": self._mode}
        meta = self.pool.status()
        values.update(backend=meta["backend"], device=meta["device"])
        warn = values["frames_dropped"] or values["frames_bad"] or values["callback_errors"]
        level = DiagnosticStatus.WARN if warn else DiagnosticStatus.OK
        self._pubs["diagnostics"].publish(rc.diagnostics(f"{self.get_fully_qualified_name()}: detector",
                                                         f"{meta['backend']}:{meta['device']}", values, level,
                                                         f"level {self.pool.active_level}"))


def main(args: list[str] | None = None) -> int:
    """Entry point of ``detector_node`` / ``sparse-perception node``.

    SIGINT and SIGTERM (``kill``, ``docker stop``, ``systemctl stop``, launch) end the node the
    same way: the spin loop stops, the lifecycle ``shutdown`` transition frees the engines, and
    the process exits with 0. rclpy's own handlers are not installed: they would invalidate the
    context under the spin loop. A second signal ends the process at once.
    """
    if args is not None:  # `sparse-perception node ARGS`: rcl expects the program name first
        args = ["detector_node", *args]
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()
        signal.signal(signum, signal.SIG_DFL)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO):
            node = DetectorNode()
            executor = MultiThreadedExecutor(num_threads=4)
            try:
                if node.get_parameter("autostart").value and not stop.is_set():
                    if node.trigger_configure() == TransitionCallbackReturn.SUCCESS and not stop.is_set():
                        node.trigger_activate()
                executor.add_node(node)
                while not node.finalized and not stop.is_set():
                    executor.spin_once(timeout_sec=0.1)
            except ExternalShutdownException:  # the context was shut down from elsewhere
                pass
            finally:
                executor.shutdown()
                if not node.finalized:
                    if node.context.ok():
                        node.trigger_shutdown()  # on_shutdown: waits for a frame in flight, frees engines
                    else:
                        node._release()
                node.destroy_node()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
