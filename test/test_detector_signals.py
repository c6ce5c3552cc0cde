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


#: Runs as a child subreaper (so the orphaned node is reparented to it and its exit code can be read),
#: starts a parent that starts the node, SIGKILLs the parent once the node is active, reaps the node.
_HARNESS = r"""
import ctypes, os, signal, subprocess, sys, time
log_path, pid_path, *node = sys.argv[1:]
assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
parent_src = "import subprocess, sys, time; p = subprocess.Popen(sys.argv[2:]); open(sys.argv[1], 'w').write(str(p.pid)); time.sleep(600)"
with open(log_path, "w") as log:
    parent = subprocess.Popen([sys.executable, "-c", parent_src, pid_path, *node], stdout=log, stderr=subprocess.STDOUT)
deadline = time.time() + 120
while time.time() < deadline and not (os.path.exists(pid_path) and "active: subscribed" in open(log_path).read()):
    time.sleep(0.2)
node_pid = int(open(pid_path).read())
os.kill(parent.pid, signal.SIGKILL)  # the parent only: launch killed or ended without stopping its child
parent.wait()
deadline = time.time() + 30
while time.time() < deadline:
    pid, status = os.waitpid(node_pid, os.WNOHANG)
    if pid:
        print("NODE_EXIT", os.waitstatus_to_exitcode(status), flush=True)
        sys.exit(0)
    time.sleep(0.1)
os.kill(node_pid, signal.SIGKILL)
os.waitpid(node_pid, 0)
print("NODE_STILL_RUNNING", flush=True)
"""


def test_node_ends_cleanly_when_its_parent_dies(test_zoo: Path, tmp_path: Path) -> None:
    """ros2/launch#666: the launcher dies first; the orphaned node shuts down by itself, exit 0, engines freed."""
    log, pid_file = tmp_path / "node.log", tmp_path / "node.pid"
    harness = python_cmd("-c", _HARNESS, str(log), str(pid_file),
                         *_node("sig_orphan", f"engine_manifest:={test_zoo}", "autostart:=true"))
    with managed_process(harness) as proc:
        assert proc.wait_for_output("NODE_", 200), proc.output()[-2000:] + log.read_text()[-3000:]
        out, node_out = proc.output(), log.read_text()
    assert "NODE_EXIT 0" in out, out[-2000:] + node_out[-3000:]
    assert "parent process ended" in node_out and "shut down" in node_out, node_out[-3000:]
    assert "Traceback" not in node_out, node_out[-3000:]


@pytest.mark.slow
def test_sigint_while_frames_flow_leaves_no_unretrieved_task_error(test_zoo: Path) -> None:
    """Issue 24: 2 of 5 SIGINTs while frames flowed printed "The following exception was never retrieved:
    cannot use Destroyable because destruction was requested"; five runs must print none."""
    import threading

    for run in range(5):
        ns = f"sig_flow_{run}"
        with managed_process(_node(ns, f"engine_manifest:={test_zoo}", "autostart:=true")) as proc:
            assert proc.wait_for_output("active: subscribed", 90), proc.output()[-3000:]
            client = DetectorClient(namespace=ns, name=f"{ns}_client", subscribe_status=False)
            stop = threading.Event()

            def stream() -> None:
                i = 0
                while not stop.is_set():
                    client.publish(image_msg(frame(i % 4), 8_000 + i))
                    i += 1
                    stop.wait(0.01)

            try:
                assert client.wait_ready(60), "node answered no frame"
                pub = threading.Thread(target=stream, daemon=True)
                pub.start()
                stop.wait(1.0)
                code = _signal_and_wait(proc, signal.SIGINT)
            finally:
                stop.set()
                client.close()
            out = proc.output()
        assert code == 0, out[-3000:]
        assert "never retrieved" not in out and "Traceback" not in out, f"run {run}:\n{out[-3000:]}"
