"""Process-level twins of the launch tests: the real ``detector_node`` process over real DDS.

Each test starts ``detector_node`` (the console script's module) as a subprocess with
``--ros-args`` parameters, and drives it from this process with rclpy
(``test/helpers/detector_client.py``): lifecycle services, images, the swap service,
parameters, driving conditions. Twins of test/test_detector_launch.py (same behaviours).
"""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
from helpers import detector_checks as checks  # noqa: E402
from helpers.detector_checks import frame  # noqa: E402
from sparse_perception.node_client import DetectorClient, image_msg, wait_until  # noqa: E402

from sparse_perception.testing import ManagedProcess, managed_process, python_cmd  # noqa: E402

pytestmark = pytest.mark.ros


def node_cmd(*params: str, params_file: Path | None = None) -> list[str]:
    """``detector_node --ros-args -p k:=v ...`` for this interpreter."""
    args = ["--ros-args", "--log-level", "detector:=info"]
    if params_file is not None:
        args += ["--params-file", str(params_file)]
    for p in params:
        args += ["-p", p]
    return python_cmd("-m", "sparse_perception.detector_node", *args)


@pytest.fixture
def client():
    c = DetectorClient()
    yield c
    c.close()


def _fail(proc: ManagedProcess, what: str) -> str:
    return f"{what}; node output:\n{proc.output()[-4000:]}"


@pytest.fixture(scope="module")
def active_node(test_zoo: Path):
    """One autostarted node on the test zoo, shared by the data-path tests of this module."""
    with managed_process(node_cmd(f"engine_manifest:={test_zoo}", "autostart:=true",
                                  "diagnostics_period_s:=0.5")) as proc:
        yield proc


def test_lifecycle_transitions_keep_engines_through_deactivate(test_zoo: Path, client: DetectorClient) -> None:
    with managed_process(node_cmd("engine_manifest:=/nonexistent/manifest.json")) as proc:
        assert client.state() == "unconfigured", _fail(proc, "not unconfigured at start")
        resp = client.set_sparsity("s50")
        assert not resp.success and "not configured" in resp.message
        # bad parameters -> configure FAILS with a logged reason, node stays unconfigured
        assert not client.change_state("configure")
        assert client.state() == "unconfigured"
        assert proc.wait_for_output("configure failed", 5), _fail(proc, "no configure error logged")
        assert "/nonexistent/manifest.json" in proc.output()
        assert client.set_parameter("engine_manifest", str(test_zoo))[0]
        assert client.change_state("configure"), _fail(proc, "configure failed")
        assert client.state() == "inactive"
        assert wait_until(lambda: client.latest_status() is not None, 10), "no latched engine_status"
        assert sorted(client.latest_status().available_levels) == ["dense", "s50", "s75"]
        assert client.change_state("activate") and client.state() == "active"
        assert client.wait_ready(), _fail(proc, "no detections while active")
        client.publish(image_msg(frame(1), 1_000))
        assert client.wait_for_stamp(1_000) is not None, _fail(proc, "no detections while active")
        assert client.change_state("deactivate") and client.state() == "inactive"
        # engines stay loaded: swapping works while inactive, and no frames are processed
        resp = client.set_sparsity("s75")
        assert resp.success and resp.active_level == "s75", resp.message
        client.publish(image_msg(frame(2), 2_000))
        assert client.wait_for_stamp(2_000, timeout=1.5) is None, "inactive node published detections"
        assert client.change_state("activate")
        assert client.wait_ready(), _fail(proc, "no detections after reactivation")
        client.publish(image_msg(frame(3), 3_000))
        assert client.wait_for_stamp(3_000) is not None
        assert wait_until(lambda: client.latest_status().level == "s75", 5)
        assert client.change_state("deactivate") and client.change_state("cleanup")
        assert client.state() == "unconfigured"
        assert "engines freed" in proc.output()
        assert not client.set_sparsity("dense").success
        assert client.change_state("shutdown")
        assert wait_until(lambda: not proc.alive(), 15), _fail(proc, "node did not exit after shutdown")
        assert proc.proc.returncode == 0, _fail(proc, f"exit code {proc.proc.returncode}")


def test_50_swaps_during_1000_frames_lose_and_duplicate_nothing(active_node: ManagedProcess) -> None:
    client = DetectorClient(name="swap_storm_client")
    try:
        figures = checks.check_swaps_lossless(client, frames=1000, swaps=50)
        assert figures["swap_ms_max"] < 50.0, figures
    except AssertionError as exc:
        raise AssertionError(_fail(active_node, str(exc))) from exc
    finally:
        client.close()


def test_malformed_images_logged_node_keeps_running(active_node: ManagedProcess) -> None:
    client = DetectorClient(name="malformed_client")
    try:
        checks.check_malformed_images(client, active_node.wait_for_output, active_node.alive)
    except AssertionError as exc:
        raise AssertionError(_fail(active_node, str(exc))) from exc
    finally:
        client.close()


def test_unknown_level_rejected_and_parameter_swap(active_node: ManagedProcess) -> None:
    client = DetectorClient(name="swap_client")
    try:
        checks.check_unknown_level_and_parameter_swap(client)
    finally:
        client.close()


def test_engine_status_is_latched_for_late_subscribers(active_node: ManagedProcess) -> None:
    checks.check_latched_status(lambda name: DetectorClient(name=name))


def test_diagnostics_report_latency_fps_and_drops(active_node: ManagedProcess) -> None:
    from diagnostic_msgs.msg import DiagnosticArray

    client = DetectorClient(name="diag_client")
    got: list[DiagnosticArray] = []
    lock = threading.Lock()

    def on_diag(msg: DiagnosticArray) -> None:
        with lock:
            got.append(msg)

    try:
        client.node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
        assert client.wait_ready()
        for i in range(5):
            client.publish(image_msg(frame(i, 32, 96), 9_000_000_000 + i))
            client.wait_for_stamp(9_000_000_000 + i)
        assert wait_until(lambda: len(got) >= 2, 10)
        values = {kv.key: kv.value for kv in got[-1].status[0].values}
        for key in ("latency_p50_ms", "latency_p95_ms", "fps", "frames_dropped", "active_level"):
            assert key in values, values
        assert float(values["latency_p95_ms"]) >= float(values["latency_p50_ms"]) > 0
    finally:
        client.close()
