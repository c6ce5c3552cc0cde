"""``pruning-tools train-policy``: PPO agent choosing the sparsity level from the condition and the node's load.

The environment (:class:`DriveEnv`) simulates drives under a stated compute budget
(:mod:`pruning_tools.train.drive_sim`): ``cameras`` cameras at ``rate_hz`` share the node's inference
server, each behind a keep-newest queue; a competing process slows every inference by a load factor
that changes in segments (``loads``); driving conditions change in segments too. Each step (one
``window_s`` decision window) the agent picks a level; the reward is the window's streaming
accuracy — every camera instant scored with the latest output available then (Li, Wang, Ramanan,
ECCV 2020), i.e. the per-condition mAP50-95 of the level that produced it x the accuracy a box keeps
that stale (measured on the real KITTI tracking drive: :data:`~pruning_tools.train.drive_sim.KITTI_STALENESS`),
0 before any output — minus ``switch_cost`` when the level changes. Dropped and late frames cost
through staleness. Observation (:func:`sparse_perception.runtime.policy.observation`, version 2):
the condition and the measured load of the previous window (mean inference ms, drop and late
fractions) — the figures the node's :class:`~sparse_perception.runtime.frame_stats.FrameStats` gives live.

Figures come from the zoo manifest: per-condition mAP50-95 per level (a condition without one
falls back to the level's overall mAP, reported in ``fallbacks``) and latencies timed *interleaved*
(the export ladder's ``latency_ms`` with ``interleaved: true``, or dense median / ``speedup_vs_dense``),
or a ``--latency-json`` of the node's own live figures; one-after-another probes are refused.
Training drives and the evaluation's held-out drives come from disjoint drive-id ranges.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from pruning_tools.train.drive_sim import (KITTI_STALENESS, STALENESS_SOURCE, ServerState, lognormal_sigma,
                                          simulate_window)
from sparse_perception.runtime.conditions import CONDITION_KEYS, Condition
from sparse_perception.runtime.policy import OBS_VERSION, SPEED_NORM_MPS, VIS_NORM_M, Load, observation
from sparse_perception.runtime.zoo import load_manifest, sha256_file
from pruning_tools.data.files import strict_dumps

__all__ = ["DriveEnv", "LevelTable", "Budget", "evaluate_modes", "level_table", "main", "train_policy",
           "TRAIN_DRIVES", "TEST_DRIVES", "gap_closed", "plot_comparison", "standard_choosers",
           "trace_drive"]

_VIS = {"clear": (800.0, 1000.0), "rain": (200.0, 600.0), "fog": (30.0, 200.0)}
_LIGHT = {"day": (0.7, 1.0), "dusk": (0.3, 0.6), "night": (0.0, 0.25)}
#: drive ids: training draws from [0, 1e6), held-out evaluation from [1e7, 1e7 + 1e6)
TRAIN_DRIVES = 0
TEST_DRIVES = 10_000_000


@dataclass(frozen=True)
class LevelTable:
    """Per level: sparsity, latency median/p95 (ms, interleaved) and mAP50-95 per condition key."""

    levels: tuple[str, ...]
    sparsity: tuple[float, ...]
    latency_ms: tuple[float, ...]
    latency_p95_ms: tuple[float, ...]
    map_by_condition: tuple[dict[str, float], ...]
    fallbacks: tuple[str, ...]
    latency_source: str = "interleaved"


@dataclass(frozen=True)
class Budget:
    """The stated compute budget: cameras x rate on the node, a competing process's slow-down factors."""

    cameras: int = 2
    rate_hz: float = 10.0
    loads: tuple[float, ...] = (1.0, 1.6, 2.4)

    @property
    def frame_budget_ms(self) -> float:
        """Inference time per frame that keeps up with every camera."""
        return 1000.0 / (self.rate_hz * self.cameras)

    def describe(self) -> str:
        return (f"{self.cameras} camera(s) at {self.rate_hz:g} Hz on one inference server, a competing process "
                f"slowing inference x{' / x'.join(f'{x:g}' for x in self.loads)} in segments")


