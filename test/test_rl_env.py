"""Stage 2: gymnasium env contract (gymnasium + SB3 checkers) and a short seeded PPO search."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.tiny_data import make_yolo_dataset
from pruning_tools import ultralytics_adapter as ua
from pruning_tools.search.agent import AgentConfig, search
from pruning_tools.surgery.channels import PruningSpace
from pruning_tools.search.env import PruningEnv, RewardProxy
from pruning_tools.data.yolo import BatchStream, YoloDataset

IMGSZ = (64, 192)


def _val_score(stream: BatchStream):  # real measurement: negative detection loss on held-out batches
    def score(model: torch.nn.Module) -> float:
        model.train()
        with torch.no_grad():
            loss, _ = ua.detection_loss(model, stream.get(0))
        model.eval()
        ua.reset_criterion(model)
        return float(1.0 / (1.0 + loss.item()))
    return score


@pytest.fixture(scope="module")
def env_parts(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    torch.manual_seed(0)
    data = make_yolo_dataset(tmp_path_factory.mktemp("rl") / "ds", n_train=4, n_val=2, n_test=1, size=IMGSZ)
    model = ua.build_model("yolov5n.yaml").eval()
    space = PruningSpace(model, IMGSZ)
    calib = BatchStream(YoloDataset(data, "train", IMGSZ), batch=2, seed=0, augment=False)
    val = BatchStream(YoloDataset(data, "val", IMGSZ), batch=2, seed=0, augment=False)
    score = _val_score(val)
    proxy = RewardProxy(model, space, calib, score, bn_batches=1)
    return model, space, proxy, score(model)


def test_env_passes_gymnasium_and_sb3_checkers(env_parts: tuple) -> None:
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    _, space, proxy, dense = env_parts
    env = PruningEnv(space, 0.5, proxy, dense)
    gym_check(env, skip_render_check=True)
    sb3_check(env, warn=True)


def test_target_always_met_whatever_the_actions(env_parts: tuple) -> None:
    _, space, proxy, dense = env_parts
    env = PruningEnv(space, 0.75, proxy, dense, max_ratio=0.9)
    for actions in (np.full(env.n, -1.0), np.full(env.n, 1.0), np.random.default_rng(0).uniform(-1, 1, env.n)):
        env.reset()
        info = {}
        for a in actions:
            _, _, term, _, info = env.step(np.array([a], np.float32))
        assert term and info["sparsity"] >= 0.75 - 1e-9
        assert info["sparsity"] == pytest.approx(space.sparsity(info["ratios"]))


def test_short_ppo_search_is_deterministic(env_parts: tuple, tmp_path) -> None:
    _, space, proxy, dense = env_parts
    prior = space.uniform(0.5, 0.9)
    runs = []
    for k in range(2):
        env = PruningEnv(space, 0.5, proxy, dense, max_ratio=0.9)
        cfg = AgentConfig(episodes=2, warmup_episodes=1, episodes_per_update=1, n_epochs=1, seed=3)
        runs.append(search(env, prior, cfg, log_dir=tmp_path / f"tb{k}", progress=False))
    a, b = runs
    assert [h["reward"] for h in a.history] == [h["reward"] for h in b.history]
    np.testing.assert_allclose(a.ratios, b.ratios)
    assert a.sparsity >= 0.5 - 1e-9 and len(a.history) == 4  # prior + 2 PPO + policy rollout
    assert list((tmp_path / "tb0").rglob("events.out.tfevents*"))


def test_bad_env_arguments(env_parts: tuple) -> None:
    _, space, proxy, dense = env_parts
    with pytest.raises(ValueError, match="between 0 and 1"):
        PruningEnv(space, 1.2, proxy, dense)
    with pytest.raises(ValueError, match="unreachable"):
        PruningEnv(space, 0.95, proxy, dense, max_ratio=0.3)


def test_reward_varies_between_episodes_that_meet_the_same_target(env_parts: tuple) -> None:
    """Every episode ends on the target, so the per-step dSparsity terms telescope to one constant
    (lambda_sparsity x target); the FLOPs term (modelled latency) and dmAP differ between episodes."""
    _, space, proxy, dense = env_parts
    shaping, flops = [], []
    for actions in (np.full(len(space), -1.0), np.full(len(space), 1.0)):
        env = PruningEnv(space, 0.75, proxy, dense, lambda_map=0.0, lambda_sparsity=10.0, max_ratio=0.9,
                         lambda_flops=1.0)
        env.reset()
        total = 0.0
        for a in actions:
            _, r, _, _, info = env.step(np.array([a], np.float32))
            total += r
        assert info["dflops_points"] == pytest.approx(100 * (1 - space.flops(info["ratios"]) / space.dense_flops))
        assert total == pytest.approx(10.0 * info["sparsity"] + info["dflops_points"])
        shaping.append(10.0 * info["sparsity"])
        flops.append(info["dflops_points"])
    assert shaping[0] == pytest.approx(shaping[1], abs=0.1)  # the seed's dSparsity term: a constant
    assert abs(flops[0] - flops[1]) > 1.0  # the FLOPs term tells the episodes apart


def test_rewards_are_evaluated_in_batches_with_the_same_results(env_parts: tuple, tmp_path) -> None:
    """Warm-up episodes form one batch, each PPO rollout's episodes another; values as one by one."""
    model, space, proxy, dense = env_parts
    sizes: list[int] = []
    plain = RewardProxy(model, space, proxy.calib, proxy.evaluate, bn_batches=1)

    def batch(vectors: list[list[float]]) -> list[float]:
        sizes.append(len(vectors))
        return [plain(v) for v in vectors]

    batched = RewardProxy(model, space, proxy.calib, proxy.evaluate, bn_batches=1, batch_evaluate=batch)
    cfg = AgentConfig(episodes=2, warmup_episodes=2, episodes_per_update=2, n_epochs=1, imitation_steps=20, seed=5)
    prior = space.uniform(0.5, 0.9)
    runs = [search(PruningEnv(space, 0.5, p, dense, max_ratio=0.9), prior, cfg, progress=False)
            for p in (batched, plain)]  # plain: one by one (its cache holds the batched run's values)
    assert sizes and sizes[0] == 2 and all(s <= 2 for s in sizes[1:]) and len(sizes) >= 2, sizes
    a, b = runs
    assert [h["reward"] for h in a.history] == [h["reward"] for h in b.history]
    # every evaluation but the final deterministic rollout's (not batched) went through the batches
    assert sum(sizes) <= a.proxy_evaluations <= sum(sizes) + 1
    with pytest.raises(RuntimeError, match="returned 0 values"):
        RewardProxy(model, space, proxy.calib, proxy.evaluate, batch_evaluate=lambda v: []).prefetch([prior])


