"""Table 1's pruning strategies ("methods"): each turns the dense model and a target level into per-layer ratios.

One interface, one class per strategy (adding a row to Table 1 is adding one class to
:data:`METHODS`); every strategy then gets the same stage 3 (physical pruning + the same fine-tuning
budget) in :meth:`pruning_tools.pipeline.prune.Pipeline.run_unit`. The ``name`` of each class is the
``method`` value of its rows in ``results.json``:

* ``uniform``    — the same ratio in every layer (channels by L2 magnitude);
* ``importance`` — the stage-1 budgets (gradient-L1 layer importance -> ratios): the seed's "no RL";
* ``random``     — random search over ratio vectors with the same number of reward evaluations,
  the same reward proxy and the same val-split re-ranking as ``full``;
* ``global``     — Torch-Pruning's global ranking (group L2 magnitude, ``global_pruning=True``):
  one importance threshold across all layers, solved so the level is met;
* ``full``       — stage 1 + PPO (stage 2, started from the stage-1 prior) + stage 3: the seed's "RL".

Strategies reach stage 1 and stage 2 through ``ctx.session``
(:class:`pruning_tools.search.session.SearchSession`). This module imports only numpy at the top
(the comparison table and the config read its names and labels without torch).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

#: a strategy whose ratios or pruned model miss the level by more than this (absolute sparsity) is an error
LEVEL_TOLERANCE = 0.01
#: latency levels may overshoot (run faster than asked) by up to this fraction of the dense latency: one
#: rounding step of a high-resolution layer moves the predicted latency by more than 1 % (global ranking
#: removes channels one at a time); undershooting keeps :data:`LEVEL_TOLERANCE`
LATENCY_OVERSHOOT = 0.03


def within_level(achieved: float, level: float, metric: str = "params") -> bool:
    """Whether ``achieved`` (the space's targeted quantity) is on ``level``: within
    :data:`LEVEL_TOLERANCE`, or for latency levels up to :data:`LATENCY_OVERSHOOT` above it."""
    over = LATENCY_OVERSHOOT if metric == "latency" else LEVEL_TOLERANCE
    return level - LEVEL_TOLERANCE <= float(achieved) <= level + over


def level_speedup(level: float) -> float:
    """The speed-up a latency level stands for, ``1 / (1 - level)`` (inverse of
    :func:`pruning_tools.quant.latency.speedup_level`)."""
    return 1.0 / (1.0 - float(level))


def level_name(level: float, metric: str = "params") -> str:
    """A level's name in folders, logs, tables and the zoo: ``s50`` (50 % of parameters, or of FLOPs,
    removed) or, for ``metric="latency"``, the speed-up it stands for: ``x1.5``, ``x2``, ``x3``
    (``level`` = fraction of the dense latency removed, ``1 - 1/speed-up``)."""
    if metric == "latency":
        return f"x{round(level_speedup(level), 2):g}"
    return f"s{int(round(float(level) * 100)):02d}"


def on_level(history: list[dict[str, Any]], level: float, metric: str = "params") -> list[dict[str, Any]]:
    """The episodes of a search that end within :data:`LEVEL_TOLERANCE` of ``level``, best reward first.

    The environment ends every episode on the target, but channel rounding (``round_to``) of the last
    layers can overshoot it; such an episode cannot become a unit's ratios.

    :raises PruningError: when none does.
    """
    from pruning_tools.surgery.channels import PruningError

    ok = [h for h in history if within_level(h["sparsity"], level, metric)]
    if not ok:
        raise PruningError(f"no episode of the search ends within {LEVEL_TOLERANCE:.0%} of level {level} "
                           f"({len(history)} episodes)")
    return sorted(ok, key=lambda h: -h["reward"])


def reward_evaluations(rl: Any) -> int:
    """Reward evaluations of one search: ``full``'s episodes (warm-up + PPO + final rollout);
    ``random`` gets the same number. ``rl``: the config's ``rl`` section."""
    return rl.warmup_episodes + rl.episodes + (1 if rl.episodes > 0 else 0)


@dataclass
class UnitContext:
    """One (strategy, level, trial) unit.

    :param session: the run's :class:`~pruning_tools.search.session.SearchSession`: the config, the
        inputs (dense model, pruning space, data) and the stage-2 parts (proxies, environment, re-ranking).
    :param level: target sparsity.
    :param trial: trial index (seed = config seed + trial).
    :param out: the unit's output folder.
    :param stage1: the trial's stage-1 result (``SearchSession.stage1``; ``None`` if no strategy uses it).
    """

    session: Any
    level: float
    trial: int
    out: Path
    stage1: dict[str, Any] | None = None

    @property
    def inputs(self) -> Any:
        return self.session.inputs

    @property
    def cfg(self) -> Any:
        return self.session.cfg

    @property
    def seed(self) -> int:
        return int(self.cfg.seed + self.trial)


@dataclass
class MethodResult:
    """Per-layer ratios and what the method wants recorded.

    :param ratios: one ratio per layer of the pipeline's :class:`~pruning_tools.surgery.channels.PruningSpace`.
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
    #: evaluates stage-2 rewards (the pipeline starts its reward workers, ``rl.workers``, for it)
    uses_proxy: ClassVar[bool] = False

    def ratios(self, ctx: UnitContext) -> MethodResult:
        """:return: the method's ratios at ``ctx.level``."""
        raise NotImplementedError