def level_table(manifest_path: str | Path, backend: str = "onnxruntime",
                latency_json: str | Path | None = None) -> LevelTable:
    """Read levels, interleaved latencies and per-condition mAP from a zoo manifest.

    :param latency_json: ``{level: {"median": ms, "p95": ms}}`` (the node's live figures or a
        ``train.measure.round_robin`` run) replacing the manifest's latencies.
    :raises ValueError: a level without mAP, or without an interleaved latency (names the level).
    """
    m = load_manifest(manifest_path)
    levels = m.levels(backend) or m.levels()
    override = json.loads(Path(latency_json).read_text()) if latency_json else None
    arts = [m.select(lv, backend) if lv in m.levels(backend) else next(a for a in m.artifacts if a.level == lv)
            for lv in levels]
    dense_med = next(((a.latency_ms or {}).get("median") for a in arts
                      if a.sparsity == min(x.sparsity for x in arts)), None)
    sp, lat, p95, maps, fb = [], [], [], [], []
    for lv, art in zip(levels, arts):
        overall = art.raw.get("map50_95")
        if overall is None:
            raise ValueError(f"{m.path}: level {lv!r} lacks a measured map50_95")
        lm = dict(art.latency_ms or {})
        if override is not None:
            if lv not in override or "median" not in override[lv]:
                raise ValueError(f"{latency_json}: no median latency for level {lv!r}")
            med, hi = float(override[lv]["median"]), override[lv].get("p95")
        elif lm.get("interleaved") and lm.get("median") is not None:
            med, hi = float(lm["median"]), lm.get("p95")
        elif art.speedup_vs_dense and dense_med:
            med, hi = float(dense_med) / float(art.speedup_vs_dense), None
        else:
            raise ValueError(f"{m.path}: level {lv!r} has no interleaved latency (latency_ms.interleaved or "
                             f"speedup_vs_dense): one-after-another probes mislead the policy; re-run the export "
                             f"ladder or pass --latency-json with the node's live figures")
        row = {}
        for key in CONDITION_KEYS:
            v = (art.map_by_condition.get(key) or {}).get("map50_95")
            if v is None:
                fb.append(f"{lv}:{key}")
                v = overall
            row[key] = float(v)
        sp.append(float(art.sparsity))
        lat.append(med)
        p95.append(float(hi) if hi else med)
        maps.append(row)
    return LevelTable(tuple(levels), tuple(sp), tuple(lat), tuple(p95), tuple(maps), tuple(fb),
                      "latency-json" if override is not None else "interleaved")


