"""Launch the `detector` lifecycle node (and optionally replay a bag into it).

Only declares arguments and loads ``config/detector.yaml``; everything else happens in the
node. Arguments left empty keep the value of the parameters file::

    ros2 launch sparse_perception detector.launch.py engine_manifest:=/zoo/manifest.json autostart:=true
    ros2 launch sparse_perception detector.launch.py model_path:=yolo.onnx bag:=/data/kitti_seq autostart:=true
    ros2 launch sparse_perception detector.launch.py engine_manifest:=/zoo/manifest.json \
        namespace:=front image_topic:=/camera/image_raw image_reliability:=best_effort params_file:=my.yaml

Arguments and their mapping onto parameters: ``sparse_perception/node/launch_args.py``.

Without ``autostart:=true`` the node waits unconfigured: drive it with
``ros2 lifecycle set /perception/detector configure`` then ``activate``.
"""
from __future__ import annotations

import os

from ament_index_python.packages import get_package_prefix, get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from sparse_perception.node.dds_profile import profile_env
from sparse_perception.node.launch_args import ARGUMENTS, node_overrides, remappings, undeclared

PACKAGE = "sparse_perception"


def _entities(context: LaunchContext) -> list:
    """Build the node (and bag player) from the resolved arguments."""
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    params_file = arg["params_file"] or os.path.join(get_package_share_directory(PACKAGE), "config",
                                                     "detector.yaml")
    overrides, condition_topic = node_overrides(arg)
    dds = profile_env()  # the shipped FastDDS profile for the node and the bag player, unless one is set
    entities: list = [LogInfo(msg=f"WARNING: {m}") for m in undeclared(context.launch_configurations)]
    entities.append(LifecycleNode(
        package=PACKAGE, executable="detector_node", name="detector", namespace=arg["namespace"],
        parameters=[params_file, overrides], remappings=remappings(arg, condition_topic), output="screen",
        ros_arguments=["--log-level", arg["log_level"]], additional_env=dds,
    ))
    if arg["bag"]:
        if arg["bag_player"] == "ros2":
            cmd = ["ros2", "bag", "play", arg["bag"]]
        else:  # replay (node_overrides checked the value)
            cmd = [os.path.join(get_package_prefix(PACKAGE), "lib", PACKAGE, "replay"), arg["bag"]]
        entities.append(ExecuteProcess(cmd=cmd, name="bag_player", output="screen", additional_env=dds))
    return entities


def generate_launch_description() -> LaunchDescription:
    """Arguments, then the node built from them."""
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=desc) for name, default, desc in ARGUMENTS),
        OpaqueFunction(function=_entities),
    ])
