"""Partial outputs: folders a writer fills beside its destination, then renames onto it.

A writer killed with ``kill -9`` cannot clean up, so its partial folder stays. Partial names
carry the writer's pid; the next writer of the same destination removes the partials whose
process is gone (never one whose process still runs, e.g. a parallel writer).

* ``.NAME.partial-PID`` — :class:`sparse_perception.tools.recorder.Recorder`'s bag in progress
  (recorded data: :func:`salvage_stale_partials` keeps it as ``NAME.recovered-PID`` instead);
* ``.NAME.PID-RANDOM.tmp`` — :func:`make_partial_dir` (``kitti generate``, ``kitti convert``).

Partial folders get the normal mode (``0777`` less the umask), unlike ``tempfile.mkdtemp``'s
``0700``, because they become the published output by a rename.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Callable

__all__ = ["make_partial_dir", "pid_alive", "remove_stale_partials", "salvage_stale_partials"]


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this machine (one we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _patterns(out: Path) -> tuple[re.Pattern[str], ...]:
    name = re.escape(out.name)
    return (re.compile(rf"^\.{name}\.partial-(\d+)$"), re.compile(rf"^\.{name}\.(\d+)-[0-9a-f]+\.tmp$"))


def _stale(out: Path, patterns: tuple[re.Pattern[str], ...]) -> list[tuple[Path, int]]:
    """``(entry, pid)`` of ``out``'s siblings matching one of ``patterns`` whose writer no longer runs."""
    if not out.parent.is_dir():
        return []
    found = []
    for entry in sorted(out.parent.iterdir()):
        m = next((m for m in (pat.match(entry.name) for pat in patterns) if m is not None), None)
        if m is not None and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            found.append((entry, int(m.group(1))))
    return found


def remove_stale_partials(out: str | Path, log: Callable[[str], None] | None = None) -> list[Path]:
    """Delete ``out``'s partial siblings left by writers that no longer run; returns what was removed.

    :param out: the destination (file or folder) whose partials to look for.
    :param log: called with one line per removed partial.
    """
    removed = []
    for entry, pid in _stale(Path(out), _patterns(Path(out))):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
        if log is not None:
            log(f"removed stale partial output {entry} (its process {pid} is gone)")
    return removed


def salvage_stale_partials(out: str | Path) -> list[tuple[Path, Path]]:
    """Keep ``out``'s stale ``.NAME.partial-PID`` folders (a killed recorder's messages) as ``NAME.recovered-PID``.

    Recorded data is never deleted: the folder is renamed to a visible sibling (``-2``, ``-3``, ...
    appended when taken); a partial whose process still runs is left alone.

    :return: ``(partial, recovered)`` pairs.
    """
    out, kept = Path(out), []
    for entry, pid in _stale(out, _patterns(out)[:1]):
        target, n = out.with_name(f"{out.name}.recovered-{pid}"), 1
        while target.exists():
            n += 1
            target = out.with_name(f"{out.name}.recovered-{pid}-{n}")
        os.rename(entry, target)
        kept.append((entry, target))
    return kept


def make_partial_dir(out: str | Path) -> Path:
    """Create ``.NAME.PID-RANDOM.tmp`` beside ``out`` with the normal mode (umask applies)."""
    out = Path(out)
    while True:
        tmp = out.parent / f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            tmp.mkdir()
        except FileExistsError:
            continue
        return tmp
