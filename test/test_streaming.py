"""Streaming evaluation (pruning_tools.train.streaming): the pairing rule on hand-made stamps."""
from __future__ import annotations

import numpy as np
import pytest

from pruning_tools.train.kitti_ap import FrameTruth
from pruning_tools.train.streaming import (GroundTruthFrame, StampedDetections, format_gt_id, parse_gt_id,
                                           streaming_match, streaming_report)

MS = 1_000_000
T0 = 1_317_042_272_345_808_896  # a KITTI-like camera stamp (2011)


def _truth(x: float) -> FrameTruth:
    return FrameTruth([[x, 100, x + 60, 160]], ["Car"], [0], [0.0])


def _det(stamp: int, avail: int, x: float | None = None) -> StampedDetections:
    if x is None:
        return StampedDetections(stamp, avail)
    return StampedDetections(stamp, avail, np.array([[x, 100, x + 60, 160]], float), np.array([0.9]), ["Car"])


def test_match_late_dropped_and_none_yet() -> None:
    gt = [GroundTruthFrame(T0 + k * 100 * MS, _truth(100 + 40 * k)) for k in range(5)]
    dets = [
        # frame 0: answered 250 ms late (after frames 1 and 2's deadlines: 200 ms, 300 ms)
        _det(T0, T0 + 250 * MS, 100),
        # frame 1: dropped (no answer at all)
        # frame 2: on time, 30 ms after its stamp
        _det(T0 + 200 * MS, T0 + 230 * MS, 180),
        # frame 3: answered at 480 ms: past its deadline of 400 ms
        _det(T0 + 300 * MS, T0 + 480 * MS, 220),
        # frame 4: answered exactly at its deadline (500 ms) counts
        _det(T0 + 400 * MS, T0 + 500 * MS, 260),
    ]
    res = streaming_match(gt, dets, 0.1)
    # frame 0: nothing by 100 ms; frame 1: nothing by 200 ms; frame 2: frame 0's late answer came at 250 but frame 2's
    # own at 230, the one available last (250 ms, frame 0) is used; frame 3: by 400 ms the last available is
    # frame 0's (250) -> stale; frame 4: its own (500 ms) is the last available
    assert res.used == [None, None, 0, 0, 3]
    assert res.own == [0, None, 1, 2, 3]
    assert res.frames == 5 and res.answered == 4 and res.with_output == 3 and res.on_time == 1
    np.testing.assert_allclose(res.staleness_ms[2:], [200.0, 300.0, 0.0])
    assert np.isnan(res.staleness_ms[:2]).all()
    assert res.mean_staleness_ms == pytest.approx(500.0 / 3)


def test_future_frames_never_answer_the_past() -> None:
    # an answer to frame 1 that is available before frame 0's deadline (stamps closer than a period) is not used
    gt = [GroundTruthFrame(T0, _truth(100))]
    res = streaming_match(gt, [_det(T0 + 50 * MS, T0 + 60 * MS, 100)], 0.1)
    assert res.used == [None]
    with pytest.raises(ValueError, match="period_s"):
        streaming_match(gt, [], -1.0)


def test_report_sap_below_ap_when_late() -> None:
    # objects move 40 px a frame: a stale box misses at IoU 0.7, the frame's own box hits
    gt = [GroundTruthFrame(T0 + k * 100 * MS, _truth(100 + 40 * k)) for k in range(6)]
    late = [_det(g.stamp_ns, g.stamp_ns + 150 * MS, 100 + 40 * k) for k, g in enumerate(gt)]
    rep = streaming_report(gt, late, 0.1, model="m", data="d")
    assert rep["ap"]["Car"] == pytest.approx(1.0)
    assert rep["sap"]["Car"] < 0.2
    assert rep["frames"] == 6 and rep["answered"] == 6 and rep["on_time"] == 0
    assert rep["mean_staleness_ms"] == pytest.approx(100.0)
    assert np.isnan(rep["sap"]["Pedestrian"]) and rep["model"] == "m"
    fast = [_det(g.stamp_ns, g.stamp_ns + 20 * MS, 100 + 40 * k) for k, g in enumerate(gt)]
    rep2 = streaming_report(gt, fast, 0.1)
    assert rep2["sap"]["Car"] == pytest.approx(1.0) and rep2["mean_staleness_ms"] == 0.0


def test_gt_id_roundtrip() -> None:
    text = format_gt_id("0000:000012", 7, 1, 0.3)
    assert parse_gt_id(text) == {"track": 7.0, "occluded": 1.0, "truncated": 0.3}
    assert parse_gt_id("000042:3") == {}
