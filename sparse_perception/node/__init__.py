"""ROS 2 shell of the detector: the lifecycle node, its typed parameters and launch arguments,
and the conversions between ROS messages and the runtime core's numpy data."""
