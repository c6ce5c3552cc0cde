"""Streaming drive simulator (queue, drops, staleness), the condition + load policy: training on
training drives, comparison on held-out drives, versioned files, sha256, controller hysteresis/cooldown."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from runtime_models import tiny_zoo  # noqa: E402

from sparse_perception.runtime.conditions import Condition  # noqa: E402
from sparse_perception.runtime.frame_stats import FrameStats  # noqa: E402
from sparse_perception.runtime.policy import Load, PolicyController, SparsityPolicy  # noqa: E402


def test_queue_drops_and_staleness_with_hand_made_latencies() -> None:
    """One 10 Hz camera: 30 ms keeps up (every instant answered by its own frame, no staleness);
    150 ms cannot: frames are overwritten in the keep-newest queue, answers come late and stale."""
    from pruning_tools.train.drive_sim import ServerState, simulate_window, staleness_retention

    lat, sig, acc = np.array([30.0, 150.0]), np.zeros(2), np.array([0.5, 0.9])
    fast, slow = ServerState(), ServerState()
    f = [simulate_window(fast, k, 1.0, 0, lat, sig, acc, 1.0, 10.0, 1, None) for k in range(3)]
    s = [simulate_window(slow, k, 1.0, 1, lat, sig, acc, 1.0, 10.0, 1, None) for k in range(3)]
    assert [r.dropped for r in f] == [0, 0, 0] and f[2].late == 0 and f[2].mean_staleness_ms == 0.0
    assert f[2].score == pytest.approx(0.5) and f[2].answered_instants == f[2].instants == 10
    # 150 ms service at 100 ms frames: t=0 served 0-150, t=100 waits, t=200 overwrites it ... 2 of 3 frames served
    assert s[2].processed in (6, 7) and s[2].dropped >= 3 and s[2].late == s[2].processed
    assert s[2].mean_staleness_ms == pytest.approx(170.0)
    # the stale answers cost as measured on the real drive: 100-200 ms stale keeps 24-54 % of the accuracy
    assert 0.9 * staleness_retention(0.2) < s[2].score < 0.9 * staleness_retention(0.1)
    # a competing load of x2 makes the 30 ms level late at 2 cameras (60 ms > 50 ms per frame): drops appear
    busy = ServerState()
    b = [simulate_window(busy, k, 1.0, 0, lat, sig, acc, 2.0, 10.0, 2, None) for k in range(3)]
    assert b[2].dropped > 0 and b[2].arrived == 20


def test_staleness_curve_is_the_one_measured_on_the_real_drive() -> None:
    """The simulator's retention curve is docs/bench/staleness_curve.json's (bench/staleness_curve.py on real
    KITTI tracking 0000): re-measuring without updating KITTI_STALENESS fails here."""
    from pruning_tools.train.drive_sim import KITTI_STALENESS, staleness_retention

    doc = json.loads((Path(__file__).resolve().parent.parent / "docs" / "bench" / "staleness_curve.json").read_text())
    measured = [(r["staleness_ms"], r["dense"]["retention_map50_95"]) for r in doc["rows"]]
    assert len(measured) == len(KITTI_STALENESS) == 6
    for (x, y), (cx, cy) in zip(measured, KITTI_STALENESS):
        assert cx == pytest.approx(x, abs=0.05) and cy == pytest.approx(y, abs=5e-4)
    assert "real KITTI tracking" in doc["data"]
    # linear between points, held past the last, never above 1
    assert staleness_retention(0.0) == 1.0 and staleness_retention(-1.0) == 1.0
    mid = (KITTI_STALENESS[0][1] + KITTI_STALENESS[1][1]) / 2
    assert staleness_retention(KITTI_STALENESS[1][0] / 2000.0) == pytest.approx(mid)
    assert staleness_retention(5.0) == pytest.approx(KITTI_STALENESS[-1][1])
    ys = [staleness_retention(t / 100.0) for t in range(80)]
    assert all(b <= a for a, b in zip(ys, ys[1:]))


def test_oracle_is_the_best_fixed_level_per_segment_in_hindsight(tmp_path: Path) -> None:
    """The oracle holds one level per (condition, load) segment, and over each segment no other fixed level,
    replayed from the same queue state with the same draws, scores more."""
    from pruning_tools.train.policy import TEST_DRIVES, DriveEnv, level_table

    env = DriveEnv(level_table(_zoo(tmp_path)))
    env.reset(options={"drive_id": TEST_DRIVES + 7})
    segs, plan = env.segments(), env.oracle_plan()
    assert len(plan) == env.episode_len and segs[0][0] == 0 and segs[-1][1] == env.episode_len
    assert len(set(env._loads)) > 1 and len(segs) > 2
    state, prev = env._state.copy(), env._level
    for a, b in segs:
        assert len(set(plan[a:b])) == 1
        totals = []
        for lv in range(env.n):
            st, tot, p = state.copy(), 0.0, prev
            for k in range(a, b):
                tot += env.reward_of(lv, env.simulate(lv, st, k), p)
                p = lv
            totals.append((tot, st))
        assert totals[plan[a]][0] == pytest.approx(max(t for t, _ in totals))
        state, prev = totals[plan[a]][1], plan[a]
    # the plan is what evaluate_modes' oracle plays
    env.reset(options={"drive_id": TEST_DRIVES + 7})
    played = []
    for _ in range(env.episode_len):
        played.append(env.oracle_action())
        env.step(played[-1])
    assert played == plan


def _zoo(root: Path) -> Path:
    """dense: accurate (0.6 day / 0.5 night) but 40 ms; s75: 0.45 / 0.2 at 12 ms; s90: 0.1 at 8 ms (a bad choice).

    Latencies marked interleaved (as the export ladder writes them). With two 10 Hz cameras (50 ms a
    frame) dense keeps up only without the competing load: the best level depends on the load.
    """
    m = tiny_zoo(root, {"dense": (0.0, 4), "s75": (0.75, 2), "s90": (0.9, 2)})
    data = json.loads(m.read_text())
    figures = {"dense": (0.6, 0.5, 40.0), "s75": (0.45, 0.2, 12.0), "s90": (0.1, 0.1, 8.0)}
    for art in data["artifacts"]:
        day, night, lat = figures[art["level"]]
        art["map50_95"], art["map50"] = day, day + 0.2
        art["latency_ms"] = {"median": lat, "p95": lat * 1.1, "backend": "onnxruntime", "device": "cpu",
                             "interleaved": True, "runs": 20}
        art["map_by_condition"] = {f"{i}_{w}": {"map50_95": night if i == "night" else day, "map50": None}
                                   for i in ("day", "dusk", "night") for w in ("clear", "rain", "fog")}
    m.write_text(json.dumps(data))
    return m


def test_probe_latencies_are_refused(tmp_path: Path) -> None:
    from pruning_tools.train.policy import level_table, main

    m = _zoo(tmp_path)
    data = json.loads(m.read_text())
    data["artifacts"][1]["latency_ms"].pop("interleaved")
    m.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="'s75' has no interleaved latency"):
        level_table(m)
    live = tmp_path / "live.json"
    live.write_text(json.dumps({lv: {"median": 10.0} for lv in ("dense", "s75", "s90")}))
    assert level_table(m, latency_json=live).latency_ms == (10.0, 10.0, 10.0)
    assert main(["--zoo", str(m), "--out", str(tmp_path / "p.zip"), "--timesteps", "10"]) == 2


def test_env_checks_and_disjoint_drives(tmp_path: Path) -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check

    from pruning_tools.train.policy import TEST_DRIVES, DriveEnv, level_table

    table = level_table(_zoo(tmp_path))
    check_env(DriveEnv(table), skip_render_check=True)
    sb3_check(DriveEnv(table))
    env = DriveEnv(table)
    ids = {env.reset(seed=i)[1]["drive_id"] for i in range(50)}
    assert max(ids) < TEST_DRIVES


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    from pruning_tools.train.policy import main

    root = tmp_path_factory.mktemp("policy")
    zoo = _zoo(root / "zoo")
    out = root / "pol" / "policy.zip"
    assert main(["--zoo", str(zoo), "--out", str(out), "--timesteps", str(POLICY_TIMESTEPS), "--seed", "3",
                 "--eval-drives", "4", "--no-progress"]) == 0
    return zoo, out, json.loads(out.with_suffix(".json").read_text())


#: PPO steps of the test policy: a tiny budget (~20 s on 2 cores)
POLICY_TIMESTEPS = 3000


@pytest.mark.slow  # the module's PPO training (~30 s on 2 cores)
def test_trained_policy_beats_a_bad_fixed_level_on_held_out_drives(trained: tuple[Path, Path, dict]) -> None:
    """On held-out drives the policy beats always-s90 by far and stays below the oracle; the sidecar
    holds the comparison of every fixed level."""
    _, out, side = trained
    res = side["held_out"]["results"]
    assert set(res) == {"policy", "fixed:dense", "fixed:s75", "fixed:s90", "oracle"}
    assert all(d >= 10_000_000 for d in side["held_out"]["drives"])
    assert res["policy"]["streaming_score"] > res["fixed:s90"]["streaming_score"] + 0.1, res
    assert res["policy"]["streaming_score"] <= res["oracle"]["streaming_score"] + 1e-9, res
    # dense drops frames under load: the simulator sees it
    assert res["fixed:dense"]["dropped_fraction"] > res["fixed:s75"]["dropped_fraction"]
    assert side["obs_version"] == 2 and side["frame_budget_ms"] == pytest.approx(50.0)
    # the reward states its measured staleness curve and the oracle's definition
    from pruning_tools.train.drive_sim import KITTI_STALENESS

    assert side["reward"]["staleness"]["curve_ms"] == [list(x) for x in KITTI_STALENESS]
    assert "real KITTI tracking" in side["reward"]["staleness"]["source"] and "hindsight" in side["reward"]["oracle"]
    assert side["budget"]["text"].startswith("2 camera(s) at 10 Hz")
    pol = SparsityPolicy.load(out)
    assert pol.decide(Condition.from_key("day_clear"), "dense", Load(40.0, 0.0, 0.0)) in pol.levels


@pytest.mark.slow  # the module's PPO training (~30 s on 2 cores)
def test_policy_file_of_old_observation_version_is_refused(trained: tuple[Path, Path, dict], tmp_path: Path) -> None:
    _, out, side = trained
    copy = tmp_path / "policy.zip"
    copy.write_bytes(out.read_bytes())
    old = dict(side)
    old.pop("obs_version")
    copy.with_suffix(".json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match="observation version 1.*retrain"):
        SparsityPolicy.load(copy)


@pytest.mark.slow  # the module's PPO training (~30 s on 2 cores)
def test_policy_file_is_sha256_checked(trained: tuple[Path, Path, dict], tmp_path: Path) -> None:
    _, out, _ = trained
    copy = tmp_path / "policy.zip"
    copy.write_bytes(out.read_bytes() + b"x")
    copy.with_suffix(".json").write_text(out.with_suffix(".json").read_text())
    with pytest.raises(ValueError, match="sha256"):
        SparsityPolicy.load(copy)


def test_frame_stats_feed_the_load() -> None:
    """The node's live figures give the observation's load: drops from sequence gaps, late from latency."""
    st = FrameStats()
    for seq in (1, 2, 5, 6):  # 3 and 4 overwritten
        st.on_received("cam", seq)
        st.on_processed(latency_ms=120.0 if seq == 6 else 30.0, inference_ms=25.0)
    measured = st.load(period_ms=100.0)
    assert measured.pop("frames") == 4
    load = Load(**measured)
    assert load.inference_ms == pytest.approx(25.0)
    assert load.drop_fraction == pytest.approx(2 / 6) and load.late_fraction == pytest.approx(0.25)


def test_frame_stats_load_starts_over_at_a_swap() -> None:
    """After mark_level (a swap) the load is the new level's frames only, at most ``recent`` of them."""
    st = FrameStats()
    for seq in range(1, 13):
        st.on_received("cam", seq if seq != 5 else 6)  # one gap before the swap
        st.on_processed(latency_ms=150.0, inference_ms=90.0)  # a slow level, late
    assert st.load(100.0, recent=10)["frames"] == 10
    st.mark_level()
    assert st.load(100.0) == {"inference_ms": 0.0, "drop_fraction": 0.0, "late_fraction": 0.0, "frames": 0}
    for seq in (20, 21):
        st.on_received("cam", seq)
        st.on_processed(latency_ms=40.0, inference_ms=30.0)
    assert st.load(100.0) == {"inference_ms": 30.0, "drop_fraction": pytest.approx(7 / 9),
                              "late_fraction": 0.0, "frames": 2}  # 13..19 overwritten before frame 20


