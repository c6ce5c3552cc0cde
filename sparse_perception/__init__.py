"""sparse_perception: serve pruned, quantised YOLO detectors on ROS 2.

The plain-Python cores (runtime, pre/post-processing, swap logic, policy) import no
rclpy; only the node and the bag/replay tools do.
"""

__version__ = "0.1.0"
