"""Arguments of ``launch/detector.launch.py`` and how they become node parameters (no ROS imports).

The launch file declares :data:`ARGUMENTS` and passes the resolved values to
:func:`node_overrides`; keeping the mapping here lets it be tested where the ROS 2 launch stack
is not installed. An argument left empty keeps the parameters file's value.
"""
from __future__ import annotations

#: Topic the KITTI bags written by `pruning-tools kitti to-bag` carry the left colour camera on.
BAG_IMAGE_TOPIC = "/kitti/camera_color_left/image_raw"
RELIABILITIES = ("best_effort", "reliable")
CONDITION_SOURCES = ("topic", "estimator")  #: values of the condition_source parameter (NodeConfig uses these)

#: (name, default, description) of every launch argument.
ARGUMENTS: tuple[tuple[str, str, str], ...] = (
    ("namespace", "perception", "namespace of the detector node and its relative topics"),
    ("params_file", "", "parameters file (default: share/sparse_perception/config/detector.yaml)"),
    ("autostart", "", "true: the node configures and activates itself (empty = params file)"),
    ("engine_manifest", "", "engine zoo manifest.json (empty = params file)"),
    ("model_path", "", "single Ultralytics-layout ONNX instead of a zoo (empty = params file)"),
    ("image_topic", "", f"input image topic (empty = params file; {BAG_IMAGE_TOPIC} when bag is set)"),
    ("image_reliability", "", "reliable | best_effort image subscription (empty = params file, reliable; "
                              "best_effort only for cameras that publish best effort: large frames get lost)"),
    ("condition_topic", "", "topic remapped onto the node's driving_condition (empty = no remap; "
                            "/driving_condition when bag is set)"),
    ("condition_source", "", "topic | estimator: where the policy's condition comes from (empty = params file, "
                             "topic; estimator where no condition topic is wired)"),
    ("bag", "", "rosbag2 folder to replay alongside the node (empty = none)"),
    ("bag_player", "replay", "replay (sparse-perception replay) | ros2 (ros2 bag play)"),
    ("log_level", "info", "node log level"),
)


def parse_bool(text: str, name: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"launch argument {name!r} must be true or false, got {text!r}")


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