def test_controller_hysteresis_cooldown(tmp_path: Path) -> None:
    p = tmp_path / "table.json"
    p.write_text(json.dumps({"kind": "score_table", "levels": ["dense", "s75"],
                             "scores": {"day_clear": {"dense": 0.1, "s75": 0.9}, "night_fog": {"dense": 0.9, "s75": 0.1}}}))
    ctl = PolicyController(SparsityPolicy.load(p), hysteresis=3, cooldown_s=10.0, current="dense")
    day, night = Condition.from_key("day_clear"), Condition.from_key("night_fog")
    # two agreeing decisions are not enough; a flip resets the count
    assert [ctl.update(c, t) for t, c in enumerate([day, day, night, day, day])] == [None] * 5
    assert ctl.update(day, 5.0) == "s75"
    # cooldown: 3 agreeing updates for dense, but only 10 s after the last switch
    assert [ctl.update(night, t) for t in (6.0, 7.0, 8.0, 14.0)] == [None] * 4
    assert ctl.update(night, 15.5) == "dense"
    ctl.manual()
    assert all(ctl.update(day, 100.0 + t) is None for t in range(5))
    ctl.auto()
    assert [ctl.update(day, 200.0 + t) for t in range(3)] == [None, None, "s75"]


def test_non_finite_condition_values_reach_the_ppo_policy_as_unknown(trained: tuple[Path, Path, dict]) -> None:
    """Issue 24 item 6: NaN/inf in DrivingCondition fields made PPO raise ('invalid values' in its logits)."""
    _, out, _ = trained
    ctl = PolicyController(SparsityPolicy.load(out), hysteresis=1, cooldown_s=0.0, current="dense")
    nan, inf = float("nan"), float("inf")
    for t, values in enumerate([{"visibility_m": nan}, {"ego_speed_mps": nan, "ambient_light": inf},
                                {"scene_density": -inf}]):
        ctl.update(Condition.from_key("day_clear", **values), float(t))  # must not raise
