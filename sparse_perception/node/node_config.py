"""Typed configuration of the detector node and the runtime objects built from it (no ``rclpy``).

The node declares ROS parameters and converts them at the edge into :class:`NodeConfig`
(frozen, validated in ``__post_init__``); :func:`build_runtime` (:func:`build_pool`,
:func:`build_controller`) builds the runtime objects from it (:mod:`sparse_perception.runtime.engine_pool`,
:mod:`sparse_perception.runtime.policy`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from sparse_perception.runtime.engine_pool import EnginePool, RuntimeConfig
from sparse_perception.runtime.manifest_policy import MANIFEST_POLICY, ManifestPolicy
from sparse_perception.runtime.policy import PolicyController, SparsityPolicy

#: values of the condition_source parameter (and launch argument)
CONDITION_SOURCES = ("topic", "estimator")

__all__ = ["NodeConfig", "build_controller", "build_pool", "build_runtime"]

BACKENDS = ("onnxruntime", "tensorrt")
PRECISIONS = ("", "fp32", "fp16", "int8")
POLICY_MODES = ("manual", "auto")
#: Parameters of type double: ``-p cooldown_s:=0`` (an int on the command line) is accepted as 0.0.
FLOAT_PARAMS = frozenset({"confidence_threshold", "iou_threshold", "hysteresis", "cooldown_s", "diagnostics_period_s"})
#: Level names: ``-p sparsity_level:=50`` (an int) is the level named "50" (then checked against the zoo).
LEVEL_PARAMS = frozenset({"initial_level", "sparsity_level"})
#: Parameters declared with dynamic typing (``hysteresis:=3`` and ``hysteresis:=3.0`` both work); their
#: type is checked by :meth:`NodeConfig.from_params` with a message naming the parameter.
DYNAMIC_TYPED = FLOAT_PARAMS | LEVEL_PARAMS
#: ``diagnostics_period_s`` bounds (a microsecond timer keeps a core busy; rclpy's timer needs an int64 of ns)
DIAGNOSTICS_PERIOD_RANGE = (0.05, 86400.0)
_NAME_TOKEN = r"[A-Za-z_{][A-Za-z0-9_{}]*"
#: a ROS 2 topic name (absolute, relative or private; ``{node}``-style substitutions allowed)
TOPIC_NAME = re.compile(rf"~|(~/|/)?{_NAME_TOKEN}(/{_NAME_TOKEN})*")
#: ROS parameter descriptions (the node declares one parameter per :class:`NodeConfig` field).
DESCRIPTIONS: dict[str, str] = {
    "engine_manifest": "engine zoo manifest (manifest.json); exclusive with model_path",
    "model_path": "single Ultralytics-layout detection ONNX; exclusive with engine_manifest",
    "backend": "onnxruntime | tensorrt",
    "precision": "fp32 | fp16 | int8; empty = the manifest's selected precision",
    "initial_level": "level active after configure; empty = densest allowed level",
    "allowed_levels": "levels to preload; empty = all in the manifest",
    "confidence_threshold": "minimum detection score, (0, 1)",
    "iou_threshold": "NMS IoU threshold, (0, 1)",
    "max_detections": "maximum detections per image",
    "image_topic": "input topic (relative, remappable)",
    "compressed": "subscribe to sensor_msgs/CompressedImage instead of Image",
    "image_reliability": "auto (default: follows the publishers met, reliable with reliable cameras, best effort "
                         "with best-effort ones, also when the camera starts later) | reliable | best_effort "
                         "(forced); every choice keeps only the newest frame",
    "autostart": "configure and activate on start",
    "exit_with_parent": "shut down cleanly when the parent process (ros2 launch) ends without stopping the node "
                        "(ros2/launch#666); false for a node meant to outlive its starter (nohup)",
    "policy_mode": "manual | auto (the condition-driven policy chooses the level)",
    "condition_source": "topic (driving_condition subscription) | estimator (estimated from each image, "
                        "published on ~/estimated_condition; for drives with no condition topic)",
    "policy_path": "policy trained by `pruning-tools train-policy`, or 'manifest': follow the engine manifest's "
                   "conditions -> level map (a zoo with condition-tailored levels, docs/federated.md)",
    "hysteresis": "consecutive agreeing policy decisions needed before a switch (int or double; < 1 counts as 1)",
    "cooldown_s": "minimum seconds between two policy switches",
    "publish_debug_image": "publish debug_image with the boxes drawn",
    "sparsity_level": "setting it swaps the active level ('auto' = policy); engine_status has the active one",
    "threads": "inference threads",
    "diagnostics_period_s": "period of /diagnostics in seconds",
}


@dataclass(frozen=True)
class NodeConfig:
    """Detector node settings (one field per ROS parameter; see docs/node.md).

    :raises ValueError: naming the parameter when a value is out of range or inconsistent.
    """

    engine_manifest: str = ""
    model_path: str = ""
    backend: str = "onnxruntime"
    precision: str = ""
    initial_level: str = ""
    allowed_levels: tuple[str, ...] = ()
    confidence_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 300
    image_topic: str = "image_raw"
    compressed: bool = False
    image_reliability: str = "auto"
    autostart: bool = False
    exit_with_parent: bool = True
    policy_mode: str = "manual"
    condition_source: str = "topic"
    policy_path: str = ""
    hysteresis: float = 3.0
    cooldown_s: float = 2.0
    publish_debug_image: bool = False
    sparsity_level: str = ""
    threads: int = 2
    diagnostics_period_s: float = 1.0

    def __post_init__(self) -> None:
        if bool(self.engine_manifest) == bool(self.model_path):
            raise ValueError("set exactly one of the parameters 'engine_manifest' (engine zoo) and 'model_path' "
                             f"(single ONNX), got engine_manifest={self.engine_manifest!r}, "
                             f"model_path={self.model_path!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"parameter 'backend' must be one of {BACKENDS}, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"parameter 'precision' must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("confidence_threshold", "iou_threshold"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ValueError(f"parameter {name!r} must be in (0, 1), got {v}")
        if self.max_detections < 1:
            raise ValueError(f"parameter 'max_detections' must be >= 1, got {self.max_detections}")
        if not self.image_topic:
            raise ValueError("parameter 'image_topic' must not be empty")
        if self.image_reliability not in ("auto", "best_effort", "reliable"):
            raise ValueError("parameter 'image_reliability' must be auto, best_effort or reliable, "
                             f"got {self.image_reliability!r}")
        if self.policy_mode not in POLICY_MODES:
            raise ValueError(f"parameter 'policy_mode' must be one of {POLICY_MODES}, got {self.policy_mode!r}")
        if self.condition_source not in CONDITION_SOURCES:
            raise ValueError(f"parameter 'condition_source' must be one of {CONDITION_SOURCES}, "
                             f"got {self.condition_source!r}")
        if self.policy_mode == "auto" and not self.policy_path:
            raise ValueError("parameter 'policy_path' is required when policy_mode is 'auto'")
        if self.policy_mode == "auto" and self.model_path:
            raise ValueError("policy_mode 'auto' needs an engine zoo ('engine_manifest'), not a single model_path")
        if isinstance(self.hysteresis, bool) or not isinstance(self.hysteresis, (int, float)) \
                or not 0.0 <= self.hysteresis < float("inf"):
            raise ValueError(f"parameter 'hysteresis' must be a number >= 0 (consecutive policy decisions, "
                             f"< 1 counts as 1), got {self.hysteresis!r}")
        if not 0 <= self.cooldown_s < float("inf"):  # NaN fails too
            raise ValueError(f"parameter 'cooldown_s' must be a finite number >= 0, got {self.cooldown_s}")
        if self.threads < 1:
            raise ValueError(f"parameter 'threads' must be >= 1, got {self.threads}")
        lo, hi = DIAGNOSTICS_PERIOD_RANGE
        if not lo <= self.diagnostics_period_s <= hi:  # NaN fails too
            raise ValueError(f"parameter 'diagnostics_period_s' must be in [{lo}, {hi}] seconds, "
                             f"got {self.diagnostics_period_s}")
        if not TOPIC_NAME.fullmatch(self.image_topic) or "{}" in self.image_topic:
            raise ValueError(f"parameter 'image_topic' is not a valid ROS topic name: {self.image_topic!r} "
                             "(tokens of letters, digits and '_' separated by '/', not starting with a digit)")
        if self.policy_path == MANIFEST_POLICY and not self.engine_manifest:
            raise ValueError(f"policy_path {MANIFEST_POLICY!r} follows the engine manifest's conditions map: it needs "
                             "'engine_manifest' (an engine zoo), not a single model_path")
        if self.sparsity_level == "auto" and not self.policy_path:
            raise ValueError("sparsity_level 'auto' needs a policy: set the parameter 'policy_path'")

    @classmethod
    def parameters(cls) -> list[tuple[str, Any, str]]:
        """(name, default, description) of every field, in declaration order."""
        return [(f.name, f.default, DESCRIPTIONS[f.name]) for f in fields(cls)]

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "NodeConfig":
        """Build from a ``{name: value}`` dict of ROS parameter values (unknown keys rejected)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise ValueError(f"unknown detector parameters: {unknown}")
        values = dict(params)
        for name in FLOAT_PARAMS & set(values):  # declared with dynamic typing: 3 or 3.0
            v = values[name]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"parameter {name!r} must be a number (double or int), got {v!r} ({type(v).__name__})")
            values[name] = float(v)
        for name in LEVEL_PARAMS & set(values):
            v = values[name]
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise ValueError(f"parameter {name!r} must be a level name (string), got {v!r} ({type(v).__name__})")
            values[name] = str(v)
        if "allowed_levels" in values:
            values["allowed_levels"] = tuple(str(v) for v in values["allowed_levels"] if str(v))
        return cls(**values)


