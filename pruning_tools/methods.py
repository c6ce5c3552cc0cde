"""Table 1's pruning methods: each turns the dense model and a target level into per-layer ratios.

One interface, one class per method (adding a row to Table 1 is adding one class to
:data:`METHODS`); every method then gets the same stage 3 (physical pruning + the same fine-tuning
budget) in :meth:`pruning_tools.pipeline.Pipeline.run_unit`. The ``name`` of each class is the
``method`` value of its rows in ``results.json``:

* ``uniform``    — the same ratio in every layer (channels by L2 magnitude);
* ``importance`` — the stage-1 budgets (gradient-L1 layer importance -> ratios): the seed's "no RL";
* ``random``     — random search over ratio vectors with the same number of reward evaluations,
  the same reward proxy and the same val-split re-ranking as ``full``;
* ``global``     — Torch-Pruning's global ranking (group L2 magnitude, ``global_pruning=True``):
  one importance threshold across all layers, solved so the level is met;
* ``full``       — stage 1 + PPO (stage 2, started from the stage-1 prior) + stage 3: the seed's "RL".

This module imports only numpy at the top (the comparison table and the config read its names and
labels without torch).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from pruning_tools.pipeline import Inputs, Pipeline


@dataclass
class UnitContext:
    """One (method, level, trial) unit.

    :param pipeline: gives the config and the stage-2 parts (proxies, environment, re-ranking).
    :param inputs: the dense model, its pruning space and the data.
    :param level: target sparsity.
    :param trial: trial index (seed = config seed + trial).
    :param out: the unit's output folder.
    :param stage1: the trial's stage-1 result (:meth:`Pipeline.stage1`; ``None`` if no method uses it).
    """

    pipeline: "Pipeline"
    inputs: "Inputs"
    level: float
    trial: int
    out: "Path"
    stage1: dict[str, Any] | None = None

    @property
    def seed(self) -> int:
        return int(self.pipeline.cfg.seed + self.trial)


@dataclass
class MethodResult:
    """Per-layer ratios and what the method wants recorded.

    :param ratios: one ratio per layer of the pipeline's :class:`~pruning_tools.pruning.PruningSpace`.
    :param search: JSON-ready summary stored in the record (``search`` key).
    :param history: full search history written to ``<out>/search.json`` (``None``: no file).
    :param channel_scores: per-layer channel scores for stage 3's channel choice (``None``: L2 magnitude).
    """

    ratios: np.ndarray
    search: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] | None = None
    channel_scores: dict[str, Any] | None = None


class PruningMethod:
    """Base class: ``name`` (results.json), ``label`` (Table 1), :meth:`ratios`."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    #: uses the stage-1 importance (its channel scores when ``importance.channel_choice: gradient``)
    uses_importance: ClassVar[bool] = False

    def ratios(self, ctx: UnitContext) -> MethodResult:
        """:return: the method's ratios at ``ctx.level``."""
        raise NotImplementedError


class Uniform(PruningMethod):
    name, label = "uniform", "Uniform (same ratio per layer, magnitude)"

    def ratios(self, ctx: UnitContext) -> MethodResult:
        return MethodResult(ctx.inputs.space.uniform(ctx.level, ctx.pipeline.cfg.max_ratio))


class Importance(PruningMethod):
    name, label = "importance", "No RL: stage-1 budgets only (seed's \"no RL\")"
    uses_importance = True

    def ratios(self, ctx: UnitContext) -> MethodResult:
        assert ctx.stage1 is not None
        return MethodResult(np.asarray(ctx.stage1["budgets"][ctx.level]),
                            channel_scores=ctx.pipeline.channel_scores(self, ctx.stage1))


class RandomSearch(PruningMethod):
    """Random ratio vectors (per-layer weights ``U(0.05, 1)`` solved to the level), scored by the same
    reward as PPO (the env's return), as many evaluations as ``full`` plays episodes, then the same
    val-split re-ranking of the best ones."""

    name, label = "random", "Random search (same reward evaluations as PPO)"
    #: random search replaces stage 2 only: the same channel choice as ``full`` (stage-1 scores when
    #: ``importance.channel_choice: gradient``), so ``full - random`` measures the search alone
    uses_importance = True

    def ratios(self, ctx: UnitContext) -> MethodResult:
        import time

        from pruning_tools.agent import final_ratios_of, run_episode

        p, space = ctx.pipeline, ctx.inputs.space
        t0 = time.monotonic()
        scores = p.channel_scores(self, ctx.stage1)
        env = p.make_env(ctx.inputs, ctx.level, ctx.trial, scores)
        rng = np.random.default_rng(ctx.seed + 7919)
        n_eval = p.reward_evaluations()
        actions = [env.ratio_to_action(space.solve(rng.uniform(0.05, 1.0, len(space)), ctx.level, p.cfg.max_ratio))
                   for _ in range(n_eval)]
        # every reward as one batch (in parallel on the pool's or Ray's workers), then the episodes read the cache
        env.proxy.prefetch([final_ratios_of(env, a) for a in actions])
        history = []
        for k, a in enumerate(actions):
            ret, info = run_episode(env, a)
            history.append({"episode": k, "kind": "random", "reward": round(float(ret), 4),
                            "map": round(float(info["map"]), 5), "sparsity": round(float(info["sparsity"]), 5),
                            "ratios": [float(r) for r in info["ratios"]]})  # unrounded: see agent.search
        from pruning_tools.pipeline import on_level

        best = on_level(history, ctx.level)[0]
        rerank = p.rerank(ctx.inputs, ctx.trial, history, ctx.level, scores)
        ratios = np.asarray(rerank[0]["ratios"] if rerank else best["ratios"])
        info = {"evaluations": n_eval, "best_reward": best["reward"], "best_proxy_map": best["map"],
                "rerank": [{k: v for k, v in r.items() if k != "ratios"} for r in rerank],
                "proxy_evaluations": getattr(env.proxy, "calls", None), "wall_s": round(time.monotonic() - t0, 1)}
        return MethodResult(ratios, info, history, scores)