class DriveEnv(gym.Env):
    """Streaming drives under a compute budget; the agent picks a level per decision window."""

    metadata = {"render_modes": []}

    def __init__(self, table: LevelTable, budget: Budget = Budget(), episode_len: int = 60,
                 window_s: float = 1.0, segment_len: tuple[int, int] = (6, 20),
                 load_segment_len: tuple[int, int] = (4, 15), switch_cost: float = 0.005,
                 drives: int = TRAIN_DRIVES, shaped: float = 0.0) -> None:
        """:param shaped: > 0: step rewards are ``shaped x (reward - the most accurate level's score in the
        same window)`` (training); 0: the plain reward (evaluation)."""
        super().__init__()
        if budget.cameras < 1 or budget.rate_hz <= 0 or not budget.loads or min(budget.loads) <= 0:
            raise ValueError(f"budget needs cameras >= 1, rate_hz > 0 and loads > 0, got {budget}")
        self.t = table
        self.budget = budget
        self.n = len(table.levels)
        self.episode_len = int(episode_len)
        self.window_s = float(window_s)
        self.segment_len = segment_len
        self.load_segment_len = load_segment_len
        self.switch_cost = float(switch_cost)
        self.drives = int(drives)
        self.shaped = float(shaped)
        overall = [float(np.mean(list(row.values()))) for row in table.map_by_condition]
        self._ref = int(np.argmax(overall))
        self.lat = np.asarray(table.latency_ms, np.float64)
        self.sigma = np.asarray([lognormal_sigma(m, p) for m, p in zip(table.latency_ms, table.latency_p95_ms)])
        self.acc = {k: np.asarray([row[k] for row in table.map_by_condition]) for k in CONDITION_KEYS}
        self.observation_space = gym.spaces.Box(0.0, 1.0, (len(CONDITION_KEYS) + 4 + self.n + 3,), np.float32)
        self.action_space = gym.spaces.Discrete(self.n)
        self.drive_id = -1
        self._level = 0
        self._step = 0
        self._load = Load()
        self._state = ServerState()
        self._conds: list[Condition] = []
        self._loads: list[float] = []
        self.last: Any = None

    def _drive(self, drive_id: int) -> tuple[list[Condition], list[float]]:
        rng = np.random.default_rng(drive_id)
        conds: list[Condition] = []
        while len(conds) < self.episode_len:
            key = CONDITION_KEYS[int(rng.integers(len(CONDITION_KEYS)))]
            ill, wea = key.split("_")
            c = Condition.from_key(key, visibility_m=float(rng.uniform(*_VIS[wea])),
                                   ambient_light=float(rng.uniform(*_LIGHT[ill])),
                                   ego_speed_mps=float(rng.uniform(0.0, SPEED_NORM_MPS)),
                                   scene_density=float(rng.uniform(0.0, 1.0)))
            conds += [c] * int(rng.integers(*self.segment_len))
        loads: list[float] = []
        while len(loads) < self.episode_len:
            loads += [float(self.budget.loads[int(rng.integers(len(self.budget.loads)))])] * int(
                rng.integers(*self.load_segment_len))
        return conds[:self.episode_len], loads[:self.episode_len]

    @property
    def condition(self) -> Condition:
        return self._conds[min(self._step, self.episode_len - 1)]

    def _obs(self) -> np.ndarray:
        return observation(self.condition, self._level, self.n, self._load, self.budget.frame_budget_ms)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if options and "drive_id" in options:
            self.drive_id = int(options["drive_id"])
        else:
            self.drive_id = self.drives + int(self.np_random.integers(1_000_000))
        self._conds, self._loads = self._drive(self.drive_id)
        self._level, self._step, self._load, self._state = 0, 0, Load(), ServerState()
        return self._obs(), {"drive_id": self.drive_id}

    def simulate(self, level: int, state: ServerState | None = None, step: int | None = None) -> Any:
        """Window ``step`` (default: the current one) under ``level`` from ``state`` (default: the env's own,
        advanced in place). The service-time draws depend on (drive, step) only, so replays are exact."""
        st = self._state if state is None else state
        k = self._step if step is None else int(step)
        cond = self._conds[k]
        rng = np.random.default_rng((self.drive_id, k))
        return simulate_window(st, k * self.window_s, self.window_s, level, self.lat, self.sigma,
                               self.acc[cond.key], self._loads[k], self.budget.rate_hz, self.budget.cameras, rng)

    def reward_of(self, level: int, result: Any, previous: int | None = None) -> float:
        """The window's streaming score minus the switch cost (what the comparison reports)."""
        prev = self._level if previous is None else previous
        return float(result.score - (self.switch_cost if level != prev else 0.0))

    def segments(self) -> list[tuple[int, int]]:
        """``[start, end)`` windows of the current drive over which condition and competing load stay constant."""
        out, start = [], 0
        for k in range(1, self.episode_len + 1):
            if k == self.episode_len or self._conds[k] != self._conds[start] or self._loads[k] != self._loads[start]:
                out.append((start, k))
                start = k
        return out

    def oracle_plan(self) -> list[int]:
        """The oracle: per segment (constant condition and load), the best fixed level under hindsight — every
        level is replayed over the whole segment from the queue state the plan reached, the one with the highest
        summed reward (switch cost included) kept. Call right after :meth:`reset`."""
        state, prev, plan = self._state.copy(), self._level, []
        for a, b in self.segments():
            best = None
            for lv in range(self.n):
                st, total, p = state.copy(), 0.0, prev
                for k in range(a, b):
                    total += self.reward_of(lv, self.simulate(lv, st, k), p)
                    p = lv
                if best is None or total > best[0] + 1e-12:
                    best = (total, lv, st)
            plan += [best[1]] * (b - a)
            state, prev = best[2], best[1]
        return plan

    def oracle_action(self) -> int:
        """The oracle's level for the current window (:meth:`oracle_plan`, computed once per drive)."""
        if getattr(self, "_plan_for", None) != (self.drive_id, id(self._conds)):
            self._plan = self.oracle_plan() if self._step == 0 else None
            self._plan_for = (self.drive_id, id(self._conds))
        if self._plan is None:
            raise RuntimeError("oracle_action must be called from the start of a drive")
        return int(self._plan[self._step])

    def greedy_action(self) -> int:
        """Best level of this window alone knowing its condition and load (a myopic oracle, for reference)."""
        return int(np.argmax([self.reward_of(a, self.simulate(a, self._state.copy())) for a in range(self.n)]))

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = int(action)
        if not 0 <= a < self.n:
            raise ValueError(f"action {a} outside [0, {self.n})")
        # the learning signal: the gain over the most accurate level replayed from the same queue state and
        # draws (a counterfactual baseline: the condition's own accuracy, which no action changes, cancels)
        base = self.simulate(self._ref, self._state.copy()).score if self.shaped else 0.0
        res = self.simulate(a)
        r = self.reward_of(a, res)
        info = {"score": res.score, "reward": r}
        if self.shaped:
            r = self.shaped * (r - base)
        self.last = res
        self._load = Load(res.mean_service_ms, res.dropped / res.arrived if res.arrived else 0.0,
                          res.late / res.processed if res.processed else 0.0)
        self._level = a
        self._step += 1
        return self._obs(), r, False, self._step >= self.episode_len, info