def build_pool(cfg: NodeConfig) -> EnginePool:
    """Preload (sha256-verified, warmed up) every allowed engine and activate the initial level.

    :return: the runtime :class:`~sparse_perception.runtime.engine_pool.EnginePool`.
    :raises Exception: whatever the runtime raises for a bad manifest/model/level (the node
        turns it into a FAILURE transition with the message logged).
    """
    rcfg = RuntimeConfig(backend=cfg.backend, conf_thres=cfg.confidence_threshold, iou_thres=cfg.iou_threshold,
                         max_det=cfg.max_detections, threads=cfg.threads)
    if cfg.engine_manifest:
        pool = EnginePool.from_manifest(cfg.engine_manifest, list(cfg.allowed_levels) or None, cfg.backend,
                                        cfg.precision or None, rcfg)
    else:
        pool = EnginePool.from_model(cfg.model_path, rcfg)
    initial = cfg.initial_level or (cfg.sparsity_level if cfg.sparsity_level != "auto" else "")
    try:
        if cfg.sparsity_level not in ("", "auto") and cfg.sparsity_level not in pool.levels():
            raise ValueError(f"parameter 'sparsity_level': unknown level {cfg.sparsity_level!r}; "
                             f"preloaded levels: {pool.levels()}")
        if initial:
            pool.swap(initial)
    except BaseException:
        pool.close()
        raise
    return pool


