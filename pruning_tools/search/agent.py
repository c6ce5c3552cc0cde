"""Stage 2 agent: stable-baselines3 PPO over :class:`pruning_tools.search.env.PruningEnv`.

Search = warm-up episodes (the first replays the stage-1 budgets exactly, the others add Gaussian
noise around them) followed by PPO episodes, ``episodes_per_update`` of them side by side per
rollout; the rewards of the warm-up episodes, and of each rollout's episodes, are evaluated as one
batch (in parallel on local worker processes or Ray workers, see :mod:`pruning_tools.pipeline.local_pool`
and :mod:`pruning_tools.pipeline.ray_executor`); every episode's result
is recorded and the best reward wins (AMC-style), with a final deterministic policy rollout also
considered. One ``seed``
drives numpy, torch, the env and PPO; TensorBoard logs go to ``<log_dir>/ppo_<n>``.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv
from tqdm import tqdm

from pruning_tools.search.env import PruningEnv


@dataclass(frozen=True)
class AgentConfig:
    """PPO search settings.

    :param episodes: PPO episodes (the seed paper: 10,000; quick profile: tens).
    :param warmup_episodes: episodes around the stage-1 prior before PPO.
    :param warmup_noise: std of the Gaussian noise (in ratio units) of warm-up episodes.
    :param learning_rate: PPO learning rate.
    :param episodes_per_update: episodes per PPO rollout.
    :param n_epochs: PPO epochs per update.
    :param gamma: discount.
    :param log_std_init: initial log std of the Gaussian policy (action units, range [-1, 1]).
    :param imitation_steps: Adam steps fitting the initial policy mean to the stage-1 prior
        (behaviour cloning on the prior's trajectory) before PPO; 0 disables it.
    :param seed: seed of everything.
    """

    episodes: int = 20
    warmup_episodes: int = 4
    warmup_noise: float = 0.08
    learning_rate: float = 3e-4
    episodes_per_update: int = 2
    n_epochs: int = 4
    gamma: float = 0.99
    ent_coef: float = 0.0
    log_std_init: float = -1.0
    imitation_steps: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.episodes < 0 or self.warmup_episodes < 0:
            raise ValueError("episodes and warmup_episodes must be >= 0")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.episodes_per_update < 1:
            raise ValueError("episodes_per_update must be >= 1")


@dataclass
class SearchResult:
    """Best per-layer ratios found and the episode history."""

    ratios: np.ndarray
    reward: float
    map: float
    sparsity: float
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    proxy_evaluations: int = 0


class _EpisodeRecorder(BaseCallback):
    def __init__(self, on_episode: Any) -> None:
        super().__init__()
        self.on_episode = on_episode
        self.ep_reward: dict[int, float] = {}

    def _on_step(self) -> bool:
        for i, (r, done) in enumerate(zip(self.locals["rewards"], self.locals["dones"])):
            self.ep_reward[i] = self.ep_reward.get(i, 0.0) + float(r)
            if done:
                info = self.locals["infos"][i]
                self.on_episode("ppo", self.ep_reward[i], info)
                self.logger.record("episode/reward", self.ep_reward[i])
                self.logger.record("episode/map", info.get("map", 0.0))
                self.logger.record("episode/sparsity", info.get("sparsity", 0.0))
                self.ep_reward[i] = 0.0
        return True


class BatchedVecEnv(DummyVecEnv):
    """``DummyVecEnv`` over copies of one :class:`PruningEnv` whose final rewards are evaluated as one batch.

    The episodes of a PPO rollout run in lockstep (fixed length), so before their last step the final
    ratio vectors of all of them are known; they go to the proxy's ``prefetch`` together (evaluated in
    parallel by the proxy's ``batch_evaluate`` — local workers or Ray — or in order without one) and the
    steps then read the cache.
    """

    def __init__(self, envs: list[PruningEnv]) -> None:
        super().__init__([lambda e=e: e for e in envs])
        self.pruning_envs = envs

    def step_wait(self) -> Any:
        prefetch = getattr(self.pruning_envs[0].proxy, "prefetch", None)
        if prefetch is not None:
            finals = [e.final_ratios(a) for e, a in zip(self.pruning_envs, self.actions)]
            if all(f is not None for f in finals):
                prefetch(finals)
        return super().step_wait()


def final_ratios_of(env: PruningEnv, actions: np.ndarray) -> np.ndarray:
    """Ratios an episode of fixed per-layer ``actions`` ends with, without evaluating its reward."""
    env.reset()
    for t in range(env.n - 1):
        env.step(np.array([actions[t]], dtype=np.float32))
    final = env.final_ratios(np.array([actions[env.n - 1]], dtype=np.float32))
    env.reset()
    return final


def run_episode(env: PruningEnv, actions: np.ndarray) -> tuple[float, dict[str, Any]]:
    """Play one episode with fixed per-layer actions (in [-1, 1]); returns (return, final info)."""
    env.reset()
    total, info = 0.0, {}
    for t in range(env.n):
        _, r, term, _, info = env.step(np.array([actions[t]], dtype=np.float32))
        total += r
        if term:
            break
    return total, info


def search(env: PruningEnv, prior: np.ndarray | None, cfg: AgentConfig, log_dir: Path | None = None,
           progress: bool = True, desc: str = "stage 2: PPO") -> SearchResult:
    """Warm-up + PPO search; returns the best episode.

    :param prior: stage-1 ratios (per layer) used by the warm-up episodes (None: uniform).
    """
    set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.monotonic()
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"reward": -np.inf}
    total_eps = cfg.warmup_episodes + cfg.episodes + (1 if cfg.episodes > 0 else 0)
    bar = tqdm(total=total_eps, desc=desc, unit="ep", disable=not progress)

    def record(kind: str, ret: float, info: dict[str, Any]) -> None:
        entry = {"episode": len(history), "kind": kind, "reward": round(float(ret), 4),
                 "map": round(float(info.get("map", 0.0)), 5), "sparsity": round(float(info.get("sparsity", 0.0)), 5)}
        entry["ratios"] = [float(r) for r in info["ratios"]]  # unrounded: bounds sit on channel-rounding edges
        history.append(entry)
        if ret > best["reward"]:
            best.update(reward=float(ret), ratios=np.array(info["ratios"]), map=float(info["map"]),
                        sparsity=float(info["sparsity"]))
        bar.update(1)
        bar.set_postfix(best=f"{best['reward']:.2f}", map=f"{entry['map']:.3f}")

    base = prior if prior is not None else np.full(env.n, env.target)
    warm = [env.ratio_to_action(base if k == 0 else base + rng.normal(0.0, cfg.warmup_noise, env.n))
            for k in range(cfg.warmup_episodes)]
    prefetch = getattr(env.proxy, "prefetch", None)
    if prefetch is not None and len(warm) > 1:  # the warm-up episodes' rewards as one batch
        prefetch([final_ratios_of(env, a) for a in warm])
    for k, actions in enumerate(warm):
        ret, info = run_episode(env, actions)
        record("warmup" if k else "prior", ret, info)

    if cfg.episodes > 0:
        # the episodes of one rollout run side by side, their final rewards evaluated as one batch
        envs = [env] + [copy.copy(env) for _ in range(cfg.episodes_per_update - 1)]
        for k, e in enumerate(envs):
            e.reset(seed=cfg.seed + k)
        env.action_space.seed(cfg.seed)
        vec = BatchedVecEnv(envs)
        n_steps = env.n
        tb = None
        if log_dir is not None:
            try:
                import tensorboard  # noqa: F401

                tb = str(log_dir)
            except ImportError:  # pragma: no cover - tensorboard is in the lock file
                tb = None
        model = PPO("MlpPolicy", vec, learning_rate=cfg.learning_rate, n_steps=n_steps,
                    batch_size=min(n_steps * len(envs), max(8, env.n)), n_epochs=cfg.n_epochs, gamma=cfg.gamma,
                    ent_coef=cfg.ent_coef, seed=cfg.seed, verbose=0, tensorboard_log=tb,
                    policy_kwargs={"net_arch": [64, 64], "log_std_init": cfg.log_std_init}, device="cpu")
        if prior is not None and cfg.imitation_steps > 0:
            imitate(model, env, prior, cfg.imitation_steps)
        model.learn(total_timesteps=cfg.episodes * env.n, callback=_EpisodeRecorder(record), tb_log_name="ppo",
                    progress_bar=False)
        # deterministic rollout of the learned policy
        obs, _ = env.reset()
        ret, info = 0.0, {}
        for _ in range(env.n):
            act, _ = model.predict(obs, deterministic=True)
            obs, r, term, _, info = env.step(act)
            ret += r
            if term:
                break
        record("policy", ret, info)
    bar.close()
    proxy = getattr(env.proxy, "calls", 0)
    return SearchResult(ratios=np.asarray(best["ratios"]), reward=float(best["reward"]), map=float(best["map"]),
                        sparsity=float(best["sparsity"]), history=history, wall_s=round(time.monotonic() - t0, 2),
                        proxy_evaluations=int(proxy))


def imitate(model: PPO, env: PruningEnv, prior: np.ndarray, steps: int) -> float:
    """Fit the policy's mean action to the prior's actions along the prior's trajectory.

    :return: final mean squared error (action units).
    """
    obs_list, acts = [], env.ratio_to_action(prior)
    obs, _ = env.reset()
    for t in range(env.n):
        obs_list.append(obs)
        r = env.ratios.copy()
        env.ratios[t] = float(np.clip(prior[t], *env.bounds(t)))
        env.prev, env.t = float(env.ratios[t]), t + 1
        obs = env._obs()
        del r
    env.reset()
    policy = model.policy
    x = torch.as_tensor(np.stack(obs_list), dtype=torch.float32)
    y = torch.as_tensor(acts, dtype=torch.float32).view(-1, 1)
    params = list(policy.mlp_extractor.policy_net.parameters()) + list(policy.action_net.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    loss = torch.zeros(())
    for _ in range(steps):
        mean = policy.get_distribution(x).distribution.mean
        loss = torch.nn.functional.mse_loss(mean, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def torch_seed(seed: int) -> None:
    """Seed torch/numpy/python (entry points call this once)."""
    set_random_seed(seed)
    torch.use_deterministic_algorithms(False)