def evaluate_modes(env: DriveEnv, choosers: dict[str, Callable[[DriveEnv, np.ndarray], int]],
                   drive_ids: Sequence[int]) -> dict[str, dict[str, float]]:
    """Per mode over ``drive_ids``: streaming accuracy (mean instant score), reward per step, answered /
    dropped fractions, mean staleness and level switches."""
    out = {}
    for name, choose in choosers.items():
        score = reward = stale = 0.0
        inst = ans = arr = drop = switches = steps = 0
        for d in drive_ids:
            obs, _ = env.reset(options={"drive_id": int(d)})
            done, prev = False, 0
            while not done:
                a = int(choose(env, obs))
                switches += a != prev
                prev = a
                obs, _, term, trunc, info = env.step(a)
                res = env.last
                reward += info["reward"]
                score += res.score * res.instants
                stale += res.mean_staleness_ms * res.answered_instants
                inst, ans = inst + res.instants, ans + res.answered_instants
                arr, drop, steps = arr + res.arrived, drop + res.dropped, steps + 1
                done = term or trunc
        out[name] = {"streaming_score": score / max(inst, 1), "reward_per_step": reward / max(steps, 1),
                     "answered_fraction": ans / max(inst, 1), "dropped_fraction": drop / max(arr, 1),
                     "mean_staleness_ms": stale / max(ans, 1), "switches_per_drive": switches / len(drive_ids)}
    return out


def trace_drive(env: DriveEnv, choose: Callable[[DriveEnv, np.ndarray], int], drive_id: int) -> list[dict[str, Any]]:
    """One drive step by step: ``{"t_s", "condition", "load", "level", "score", "dropped"}`` per window."""
    obs, _ = env.reset(options={"drive_id": int(drive_id)})
    rows, done = [], False
    while not done:
        cond, load = env.condition.key, env._loads[env._step]
        a = int(choose(env, obs))
        obs, _, term, trunc, _ = env.step(a)
        rows.append({"t_s": (env._step - 1) * env.window_s, "condition": cond, "load": load,
                     "level": env.t.levels[a], "score": env.last.score, "dropped": env.last.dropped})
        done = term or trunc
    return rows


