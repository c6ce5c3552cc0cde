"""Run-time sparsity policy: the trained PPO agent (or a score table) plus a flap-free controller.

``pruning-tools train-policy`` writes ``<out>.zip`` (stable-baselines3 PPO) and a JSON sidecar
``<out>.json``::

    {"kind": "ppo", "obs_version": 2, "zip": "policy.zip", "sha256": "<zip sha256>", "levels": ["dense", ...],
     "frame_budget_ms": 50.0, ...
     "sparsity": {"dense": 0.0, ...}, "condition_keys": [...], "budget": {...}, "held_out": {...},
     "obs_layout": [...], "norm": {"visibility_m": 1000.0, "ego_speed_mps": 30.0}, "baselines": {...}}

A score-table file ``{"kind": "score_table", "levels": [...], "scores": {key: {level: score}}}``
is accepted too (hand-written policies, tests). The observation is :func:`observation`
(version :data:`OBS_VERSION`): the condition and the node's measured load (:class:`Load`, from
:meth:`sparse_perception.runtime.frame_stats.FrameStats.load`). A PPO file of another observation
version is refused (retrain it with ``pruning-tools train-policy``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparse_perception.runtime.conditions import CONDITION_KEYS, Condition
from sparse_perception.runtime.zoo import sha256_file

__all__ = ["Load", "OBS_VERSION", "PolicyController", "SparsityPolicy", "observation", "VIS_NORM_M",
           "SPEED_NORM_MPS"]

VIS_NORM_M = 1000.0
SPEED_NORM_MPS = 30.0
#: observation layout version written by ``train-policy`` and required by :meth:`SparsityPolicy.load`
#: (1: condition + level; 2: + measured load)
OBS_VERSION = 2


@dataclass(frozen=True)
class Load:
    """The node's measured load over a recent window.

    :param inference_ms: mean inference time of the recent frames (ms; 0 = none yet).
    :param drop_fraction: share of the recent frames dropped (overwritten in the queue).
    :param late_fraction: share of the recent processed frames answered later than one frame period.
    """

    inference_ms: float = 0.0
    drop_fraction: float = 0.0
    late_fraction: float = 0.0


def _unit(v: float, norm: float) -> float:
    """Normalise a continuous value to [0, 1]; unknown (negative or non-finite) -> 0.5."""
    return 0.5 if v is None or not math.isfinite(v) or v < 0 else float(min(v / norm, 1.0))


def observation(condition: Condition, level_index: int, n_levels: int, load: Load | None = None,
                frame_budget_ms: float = 100.0, keys: Sequence[str] = CONDITION_KEYS) -> np.ndarray:
    """Observation vector (version 2): condition one-hot, (visibility, light, speed, density) in [0,1],
    level one-hot, then the load: inference time / ``frame_budget_ms`` (clipped at 2, halved), drop
    and late fractions."""
    load = load or Load()
    obs = np.zeros(len(keys) + 4 + n_levels + 3, np.float32)
    if condition.key in keys:
        obs[list(keys).index(condition.key)] = 1.0
    k = len(keys)
    obs[k:k + 4] = [_unit(condition.visibility_m, VIS_NORM_M), _unit(condition.ambient_light, 1.0),
                    _unit(condition.ego_speed_mps, SPEED_NORM_MPS), _unit(condition.scene_density, 1.0)]
    obs[k + 4 + int(level_index)] = 1.0
    obs[k + 4 + n_levels:] = [min(max(load.inference_ms, 0.0) / frame_budget_ms, 2.0) / 2.0,
                              min(max(load.drop_fraction, 0.0), 1.0), min(max(load.late_fraction, 0.0), 1.0)]
    return obs


class SparsityPolicy:
    """A loaded policy: :meth:`decide` maps a driving condition to a level name."""

    def __init__(self, levels: Sequence[str], kind: str, model: Any = None,
                 scores: dict[str, dict[str, float]] | None = None, meta: dict[str, Any] | None = None) -> None:
        if not levels:
            raise ValueError("policy has no levels")
        self.levels = [str(lv) for lv in levels]
        self.kind = kind
        self.model = model
        self.scores = scores or {}
        self.meta = dict(meta or {})
        self.condition_keys = tuple(self.meta.get("condition_keys", CONDITION_KEYS))

    @classmethod
    def load(cls, path: str | Path) -> "SparsityPolicy":
        """Load a sidecar JSON (``.json``; a ``.zip`` path finds its sidecar) and verify the zip's sha256.

        :raises ValueError: unusable file or sha256 mismatch (names the file).
        """
        path = Path(path)
        if path.suffix == ".zip":
            path = path.with_suffix(".json")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable policy file: {exc}") from exc
        kind = data.get("kind") if isinstance(data, dict) else None
        if kind == "score_table":
            levels = data.get("levels") or []
            scores = {k: {lv: float(v) for lv, v in row.items()} for k, row in (data.get("scores") or {}).items()}
            for key, row in scores.items():
                unknown = sorted(set(row) - set(levels))
                if unknown:
                    raise ValueError(f"{path}: scores[{key!r}] names unknown levels {unknown}")
            return cls(levels, "score_table", scores=scores, meta=data)
        if kind != "ppo":
            raise ValueError(f"{path}: kind must be 'ppo' or 'score_table', got {kind!r}")
        if data.get("obs_version") != OBS_VERSION:
            raise ValueError(f"{path}: policy observation version {data.get('obs_version', 1)!r}, this node needs "
                             f"{OBS_VERSION} (condition + measured load): retrain it with pruning-tools train-policy")
        for f in ("zip", "sha256", "levels"):
            if f not in data:
                raise ValueError(f"{path}: missing field {f!r}")
        zp = (path.parent / data["zip"]).resolve()
        if not zp.is_file():
            raise ValueError(f"{path}: policy zip {zp} not found")
        digest = sha256_file(zp)
        if digest != data["sha256"]:
            raise ValueError(f"{zp}: sha256 {digest} does not match {path} ({data['sha256']})")
        from stable_baselines3 import PPO

        model = PPO.load(str(zp), device="cpu")
        return cls(data["levels"], "ppo", model=model, meta=data)

    def decide(self, condition: Condition, current_level: str | None = None, load: Load | None = None) -> str:
        """The level the policy wants under ``condition`` and ``load`` (``current_level`` feeds the observation)."""
        if self.kind == "score_table":
            row = self.scores.get(condition.key)
            if not row:
                return current_level if current_level in self.levels else self.levels[0]
            return max(row, key=lambda lv: row[lv])
        idx = self.levels.index(current_level) if current_level in self.levels else 0
        obs = observation(condition, idx, len(self.levels), load, float(self.meta.get("frame_budget_ms", 100.0)),
                          self.condition_keys)
        action, _ = self.model.predict(obs, deterministic=True)
        return self.levels[int(action)]


class PolicyController:
    """Turns per-update policy decisions into rare switch proposals.

    A switch is proposed only when the policy named the same new level on ``hysteresis``
    consecutive updates and ``cooldown_s`` seconds passed since the last switch. Values of
    ``hysteresis`` below 1 count as 1 (switch on the first decision).
    In ``manual`` mode :meth:`update` proposes nothing.
    """

    def __init__(self, policy: SparsityPolicy, hysteresis: float = 3, cooldown_s: float = 2.0,
                 current: str | None = None) -> None:
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must be >= 0, got {cooldown_s}")
        self.policy = policy
        self.needed = max(1, int(round(hysteresis))) if hysteresis >= 1 else 1
        self.cooldown_s = float(cooldown_s)
        self.current = current
        self.mode = "auto"
        self._candidate: str | None = None
        self._count = 0
        self._last_switch = -float("inf")

    def manual(self) -> None:
        """Stop proposing switches (a manual set_sparsity call)."""
        self.mode = "manual"
        self._candidate, self._count = None, 0

    def auto(self, current: str | None = None) -> None:
        """Resume proposals; ``current`` is the active level now."""
        self.mode = "auto"
        if current is not None:
            self.current = current
        self._candidate, self._count = None, 0

    def update(self, condition: Condition, now: float, load: Load | None = None) -> str | None:
        """Feed one condition and the node's load; :return: the level to switch to, or None."""
        if self.mode != "auto":
            return None
        want = self.policy.decide(condition, self.current, load)
        if want == self.current:
            self._candidate, self._count = None, 0
            return None
        if want == self._candidate:
            self._count += 1
        else:
            self._candidate, self._count = want, 1
        if self._count < self.needed or now - self._last_switch < self.cooldown_s:
            return None
        self.current, self._last_switch = want, now
        self._candidate, self._count = None, 0
        return want
