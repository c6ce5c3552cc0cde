"""KITTI data: object/raw-drive I/O, a scene generator, conversion to YOLO and to rosbag2.

No ROS and no torch imports: numpy, OpenCV, PyYAML and rosbags only. Submodules load lazily,
so ``from pruning_tools.kitti import read_labels`` does not import rosbags.

* :mod:`pruning_tools.kitti.io` — label, calibration, timestamp and image readers/writers.
* :mod:`pruning_tools.kitti.dataset` — :class:`KittiObjectDataset`, :class:`RawDrive`.
* :mod:`pruning_tools.kitti.generator` — :func:`generate_dataset`.
* :mod:`pruning_tools.kitti.convert` — :func:`convert_kitti` (KITTI object -> Ultralytics YOLO).
* :mod:`pruning_tools.kitti.bag` — :func:`raw_drive_to_bag` (KITTI raw drive -> rosbag2).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "KITTI_TYPES": "io",
    "KittiObject": "io",
    "read_labels": "io",
    "iter_labels": "io",
    "write_labels": "io",
    "format_label_line": "io",
    "ObjectCalib": "io",
    "read_object_calib": "io",
    "write_object_calib": "io",
    "CameraCalib": "io",
    "CamToCam": "io",
    "read_cam_to_cam": "io",
    "write_cam_to_cam": "io",
    "read_timestamps": "io",
    "write_timestamps": "io",
    "format_timestamp": "io",
    "parse_timestamp": "io",
    "read_image": "io",
    "KittiObjectDataset": "dataset",
    "KittiFrame": "dataset",
    "RawDrive": "dataset",
    "CameraInfoData": "dataset",
    "generate_dataset": "generator",
    "convert_kitti": "convert",
    "DEFAULT_CLASSES": "convert",
    "raw_drive_to_bag": "bag",
    "TOPIC_IMAGE": "bag",
    "TOPIC_CAMERA_INFO": "bag",
    "TOPIC_GROUND_TRUTH": "bag",
    "TOPIC_CONDITION": "bag",
    "TOPIC_TF_STATIC": "bag",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
