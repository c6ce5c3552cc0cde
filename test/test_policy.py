"""Policy env checks, a short PPO training, loading with sha256, controller hysteresis/cooldown."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from runtime_models import tiny_zoo  # noqa: E402

from sparse_perception.conditions import Condition  # noqa: E402
from sparse_perception.policy import PolicyController, SparsityPolicy  # noqa: E402


def _measured_zoo(root: Path) -> Path:
    m = tiny_zoo(root, {"dense": (0.0, 4), "s75": (0.75, 2)})
    data = json.loads(m.read_text())
    for art, (mp, lat) in zip(data["artifacts"], ((0.5, 40.0), (0.4, 10.0))):
        art["map50_95"], art["map50"] = mp, mp + 0.2
        art["latency_ms"] = {"median": lat, "p95": lat, "backend": "onnxruntime", "device": "cpu", "threads": 2}
        art["map_by_condition"] = {"night_fog": {"map50_95": mp * (1.6 if art["level"] == "dense" else 0.5),
                                                 "map50": None}}
    m.write_text(json.dumps(data))
    return m


def test_env_checks(tmp_path: Path) -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check

    from pruning_tools.policy_train import DriveEnv, level_table

    table = level_table(_measured_zoo(tmp_path))
    assert "dense:day_clear" in table.fallbacks and "dense:night_fog" not in table.fallbacks
    env = DriveEnv(table, 30.0)
    check_env(env, skip_render_check=True)
    sb3_check(DriveEnv(table, 30.0))
    fast = Condition.from_key("day_clear", ego_speed_mps=30.0)
    assert env.budget_for(fast) == pytest.approx(15.0)
    assert env.reward_for(fast, 0, 0) < env.reward_for(fast, 1, 1)


def test_train_load_decide(tmp_path: Path) -> None:
    from pruning_tools.policy_train import main

    zoo = _measured_zoo(tmp_path / "zoo")
    out = tmp_path / "pol" / "policy.zip"
    assert main(["--zoo", str(zoo), "--out", str(out), "--timesteps", "512", "--latency-budget-ms", "30"]) == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["levels"] == ["dense", "s75"] and set(side["mean_reward_per_step"]) == {
        "ppo", "always_dense", "always_sparsest", "oracle"}
    assert side["mean_reward_per_step"]["oracle"] >= side["mean_reward_per_step"]["always_dense"]
    pol = SparsityPolicy.load(out)
    assert pol.decide(Condition.from_key("night_fog"), "dense") in ("dense", "s75")
    out.write_bytes(out.read_bytes() + b"x")
    with pytest.raises(ValueError, match="sha256"):
        SparsityPolicy.load(out)


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
