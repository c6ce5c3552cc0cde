"""launch_testing: lifecycle transitions of ``detector`` driven by launch events.

configure -> activate -> (frames) -> deactivate -> cleanup -> shutdown, each triggered by
``EmitEvent(ChangeState)`` from ``RegisterEventHandler(OnStateTransition)``; the node exits
with 0 after the shutdown transition. Skipped where launch_testing/launch_ros are absent.
Twin: ``test_lifecycle_transitions_keep_engines_through_deactivate`` in test_detector_node.py.
"""
from __future__ import annotations

import sys
import unittest
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `launch_test FILE` does not put the test folder on sys.path
    sys.path.insert(0, str(HERE))
from helpers.launch_stack import build_launch_zoo, launch, launch_ros, launch_testing  # noqa: E402 - skips without ROS 2 launch
from lifecycle_msgs.msg import Transition  # noqa: E402


def _change(node, transition: int):
    return launch.actions.EmitEvent(event=launch_ros.events.lifecycle.ChangeState(
        lifecycle_node_matcher=launch.events.matches_action(node), transition_id=transition))


def _on(node, start: str, goal: str, *entities):
    return launch.actions.RegisterEventHandler(launch_ros.event_handlers.OnStateTransition(
        target_lifecycle_node=node, start_state=start, goal_state=goal, entities=list(entities)))


@pytest.mark.launch_test
@launch_testing.markers.keep_alive  # the node exits on its own after `shutdown`; the tests must still run
def generate_test_description():
    zoo = build_launch_zoo()
    detector = launch_ros.actions.LifecycleNode(
        package="sparse_perception", executable="detector_node", name="detector", namespace="lc",
        parameters=[{"engine_manifest": str(zoo), "autostart": False}], output="screen")
    return launch.LaunchDescription([
        detector,
        launch.actions.RegisterEventHandler(launch.event_handlers.OnProcessStart(
            target_action=detector, on_start=[_change(detector, Transition.TRANSITION_CONFIGURE)])),
        _on(detector, "configuring", "inactive", _change(detector, Transition.TRANSITION_ACTIVATE)),
        _on(detector, "activating", "active",
            launch.actions.TimerAction(period=2.0, actions=[_change(detector, Transition.TRANSITION_DEACTIVATE)])),
        _on(detector, "deactivating", "inactive", _change(detector, Transition.TRANSITION_CLEANUP)),
        _on(detector, "cleaningup", "unconfigured",
            _change(detector, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)),
        launch_testing.actions.ReadyToTest(),
    ]), {"detector": detector}


class TestDetectorLifecycle(unittest.TestCase):

    def test_transitions_in_order(self, proc_output, detector) -> None:
        proc_output.assertWaitFor("configured: levels ['dense', 's50', 's75']", process=detector, timeout=60)
        proc_output.assertWaitFor("active: subscribed to /lc/image_raw", process=detector, timeout=20)
        proc_output.assertWaitFor("inactive: I/O stopped, engines kept loaded", process=detector, timeout=20)
        proc_output.assertWaitFor("cleaned up: engines freed", process=detector, timeout=20)
        proc_output.assertWaitFor("shut down", process=detector, timeout=20)

    def test_process_exits_after_shutdown(self, proc_info, detector) -> None:
        proc_info.assertWaitForShutdown(process=detector, timeout=60)


@launch_testing.post_shutdown_test()
class TestDetectorLifecycleExit(unittest.TestCase):

    def test_exit_code_zero(self, proc_info, detector) -> None:
        launch_testing.asserts.assertExitCodes(proc_info, process=detector)