def plot_comparison(path: str | Path, results: dict[str, dict[str, float]], trace: list[dict[str, Any]],
                    levels: Sequence[str]) -> Path:
    """PNG: streaming score per mode (held-out drives) and one drive's level over time against its
    condition (shading) and competing load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (a0, a1) = plt.subplots(2, 1, figsize=(10, 7))
    names = list(results)
    a0.bar(names, [results[n]["streaming_score"] for n in names],
           color=["tab:blue" if n == "policy" else "tab:green" if n == "oracle" else "tab:gray" for n in names])
    a0.set_ylabel("streaming score")
    a0.set_title("condition policy vs fixed levels vs oracle (held-out simulated drives)")
    t = [r["t_s"] for r in trace]
    a1.step(t, [list(levels).index(r["level"]) for r in trace], where="post", label="policy level")
    a1.set_yticks(range(len(levels)), list(levels))
    a2 = a1.twinx()
    a2.step(t, [r["load"] for r in trace], where="post", color="tab:red", alpha=0.6, label="competing load")
    a2.set_ylabel("load factor")
    keys = sorted({r["condition"] for r in trace})
    for r in trace:
        a1.axvspan(r["t_s"], r["t_s"] + 1, color=plt.cm.tab10(keys.index(r["condition"]) % 10), alpha=0.15, lw=0)
    a1.set_xlabel("time (s) of one held-out drive; shading = condition: " + ", ".join(keys))
    a1.legend(loc="upper left")
    a2.legend(loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def standard_choosers(env: DriveEnv, model: Any = None) -> dict[str, Callable[[DriveEnv, np.ndarray], int]]:
    """Every fixed level, the oracle and (with ``model``) the PPO policy."""
    ch: dict[str, Callable[[DriveEnv, np.ndarray], int]] = {}
    if model is not None:
        ch["policy"] = lambda e, o: int(model.predict(o, deterministic=True)[0])
    for i, lv in enumerate(env.t.levels):
        ch[f"fixed:{lv}"] = lambda e, o, i=i: i
    ch["oracle"] = lambda e, o: e.oracle_action()
    return ch


def gap_closed(results: dict[str, dict[str, float]], dense: str, key: str = "streaming_score") -> float | None:
    """Share of the always-dense -> oracle gap the policy closes (None without a gap)."""
    gap = results["oracle"][key] - results[f"fixed:{dense}"][key]
    return None if gap <= 1e-9 else (results["policy"][key] - results[f"fixed:{dense}"][key]) / gap


def train_policy(manifest: str | Path, out: str | Path, budget: Budget = Budget(), timesteps: int = 60000,
                 seed: int = 0, backend: str = "onnxruntime", eval_drives: int = 10, progress: bool = True,
                 latency_json: str | Path | None = None) -> dict[str, Any]:
    """Train PPO on :class:`DriveEnv` (training drives) and write ``out`` (.zip) + ``out`` .json sidecar
    with the comparison on held-out drives.

    :return: the sidecar dict.
    """
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    out = Path(out)
    if out.suffix != ".zip":
        out = out.with_suffix(".zip")
    out.parent.mkdir(parents=True, exist_ok=True)
    table = level_table(manifest, backend, latency_json)
    env = DriveEnv(table, budget, drives=TRAIN_DRIVES, shaped=10.0)
    model = PPO("MlpPolicy", env, learning_rate=3e-4, seed=seed, verbose=0, n_steps=240, batch_size=60,
                gamma=0.9, ent_coef=0.01, tensorboard_log=str(out.parent / "tensorboard"), device="cpu")
    model.learn(total_timesteps=int(timesteps), progress_bar=progress)
    tmp = out.with_name(out.name + ".tmp.zip")
    model.save(str(tmp))
    shutil.move(str(tmp), str(out))
    ev = DriveEnv(table, budget, drives=TEST_DRIVES)
    held_out = [TEST_DRIVES + seed * 1000 + i for i in range(eval_drives)]
    results = evaluate_modes(ev, standard_choosers(ev, model), held_out)
    trace = trace_drive(ev, lambda e, o: int(model.predict(o, deterministic=True)[0]), held_out[0])
    png = plot_comparison(out.with_suffix(".png"), results, trace, table.levels)
    dense = table.levels[int(np.argmin(table.sparsity))]
    side = {"kind": "ppo", "obs_version": OBS_VERSION, "zip": out.name, "sha256": sha256_file(out),
            "levels": list(table.levels), "sparsity": dict(zip(table.levels, table.sparsity)),
            "latency_ms": dict(zip(table.levels, table.latency_ms)),
            "latency_p95_ms": dict(zip(table.levels, table.latency_p95_ms)), "latency_source": table.latency_source,
            "condition_keys": list(CONDITION_KEYS),
            "budget": {"cameras": budget.cameras, "rate_hz": budget.rate_hz, "loads": list(budget.loads),
                       "text": budget.describe()},
            "frame_budget_ms": budget.frame_budget_ms, "frame_period_ms": 1000.0 / budget.rate_hz,
            "window_s": env.window_s,
            "obs_layout": [f"cond:{k}" for k in CONDITION_KEYS] + ["visibility", "ambient_light", "ego_speed",
                                                                    "scene_density"]
                          + [f"level:{lv}" for lv in table.levels]
                          + ["load:inference_ms/frame_budget_ms/2", "load:drop_fraction", "load:late_fraction"],
            "norm": {"visibility_m": VIS_NORM_M, "ego_speed_mps": SPEED_NORM_MPS},
            "reward": {"kind": "streaming", "switch_cost": env.switch_cost, "window_s": env.window_s,
                       "staleness": {"source": STALENESS_SOURCE, "curve_ms": [list(x) for x in KITTI_STALENESS]},
                       "oracle": "per segment (constant condition and load) the best fixed level under hindsight"},
            "held_out": {"drives": held_out, "results": results, "gap_closed": gap_closed(results, dense),
                         "trace": trace, "png": png.name},
            "mean_reward_per_step": {k: v["reward_per_step"] for k, v in results.items()},
            "timesteps": int(timesteps), "seed": int(seed), "fallbacks": list(table.fallbacks),
            "manifest": str(Path(manifest).resolve())}
    js = out.with_suffix(".json")
    tmpj = js.with_name(js.name + ".tmp")
    tmpj.write_text(strict_dumps(side, indent=2) + "\n")
    tmpj.replace(js)
    return side


def _loads(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--loads wants comma-separated numbers, got {text!r}") from None
    if not vals or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f"--loads must be > 0, got {text!r}")
    return vals


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="pruning-tools train-policy", description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", required=True, help="engine zoo manifest.json")
    ap.add_argument("--out", required=True, help="output policy .zip (sidecar .json next to it)")
    ap.add_argument("--cameras", type=int, default=2, help="cameras sharing the node (default 2)")
    ap.add_argument("--rate-hz", type=float, default=10.0, help="camera rate (default 10)")
    ap.add_argument("--loads", type=_loads, default=(1.0, 1.6, 2.4),
                    help="competing-process slow-down factors, drawn in segments (default 1,1.6,2.4)")
    ap.add_argument("--latency-json", help="{level: {median, p95}} ms (the node's live figures) instead of the manifest's")
    ap.add_argument("--timesteps", type=int, default=60000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-drives", type=int, default=10, help="held-out drives of the comparison")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.cameras < 1 or args.rate_hz <= 0:
        print("error: --cameras must be >= 1 and --rate-hz > 0", file=sys.stderr)
        return 2
    try:
        side = train_policy(args.zoo, args.out, Budget(args.cameras, args.rate_hz, args.loads), args.timesteps,
                            args.seed, args.backend, args.eval_drives, not args.no_progress, args.latency_json)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if side["fallbacks"]:
        print(f"note: no per-condition mAP for {len(side['fallbacks'])} level/condition pairs; used overall mAP")
    print(json.dumps({k: round(v["streaming_score"], 4) for k, v in side["held_out"]["results"].items()}, indent=2))
    return 0
