"""Data in and out of the pipeline: KITTI object/tracking/raw-drive I/O, the scene generator, KITTI -> YOLO and raw
drive -> rosbag2 conversion, YOLO datasets and deterministic batch streams, atomic file writes.

The KITTI modules import no ROS and no torch (numpy, OpenCV, PyYAML, rosbags); the names below load
their module on first use, so ``from pruning_tools.data import read_labels`` does not import rosbags.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "KITTI_TYPES": "kitti_io",
    "KittiObject": "kitti_io",
    "read_labels": "kitti_io",
    "iter_labels": "kitti_io",
    "write_labels": "kitti_io",
    "format_label_line": "kitti_io",
    "ObjectCalib": "kitti_io",
    "read_object_calib": "kitti_io",
    "write_object_calib": "kitti_io",
    "CameraCalib": "kitti_io",
    "CamToCam": "kitti_io",
    "read_cam_to_cam": "kitti_io",
    "write_cam_to_cam": "kitti_io",
    "read_timestamps": "kitti_io",
    "write_timestamps": "kitti_io",
    "format_timestamp": "kitti_io",
    "parse_timestamp": "kitti_io",
    "read_image": "kitti_io",
    "KittiObjectDataset": "kitti_dataset",
    "KittiFrame": "kitti_dataset",
    "RawDrive": "kitti_dataset",
    "CameraInfoData": "kitti_dataset",
    "TrackingSequence": "kitti_tracking",
    "TrackedObject": "kitti_tracking",
    "read_tracking_labels": "kitti_tracking",
    "generate_dataset": "generator",
    "convert_kitti": "convert",
    "convert_tracking": "convert",
    "DEFAULT_CLASSES": "convert",
    "raw_drive_to_bag": "bag",
    "tracking_to_bag": "bag",
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
