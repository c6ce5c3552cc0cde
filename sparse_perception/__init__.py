"""sparse_perception: serve pruned, quantised YOLO detectors on ROS 2 with run-time sparsity hot-swap.

``runtime`` (the core, no rclpy), ``node`` (the ROS shell), ``tools`` (replay, record, live sessions), ``cli``.
"""

__version__ = "0.1.0"
