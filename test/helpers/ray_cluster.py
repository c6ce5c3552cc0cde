"""A real multi-node Ray cluster on loopback for tests: ``ray start`` processes of the test's own.

Every node runs ``ray start ... --block`` in its own session (so the test can stop exactly the
processes it started, by process group), with its own ports, the test's temp dir and a fresh
cluster token (``RAY_AUTH_MODE=token``). Nodes advertise 127.0.0.1:

* the head gets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, Ray's switch for single-machine clusters,
  which makes it resolve its node address to loopback;
* a worker node cannot use that switch (Ray then refuses to join a cluster), and Ray 2.60's
  ``ray start --address 127.0.0.1:PORT`` rewrites 127.0.0.1 into the network interface's address
  (``resolve_ip_for_localhost``) and then fails to reach the loopback head. The worker node therefore
  runs the real ``ray start`` entry point with that rewrite turned off, keeping it on 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

RAY_START_LOOPBACK = ("import sys, ray._private.services as s; s.resolve_ip_for_localhost = lambda h: h; "
                      "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackRayCluster:
    """Head + worker nodes on this machine; :meth:`stop` ends them (by process group)."""

    def __init__(self, tmp: Path, repo: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp, self.port = tmp, free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(24),
                    "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "PYTHONPATH": str(repo),
                    "PYTHONUNBUFFERED": "1"}
        self.env.pop("RAY_ADDRESS", None)
        # the workers' unpacked contexts (<tmp>/sp_ray_ctx_*) stay inside the test's temp dir
        (tmp / "worker_tmp").mkdir(exist_ok=True)
        self.env["TMPDIR"] = str(tmp / "worker_tmp")
        self.procs: list[subprocess.Popen] = []
        self.node_ids: dict[int, str] = {}
        self.head = self._start(["--head", "--port", str(self.port), "--include-dashboard", "false",
                                 "--ray-client-server-port", str(free_port())], head=True)

    def _start(self, args: list[str], head: bool, cpus: int = 1) -> subprocess.Popen:
        ports = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                 "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port"]
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus), "--temp-dir", str(self.tmp),
                  "--object-store-memory", str(200 * 2**20), "--disable-usage-stats", "--block"]
        for p in ports:
            common += [p, str(free_port())]
        if head:
            cmd = [sys.executable, "-m", "ray.scripts.scripts", "start"]
            env = {**self.env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        else:
            cmd = [sys.executable, "-c", RAY_START_LOOPBACK, "start"]
            env = self.env
        log = open(self.tmp / f"node{len(self.procs)}.log", "w")
        proc = subprocess.Popen([*cmd, *args, *common], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def add_node(self, cpus: int = 1, timeout: float = 180.0) -> subprocess.Popen:
        """Start a worker node and wait until the cluster lists it; its id goes into ``node_ids[pid]``."""
        before = {n["id"] for n in self.nodes()}
        proc = self._start(["--address", self.address], head=False, cpus=cpus)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout and proc.poll() is None:
            new = {n["id"] for n in self.nodes()} - before
            if new:
                self.node_ids[proc.pid] = new.pop()
                return proc
            time.sleep(2)
        pytest.fail(f"worker node did not join the cluster; logs in {self.tmp}")

    def workers(self) -> list[subprocess.Popen]:
        """Worker nodes still running."""
        return [p for p in self.procs if p is not self.head and p.poll() is None]

    def nodes(self) -> list[dict]:
        """Live nodes as the cluster reports them (a short-lived driver in a subprocess)."""
        code = ("import json, ray; ray.init(address=%r, logging_level='error'); "
                "print(json.dumps([[n['NodeManagerAddress'], n['Resources'].get('CPU', 0), n['NodeID']] "
                "for n in ray.nodes() if n['Alive']]))" % self.address)
        env = {**self.env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            return []
        return [{"address": a, "cpus": c, "id": i} for a, c, i in json.loads(out.stdout.strip().splitlines()[-1])]

    def wait_nodes(self, n: int, timeout: float = 120.0) -> list[dict]:
        t0 = time.monotonic()
        nodes: list[dict] = []
        while time.monotonic() - t0 < timeout:
            nodes = self.nodes()
            if len(nodes) == n:
                return nodes
            time.sleep(2)
        pytest.fail(f"Ray cluster has {len(nodes)} live node(s), expected {n}; logs in {self.tmp}")

    @staticmethod
    def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL, wait: float = 30.0) -> None:
        """End one node: its whole process group (the node's processes only)."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            except ProcessLookupError:
                pass
        try:  # workers the node left behind in its group
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self) -> None:
        for p in reversed(self.procs):  # workers first, then the head
            self.kill(p, signal.SIGTERM, wait=20.0)
