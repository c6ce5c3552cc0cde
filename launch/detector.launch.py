"""Launch the `detector` lifecycle node (and optionally replay a bag into it).

Only declares arguments and loads ``config/detector.yaml``; everything else happens in the
node. Arguments left empty keep the value of the parameters file::

    ros2 launch sparse_perception detector.launch.py engine_manifest:=/zoo/manifest.json autostart:=true
    ros2 launch sparse_perception detector.launch.py model_path:=yolo.onnx bag:=/data/kitti_seq autostart:=true

Without ``autostart:=true`` the node waits unconfigured: drive it with
``ros2 lifecycle set /perception/detector configure`` then ``activate``.
"""
from __future__ import annotations

import os

from ament_index_python.packages import get_package_prefix, get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

PACKAGE = "sparse_perception"
#: Topic the KITTI bags written by `pruning-tools kitti to-bag` carry the left colour camera on.
BAG_IMAGE_TOPIC = "/kitti/camera_color_left/image_raw"

ARGUMENTS = (
    ("namespace", "perception", "namespace of the detector node and its relative topics"),
    ("params_file", "", "parameters file (default: share/sparse_perception/config/detector.yaml)"),
    ("autostart", "", "true: the node configures and activates itself (empty = params file)"),
    ("engine_manifest", "", "engine zoo manifest.json (empty = params file)"),
    ("model_path", "", "single Ultralytics-layout ONNX instead of a zoo (empty = params file)"),
    ("image_topic", "", f"input image topic (empty = params file; {BAG_IMAGE_TOPIC} when bag is set)"),
    ("condition_topic", "", "topic remapped onto the node's driving_condition (empty = no remap; "
                            "/driving_condition when bag is set)"),
    ("bag", "", "rosbag2 folder to replay alongside the node (empty = none)"),
    ("bag_player", "replay", "replay (sparse-perception replay) | ros2 (ros2 bag play)"),
    ("log_level", "info", "node log level"),
)


def _bool(text: str, name: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"launch argument {name!r} must be true or false, got {text!r}")


def _entities(context: LaunchContext) -> list:
    """Build the node (and bag player) from the resolved arguments."""
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    params_file = arg["params_file"] or os.path.join(get_package_share_directory(PACKAGE), "config",
                                                     "detector.yaml")
    overrides: dict[str, object] = {k: arg[k] for k in ("engine_manifest", "model_path", "image_topic") if arg[k]}
    if arg["autostart"]:
        overrides["autostart"] = _bool(arg["autostart"], "autostart")
    condition_topic = arg["condition_topic"]
    if arg["bag"]:
        overrides.setdefault("image_topic", BAG_IMAGE_TOPIC)
        overrides["image_reliability"] = "reliable"  # bag players publish reliably; 1.4 MB frames need it
        condition_topic = condition_topic or "/driving_condition"
    remappings = [("driving_condition", condition_topic)] if condition_topic else []
    entities: list = [LifecycleNode(
        package=PACKAGE, executable="detector_node", name="detector", namespace=arg["namespace"],
        parameters=[params_file, overrides], remappings=remappings, output="screen",
        ros_arguments=["--log-level", arg["log_level"]],
    )]
    if arg["bag"]:
        if arg["bag_player"] == "ros2":
            cmd = ["ros2", "bag", "play", arg["bag"]]
        elif arg["bag_player"] == "replay":
            cmd = [os.path.join(get_package_prefix(PACKAGE), "lib", PACKAGE, "replay"), arg["bag"]]
        else:
            raise ValueError(f"launch argument 'bag_player' must be replay or ros2, got {arg['bag_player']!r}")
        entities.append(ExecuteProcess(cmd=cmd, name="bag_player", output="screen"))
    return entities


def generate_launch_description() -> LaunchDescription:
    """Arguments, then the node built from them."""
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=desc) for name, default, desc in ARGUMENTS),
        OpaqueFunction(function=_entities),
    ])