class GlobalRanking(PruningMethod):
    """Global pruning: every channel of every layer ranked against one threshold by Torch-Pruning's
    ``GroupMagnitudeImportance(p=2)`` (see :func:`global_ratios`)."""

    name, label = "global", "Global magnitude ranking (Torch-Pruning group L2)"

    def ratios(self, ctx: UnitContext) -> MethodResult:
        ratios, ch_ratio = global_ratios(ctx.inputs.dense, ctx.inputs.space, ctx.level, ctx.pipeline.cfg.max_ratio)
        return MethodResult(ratios, {"global_channel_fraction": round(ch_ratio, 5)})


class Full(PruningMethod):
    name, label = "full", "RL: stage 1 + PPO + fine-tune (seed's \"RL\")"
    uses_importance = True

    def ratios(self, ctx: UnitContext) -> MethodResult:
        return ctx.pipeline.ppo_search(ctx, self)


#: Table 1's rows in order; ``name -> class``.
METHODS: dict[str, type[PruningMethod]] = {m.name: m for m in (Uniform, Importance, RandomSearch, GlobalRanking, Full)}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)


def get_method(name: str) -> PruningMethod:
    """:raises ValueError: for an unknown name (lists the known ones)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {list(METHODS)}")
    return METHODS[name]()


def global_ratios(dense: Any, space: Any, level: float, max_ratio: float) -> tuple[np.ndarray, float]:
    """Per-layer ratios from one global ranking of every channel meeting ``level``.

    Scores: Torch-Pruning's ``GroupMagnitudeImportance(p=2)`` (group L2 magnitude, mean-normalised
    per group: what ``BasePruner(global_pruning=True)`` ranks). The ``k`` globally lowest channels
    are removed (each layer capped at ``max_ratio``, counts rounded by the space), with the smallest
    ``k`` that meets the level found by bisection. Torch-Pruning's own pruner is not used for the
    threshold: for yolov5n at ``round_to`` 16 and ``max_pruning_ratio`` 0.9 its parameter sparsity
    peaks at 84 % as its global channel ratio grows (it then yields fewer groups), so it cannot
    reach 90 %; the same ranking applied here is monotone in ``k``.

    :return: (ratios, fraction of all channels ranked below the threshold).
    :raises PruningError: when the level is unreachable with ``max_ratio``.
    """
    import copy

    import torch
    import torch_pruning as tp

    from pruning_tools.pruning import PruningError, build_graph

    model = copy.deepcopy(dense).eval()
    dg = build_graph(model)
    modules = dict(model.named_modules())
    imp = tp.importance.GroupMagnitudeImportance(p=2)
    owner, values = [], []
    with torch.no_grad():
        for layer in space.layers:
            root = modules[layer.name]
            group = dg.get_pruning_group(root, tp.prune_conv_out_channels, idxs=list(range(root.out_channels)))
            sc = imp(group)
            values.append(sc.detach().float().cpu().numpy())
            owner.append(np.full(len(sc), layer.index))
    order = np.argsort(np.concatenate(values), kind="stable")
    owner_sorted = np.concatenate(owner)[order]
    channels = np.array([layer.channels for layer in space.layers], dtype=np.float64)

    def at(k: int) -> np.ndarray:
        counts = np.bincount(owner_sorted[:k], minlength=len(space.layers))
        return np.minimum(counts / channels, max_ratio)

    lo, hi = 0, len(order)
    if space.sparsity(at(hi)) < level:
        raise PruningError(f"global ranking cannot reach level {level} with max_ratio {max_ratio}")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if space.sparsity(at(mid)) >= level:
            hi = mid
        else:
            lo = mid
    return at(hi), hi / len(order)
