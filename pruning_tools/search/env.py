"""Stage 2 environment: choose one layer's sparsity per step (AMC-style), reward from a cheap mAP proxy.

Episode = one pass over the prunable layers in model order. At step ``t``:

* **observation** (float32 in [0, 1]): ``[t/(L-1), previous action, current sparsity / target,
  dense mAP (seed state), remaining budget fraction, log2(channels)/10, kernel/7, FLOPs share,
  stage-1 importance]``;
* **action**: ``Box(-1, 1, (1,))`` scaled to a layer ratio ``(a + 1) / 2 * max_ratio`` (fraction of the
  layer's channels removed), then clipped so the global target stays reachable — the lower bound is
  the smallest ratio for which pruning every later layer at ``max_ratio`` still meets the target,
  the upper bound the ratio that meets it with every later layer unpruned;
* **reward**: at the last step ``lambda_map * dmAP + lambda_flops * dFLOPs`` with ``dmAP`` = proxy
  mAP of the pruned model minus the dense mAP and ``dFLOPs`` = fraction of the dense convolution
  FLOPs removed (the cost model's, a modelled latency: ONNX Runtime CPU latency follows FLOPs,
  see ``bench/prune_speed.py``), both in points (x100). Both vary between episodes at the same
  parameter sparsity. ``lambda_sparsity * dSparsity`` is paid per step (sparsity gained by this
  action) as shaping only: the clipping below ends every episode exactly on the target, so these
  steps always sum to ``lambda_sparsity * target`` — a constant that carries no signal (the seed's
  ``lambda2 * dSparsity`` term); the shipped configs set it to 0.

``budget="spread"`` replaces the clipping: the actions are taken as they come (no bounds) and the
episode's last step *repairs* the vector — every ratio scaled by one common factor (clipped at
``max_ratio``, :meth:`PruningSpace.solve`) until the target is met — so what the agent chooses is
how the budget is shared between layers, and no layer absorbs what the earlier ones left: with
clipping the episode's last layers in model order (the detect head's stride-32 convs) had to take
whatever remained (docs/pruning.md, medium analysis). Under ``target_metric: latency`` this is
AMC's resource-constrained mode: the budget is the latency the model predicts, and the reward is
the accuracy alone.

The proxy (:class:`RewardProxy`) prunes a deep copy physically, re-estimates BN statistics on a
few training batches, optionally fine-tunes a few batches and measures mAP on a validation slice
held out from the TRAIN split (never the test split). Results are cached by kept-channel vector.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from pruning_tools.surgery.channels import ChannelMasks, PruningSpace, apply_ratios, check_target
from pruning_tools.data.yolo import BatchStream
from pruning_tools.train.loop import recalibrate_bn, train_steps

OBS_DIM = 9
#: how an episode meets its target: per-step clipping, or one rescaling of the whole vector at the end
BUDGETS = ("clip", "spread")


class RewardProxy:
    """mAP of a pruned copy after BN recalibration (+ optional few fine-tune batches).

    :param model: the dense model (never modified).
    :param space: its pruning space.
    :param calib: training batches for BN recalibration / fine-tuning (train split minus the val slice).
    :param evaluate: ``model -> mAP50-95`` on the held-out validation slice.
    :param bn_batches: BN recalibration batches.
    :param ft_steps: fine-tune batches (0: none).
    :param ft_lr: fine-tune learning rate.
    :param surgery: ``physical`` (prune a copy with Torch-Pruning: one dependency-graph trace per
        candidate) or ``mask`` (:class:`~pruning_tools.surgery.channels.ChannelMasks`: zero the same channels
        of a full-width copy; one trace in all, the same outputs — tested).
    :param batch_evaluate: ``[ratios, ...] -> [mAP, ...]`` computing the same values elsewhere (local
        worker processes, Ray workers); :meth:`prefetch` sends cache misses through it. ``None``:
        evaluate here, one by one.
    """

    def __init__(self, model: nn.Module, space: PruningSpace, calib: BatchStream,
                 evaluate: Callable[[nn.Module], float], bn_batches: int = 4, ft_steps: int = 0,
                 ft_lr: float = 0.002, channel_scores: dict[str, torch.Tensor] | None = None,
                 surgery: str = "physical",
                 batch_evaluate: Callable[[list[list[float]]], list[float]] | None = None) -> None:
        if surgery not in ("physical", "mask"):
            raise ValueError(f"proxy surgery must be 'physical' or 'mask', got {surgery!r}")
        self.model, self.space, self.calib, self.evaluate = model, space, calib, evaluate
        self.bn_batches, self.ft_steps, self.ft_lr = int(bn_batches), int(ft_steps), float(ft_lr)
        self.channel_scores = channel_scores
        self.surgery = surgery
        self.batch_evaluate = batch_evaluate
        self._masks: ChannelMasks | None = None
        self.cache: dict[tuple[int, ...], float] = {}
        self.calls = 0

    def key(self, ratios: Sequence[float]) -> tuple[int, ...]:
        return self.space.kept_counts(ratios)

    def prefetch(self, batch: Sequence[Sequence[float]]) -> None:
        """Evaluate every not yet cached ratio vector of ``batch`` (as one batch when ``batch_evaluate`` is set)."""
        todo: dict[tuple[int, ...], list[float]] = {}
        for ratios in batch:
            k = self.key(ratios)
            if k not in self.cache and k not in todo:
                todo[k] = [float(r) for r in ratios]
        if not todo:
            return
        if self.batch_evaluate is None:
            for r in todo.values():
                self(r)
            return
        values = self.batch_evaluate(list(todo.values()))
        if len(values) != len(todo):
            raise RuntimeError(f"batch evaluation returned {len(values)} values for {len(todo)} ratio vectors")
        self.calls += len(todo)
        for k, v in zip(todo, values):
            self.cache[k] = float(v)

    def __call__(self, ratios: Sequence[float]) -> float:
        k = self.key(ratios)
        if k in self.cache:
            return self.cache[k]
        self.calls += 1
        m = copy.deepcopy(self.model)
        if self.surgery == "mask":
            if self._masks is None:
                self._masks = ChannelMasks(self.model, self.space, self.channel_scores)
            masks = self._masks
            masks.apply(m, ratios)
            if self.ft_steps > 0:  # keep removed channels at zero through the fine-tune steps
                train_steps(m, self.calib, 0, self.ft_steps, self.ft_steps, self.ft_lr,
                            on_step=lambda step, loss: masks.apply(m, ratios))
        else:
            apply_ratios(m, self.space, ratios, self.channel_scores)
            if self.ft_steps > 0:
                train_steps(m, self.calib, 0, self.ft_steps, self.ft_steps, self.ft_lr)
        recalibrate_bn(m, self.calib, self.bn_batches, start=self.ft_steps)
        value = float(self.evaluate(m))
        self.cache[k] = value
        return value


class PruningEnv(gym.Env):
    """Per-layer sparsity selection under a global parameter-sparsity target.

    :param space: layers and cost model.
    :param target: global sparsity (fraction of parameters removed) in (0, 1).
    :param proxy: ``ratios -> mAP`` (0..1) reward proxy.
    :param dense_map: mAP of the dense model on the same validation slice (0..1).
    :param lambda_map: weight of dmAP (in mAP points).
    :param lambda_sparsity: weight of dSparsity (fraction).
    :param max_ratio: largest layer ratio.
    :param lambda_flops: weight of the FLOPs removed (in points of the dense conv FLOPs).
    :param budget: ``clip`` (actions clipped so the target stays reachable) or ``spread`` (actions as
        given, one common rescaling at the end meets the target).
    """

    metadata = {"render_modes": []}

    def __init__(self, space: PruningSpace, target: float, proxy: Callable[[Sequence[float]], float],
                 dense_map: float, lambda_map: float = 1.0, lambda_sparsity: float = 10.0,
                 max_ratio: float = 0.9, lambda_flops: float = 0.0, budget: str = "clip") -> None:
        super().__init__()
        if budget not in BUDGETS:
            raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
        self.budget = budget
        self.space = space
        self.target = check_target(target)
        if not 0.0 < max_ratio < 1.0:
            raise ValueError(f"max_ratio must be in (0, 1), got {max_ratio}")
        if space.max_sparsity(max_ratio) < self.target:
            raise ValueError(f"target {self.target} unreachable with max_ratio {max_ratio} "
                             f"(at most {space.max_sparsity(max_ratio):.3f})")
        self.proxy = proxy
        self.dense_map = float(dense_map)
        self.lambda_map, self.lambda_sparsity = float(lambda_map), float(lambda_sparsity)
        self.lambda_flops = float(lambda_flops)
        self.max_ratio = float(max_ratio)
        self.n = len(space)
        self.desc = space.descriptors()
        self.observation_space = spaces.Box(0.0, 1.0, shape=(OBS_DIM,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.ratios = np.zeros(self.n)
        self.t = 0
        self.prev = 0.0
        self.last_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ helpers
    def _sparsity_with(self, t: int, ratio: float, rest: float) -> float:
        r = self.ratios.copy()
        r[t] = ratio
        r[t + 1:] = rest
        return self.space.sparsity(r)

    def bounds(self, t: int) -> tuple[float, float]:
        """Allowed ratio range at step ``t`` keeping the target reachable and not overshooting."""
        if self._sparsity_with(t, 0.0, self.max_ratio) >= self.target:
            lo = 0.0
        else:
            a, b = 0.0, self.max_ratio
            for _ in range(14):
                mid = 0.5 * (a + b)
                if self._sparsity_with(t, mid, self.max_ratio) >= self.target:
                    b = mid
                else:
                    a = mid
            lo = b
        if self._sparsity_with(t, self.max_ratio, 0.0) <= self.target:
            hi = self.max_ratio
        else:
            a, b = 0.0, self.max_ratio
            for _ in range(14):
                mid = 0.5 * (a + b)
                if self._sparsity_with(t, mid, 0.0) >= self.target:
                    b = mid
                else:
                    a = mid
            hi = b
        return lo, max(lo, hi)

    def _obs(self) -> np.ndarray:
        t = min(self.t, self.n - 1)
        cur = self.space.sparsity(self.ratios)
        remaining = max(0.0, self.target - cur) / self.target
        obs = np.array([t / max(1, self.n - 1), self.prev / self.max_ratio, min(1.0, cur / self.target),
                        self.dense_map, remaining, *self.desc[t]], dtype=np.float32)
        return np.clip(obs, 0.0, 1.0)

    def ratio_to_action(self, ratios: np.ndarray) -> np.ndarray:
        """Inverse of the action scaling (for replaying known ratios)."""
        return np.clip(2.0 * np.asarray(ratios, dtype=np.float64) / self.max_ratio - 1.0, -1.0, 1.0)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.ratios = np.zeros(self.n)
        self.t = 0
        self.prev = 0.0
        return self._obs(), {}

    def _ratio(self, action: Any) -> tuple[float, float, float]:
        a = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
        if self.budget == "spread":
            return (a + 1.0) / 2.0 * self.max_ratio, 0.0, self.max_ratio
        lo, hi = self.bounds(self.t)
        return float(np.clip((a + 1.0) / 2.0 * self.max_ratio, lo, hi)), lo, hi

    def final_ratios(self, action: Any) -> np.ndarray | None:
        """The ratios the episode ends with if ``action`` is taken now (``None`` unless this is the last step).

        Lets a caller evaluate the final rewards of several environments as one batch before stepping them.
        """
        if self.t != self.n - 1:
            return None
        r = self.ratios.copy()
        r[self.t] = self._ratio(action)[0]
        return self.repair(r)

    def repair(self, ratios: np.ndarray) -> np.ndarray:
        """``budget="spread"``: ``ratios`` scaled by one common factor to meet the target (as given otherwise)."""
        if self.budget != "spread":
            return ratios
        return self.space.solve(np.maximum(ratios, 1e-3), self.target, self.max_ratio)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        ratio, lo, hi = self._ratio(action)
        before = self.space.sparsity(self.ratios)
        self.ratios[self.t] = ratio
        after = self.space.sparsity(self.ratios)
        reward = self.lambda_sparsity * (after - before)
        self.prev = ratio
        self.t += 1
        terminated = self.t >= self.n
        info: dict[str, Any] = {"ratio": ratio, "bounds": (lo, hi)}
        if terminated:
            self.ratios = self.repair(self.ratios)
            after = self.space.sparsity(self.ratios)
            m = float(self.proxy(self.ratios))
            d_map = (m - self.dense_map) * 100.0
            d_flops = (1.0 - self.space.flops(self.ratios) / self.space.dense_flops) * 100.0
            reward += self.lambda_map * d_map + self.lambda_flops * d_flops
            info.update({"map": m, "dmap_points": d_map, "dflops_points": d_flops, "sparsity": after,
                         "ratios": self.ratios.copy()})
            self.last_info = info
        return self._obs(), float(reward), terminated, False, info
