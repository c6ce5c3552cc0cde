"""Test-suite wide set-up: offline ultralytics, isolated ROS 2, shared-data lookup."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

# Before anything imports ultralytics or rclpy.
_TMP = Path(tempfile.mkdtemp(prefix="sp_tests_"))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_VERBOSE", "false")
os.environ["YOLO_CONFIG_DIR"] = str(_TMP / "ultralytics")
os.environ.setdefault("MPLBACKEND", "Agg")

from sparse_perception.tools.testing import apply_ros_isolation  # noqa: E402

# One domain per test run (pytest process); subprocesses inherit it.
ROS_ENV = apply_ros_isolation(ros_home=_TMP / "ros_home")

# `.venv/bin/python -m pytest` without activation: the venv is this package's ament prefix
# (tools/ament_prefix.py), as `make` and the venv's activation declare it; launch_ros resolves
# the node's executable through it. Elsewhere (a colcon install) AMENT_PREFIX_PATH is left alone.
if (Path(sys.prefix) / "share/ament_index/resource_index/packages/sparse_perception").is_file():
    _ament = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if sys.prefix not in _ament:
        os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join([sys.prefix, *_ament])

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def pytest_report_header(config: pytest.Config) -> str:
    return f"ROS_DOMAIN_ID={ROS_ENV['ROS_DOMAIN_ID']} ROS_HOME={ROS_ENV['ROS_HOME']} shared={'yes' if SHARED.is_dir() else 'absent'}"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout; tests using it skip where it is absent (users lack it)."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not present at {SHARED} (developer/CI-only material)")
    return SHARED


@pytest.fixture(scope="session")
def ros_env() -> dict[str, str]:
    """The isolation variables this run uses (already in os.environ)."""
    return dict(ROS_ENV)


@pytest.fixture(scope="session")
def test_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real engine zoo (dense, s50, s75 ONNX at 96x320) with its manifest; returns manifest.json.

    Shipped baseline weights when present, else untrained yolov5n (plumbing tests only);
    pruned levels are real Torch-Pruning surgery. Built once per run (~20 s).
    """
    from helpers.zoo_builder import build_zoo

    return build_zoo(tmp_path_factory.mktemp("test_zoo"), imgsz=(96, 320))
