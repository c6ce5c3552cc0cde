"""The zoo as a monotone speed ladder: which levels are worth shipping.

A level the node can hot-swap to is worth having only when it buys speed for the accuracy it costs.
After the precision search has selected one engine per level, every selected engine (the dense one
included) is timed once, interleaved in one process; then :func:`monotone_ladder` applies the rule:

    order the levels by accuracy — ``dense`` first (the reference), then the val-split mAP50-95 of
    each level's selected engine, highest first (ties: the lower parameter sparsity first) — and keep
    a level only when its measured median latency is *strictly lower* than that of every more
    accurate level already kept.

The kept levels are then a ladder on which each step down in accuracy is a step up in speed; a level
that is slower than (or as fast as) a more accurate kept one is reported with the reason and left out
of the manifest's ``artifacts``, so the node never loads it. The rule is pure (no timing, no files).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

#: the level every speed-up is relative to (always kept, first)
DENSE = "dense"


@dataclass(frozen=True)
class LadderLevel:
    """One level's selected engine, as the rule sees it.

    :param level: level name (``dense``, ``s50``, ``x1.5`` ...).
    :param accuracy: the selection figure (val-split mAP50-95 of the selected engine); ``None``: unknown
        (ordered after every known figure).
    :param latency_ms: median latency of the selected engine, from the one interleaved timing.
    :param param_sparsity: fraction of parameters removed (tie-break of equal accuracies).
    """

    level: str
    accuracy: float | None
    latency_ms: float
    param_sparsity: float = 0.0


@dataclass(frozen=True)
class LadderDecision:
    """The rule's verdict on one level.

    :param kept: the level stays in the zoo.
    :param reason: why (a sentence naming the level it lost to, for an excluded one).
    :param speedup_vs_dense: the dense engine's latency over this level's (``None`` without a dense level).
    :param beaten_by: the more accurate kept level that is at least as fast (excluded levels only).
    """

    level: LadderLevel
    kept: bool
    reason: str
    speedup_vs_dense: float | None
    beaten_by: str | None = None


def ladder_order(levels: Sequence[LadderLevel]) -> list[LadderLevel]:
    """``dense`` first, then by accuracy (highest first; unknown last), ties by parameter sparsity, then name."""
    def key(lv: LadderLevel) -> tuple[int, float, float, str]:
        acc = float("-inf") if lv.accuracy is None else float(lv.accuracy)
        return (0 if lv.level == DENSE else 1, -acc, float(lv.param_sparsity), lv.level)

    return sorted(levels, key=key)


def monotone_ladder(levels: Sequence[LadderLevel]) -> list[LadderDecision]:
    """Apply the ladder rule (module docstring) to the selected engine of every level.

    :param levels: one entry per level, names unique; ``dense`` (when present) is the speed-up reference.
    :return: one decision per level, in ladder order (the kept ones are the ladder, densest first).
    :raises ValueError: duplicate level names, or a latency that is not a positive number.
    """
    names = [lv.level for lv in levels]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"ladder: duplicate levels {dup}")
    for lv in levels:
        if not (float(lv.latency_ms) > 0):
            raise ValueError(f"ladder: level {lv.level!r} has latency {lv.latency_ms!r} ms; expected > 0")
    dense = next((lv for lv in levels if lv.level == DENSE), None)
    out: list[LadderDecision] = []
    fastest: LadderLevel | None = None  # the fastest kept level so far (all of them are more accurate)
    for lv in ladder_order(levels):
        speedup = round(dense.latency_ms / lv.latency_ms, 4) if dense is not None else None
        if fastest is None:
            reason = "reference (dense)" if lv.level == DENSE else "most accurate level"
            out.append(LadderDecision(lv, True, reason, speedup))
            fastest = lv
        elif lv.latency_ms < fastest.latency_ms:
            out.append(LadderDecision(lv, True, f"faster than every more accurate level "
                                                f"({lv.latency_ms:.2f} < {fastest.latency_ms:.2f} ms of "
                                                f"{fastest.level})", speedup))
            fastest = lv
        else:
            out.append(LadderDecision(
                lv, False, f"not faster than the more accurate level {fastest.level} "
                           f"({lv.latency_ms:.2f} ms >= {fastest.latency_ms:.2f} ms), and ranked below it by accuracy",
                speedup, beaten_by=fastest.level))
    return out
