"""Helpers for tests and benchmarks that run ROS 2 processes.

Hygiene rules (see DEVELOPERS notes): every run gets its own ``ROS_DOMAIN_ID``,
discovery stays on localhost, ``ROS_HOME`` lives in a temp dir, images travel over
FastDDS' LARGE_DATA transport, and only processes we started are ended, by pid.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

#: Highest domain id that keeps FastDDS' default port mapping valid on Linux.
_MAX_DOMAIN = 101


def pick_domain_id(seed: int | None = None) -> int:
    """A domain id in [1, 101] derived from ``seed`` (default: this process' pid)."""
    seed = os.getpid() if seed is None else seed
    return 1 + (seed * 7919) % _MAX_DOMAIN


def ros_isolation_env(domain_id: int | None = None, ros_home: str | Path | None = None) -> dict[str, str]:
    """Environment variables that isolate a ROS 2 run from everything else on the host."""
    if ros_home is None:
        ros_home = tempfile.mkdtemp(prefix="sp_ros_home_")
    Path(ros_home, "log").mkdir(parents=True, exist_ok=True)
    return {
        "ROS_DOMAIN_ID": str(pick_domain_id() if domain_id is None else domain_id),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_HOME": str(ros_home),
        "ROS_LOG_DIR": str(Path(ros_home, "log")),
        "FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA",
        "RMW_IMPLEMENTATION": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"),
    }


def apply_ros_isolation(domain_id: int | None = None, ros_home: str | Path | None = None) -> dict[str, str]:
    """Set :func:`ros_isolation_env` in ``os.environ`` (before ``rclpy.init``) and return it."""
    env = ros_isolation_env(domain_id, ros_home)
    os.environ.update(env)
    return env


class ManagedProcess:
    """A child process we started; :meth:`stop` ends exactly that process group."""

    def __init__(self, cmd: Sequence[str], env: dict[str, str] | None = None, log_path: str | Path | None = None,
                 cwd: str | Path | None = None) -> None:
        self.cmd = list(cmd)
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="sp_proc_", suffix=".log")[1])
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.cmd, env={**os.environ, **(env or {})}, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=cwd, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        """Everything the process printed so far (also after :meth:`stop`)."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> bool:
        """Wait until ``text`` appears in the output (False on timeout or exit)."""
        return wait_for(lambda: text in self.output() or not self.alive(), timeout, period=0.05) \
            and text in self.output()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT, then SIGTERM, then SIGKILL to our own process group; returns the exit code."""
        if self.alive():
            for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._log.close()
        return self.proc.returncode


@contextmanager
def managed_process(cmd: Sequence[str], **kwargs) -> Iterator[ManagedProcess]:
    """Context manager around :class:`ManagedProcess` that always stops it."""
    proc = ManagedProcess(cmd, **kwargs)
    try:
        yield proc
    finally:
        proc.stop()


def python_cmd(*args: str) -> list[str]:
    """Command line running this interpreter with ``args`` (e.g. ``-m``, module)."""
    return [sys.executable, *args]


def wait_for(predicate: Callable[[], bool], timeout: float, period: float = 0.01) -> bool:
    """Poll ``predicate`` every ``period`` seconds until true or ``timeout`` seconds passed.

    :return: whether ``predicate`` held (it is asked once more at the deadline).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return bool(predicate())
