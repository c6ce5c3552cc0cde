"""One prune run's search machinery: stage 1 per trial, stage 2's reward proxies and environments,
and the val-split re-ranking — what the strategies of :mod:`pruning_tools.search.strategies` call.

A :class:`SearchSession` holds the run's :class:`Inputs` (dense model, pruning space, data) and
nothing of the pipeline's bookkeeping, so worker processes (the local pool, Ray) build the same
session from the run's files and evaluate rewards that equal the driver's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from pruning_tools.data.files import write_json
from pruning_tools.search.proxy import ProxySpec, ValLoss, ValMap
from pruning_tools.search.strategies import on_level


@dataclass
class Inputs:
    """What every unit of work reads: the dataset root, the dense model, its pruning space, the
    training split, (once measured) the dense model's proxy score on the stage-2 val images (an mAP
    or a :class:`~pruning_tools.search.proxy.ValLoss` score) and (once built) the training split at
    the proxy input size."""

    data: Path
    dense: torch.nn.Module
    space: Any
    train_ds: Any
    dense_val: float | None = None
    proxy_ds: Any = None


class SearchSession:
    """Stage 1 and stage 2 parts of one run.

    :param cfg: the run's :class:`~pruning_tools.pipeline.config.PruneConfig`.
    :param run: the run folder (stage-1 files ``importance_t<k>.json``, TensorBoard logs ``tb/``).
    :param inputs: the dense model, its pruning space and the data.
    :param train_dataset: ``(data, imgsz) -> dataset``: the training split at another input size
        (the proxy's), built like ``inputs.train_ds``.
    :param log: one-line progress messages.
    :param progress: show progress bars.
    :param evaluator: where reward batches go (``batch_evaluator(spec)``: the Ray executor or the
        local worker pool); ``None``: this process. May be set later.
    """

    def __init__(self, cfg: Any, run: Path, inputs: Inputs, train_dataset: Callable[[Path, tuple[int, int]], Any],
                 log: Callable[[str], None] = print, progress: bool = True, evaluator: Any = None) -> None:
        self.cfg, self.run, self.inputs = cfg, Path(run), inputs
        self.train_dataset, self.log, self.progress, self.evaluator = train_dataset, log, progress, evaluator
        self._stage1: dict[int, dict[str, Any]] = {}

    # ------------------------------------------------------------------ stage 1
    def stage1(self, trial: int) -> dict[str, Any]:
        """Stage 1 of ``trial``: ``{"budgets": {level: ratios}, "importance": per layer, "channel_scores":
        {layer: per-channel}}``. Written to ``importance_t<k>.json`` and read back from it on a rerun.
        The dense model is not changed (its BatchNorm statistics are restored after the gradient passes)."""
        if trial in self._stage1:
            return self._stage1[trial]
        from pruning_tools.data.yolo import BatchStream
        from pruning_tools.search.importance import budgets_from_importance, compute_importance

        c, space = self.cfg, self.inputs.space
        path = self.run / f"importance_t{trial}.json"
        st = None
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("batches") == c.importance.batches and saved.get("channel_scores") \
                    and saved.get("layers") == [l.name for l in space.layers]:
                st = {"importance": [float(v) for v in saved["importance"]],
                      "channel_scores": {k: torch.tensor(v) for k, v in saved["channel_scores"].items()}}
        if st is None:
            imp_stream = BatchStream(self.inputs.train_ds, c.importance.batch, c.seed + trial + 1000,
                                     c.finetune.crop_width)
            res = compute_importance(self.inputs.dense, space, imp_stream, c.importance.batches, self.progress)
            st = {"importance": [float(v) for v in res.layer_importance], "channel_scores": res.channel_scores}
        st["budgets"] = {lv: budgets_from_importance(space, st["importance"], lv, c.max_ratio, c.importance.beta)
                         for lv in c.targets}
        write_json(path, {"batches": c.importance.batches, "layers": [l.name for l in space.layers],
                          "importance": st["importance"], "budgets": {str(lv): b for lv, b in st["budgets"].items()},
                          "channel_scores": {k: [float(x) for x in v] for k, v in st["channel_scores"].items()}})
        self._stage1[trial] = st
        return st

    def channel_scores(self, strategy: Any, stage1: dict[str, Any] | None) -> dict[str, torch.Tensor] | None:
        """Stage-1 per-channel scores where the config asks for them and ``strategy`` uses stage 1."""
        if stage1 and self.cfg.importance.channel_choice == "gradient" and getattr(strategy, "uses_importance", False):
            return stage1["channel_scores"]
        return None

    # ------------------------------------------------------------------ stage 2
    def proxy_imgsz(self) -> tuple[int, int]:
        c = self.cfg
        sz = tuple(c.rl.proxy_imgsz) if c.rl.proxy_imgsz else tuple(c.data.imgsz)
        return int(sz[0]), int(sz[1])

    def proxy_train(self) -> Any:
        """The training split at the proxy input size (BN recalibration and proxy fine-tuning)."""
        inputs = self.inputs
        if inputs.proxy_ds is None:
            sz = self.proxy_imgsz()
            inputs.proxy_ds = inputs.train_ds if sz == tuple(self.cfg.data.imgsz) else self.train_dataset(inputs.data, sz)
        return inputs.proxy_ds

    def proxy_spec(self, trial: int, scores: dict[str, torch.Tensor] | None = None, rerank: bool = False) -> ProxySpec:
        """The search proxy (or, with ``rerank``, the re-ranking proxy) of ``trial``."""
        r = self.cfg.rl
        frozen = None if scores is None else tuple((k, tuple(float(x) for x in v)) for k, v in sorted(scores.items()))
        if rerank:
            return ProxySpec(self.cfg.seed + trial, r.bn_batches, r.rerank_ft_steps, r.ft_lr, r.rerank_val_images, frozen)
        return ProxySpec(self.cfg.seed + trial, r.bn_batches, r.ft_steps, r.ft_lr, self.cfg.data.val_images, frozen)

    def reward_proxy(self, spec: ProxySpec, batched: bool = True) -> Any:
        """The stage-2 reward proxy described by ``spec`` (val split at the proxy input size, never the
        test split). With ``batched`` and an :attr:`evaluator`, batches go to it."""
        from pruning_tools.data.yolo import BatchStream
        from pruning_tools.search.env import RewardProxy

        c = self.cfg
        calib = BatchStream(self.proxy_train(), c.rl.bn_batch, spec.seed + 2000, c.finetune.crop_width)
        scores = None if spec.channel_scores is None else {k: torch.tensor(v) for k, v in spec.channel_scores}
        batch = self.evaluator.batch_evaluator(spec) if batched and self.evaluator is not None else None
        return RewardProxy(self.inputs.dense, self.inputs.space, calib, self.proxy_metric(spec.val_images),
                           spec.bn_batches if c.rl.proxy_metric == "map50_95" else 0, spec.ft_steps, spec.ft_lr,
                           scores, c.rl.proxy_surgery, batch_evaluate=batch)

    def proxy_metric(self, val_images: int | None) -> ValMap | ValLoss:
        """``model -> score`` on the val split at the proxy input size: mAP50-95 after BN recalibration
        (``rl.proxy_metric: map50_95``) or :class:`~pruning_tools.search.proxy.ValLoss` (``val_loss``)."""
        if self.cfg.rl.proxy_metric == "val_loss":
            return ValLoss(self.inputs.data, self.proxy_imgsz(), val_images).set_reference(self.inputs.dense)
        return ValMap(self.inputs.data, self.proxy_imgsz(), val_images)

    def dense_val(self) -> float:
        """The dense model's proxy score on the proxy's val images (the reward's reference)."""
        inputs = self.inputs
        if inputs.dense_val is None:
            metric = self.proxy_metric(self.cfg.data.val_images)
            inputs.dense_val = float(metric(inputs.dense))
            what = f"loss {metric.reference:.4f}, score" if isinstance(metric, ValLoss) else "mAP50-95"
            self.log(f"dense {what} {inputs.dense_val:.4f} on {self.cfg.data.val_images or 'all'} val images at "
                     f"{self.proxy_imgsz()}")
        return inputs.dense_val

    def make_env(self, level: float, trial: int, scores: dict[str, torch.Tensor] | None = None) -> Any:
        """The stage-2 environment of ``level`` / ``trial`` (its proxy removes channels by ``scores``)."""
        from pruning_tools.search.env import PruningEnv

        c = self.cfg
        proxy = self.reward_proxy(self.proxy_spec(trial, scores))
        return PruningEnv(self.inputs.space, level, proxy, self.dense_val(), c.rl.lambda_map, c.rl.lambda_sparsity,
                          c.max_ratio, c.rl.lambda_flops, c.rl.budget)

    def rerank(self, trial: int, history: list[dict[str, Any]], level: float,
               scores: dict[str, torch.Tensor] | None = None) -> list[dict[str, Any]]:
        """Re-score the ``rl.rerank_top`` best episodes of a search with a more careful proxy
        (``rl.rerank_ft_steps`` fine-tune batches, ``rl.rerank_val_images`` of the val split); best first.
        No candidate is added that the search did not find (the stage-1 prior competes only as an episode);
        episodes off the level by more than 1 % (channel rounding) are not candidates."""
        c = self.cfg.rl
        if c.rerank_top <= 0:
            return []
        cands: list[tuple[str, list[float]]] = []
        seen = set()
        for h in on_level(history, level, self.cfg.target_metric):
            key = self.inputs.space.kept_counts(h["ratios"])
            if key in seen:
                continue
            seen.add(key)
            cands.append((f"episode {h['episode']} ({h['kind']})", h["ratios"]))
            if len(cands) >= c.rerank_top:
                break
        proxy = self.reward_proxy(self.proxy_spec(trial, scores, rerank=True))
        proxy.prefetch([r for _, r in cands])
        out = [{"candidate": name, "map": proxy(ratios), "ratios": ratios} for name, ratios in cands]
        out.sort(key=lambda r: -r["map"])
        self.log("rerank (val split): " + ", ".join(f"{r['candidate']}={r['map']:.4f}" for r in out))
        return out
