"""The monotone speed-ladder rule (pruning_tools.quant.ladder): pure, no timing."""
from __future__ import annotations

import pytest

from pruning_tools.quant.ladder import LadderLevel, ladder_order, monotone_ladder


def _verdict(levels: list[LadderLevel]) -> dict[str, bool]:
    return {d.level.level: d.kept for d in monotone_ladder(levels)}


def test_kept_levels_form_a_monotone_ladder() -> None:
    levels = [LadderLevel("s90", 0.10, 40.0, 0.9), LadderLevel("dense", 0.50, 100.0),
              LadderLevel("s50", 0.45, 103.0, 0.5),  # slower than dense: out
              LadderLevel("s75", 0.30, 80.0, 0.75)]
    ds = monotone_ladder(levels)
    assert [d.level.level for d in ds] == ["dense", "s50", "s75", "s90"]  # by accuracy, dense first
    assert {d.level.level: d.kept for d in ds} == {"dense": True, "s50": False, "s75": True, "s90": True}
    s50 = ds[1]
    assert s50.beaten_by == "dense" and "dense" in s50.reason and s50.speedup_vs_dense == pytest.approx(100 / 103, 1e-3)
    assert [d.speedup_vs_dense for d in ds if d.kept] == [1.0, 1.25, 2.5]
    kept = [d.level for d in ds if d.kept]
    assert all(a.latency_ms > b.latency_ms and (a.accuracy or 0) >= (b.accuracy or 0) for a, b in zip(kept, kept[1:]))


def test_compared_with_the_kept_levels_only() -> None:
    # x2 loses to dense; x3 is slower than x2 but faster than every kept level (dense): kept
    v = _verdict([LadderLevel("dense", 0.5, 100.0), LadderLevel("x2", 0.4, 105.0, 0.3),
                  LadderLevel("x3", 0.3, 99.0, 0.5)])
    assert v == {"dense": True, "x2": False, "x3": True}


def test_equal_latency_is_not_faster() -> None:
    assert _verdict([LadderLevel("dense", 0.5, 50.0), LadderLevel("s50", 0.4, 50.0, 0.5)])["s50"] is False


def test_accuracy_orders_not_sparsity() -> None:
    # s90 is more accurate than s75 here: s75 must then be faster than s90 to stay
    v = _verdict([LadderLevel("dense", 0.5, 100.0), LadderLevel("s75", 0.2, 70.0, 0.75),
                  LadderLevel("s90", 0.3, 60.0, 0.9)])
    assert v == {"dense": True, "s90": True, "s75": False}


def test_dense_first_even_when_a_pruned_level_scores_higher() -> None:
    order = ladder_order([LadderLevel("x1.5", 0.6, 80.0, 0.3), LadderLevel("dense", 0.5, 100.0)])
    assert [lv.level for lv in order] == ["dense", "x1.5"]
    assert _verdict(order) == {"dense": True, "x1.5": True}


def test_unknown_accuracy_last_and_ties_by_sparsity() -> None:
    order = ladder_order([LadderLevel("b", None, 1.0, 0.1), LadderLevel("c", 0.3, 1.0, 0.6),
                          LadderLevel("a", 0.3, 1.0, 0.5)])
    assert [lv.level for lv in order] == ["a", "c", "b"]


def test_without_dense_no_speedups() -> None:
    ds = monotone_ladder([LadderLevel("s50", 0.4, 60.0, 0.5), LadderLevel("s75", 0.3, 70.0, 0.75)])
    assert [d.kept for d in ds] == [True, False] and all(d.speedup_vs_dense is None for d in ds)
    assert ds[0].reason == "most accurate level"


@pytest.mark.parametrize("levels,match", [
    ([LadderLevel("dense", 0.5, 10.0), LadderLevel("dense", 0.4, 9.0)], "duplicate"),
    ([LadderLevel("dense", 0.5, 0.0)], "latency"),
    ([LadderLevel("dense", 0.5, float("nan"))], "latency"),
])
def test_bad_input(levels: list[LadderLevel], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        monotone_ladder(levels)
