"""Tools around the node: rosbag2 replay and recording, live sessions, a DDS client of the node,
and the process/ROS-isolation helpers that tests and benchmarks share."""
