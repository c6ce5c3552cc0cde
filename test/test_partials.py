"""Partial outputs after ``kill -9``: the next run removes those of dead writers only; outputs get the normal mode."""
from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from sparse_perception.runtime.partials import make_partial_dir, pid_alive, remove_stale_partials
from sparse_perception.tools.testing import managed_process, python_cmd, wait_for


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _kill9(proc) -> None:  # noqa: ANN001 - a ManagedProcess we started
    os.kill(proc.pid, signal.SIGKILL)
    proc.proc.wait(10)
    assert not pid_alive(proc.pid)


def test_only_dead_writers_partials_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "data"
    with managed_process(python_cmd("-c", "import time; time.sleep(60)")) as live:
        with managed_process(python_cmd("-c", "import time; time.sleep(60)")) as dead:
            _kill9(dead)
        keep = [tmp_path / f".data.{live.pid}-ab12.tmp", tmp_path / f".data.partial-{live.pid}",
                tmp_path / f".other.{dead.pid}-ab12.tmp", tmp_path / f".data.{dead.pid}-xyz.tmp"]
        gone = [tmp_path / f".data.{dead.pid}-ab12.tmp", tmp_path / f".data.partial-{dead.pid}"]
        for p in keep + gone:
            p.mkdir()
        (gone[0] / "f.txt").write_text("x")
        removed = remove_stale_partials(out)
        assert sorted(removed) == sorted(gone)
        assert all(p.is_dir() for p in keep) and not any(p.exists() for p in gone)
        mine = make_partial_dir(out)
        assert remove_stale_partials(out) == [] and mine.is_dir()  # this process' own partial stays
    assert _mode(mine) == 0o777 & ~_umask()


def test_kitti_generate_after_kill9_removes_its_partial_and_publishes_normal_mode(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    cmd = python_cmd("-m", "pruning_tools.cli", "kitti", "generate", "--out", str(out), "--frames", "400",
                     "--seed", "1")
    with managed_process(cmd) as proc:
        assert wait_for(lambda: any((p / "training").is_dir() for p in tmp_path.glob(".gen.*.tmp")), 120), \
            proc.output()
        _kill9(proc)
    partials = list(tmp_path.glob(".gen.*.tmp"))
    assert len(partials) == 1 and not out.exists()  # what kill -9 leaves behind
    from pruning_tools.data.generator import generate_dataset

    generate_dataset(out, 2, seed=1, progress=False)
    assert not partials[0].exists() and list(tmp_path.glob(".gen.*")) == []
    assert _mode(out) == 0o777 & ~_umask()


def test_kitti_convert_output_has_normal_mode(tmp_path: Path) -> None:
    from pruning_tools.data.convert import convert_kitti
    from pruning_tools.data.generator import generate_dataset

    generate_dataset(tmp_path / "kitti", 4, seed=3, progress=False)
    out = convert_kitti(tmp_path / "kitti", tmp_path / "yolo", progress=False)
    assert _mode(out) == 0o777 & ~_umask()


@pytest.mark.ros
def test_recorder_after_kill9_keeps_its_partial_bag_under_a_recovered_name(tmp_path: Path) -> None:
    """Issue 24 item 6: the next recorder of the same --out deleted the killed one's messages; now it keeps them."""
    out = tmp_path / "rec"
    rec = python_cmd("-m", "sparse_perception.cli", "record", "--out", str(out), "--storage", "sqlite3",
                     "--topics", "/partials_test/never")
    with managed_process(rec) as proc:
        assert wait_for(lambda: bool(list(tmp_path.glob(".rec.partial-*/*.db3"))), 60), proc.output()
        killed = proc.pid
        _kill9(proc)
    partial = tmp_path / f".rec.partial-{killed}"
    assert partial.is_dir() and not out.exists()  # what kill -9 leaves behind
    files = sorted(p.name for p in partial.iterdir())
    with managed_process([*rec, "--duration", "1"]) as proc:
        assert wait_for(lambda: not proc.alive(), 60), proc.output()
        log = proc.output()
    assert proc.proc.returncode == 0, log
    recovered = tmp_path / f"rec.recovered-{killed}"
    assert f"kept the partial bag of a killed recorder .rec.partial-{killed} as {recovered}" in log
    assert out.is_dir() and recovered.is_dir() and sorted(p.name for p in recovered.iterdir()) == files
    assert list(tmp_path.glob(".rec.partial-*")) == []


def test_salvage_keeps_only_dead_recorders_partials(tmp_path: Path) -> None:
    from sparse_perception.runtime.partials import salvage_stale_partials

    out = tmp_path / "bag"
    with managed_process(python_cmd("-c", "import time; time.sleep(60)")) as live:
        with managed_process(python_cmd("-c", "import time; time.sleep(60)")) as dead:
            _kill9(dead)
        for pid in (live.pid, dead.pid):
            (tmp_path / f".bag.partial-{pid}").mkdir()
            (tmp_path / f".bag.partial-{pid}" / "bag_0.mcap").write_bytes(b"data")
        (tmp_path / f"bag.recovered-{dead.pid}").mkdir()  # taken: the next free name is used
        kept = salvage_stale_partials(out)
        target = tmp_path / f"bag.recovered-{dead.pid}-2"
        assert kept == [(tmp_path / f".bag.partial-{dead.pid}", target)]
        assert (target / "bag_0.mcap").read_bytes() == b"data" and (tmp_path / f".bag.partial-{live.pid}").is_dir()
