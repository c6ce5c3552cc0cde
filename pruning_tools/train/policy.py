"""``pruning-tools train-policy``: PPO agent choosing the sparsity level from driving conditions.

The environment (:class:`DriveEnv`) simulates drives: conditions change in segments; each step the
agent picks a level. Dynamics use the zoo manifest's measured per-condition mAP50-95 and latency per
level (a condition without a measured mAP falls back to the level's overall mAP, reported in
``fallbacks``). Reward = mAP50-95 of the chosen level under the condition
- ``latency_penalty`` x relative latency excess over the budget (the budget tightens with ego speed:
``budget x (1 - 0.5 x speed/30 m/s)``) - ``switch_cost`` when the level changes.
Observation: :func:`sparse_perception.runtime.policy.observation`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from sparse_perception.runtime.conditions import CONDITION_KEYS, Condition
from sparse_perception.runtime.policy import SPEED_NORM_MPS, VIS_NORM_M, observation
from sparse_perception.runtime.zoo import load_manifest, sha256_file
from pruning_tools.data.files import strict_dumps

__all__ = ["DriveEnv", "LevelTable", "level_table", "main", "train_policy"]

_VIS = {"clear": (800.0, 1000.0), "rain": (200.0, 600.0), "fog": (30.0, 200.0)}
_LIGHT = {"day": (0.7, 1.0), "dusk": (0.3, 0.6), "night": (0.0, 0.25)}


@dataclass(frozen=True)
class LevelTable:
    """Per level: sparsity, latency (ms) and mAP50-95 per condition key."""

    levels: tuple[str, ...]
    sparsity: tuple[float, ...]
    latency_ms: tuple[float, ...]
    map_by_condition: tuple[dict[str, float], ...]
    fallbacks: tuple[str, ...]


def level_table(manifest_path: str | Path, backend: str = "onnxruntime") -> LevelTable:
    """Read levels, latency and per-condition mAP from a zoo manifest.

    :raises ValueError: a level without mAP or latency (names the level).
    """
    m = load_manifest(manifest_path)
    levels = m.levels(backend) or m.levels()
    sp, lat, maps, fb = [], [], [], []
    for lv in levels:
        art = m.select(lv, backend) if lv in m.levels(backend) else next(a for a in m.artifacts if a.level == lv)
        overall = art.raw.get("map50_95")
        med = (art.latency_ms or {}).get("median")
        if overall is None or med is None:
            raise ValueError(f"{m.path}: level {lv!r} lacks measured map50_95 or latency_ms.median")
        row = {}
        for key in CONDITION_KEYS:
            v = (art.map_by_condition.get(key) or {}).get("map50_95")
            if v is None:
                fb.append(f"{lv}:{key}")
                v = overall
            row[key] = float(v)
        sp.append(float(art.sparsity))
        lat.append(float(med))
        maps.append(row)
    return LevelTable(tuple(levels), tuple(sp), tuple(lat), tuple(maps), tuple(fb))


class DriveEnv(gym.Env):
    """Drives with conditions changing in segments; the agent picks a level per step."""

    metadata = {"render_modes": []}

    def __init__(self, table: LevelTable, latency_budget_ms: float, episode_len: int = 64,
                 segment_len: tuple[int, int] = (8, 24), latency_penalty: float = 0.5,
                 switch_cost: float = 0.01) -> None:
        super().__init__()
        if latency_budget_ms <= 0:
            raise ValueError(f"latency_budget_ms must be > 0, got {latency_budget_ms}")
        self.t = table
        self.n = len(table.levels)
        self.budget = float(latency_budget_ms)
        self.episode_len = int(episode_len)
        self.segment_len = segment_len
        self.latency_penalty = float(latency_penalty)
        self.switch_cost = float(switch_cost)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (len(CONDITION_KEYS) + 4 + self.n,), np.float32)
        self.action_space = gym.spaces.Discrete(self.n)
        self._cond = Condition()
        self._level = 0
        self._step = 0
        self._seg_left = 0

    def _new_condition(self) -> Condition:
        rng = self.np_random
        key = CONDITION_KEYS[int(rng.integers(len(CONDITION_KEYS)))]
        ill, wea = key.split("_")
        return Condition.from_key(key, visibility_m=float(rng.uniform(*_VIS[wea])),
                                  ambient_light=float(rng.uniform(*_LIGHT[ill])),
                                  ego_speed_mps=float(rng.uniform(0.0, SPEED_NORM_MPS)),
                                  scene_density=float(rng.uniform(0.0, 1.0)))

    def _obs(self) -> np.ndarray:
        return observation(self._cond, self._level, self.n)

    def budget_for(self, cond: Condition) -> float:
        """Latency budget under ``cond``: tighter when faster."""
        speed = max(cond.ego_speed_mps, 0.0)
        return self.budget * (1.0 - 0.5 * min(speed / SPEED_NORM_MPS, 1.0))

    def reward_for(self, cond: Condition, level: int, previous: int) -> float:
        """Reward of choosing ``level`` under ``cond`` after ``previous``."""
        acc = self.t.map_by_condition[level][cond.key]
        budget = self.budget_for(cond)
        excess = max(0.0, self.t.latency_ms[level] - budget) / budget
        return float(acc - self.latency_penalty * excess - (self.switch_cost if level != previous else 0.0))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._cond = self._new_condition()
        self._level = 0
        self._step = 0
        self._seg_left = int(self.np_random.integers(*self.segment_len))
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = int(action)
        if not 0 <= a < self.n:
            raise ValueError(f"action {a} outside [0, {self.n})")
        r = self.reward_for(self._cond, a, self._level)
        self._level = a
        self._step += 1
        self._seg_left -= 1
        if self._seg_left <= 0:
            self._cond = self._new_condition()
            self._seg_left = int(self.np_random.integers(*self.segment_len))
        return self._obs(), r, False, self._step >= self.episode_len, {"condition": self._cond.key}


def _evaluate(env: DriveEnv, choose: Any, episodes: int, seed: int) -> float:
    total = []
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        done, ret = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(choose(env, obs))
            ret += r
            done = term or trunc
        total.append(ret / env.episode_len)
    return float(np.mean(total))


def train_policy(manifest: str | Path, out: str | Path, latency_budget_ms: float | None = None,
                 timesteps: int = 20000, seed: int = 0, backend: str = "onnxruntime",
                 eval_episodes: int = 10, progress: bool = True) -> dict[str, Any]:
    """Train PPO on :class:`DriveEnv` and write ``out`` (.zip) + ``out`` .json sidecar.

    :return: the sidecar dict.
    """
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(min(2, torch.get_num_threads()))
    out = Path(out)
    if out.suffix != ".zip":
        out = out.with_suffix(".zip")
    out.parent.mkdir(parents=True, exist_ok=True)
    table = level_table(manifest, backend)
    budget = float(latency_budget_ms) if latency_budget_ms else float(np.median(table.latency_ms))
    env = DriveEnv(table, budget)
    model = PPO("MlpPolicy", env, learning_rate=3e-4, seed=seed, verbose=0, n_steps=256, batch_size=64,
                tensorboard_log=str(out.parent / "tensorboard"), device="cpu")
    model.learn(total_timesteps=int(timesteps), progress_bar=progress)
    tmp = out.with_name(out.name + ".tmp.zip")
    model.save(str(tmp))
    shutil.move(str(tmp), str(out))
    ev = DriveEnv(table, budget)

    def oracle(e: DriveEnv, _obs: np.ndarray) -> int:
        return int(np.argmax([e.reward_for(e._cond, a, e._level) for a in range(e.n)]))

    baselines = {
        "ppo": _evaluate(ev, lambda e, o: int(model.predict(o, deterministic=True)[0]), eval_episodes, seed + 1000),
        "always_dense": _evaluate(ev, lambda e, o: int(np.argmin(table.sparsity)), eval_episodes, seed + 1000),
        "always_sparsest": _evaluate(ev, lambda e, o: int(np.argmax(table.sparsity)), eval_episodes, seed + 1000),
        "oracle": _evaluate(ev, oracle, eval_episodes, seed + 1000),
    }
    side = {"kind": "ppo", "zip": out.name, "sha256": sha256_file(out), "levels": list(table.levels),
            "sparsity": dict(zip(table.levels, table.sparsity)), "latency_ms": dict(zip(table.levels, table.latency_ms)),
            "condition_keys": list(CONDITION_KEYS), "latency_budget_ms": budget,
            "obs_layout": [f"cond:{k}" for k in CONDITION_KEYS] + ["visibility", "ambient_light", "ego_speed",
                                                                    "scene_density"]
                          + [f"level:{lv}" for lv in table.levels],
            "norm": {"visibility_m": VIS_NORM_M, "ego_speed_mps": SPEED_NORM_MPS},
            "reward": {"latency_penalty": env.latency_penalty, "switch_cost": env.switch_cost,
                       "speed_budget": "budget * (1 - 0.5 * min(speed / 30, 1))"},
            "mean_reward_per_step": baselines, "timesteps": int(timesteps), "seed": int(seed),
            "fallbacks": list(table.fallbacks), "manifest": str(Path(manifest).resolve())}
    js = out.with_suffix(".json")
    tmpj = js.with_name(js.name + ".tmp")
    tmpj.write_text(strict_dumps(side, indent=2) + "\n")
    tmpj.replace(js)
    return side


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="pruning-tools train-policy", description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", required=True, help="engine zoo manifest.json")
    ap.add_argument("--out", required=True, help="output policy .zip (sidecar .json next to it)")
    ap.add_argument("--latency-budget-ms", type=float, default=None, help="default: median level latency")
    ap.add_argument("--timesteps", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="onnxruntime")
    args = ap.parse_args(argv)
    side = train_policy(args.zoo, args.out, args.latency_budget_ms, args.timesteps, args.seed, args.backend)
    if side["fallbacks"]:
        print(f"note: no per-condition mAP for {len(side['fallbacks'])} level/condition pairs; used overall mAP")
    print(json.dumps(side["mean_reward_per_step"], indent=2))
    return 0
