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


def remove_stale_partials(out: str | Path, log: Callable[[str], None] | None = None) -> list[Path]:
    """Delete ``out``'s partial siblings left by writers that no longer run; returns what was removed.

    :param out: the destination (file or folder) whose partials to look for.
    :param log: called with one line per removed partial.
    """
    out = Path(out)
    if not out.parent.is_dir():
        return []
    removed = []
    for entry in sorted(out.parent.iterdir()):
        for pat in _patterns(out):
            m = pat.match(entry.name)
            if m is None:
                continue
            pid = int(m.group(1))
            if pid == os.getpid() or pid_alive(pid):
                break
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
            if log is not None:
                log(f"removed stale partial output {entry} (its process {pid} is gone)")
            break
    return removed


def salvage_stale_partials(out: str | Path) -> list[tuple[Path, Path]]:
    """Keep ``out``'s stale ``.NAME.partial-PID`` folders (a killed recorder's messages) as ``NAME.recovered-PID``.

    Recorded data is never deleted: the folder is renamed to a visible sibling (``-2``, ``-3``, ...
    appended when taken); a partial whose process still runs is left alone.

    :return: ``(partial, recovered)`` pairs.
    """
    out = Path(out)
    if not out.parent.is_dir():
        return []
    pat, kept = _patterns(out)[0], []
    for entry in sorted(out.parent.iterdir()):
        m = pat.match(entry.name)
        if m is None:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or pid_alive(pid):
            continue
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
