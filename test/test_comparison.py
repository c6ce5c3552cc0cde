"""Table 1's labels, paired differences over trials, and the report's RL minus no-RL."""
from __future__ import annotations

import pytest

from pruning_tools.pipeline.report import METHOD_LABELS, paired_differences, paired_lines
from pruning_tools.demo.report import rl_gain
from pruning_tools.search.strategies import METHOD_NAMES
from pruning_tools.pipeline.config import METHODS

MAPS = {"full": [0.30, 0.32, 0.31], "importance": [0.28, 0.29, 0.285], "random": [0.31, 0.30, 0.33],
        "uniform": [0.10, 0.11, 0.09]}
RECORDS = [{"method": m, "level": 0.75, "trial": t, "map50_95": v} for m, vals in MAPS.items()
           for t, v in enumerate(vals)]


def test_rows_are_the_five_methods_with_the_seeds_meaning() -> None:
    assert METHOD_NAMES == METHODS == ("uniform", "importance", "random", "global", "full")
    assert "seed's \"no RL\"" in METHOD_LABELS["importance"] and "seed's \"RL\"" in METHOD_LABELS["full"]
    assert all(f"`{m}`" in METHOD_LABELS[m] for m in METHOD_NAMES)


def test_paired_differences_per_trial_and_the_spread_statement() -> None:
    imp = paired_differences(RECORDS, "full", "importance", 0.75)
    assert imp["per_trial"] == [2.0, 3.0, 2.5] and imp["mean"] == pytest.approx(2.5) and imp["trials"] == 3
    assert imp["exceeds_spread"]  # +2.5 against a trial std of 1.0
    rnd = paired_differences(RECORDS, "full", "random", 0.75)
    assert rnd["per_trial"] == [-1.0, 2.0, -2.0] and not rnd["exceeds_spread"]
    lines = paired_lines([imp, rnd])
    assert "exceeds the trial-to-trial spread" in lines[0] and "does not exceed" in lines[1]
    one = paired_differences(RECORDS[:1] + [r for r in RECORDS if r["method"] == "importance"][:1], "full",
                             "importance", 0.75)
    assert one["trials"] == 1 and not one["exceeds_spread"] and "one trial" in paired_lines([one])[0]
    assert paired_differences(RECORDS, "full", "global", 0.75) is None


def test_report_rl_minus_no_rl_is_full_minus_importance() -> None:
    agg = [{"method": m, "level": 0.75, "map50_95": sum(v) / 3} for m, v in MAPS.items()]
    assert rl_gain({"aggregate": agg}) == {"75": pytest.approx(2.5)}  # not full - uniform (+21)
