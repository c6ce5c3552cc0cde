"""Files written whole or not at all: text through a temporary sibling and a rename, JSON likewise
(numpy values and paths converted) — every result, state and label file of pruning_tools."""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling file and a rename.

    The temporary file ``.NAME.PID-RANDOM.tmp`` (the partial-output naming of
    :mod:`sparse_perception.runtime.partials`) gets the normal file mode (``0666`` less the umask).

    :param path: destination; its folder must exist.
    :param text: file content.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented strict JSON via :func:`atomic_write_text` (the folder is created); numpy arrays
    and scalars become lists and numbers, NaN/inf ``null``, anything else unknown (paths) its ``str``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, strict_dumps(obj, indent=2) + "\n")


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf; numpy ones too) replaced by ``None`` — JSON has no NaN."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict_json(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def strict_dumps(obj: Any, **kw: Any) -> str:
    """``json.dumps`` of :func:`strict_json` (``obj``) with ``allow_nan=False`` (numpy and paths converted)."""
    return json.dumps(strict_json(obj), allow_nan=False, default=_json_default, **kw)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)
