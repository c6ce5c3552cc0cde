"""The benches' shared JSON tail: machine block, library versions, atomic write, printed summary; and the
Spearman rank correlation the proxy and latency-model benches report.

Not a bench (``make bench`` runs it as a no-op); every ``bench/*.py`` imports it as ``_report``.
"""
from __future__ import annotations

import importlib
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any


def machine_block(**extra: Any) -> dict[str, Any]:
    """``sparse_perception.runtime.machine.machine_info()`` (load average: now) plus a bench's own ``extra`` fields.

    A bench that wants the load before its run takes this at the start and puts it under ``machine``
    itself; :func:`write_result` adds it at the end otherwise.
    """
    from sparse_perception.runtime.machine import machine_info

    return {**machine_info(), **extra}


def module_versions(*modules: str, python: bool = True) -> dict[str, str | None]:
    """``{"python": ..., module: module.__version__}`` (the distribution's version where the module has
    no ``__version__``, ``None`` where neither is there)."""
    out: dict[str, str | None] = {"python": platform.python_version()} if python else {}
    for name in modules:
        version = getattr(importlib.import_module(name), "__version__", None)
        if version is None:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                pass
        out[name] = version
    return out


def write_result(path: str | os.PathLike[str], result: dict[str, Any], summary: str | None = None) -> Path:
    """Add ``machine`` to ``result`` unless it has one, write it as JSON to ``path`` atomically (parent
    created; :func:`pruning_tools.data.files.atomic_write_text`) and print ``summary`` (default: the JSON).

    :return: the path written.
    """
    from pruning_tools.data.files import atomic_write_text, strict_dumps

    path = Path(path)
    result.setdefault("machine", machine_block())
    text = strict_dumps(result, indent=2) + "\n"  # strict JSON: NaN/inf written as null
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    print(text.rstrip("\n") if summary is None else summary, flush=True)
    return path


def ranks(values: list[float]) -> list[float]:
    """Average ranks (ties share their mean rank), 1-based."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman rank correlation (Pearson of average ranks); ``None`` when either side is constant."""
    if len(a) != len(b) or len(a) < 3:
        raise ValueError("spearman needs two equally long lists of >= 3 values")
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    if va == 0 or vb == 0:
        return None
    return cov / (va * vb) ** 0.5
