"""The detector's state and decisions without ROS: engine pool, policy controller, mode, frame stats.

The node owns one :class:`DetectorCore`, loads it on configure and releases it on cleanup; its
callbacks convert messages and call the core. Swaps, mode changes and policy updates are
serialised by :attr:`DetectorCore.swap_lock`; inference holds :attr:`DetectorCore.infer_lock`
(never taken by swaps, so a swap does not wait for a frame).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from sparse_perception.runtime.condition_estimator import ConditionEstimator
from sparse_perception.runtime.conditions import Condition
from sparse_perception.runtime.engine_pool import EnginePool, UnknownLevelError
from sparse_perception.runtime.frame_stats import FrameStats
from sparse_perception.runtime.policy import Load, PolicyController

__all__ = ["DetectorCore", "NOT_CONFIGURED"]

NOT_CONFIGURED = "node not configured: no engines loaded (configure it first)"


class DetectorCore:
    """Engine pool, policy controller and mode of the detector, with its swap rules.

    :param log: logger with ``info``/``error`` (the node's).
    :param on_status: called (under :attr:`swap_lock`) whenever the level or mode changed.
    """

    def __init__(self, log: Any, on_status: Callable[[], None] = lambda: None) -> None:
        self.log, self.on_status = log, on_status
        self.infer_lock = threading.Lock()  # held by inference and by release, never by swaps
        self.swap_lock = threading.RLock()  # serialises swaps, mode changes and policy updates
        self.pool: EnginePool | None = None  # while configured
        self.controller: PolicyController | None = None  # while configured with a policy_path
        self.mode = "manual"
        self.last_condition: Condition | None = None
        self.estimator: ConditionEstimator | None = None  # condition_source 'estimator'
        self.last_swap_ns, self.last_swap_ms = 0, 0.0
        self.stats = FrameStats()
        self._published_inference_ms = 0.0

    def load(self, pool: EnginePool, controller: PolicyController | None, mode: str,
             estimator: ConditionEstimator | None = None) -> None:
        """Take a preloaded pool (and policy controller, condition estimator) into service; stats start over."""
        self.pool, self.controller, self.mode, self.stats = pool, controller, mode, FrameStats()
        self.estimator = estimator

    def release(self) -> None:
        """Free the engines; waits for a frame in flight."""
        with self.infer_lock:
            with self.swap_lock:
                if self.pool is not None:
                    self.pool.close()
                self.pool, self.controller = None, None

    def active_level(self) -> str:
        pool = self.pool
        return pool.active_level if pool is not None else ""

    # ------------------------------------------------------------------ swapping
    def swap(self, level: str, sparsity: float | None, mode: str) -> tuple[bool, str, float]:
        """Swap to ``level`` (or the level closest to ``sparsity``) in ``mode``; returns (ok, message, ms)."""
        with self.swap_lock:
            if self.pool is None:
                return False, NOT_CONFIGURED, 0.0
            before = self.pool.active_level
            try:
                if sparsity is not None:
                    ms = float(self.pool.swap_to_sparsity(sparsity))
                    level = self.pool.active_level
                else:
                    ms = float(self.pool.swap(level)) if level != before else 0.0
            except (UnknownLevelError, ValueError) as exc:
                return False, str(exc), 0.0
            if mode == "manual" and self.controller is not None:
                self.controller.manual()  # a manual choice holds until 'auto'
            self.mode = mode
            if ms or level != before:
                self.last_swap_ns, self.last_swap_ms = time.time_ns(), ms
            if self.pool.active_level != before:
                self.stats.mark_level()  # the load the policy reads is measured at the new level from now on
            self.on_status()
            return True, f"active level {level!r} ({mode})" + (f", swapped in {ms:.3f} ms" if ms else ""), ms

    def set_auto(self) -> tuple[bool, str]:
        """Hand the level to the condition-driven policy."""
        with self.swap_lock:
            if self.pool is None:
                return False, NOT_CONFIGURED
            if self.controller is None:
                return False, "auto mode needs a policy: set the 'policy_path' parameter and reconfigure"
            if self.mode != "auto":
                self.controller.auto(self.pool.active_level)
            self.mode = "auto"
            self.on_status()
            self.apply_policy()
        return True, "auto mode: the condition-driven policy chooses the level"

    def set_sparsity(self, level: str, sparsity: float) -> tuple[bool, str, float]:
        """``~/set_sparsity``: a level name, ``auto``, or (empty level) a sparsity in [0, 1)."""
        if level == "auto":
            return (*self.set_auto(), 0.0)
        if level or sparsity >= 0:
            return self.swap(level, None if level else float(sparsity), "manual")
        return False, "give a level name, 'auto', or a sparsity in [0, 1)", 0.0

    def parameter_rejection(self, name: str, value: Any) -> str | None:
        """Why a parameter update is refused (None: accepted); setting ``sparsity_level`` swaps."""
        return self.apply_parameters([(name, value)])

    def apply_parameters(self, updates: list[tuple[str, Any]]) -> str | None:
        """Validate every ``(name, value)`` before applying any (``SetParametersAtomically``), then swap.

        :return: why the whole update is refused (nothing changed), or None (accepted; a
            ``sparsity_level`` among them is now active).
        """
        with self.swap_lock:
            if self.pool is None:  # unconfigured: everything is validated on configure
                return None
            for name, value in updates:
                if name != "sparsity_level":
                    return f"{name!r} applies on configure: deactivate and clean up first"
                level = str(value)
                if level == "auto" and self.controller is None:
                    return "auto mode needs a policy: set the 'policy_path' parameter and reconfigure"
                if level not in ("", "auto") and level not in self.pool.levels():
                    return f"unknown level {level!r}; available levels: {self.pool.levels()}"
            for name, value in updates:
                if value:
                    ok, message = self.set_auto() if value == "auto" else self.swap(str(value), None, "manual")[:2]
                    if not ok:
                        return message
                    # every swap leaves a log line, whatever its path (service: the node; policy: apply_policy)
                    self.log.info(f"sparsity_level parameter: {message}")
        return None

    def on_condition(self, condition: Condition) -> None:
        """Remember the latest driving condition; in auto mode the policy may swap."""
        self.last_condition = condition
        if self.mode == "auto":
            self.apply_policy()

    def estimate_condition(self, bgr: Any) -> Condition | None:
        """Estimate the condition of one frame (condition_source 'estimator') and feed it to the policy
        exactly like a received ``DrivingCondition``; None when no estimator is configured."""
        estimator = self.estimator
        if estimator is None:
            return None
        condition = estimator.update(bgr)
        self.on_condition(condition)
        return condition

    def apply_policy(self) -> None:
        """Feed the latest condition to the controller (auto mode) and swap when it proposes a level."""
        with self.swap_lock:
            if self.controller is None or self.last_condition is None or self.pool is None or self.mode != "auto":
                return
            meta = self.controller.policy.meta
            period = float(meta.get("frame_period_ms", 100.0))
            # the window the policy was trained on (train-policy's decision window; 1 s before it was recorded)
            recent = max(1, int(round(1000.0 * float(meta.get("window_s", 1.0)) / period)))
            load = self.stats.load(period, recent)
            if not load.pop("frames") and self.controller.policy.kind == "ppo":
                return  # its observation needs the load, and nothing is measured at this level yet: no decision
            try:
                level = self.controller.update(self.last_condition, time.monotonic(), Load(**load))
            except Exception as exc:  # noqa: BLE001 - a policy failure keeps the level (and auto mode) as is
                self.log.error(f"policy ({self.last_condition.key}) failed, level kept: {type(exc).__name__}: {exc}")
                return
            if level and level != self.pool.active_level:
                ok, message, _ = self.swap(level, None, "auto")
                if ok:
                    self.log.info(f"policy ({self.last_condition.key}): {message}")
                else:
                    self.log.error(f"policy ({self.last_condition.key}) proposal failed: {message}")

    # ------------------------------------------------------------------ status
    def refresh_status(self) -> None:
        """Republish the latched status when the live inference mean moved (frames flowed since the last one)."""
        with self.swap_lock:
            mean = self.stats.mean_inference_ms()
            if self.pool is not None and mean != self._published_inference_ms:
                self.on_status()

    def engine_status(self) -> tuple[dict[str, Any], str, list[str], int, float] | None:
        """(pool status + mean inference ms, mode, levels, last swap ns, last swap ms); None unconfigured."""
        pool = self.pool
        if pool is None:
            return None
        status = dict(pool.status())
        status["mean_inference_ms"] = self._published_inference_ms = self.stats.mean_inference_ms()
        return status, self.mode, pool.levels(), self.last_swap_ns, self.last_swap_ms

    def diagnostics(self) -> tuple[dict[str, Any], bool] | None:
        """(the ``/diagnostics`` values, whether to warn); None unconfigured."""
        pool = self.pool
        if pool is None:
            return None
        values: dict[str, Any] = {**self.stats.snapshot(), "active_level": pool.active_level, "mode": self.mode}
        meta = pool.status()
        values.update(backend=meta["backend"], device=meta["device"])
        return values, bool(values["frames_dropped"] or values["frames_bad"] or values["callback_errors"])
