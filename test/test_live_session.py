"""The demo's live session end to end: node process, replayed generated drive, swaps, policy, recorder.

Real parts only: the detector node and the replay/recorder run as their own processes over
FastDDS, the zoo is real ONNX Runtime engines (the session-wide ``test_zoo``), the bag is
written by ``pruning-tools kitti to-bag`` from a generated drive, the policy is a PPO model
a score table (PPO training is tested in test_policy.py). The report writer then renders the session.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture(scope="module")
def drive_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pruning_tools.data import generate_dataset, raw_drive_to_bag

    root = tmp_path_factory.mktemp("live_drive")
    drive = generate_dataset(root / "seq", frames=90, seed=5, sequence=True,
                             conditions=["day_clear", "night_fog", "dusk_rain"], segment_frames=30, progress=False)
    return raw_drive_to_bag(drive, root / "bag", progress=False)


#: Score-table policy (a form ``SparsityPolicy`` loads): the best level per condition is known.
EXPECTED = {"day_clear": "s75", "night_fog": "dense", "dusk_rain": "s50"}


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("live_policy") / "policy.json"
    scores = {cond: {lv: (0.9 if lv == best else 0.2) for lv in ("dense", "s50", "s75")}
              for cond, best in EXPECTED.items()}
    out.write_text(json.dumps({"kind": "score_table", "levels": ["dense", "s50", "s75"], "scores": scores}))
    return out


def test_live_session_swaps_then_policy_and_records(test_zoo: Path, drive_bag: Path, policy: Path,
                                                     tmp_path: Path) -> None:
    from rosbags.highlevel import AnyReader

    from sparse_perception.tools.bag_types import typestore
    from sparse_perception.tools.live_session import LiveConfig, run_live_session

    out = tmp_path / "live"
    res = run_live_session(LiveConfig(manifest=test_zoo, bag=drive_bag, out=out, policy=policy,
                                      manual_fraction=0.3, swap_period_s=0.8, cooldown_s=0.0))
    fr = res["frames"]
    assert fr["in_bag"] == 90
    assert fr["duplicated"] == 0 and fr["stamps_in_order"], fr
    # A 96x320 model keeps up with 10 Hz easily; allow a few drops on a loaded 2-core machine.
    assert fr["answered"] >= 0.8 * fr["in_bag"], fr
    assert res["node_alive_at_end"]
    sw = res["swaps"]
    assert sw["n"] >= 2 and sw["failed"] == 0, sw["calls"]
    # each manual swap took effect between frames: frames answered by every level swapped to, in order
    manual = [f["level"] for f in res["per_frame"] if f["mode"] == "manual"]
    runs = [lv for k, lv in enumerate(manual) if k == 0 or lv != manual[k - 1]]
    swapped = [c["level"] for c in sw["calls"] if c["success"]]
    assert all(lv in runs for lv in swapped), (runs, swapped)
    # the policy took over and chose a level for the conditions of the second half
    chosen = res["policy"]["levels_by_condition"]
    assert chosen and set(chosen) <= {"day_clear", "night_fog", "dusk_rain"}, chosen
    assert {"night_fog", "dusk_rain"} <= set(chosen), chosen  # both segments entirely under the policy
    # After a condition change the policy needs `hysteresis` (3) condition messages, and a small
    # message sharing the transport with 1.4 MB frames is sometimes repaired only at the next
    # heartbeat (~1 s here; docs/node.md): judge each 3 s segment by its last second.
    for cond in ("night_fog", "dusk_rain"):
        frames = [f for f in res["per_frame"] if f["condition"] == cond and f["mode"] == "auto"]
        tail = [f["level"] for f in frames if f["t_s"] >= frames[-1]["t_s"] - 1.0]
        assert tail and all(lv == EXPECTED[cond] for lv in tail), (cond, tail)
    assert any(s["mode"] == "auto" for s in res["policy"]["status_changes"])
    assert res["accuracy"]["map50_95"] is not None
    assert res["e2e_latency_ms"]["n"] > 0 and res["e2e_latency_ms"]["p50"] > 0
    assert (out / "live.json").is_file() and (out / "timeline.png").stat().st_size > 1000
    # the recorder wrote the node's detections into a bag
    with AnyReader([Path(res["recorded_bag"])], default_typestore=typestore()) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts.get("/perception/detections", 0) >= 0.8 * fr["answered"], counts
    assert counts.get("/perception/engine_status", 0) >= 1, counts

    # the report renders this session (with a minimal Table-1 input built from the zoo)
    from pruning_tools.demo.report import live_lines, policy_lines

    md = "\n".join(live_lines(json.loads((out / "live.json").read_text())) + policy_lines(res))
    assert f"| {fr['in_bag']} / {fr['answered']} |" in md
    assert "day_clear" in md or "night_fog" in md or "dusk_rain" in md


def test_cdr_header_stamp_reads_the_stamp_without_deserializing() -> None:
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    from sparse_perception.tools.live_session import cdr_header_stamp

    msg = Image(height=2, width=3, encoding="bgr8", step=9, data=bytes(range(18)))
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_317_041_200, 987_654_321
    assert cdr_header_stamp(serialize_message(msg)) == 1_317_041_200_987_654_321
    with pytest.raises(ValueError, match="too short"):
        cdr_header_stamp(b"\x00\x01\x00\x00")
