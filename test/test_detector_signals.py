"""SIGINT and SIGTERM end a running ``detector_node`` cleanly: exit code 0, engines freed, no traceback.

``kill``, ``docker stop`` and ``systemctl stop`` send SIGTERM; a terminal and ``ros2 launch``
send SIGINT. Each test starts the real node process, signals exactly that pid and reads its exit
code and log.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
from helpers.detector_checks import frame  # noqa: E402
from sparse_perception.tools.node_client import DetectorClient, image_msg  # noqa: E402
from sparse_perception.tools.testing import managed_process, python_cmd  # noqa: E402

pytestmark = pytest.mark.ros


def _node(namespace: str, *params: str) -> list[str]:
    args = ["--ros-args", "--log-level", "detector:=info", "-r", f"__ns:=/{namespace}"]
    for p in params:
        args += ["-p", p]
    return python_cmd("-m", "sparse_perception.node.detector_node", *args)


def _signal_and_wait(proc, sig: signal.Signals) -> int:
    os.kill(proc.pid, sig)  # the node's own pid only
    try:
        return proc.proc.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"node still running 30 s after {sig.name}; output:\n{proc.output()[-3000:]}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_ends_an_active_node_cleanly(sig: signal.Signals, test_zoo: Path) -> None:
    ns = f"sig_{sig.name.lower()}"
    with managed_process(_node(ns, f"engine_manifest:={test_zoo}", "autostart:=true")) as proc:
        assert proc.wait_for_output("active: subscribed", 90), proc.output()[-3000:]
        client = DetectorClient(namespace=ns, name=f"{ns}_client", subscribe_status=False)
        try:
            assert client.wait_ready(60), "node answered no frame"
            client.publish(image_msg(frame(1), 7_000))
            assert client.wait_for_stamp(7_000) is not None
        finally:
            client.close()
        code = _signal_and_wait(proc, sig)
        out = proc.output()
    assert code == 0, f"exit code {code} after {sig.name}; output:\n{out[-3000:]}"
    assert "Traceback" not in out and "RCLError" not in out, out[-3000:]
    assert "shut down" in out, f"no shutdown transition (engines not freed):\n{out[-3000:]}"


def test_sigterm_ends_an_unconfigured_node_cleanly() -> None:
    with managed_process(_node("sig_unconfigured")) as proc:
        client = DetectorClient(namespace="sig_unconfigured", name="sig_unconfigured_client", subscribe_status=False)
        try:
            assert client.state() == "unconfigured"
        finally:
            client.close()
        code = _signal_and_wait(proc, signal.SIGTERM)
        out = proc.output()
    assert code == 0, f"exit code {code} after SIGTERM; output:\n{out[-3000:]}"
    assert "Traceback" not in out and "shut down" in out, out[-3000:]
