"""pruning_tools: the offline half of sparse_perception.

KITTI I/O and scene generation, three-stage structured pruning (gradient-L1 budgets,
a PPO agent, fine-tuning), quantisation and export into an engine zoo. Only
``pruning_tools.ultralytics_adapter`` knows ultralytics internals.
"""

__version__ = "0.1.0"
