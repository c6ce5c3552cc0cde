"""Shared preamble of the launch_testing tests (test_detector_launch*.py).

Importing this module skips the importing test module where launch_testing/launch_ros are absent
(pytest and ``launch_test`` alike), imports the launch stack, and builds the small zoo the tests
serve. The test modules put their own folder on ``sys.path`` first: ``launch_test FILE`` does not.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

# launch_testing first: from the repository root, the `launch/` folder imports as an (empty) namespace
# package named `launch`, so importorskip("launch") alone would not skip where ROS 2 launch is absent.
launch_testing = pytest.importorskip("launch_testing", reason="launch_testing (ROS 2) is not installed: add it to the venv "
                                     "or run on a full ROS 2 install; twin: test/test_detector_node.py")
launch_ros = pytest.importorskip("launch_ros", reason="launch_ros (ROS 2) is not installed")
import launch  # noqa: E402
import launch.actions  # noqa: E402
import launch.event_handlers  # noqa: E402
import launch.events  # noqa: E402
import launch.launch_description_sources  # noqa: E402
import launch_ros.actions  # noqa: E402
import launch_ros.event_handlers  # noqa: E402
import launch_ros.events.lifecycle  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import launch_testing.markers  # noqa: E402

from helpers.zoo_builder import build_zoo  # noqa: E402

__all__ = ["LAUNCH_FILE", "build_launch_zoo", "launch", "launch_ros", "launch_testing"]

#: The package's launch file, from the source checkout.
LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "detector.launch.py"


def build_launch_zoo() -> Path:
    """A fresh 96x320 zoo (dense, s50, s75) in a temporary folder; returns its manifest.json."""
    return build_zoo(Path(tempfile.mkdtemp(prefix="sp_launch_zoo_")), imgsz=(96, 320))
