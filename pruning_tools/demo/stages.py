"""Resumable stage runner used by ``make demo`` / ``make table``.

A run folder holds one marker file per finished stage (``stages/<name>.json`` with the
stage's results). Rerunning skips finished stages and resumes at the first unfinished
one; a failing stage stops the run with its name and the cause, and leaves no marker.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class StageError(RuntimeError):
    """A stage failed; the message names the stage and the cause."""


@dataclass(frozen=True)
class Stage:
    """One step of the demo.

    :param name: short name used in markers, logs and error messages.
    :param title: one line shown to the user.
    :param run: callable taking the runner and returning a JSON-ready results dict.
    """

    name: str
    title: str
    run: Callable[["StageRunner"], dict[str, Any]]


class StageRunner:
    """Runs stages in order with resume markers under ``run_dir/stages``.

    :param run_dir: the run folder (created).
    :param stages: the stages, in order.
    :param env: extra environment for subprocesses started with :meth:`sh`.
    """

    def __init__(self, run_dir: Path, stages: Sequence[Stage], env: dict[str, str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.stages = list(stages)
        self.env = {**os.environ, **(env or {})}
        (self.run_dir / "stages").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self._current: str | None = None

    def marker(self, name: str) -> Path:
        return self.run_dir / "stages" / f"{name}.json"

    def done(self, name: str) -> bool:
        return self.marker(name).is_file()

    def result(self, name: str) -> dict[str, Any]:
        """Results of a finished stage (``{}`` when it has not run)."""
        path = self.marker(name)
        return json.loads(path.read_text())["results"] if path.is_file() else {}

    def log(self, msg: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {msg}", flush=True)

    def sh(self, cmd: Sequence[str], log_name: str, env: dict[str, str] | None = None,
           timeout: float | None = None) -> None:
        """Run a command, streaming its output to the console and ``logs/<log_name>.log``.

        :raises StageError: on a non-zero exit, with the command and the log's last lines.
        """
        log_path = self.run_dir / "logs" / f"{log_name}.log"
        self.log(f"$ {' '.join(map(str, cmd))}")
        tail: list[str] = []
        with open(log_path, "w") as log:
            proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env={**self.env, **(env or {})}, text=True, bufsize=1)
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    log.write(line)
                    sys.stdout.write(line)
                    tail = (tail + [line.rstrip()])[-25:]
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise StageError(f"{cmd[0]} timed out after {timeout} s (log: {log_path})") from None
        if rc != 0:
            raise StageError(f"command failed with exit code {rc}: {' '.join(map(str, cmd))}\n"
                             f"last lines (full log {log_path}):\n" + "\n".join(tail))

    def run(self, fresh_from: str | None = None) -> dict[str, dict[str, Any]]:
        """Run every unfinished stage; returns all stages' results.

        :param fresh_from: forget this stage's marker and all later ones first.
        :raises StageError: naming the failed stage and its cause.
        """
        if fresh_from is not None:
            names = [s.name for s in self.stages]
            if fresh_from not in names:
                raise StageError(f"unknown stage {fresh_from!r}; stages: {names}")
            for s in self.stages[names.index(fresh_from):]:
                self.marker(s.name).unlink(missing_ok=True)
        total = len(self.stages)
        for i, stage in enumerate(self.stages, 1):
            if self.done(stage.name):
                self.log(f"stage {i}/{total} {stage.name}: already done, skipping (resume)")
                continue
            self.log(f"stage {i}/{total} {stage.name}: {stage.title}")
            t0 = time.monotonic()
            self._current = stage.name
            try:
                results = stage.run(self)
            except StageError as exc:
                raise StageError(f"stage '{stage.name}' failed: {exc}") from exc
            except Exception as exc:  # noqa: BLE001 - report any failure with the stage's name
                tb = traceback.format_exc(limit=6)
                raise StageError(f"stage '{stage.name}' failed: {type(exc).__name__}: {exc}\n{tb}") from exc
            wall = time.monotonic() - t0
            tmp = self.marker(stage.name).with_suffix(".tmp")
            tmp.write_text(json.dumps({"stage": stage.name, "wall_s": round(wall, 2), "results": results},
                                      indent=2, default=str))
            tmp.replace(self.marker(stage.name))
            self.log(f"stage {i}/{total} {stage.name}: done in {wall:.1f} s")
        return {s.name: self.result(s.name) for s in self.stages}

    def wall_times(self) -> dict[str, float]:
        out = {}
        for s in self.stages:
            if self.done(s.name):
                out[s.name] = json.loads(self.marker(s.name).read_text())["wall_s"]
        return out