def build_controller(cfg: NodeConfig, levels: list[str], current: str) -> PolicyController | None:
    """Load ``cfg.policy_path`` (:meth:`SparsityPolicy.load`: score table or PPO zip + sidecar, sha256 checked;
    ``manifest``: :class:`~sparse_perception.runtime.manifest_policy.ManifestPolicy` of the engine manifest's
    ``conditions`` map).

    :param levels: the preloaded levels; every level the policy can choose must be among them.
    :param current: the active level (the controller's starting point).
    :return: a :class:`PolicyController` (in manual mode unless ``cfg.policy_mode`` is ``auto``),
        or None without a policy.
    :raises ValueError: unusable policy file, or a policy level that is not preloaded.
    """
    if not cfg.policy_path:
        return None
    if cfg.policy_path == MANIFEST_POLICY:
        from sparse_perception.runtime.zoo import load_manifest

        policy: SparsityPolicy = ManifestPolicy.from_manifest(load_manifest(cfg.engine_manifest))
    else:
        policy = SparsityPolicy.load(cfg.policy_path)
    missing = [lv for lv in policy.levels if lv not in levels]
    if missing:
        raise ValueError(f"{cfg.policy_path}: policy levels {missing} are not preloaded (preloaded: {levels}); "
                         "check 'allowed_levels' and the manifest the policy was trained on")
    controller = PolicyController(policy, hysteresis=cfg.hysteresis, cooldown_s=cfg.cooldown_s, current=current)
    if cfg.policy_mode != "auto":
        controller.manual()
    return controller


def build_runtime(params: dict[str, Any]) -> tuple[NodeConfig, EnginePool, PolicyController | None]:
    """``on_configure``'s work: validate ``params`` (ROS parameter values), preload the engines, load the policy.

    :return: the config, the loaded pool and the controller (None without a policy).
    :raises Exception: naming what is wrong; nothing stays loaded (the pool is closed).
    """
    cfg = NodeConfig.from_params(params)
    pool = build_pool(cfg)
    try:
        controller = build_controller(cfg, pool.levels(), pool.active_level)
    except BaseException:
        pool.close()
        raise
    return cfg, pool, controller
