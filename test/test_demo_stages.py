"""The demo's stage runner: resume after failure, stage name in errors."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pruning_tools.demo.stages import Stage, StageError, StageRunner


def test_failure_names_stage_and_rerun_resumes(tmp_path: Path) -> None:
    calls: list[str] = []
    fail = {"b": True}

    def a(r: StageRunner) -> dict:
        calls.append("a")
        return {"x": 1}

    def b(r: StageRunner) -> dict:
        calls.append("b")
        if fail["b"]:
            raise FileNotFoundError("no such dataset: /nowhere")
        return {"y": r.result("a")["x"] + 1}

    stages = [Stage("a", "first", a), Stage("b", "second", b), Stage("c", "third", lambda r: {"z": 3})]
    with pytest.raises(StageError, match=r"stage 'b' failed: FileNotFoundError: no such dataset"):
        StageRunner(tmp_path, stages).run()
    assert calls == ["a", "b"] and not (tmp_path / "stages" / "b.json").exists()
    fail["b"] = False
    results = StageRunner(tmp_path, stages).run()
    assert calls == ["a", "b", "b"]  # a was not rerun
    assert results == {"a": {"x": 1}, "b": {"y": 2}, "c": {"z": 3}}
    StageRunner(tmp_path, stages).run(fresh_from="b")
    assert calls == ["a", "b", "b", "b"]


def test_failed_command_reports_exit_code_and_tail(tmp_path: Path) -> None:
    def bad(r: StageRunner) -> dict:
        r.sh([sys.executable, "-c", "print('working'); raise SystemExit('disk full')"], "bad")
        return {}

    with pytest.raises(StageError, match=r"(?s)stage 'x' failed: command failed with exit code 1.*disk full"):
        StageRunner(tmp_path, [Stage("x", "bad", bad)]).run()
    assert "working" in (tmp_path / "logs" / "bad.log").read_text()
