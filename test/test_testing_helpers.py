"""sparse_perception.tools.testing: the process helper every ROS test relies on."""
from __future__ import annotations

import sys

from sparse_perception.tools.testing import ManagedProcess, python_cmd, wait_for


def test_output_readable_after_stop_and_stop_ends_only_our_process() -> None:
    proc = ManagedProcess(python_cmd("-c", "import time; print('ready', flush=True); time.sleep(60)"))
    assert proc.wait_for_output("ready", 20)
    other = ManagedProcess([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        rc = proc.stop(timeout=5)
        assert rc is not None and not proc.alive()
        assert "ready" in proc.output()  # a failure message built after the process ended still shows its output
        assert other.alive(), "stop() ended a process it was not asked to"
    finally:
        other.stop(timeout=5)
    assert wait_for(lambda: not other.alive(), 5)
