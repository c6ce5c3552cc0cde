"""Runtime core: engines and backends, the engine pool and its swaps, pre/post-processing,
zoo manifest, sparsity policy, driving conditions, metrics — plain Python, no rclpy, no ROS messages."""