def test_val_loss_score_is_one_for_the_dense_model_and_falls_with_pruning(tmp_path) -> None:
    """The val-loss proxy: L_dense / L on the val images as one batch (batch-statistics BN); the
    dense model scores 1, a pruned copy less, and scoring leaves the model's mode and BN statistics alone."""
    from pruning_tools.search.proxy import ValLoss
    from pruning_tools.surgery.channels import ChannelMasks

    from pruning_tools.data import convert_kitti, generate_dataset
    from pruning_tools.assets import DEFAULT_BASELINE

    generate_dataset(tmp_path / "kitti", frames=6, seed=8, progress=False)
    data = convert_kitti(tmp_path / "kitti", tmp_path / "yolo", split=(0.2, 0.8, 0.0), progress=False)
    sz = (128, 416)
    model = ua.load_checkpoint(DEFAULT_BASELINE)[0].eval()  # trained: pruning it raises the loss
    with pytest.raises(RuntimeError, match="set_reference"):
        ValLoss(data, sz, 4)(model)
    score = ValLoss(data, sz, 4).set_reference(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert score(model) == pytest.approx(1.0, rel=1e-5)
    assert not model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    space = PruningSpace(model, sz, round_to=16)
    import copy

    pruned = ChannelMasks(model, space).apply(copy.deepcopy(model), space.uniform(0.75, 0.9))
    assert 0.0 < score(pruned) < 1.0


def test_history_ratios_reproduce_each_episode_sparsity() -> None:
    """The environment's bounds sit on channel-rounding edges, so a history that rounded its ratios
    (5 decimals did: 0.501 became 0.515 for the shipped baseline) would hand stage 3 another model."""
    from pruning_tools.assets import DEFAULT_BASELINE

    model = ua.load_checkpoint(DEFAULT_BASELINE)[0].eval()
    space = PruningSpace(model, (384, 1248), round_to=16)
    env = PruningEnv(space, 0.5, lambda r: 0.5, 1.0, max_ratio=0.9)
    cfg = AgentConfig(episodes=0, warmup_episodes=12, warmup_noise=0.2, seed=0)
    res = search(env, space.uniform(0.5, 0.9), cfg, progress=False)
    assert len(res.history) == 12
    for h in res.history:
        assert space.sparsity(h["ratios"]) == pytest.approx(h["sparsity"], abs=1e-5)


def test_spread_budget_meets_the_target_without_loading_the_last_layers(env_parts: tuple) -> None:
    """``budget="spread"``: the actions' shares are kept and one rescaling meets the target, so the last
    layers in model order (the detect head) keep the ratio the agent chose for them, relative to the rest."""
    _, space, proxy, dense = env_parts
    with pytest.raises(ValueError, match="budget"):
        PruningEnv(space, 0.5, proxy, dense, budget="greedy")
    clip = PruningEnv(space, 0.75, proxy, dense, max_ratio=0.9)
    spread = PruningEnv(space, 0.75, proxy, dense, max_ratio=0.9, budget="spread")
    # every layer asks for a light, equal ratio: clipping leaves the budget to the last layers, the repair spreads it
    actions = np.full(clip.n, -0.6)
    out = {}
    for name, env in (("clip", clip), ("spread", spread)):
        env.reset()
        for k, a in enumerate(actions):
            if k == env.n - 1:
                final = env.final_ratios(np.array([a], np.float32))
            _, _, term, _, info = env.step(np.array([a], np.float32))
        assert term and abs(info["sparsity"] - 0.75) <= 0.01
        assert np.allclose(final, info["ratios"])  # what a batched caller evaluates is what the episode ends on
        out[name] = info["ratios"]
    tail = slice(clip.n - 6, clip.n)
    assert np.ptp(out["spread"][:-6]) < 0.1  # equal asks stay (nearly) equal after the repair
    assert out["clip"][tail].mean() > out["spread"][tail].mean() + 0.2
    # a vector already on the target (the stage-1 prior) is replayed unchanged
    prior = space.solve(np.linspace(0.2, 1.0, spread.n), 0.75, 0.9)
    assert np.allclose(spread.repair(prior), prior, atol=0.02)
