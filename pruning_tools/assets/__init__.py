"""Files shipped with pruning_tools: the dense baseline checkpoint (KITTI licence terms, see README) with
its measurement card and real-frame split; also where the prune configs live."""
from pathlib import Path

ASSETS = Path(__file__).resolve().parent
#: the shipped dense YOLOv5n baseline (``pruning-tools train-baseline`` wrote it)
DEFAULT_BASELINE = ASSETS / "baseline_yolov5n.pt"
#: ``pruning_tools/configs``: quick.yaml, medium.yaml, full.yaml
CONFIGS = ASSETS.parent / "configs"
