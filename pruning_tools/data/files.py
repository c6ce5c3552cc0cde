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
    """``obj`` as indented JSON via :func:`atomic_write_text` (the folder is created); numpy arrays and
    scalars become lists and numbers, anything else unknown (paths) its ``str``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)