class Uniform(PruningMethod):
    name, label = "uniform", "Uniform (same ratio per layer, magnitude)"

    def ratios(self, ctx: UnitContext) -> MethodResult:
        return MethodResult(ctx.inputs.space.uniform(ctx.level, ctx.cfg.max_ratio))


class Importance(PruningMethod):
    name, label = "importance", "No RL: stage-1 budgets only (seed's \"no RL\")"
    uses_importance = True

    def ratios(self, ctx: UnitContext) -> MethodResult:
        assert ctx.stage1 is not None
        return MethodResult(np.asarray(ctx.stage1["budgets"][ctx.level]),
                            channel_scores=ctx.session.channel_scores(self, ctx.stage1))


class RandomSearch(PruningMethod):
    """Random ratio vectors (per-layer weights ``U(0.05, 1)`` solved to the level), scored by the same
    reward as PPO (the env's return), as many evaluations as ``full`` plays episodes, then the same
    val-split re-ranking of the best ones."""

    name, label = "random", "Random search (same reward evaluations as PPO)"
    #: random search replaces stage 2 only: the same channel choice as ``full`` (stage-1 scores when
    #: ``importance.channel_choice: gradient``), so ``full - random`` measures the search alone
    uses_importance = True
    uses_proxy = True

    def ratios(self, ctx: UnitContext) -> MethodResult:
        import time

        from pruning_tools.search.agent import final_ratios_of, run_episode

        s, space = ctx.session, ctx.inputs.space
        t0 = time.monotonic()
        scores = s.channel_scores(self, ctx.stage1)
        env = s.make_env(ctx.level, ctx.trial, scores)
        rng = np.random.default_rng(ctx.seed + 7919)
        n_eval = reward_evaluations(ctx.cfg.rl)
        actions = [env.ratio_to_action(space.solve(rng.uniform(0.05, 1.0, len(space)), ctx.level, ctx.cfg.max_ratio))
                   for _ in range(n_eval)]
        # every reward as one batch (in parallel on the pool's or Ray's workers), then the episodes read the cache
        env.proxy.prefetch([final_ratios_of(env, a) for a in actions])
        history = []
        for k, a in enumerate(actions):
            ret, info = run_episode(env, a)
            history.append({"episode": k, "kind": "random", "reward": round(float(ret), 4),
                            "map": round(float(info["map"]), 5), "sparsity": round(float(info["sparsity"]), 5),
                            "ratios": [float(r) for r in info["ratios"]]})  # unrounded: see agent.search
        best = on_level(history, ctx.level, ctx.cfg.target_metric)[0]
        rerank = s.rerank(ctx.trial, history, ctx.level, scores)
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
        ratios, ch_ratio = global_ratios(ctx.inputs.dense, ctx.inputs.space, ctx.level, ctx.cfg.max_ratio)
        return MethodResult(ratios, {"global_channel_fraction": round(ch_ratio, 5)})


class Full(PruningMethod):
    """Stage 2 proper: warm-up episodes from the stage-1 prior, PPO, then the val-split re-ranking."""

    name, label = "full", "RL: stage 1 + PPO + fine-tune (seed's \"RL\")"
    uses_importance = True
    uses_proxy = True

    def ratios(self, ctx: UnitContext) -> MethodResult:
        from pruning_tools.search.agent import AgentConfig, search

        s, c, lv, trial = ctx.session, ctx.cfg, ctx.level, ctx.trial
        assert ctx.stage1 is not None
        prior = ctx.stage1["budgets"][lv]
        scores = s.channel_scores(self, ctx.stage1)
        env = s.make_env(lv, trial, scores)
        acfg = AgentConfig(episodes=c.rl.episodes, warmup_episodes=c.rl.warmup_episodes,
                           warmup_noise=c.rl.warmup_noise, learning_rate=c.rl.learning_rate,
                           episodes_per_update=c.rl.episodes_per_update, n_epochs=c.rl.n_epochs,
                           gamma=c.rl.gamma, log_std_init=c.rl.log_std_init, imitation_steps=c.rl.imitation_steps,
                           seed=ctx.seed)
        tag = level_name(lv, c.target_metric)
        sr = search(env, prior, acfg, s.run / "tb" / f"{tag}_t{trial}", s.progress, desc=f"stage 2: PPO {tag}")
        rerank = s.rerank(trial, sr.history, lv, scores)
        ratios = np.asarray(rerank[0]["ratios"] if rerank else on_level(sr.history, lv, c.target_metric)[0]["ratios"])
        info = {"best_reward": sr.reward, "best_proxy_map": sr.map, "episodes": len(sr.history),
                "rerank": [{k: v for k, v in r.items() if k != "ratios"} for r in rerank],
                "proxy_evaluations": sr.proxy_evaluations, "wall_s": sr.wall_s,
                "dense_val_map": s.dense_val(),
                "chosen_from": rerank[0]["candidate"] if rerank else "best episode"}
        return MethodResult(ratios, info, sr.history, scores)


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

    from pruning_tools.surgery.channels import PruningError, build_graph

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
