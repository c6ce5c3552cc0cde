"""launch_testing: the real ``launch/detector.launch.py`` with a small zoo, autostarted.

Runs on a full ROS 2 install (``colcon test --packages-select sparse_perception`` or
``launch_test test/test_detector_launch.py``); skipped where launch_testing/launch_ros are not
importable. Twins that run everywhere: test/test_detector_node.py (same checks, shared via
test/helpers/detector_checks.py).
"""
from __future__ import annotations

import sys
import unittest
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `launch_test FILE` does not put the test folder on sys.path
    sys.path.insert(0, str(HERE))
from helpers.launch_stack import LAUNCH_FILE, build_launch_zoo, launch, launch_testing  # noqa: E402 - skips without ROS 2 launch
from helpers import detector_checks as checks  # noqa: E402
from sparse_perception.tools.node_client import DetectorClient  # noqa: E402

NAMESPACE = "lt"


@pytest.mark.launch_test
def generate_test_description():
    """The package's launch file, autostarted on a freshly built 96x320 zoo."""
    zoo = build_launch_zoo()
    include = launch.actions.IncludeLaunchDescription(
        launch.launch_description_sources.PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={"namespace": NAMESPACE, "engine_manifest": str(zoo), "autostart": "true"}.items(),
    )
    return launch.LaunchDescription([
        include,
        launch.actions.TimerAction(period=1.0, actions=[launch_testing.actions.ReadyToTest()]),
    ])


def _client(name: str) -> DetectorClient:
    return DetectorClient(namespace=NAMESPACE, name=name)


class TestDetectorLaunch(unittest.TestCase):
    """Same behaviours as the twins in test_detector_node.py."""

    def test_active_after_autostart(self, proc_output) -> None:
        proc_output.assertWaitFor("configured: levels", timeout=60)
        proc_output.assertWaitFor("active: subscribed to /lt/image_raw", timeout=30)

    def test_swaps_during_frames_lose_nothing(self, proc_output) -> None:
        proc_output.assertWaitFor("active: subscribed", timeout=60)
        client = _client("lt_swap_storm")
        try:
            checks.check_swaps_lossless(client, frames=1000, swaps=50)
        finally:
            client.close()

    def test_malformed_images(self, proc_output) -> None:
        proc_output.assertWaitFor("active: subscribed", timeout=60)
        client = _client("lt_malformed")
        try:
            checks.check_malformed_images(
                client, lambda text, timeout: proc_output.waitFor(expected_output=text, timeout=timeout),
                lambda: client.state() == "active")
        finally:
            client.close()

    def test_unknown_level_and_parameter_swap(self, proc_output) -> None:
        proc_output.assertWaitFor("active: subscribed", timeout=60)
        client = _client("lt_swap")
        try:
            checks.check_unknown_level_and_parameter_swap(client)
        finally:
            client.close()

    def test_engine_status_latched(self, proc_output) -> None:
        proc_output.assertWaitFor("active: subscribed", timeout=60)
        checks.check_latched_status(_client)


@launch_testing.post_shutdown_test()
class TestDetectorLaunchShutdown(unittest.TestCase):

    def test_exit_codes(self, proc_info) -> None:
        """SIGINT from launch ends the node cleanly (exit code 0)."""
        launch_testing.asserts.assertExitCodes(proc_info)
