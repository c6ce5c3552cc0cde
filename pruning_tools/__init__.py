"""pruning_tools: the offline half — a YOLO detector and a KITTI-format dataset in, an engine zoo out
(prune in three stages, fine-tune, quantise, export); ``ultralytics_adapter`` alone knows Ultralytics."""

__version__ = "0.1.0"
