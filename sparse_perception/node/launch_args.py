"""Arguments of ``launch/detector.launch.py`` and how they become node parameters (no ROS imports).

The launch file declares :data:`ARGUMENTS` and passes the resolved values to
:func:`node_overrides`; keeping the mapping here lets it be tested where the ROS 2 launch stack
is not installed. An argument left empty keeps the parameters file's value. Every node parameter
a user sets at start has its argument (:data:`PARAMETER_ARGUMENTS`, derived from
:class:`~sparse_perception.node.node_config.NodeConfig`), and the output topics have remapping
arguments (:data:`OUTPUT_TOPICS`).
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from sparse_perception.node.adaptive_qos import RELIABILITIES
from sparse_perception.node.node_config import CONDITION_SOURCES, NodeConfig

#: Topic the KITTI bags written by `pruning-tools kitti to-bag` carry the left colour camera on.
BAG_IMAGE_TOPIC = "/kitti/camera_color_left/image_raw"

#: (name, default, description) of every launch argument.
ARGUMENTS: tuple[tuple[str, str, str], ...] = (
    ("namespace", "perception", "namespace of the detector node and its relative topics"),
    ("params_file", "", "parameters file (default: share/sparse_perception/config/detector.yaml)"),
    ("autostart", "", "true: the node configures and activates itself (empty = params file)"),
    ("engine_manifest", "", "engine zoo manifest.json (empty = params file)"),
    ("model_path", "", "single Ultralytics-layout ONNX instead of a zoo (empty = params file)"),
    ("image_topic", "", f"input image topic (empty = params file; {BAG_IMAGE_TOPIC} when bag is set)"),
    ("image_reliability", "", "auto | reliable | best_effort image subscription (empty = params file, auto: "
                              "follows the camera's publisher; the other two force it)"),
    ("condition_topic", "", "topic remapped onto the node's driving_condition (empty = no remap; "
                            "/driving_condition when bag is set)"),
    ("condition_source", "", "topic | estimator: where the policy's condition comes from (empty = params file, "
                             "topic; estimator where no condition topic is wired)"),
    ("bag", "", "rosbag2 folder to replay alongside the node (empty = none)"),
    ("bag_player", "replay", "replay (sparse-perception replay) | ros2 (ros2 bag play)"),
    ("log_level", "info", "node log level"),
)
#: node output topic (relative name) -> launch argument remapping it (empty = keep the name)
OUTPUT_TOPICS: dict[str, str] = {"detections": "detections_topic", "detections_vision": "detections_vision_topic",
                                 "debug_image": "debug_image_topic", "engine_status": "engine_status_topic"}
#: parameters that are not start settings (``sparsity_level`` swaps a running node; ``initial_level`` is its start)
_RUNTIME_ONLY = frozenset({"sparsity_level"})
_EXPLICIT = {name for name, _, _ in ARGUMENTS}
#: one argument per remaining start parameter of the node: empty keeps the parameters file's value
PARAMETER_ARGUMENTS: tuple[tuple[str, str, str], ...] = tuple(
    (name, "", f"{desc} (empty = params file)") for name, _, desc in NodeConfig.parameters()
    if name not in _EXPLICIT and name not in _RUNTIME_ONLY)
ARGUMENTS = ARGUMENTS + PARAMETER_ARGUMENTS + tuple(
    (arg, "", f"topic the node's {topic} is remapped onto (empty = {topic}, relative to the namespace)")
    for topic, arg in OUTPUT_TOPICS.items())
_DEFAULTS = {name: default for name, default, _ in NodeConfig.parameters()}


def parse_bool(text: str, name: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"launch argument {name!r} must be true or false, got {text!r}")


def parameter_value(name: str, text: str) -> Any:
    """Launch argument text -> the typed value of node parameter ``name`` (as its default's type).

    Booleans take true/false, arrays a comma-separated list (``allowed_levels:=s0,s50`` or ``[s0, s50]``).

    :raise ValueError: text that is not of the parameter's type, naming the argument.
    """
    default = _DEFAULTS[name]
    if isinstance(default, bool):
        return parse_bool(text, name)
    if isinstance(default, tuple):
        return [part.strip().strip("'\"") for part in text.strip().strip("[]").split(",") if part.strip()]
    try:
        return type(default)(text)
    except ValueError:
        raise ValueError(f"launch argument {name!r} must be {type(default).__name__}, got {text!r}") from None


def remappings(arg: dict[str, str], condition_topic: str) -> list[tuple[str, str]]:
    """Remappings of the node: ``driving_condition`` (``condition_topic``) and the output topic arguments."""
    pairs = [("driving_condition", condition_topic)] if condition_topic else []
    return pairs + [(topic, arg[name]) for topic, name in OUTPUT_TOPICS.items() if arg.get(name)]


def undeclared(configurations: Iterable[str]) -> list[str]:
    """One message per launch configuration this file does not declare (``initial_leve:=s50``), with the
    argument probably meant; the launch file logs them (a parent launch file's own arguments land here too,
    so they warn, not fail)."""
    names = [name for name, _, _ in ARGUMENTS]
    out = []
    for key in sorted(set(configurations) - set(names)):
        close = difflib.get_close_matches(key, names, n=1)
        out.append(f"launch argument {key!r} is not an argument of detector.launch.py and is ignored"
                   + (f" (did you mean {close[0]!r}?)" if close else ""))
    return out


def node_overrides(arg: dict[str, str]) -> tuple[dict[str, object], str]:
    """Parameter overrides for the node and the topic to remap ``driving_condition`` onto ("" = none).

    :param arg: every name of :data:`ARGUMENTS` with its resolved text.
    :raise ValueError: a bad ``autostart`` / ``image_reliability`` / ``bag_player`` value, named.
    """
    unknown = set(arg) - {name for name, _, _ in ARGUMENTS}
    if unknown:
        raise ValueError(f"unknown launch arguments: {sorted(unknown)}")
    overrides: dict[str, object] = {k: arg[k] for k in ("engine_manifest", "model_path", "image_topic") if arg.get(k)}
    if arg.get("autostart"):
        overrides["autostart"] = parse_bool(arg["autostart"], "autostart")
    for name, _, _ in PARAMETER_ARGUMENTS:
        if arg.get(name):
            overrides[name] = parameter_value(name, arg[name])
    reliability = arg.get("image_reliability", "")
    if reliability and reliability not in RELIABILITIES:
        raise ValueError(f"launch argument 'image_reliability' must be one of {RELIABILITIES}, got {reliability!r}")
    if reliability:
        overrides["image_reliability"] = reliability
    source = arg.get("condition_source", "")
    if source and source not in CONDITION_SOURCES:
        raise ValueError(f"launch argument 'condition_source' must be one of {CONDITION_SOURCES}, got {source!r}")
    if source:
        overrides["condition_source"] = source
    if arg.get("bag_player", "replay") not in ("replay", "ros2"):
        raise ValueError(f"launch argument 'bag_player' must be replay or ros2, got {arg['bag_player']!r}")
    condition_topic = arg.get("condition_topic", "")
    if arg.get("bag"):
        overrides.setdefault("image_topic", BAG_IMAGE_TOPIC)
        overrides.setdefault("image_reliability", "reliable")  # bag players publish reliably
        condition_topic = condition_topic or "/driving_condition"
    return overrides, condition_topic
