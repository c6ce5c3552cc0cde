"""The plain-Python halves of a federated job (no Flower here): what a vehicle computes on its own data
and what the server computes from the vehicles' replies. :mod:`pruning_tools.federated.apps` wraps them
in Flower's ClientApp / ServerApp; the central baseline (:mod:`pruning_tools.federated.run`) calls the
same functions on the union of the data.

* **Stage 1** — a vehicle accumulates ``|grad|`` over its ``stage1_batches`` batches with the central
  code (:func:`pruning_tools.search.importance.accumulate_gradients`, :func:`group_importance`) and
  sends the per-layer and per-channel *sums* (not means): the server adds them up
  (:func:`aggregate_stage1`), which is what the central pipeline computes on the union of the
  batches — every vehicle's sum is already weighted by its number of samples — and turns them into
  budgets with :func:`budgets_from_importance`.
* **Stage 3** — the server prunes the dense model once (:func:`prune_once`, Torch-Pruning surgery of
  :mod:`pruning_tools.surgery.channels`, channels chosen by the aggregated stage-1 channel scores) and
  sends its weights with the per-layer keep *masks*; a vehicle rebuilds the same structure from the
  dense model and the masks (:func:`pruned_from_masks`), fine-tunes ``local_steps`` batches
  (:func:`local_finetune`: the stage-3 loop, distillation from the dense model if asked, FedProx's
  proximal term if asked), re-estimates BatchNorm on its data and sends the weights back.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from pruning_tools.federated.config import FederatedConfig

#: learning-rate floor of the cosine schedule over all rounds (as stage 3's ``lrf=0.5``)
LRF = 0.5


def float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's floating-point state (weights, BN statistics): what FedAvg averages. Integer
    buffers (``num_batches_tracked``) stay local."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def load_float_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load :func:`float_state` output into ``model`` (shapes must match; every float entry present).

    :raises ValueError: missing or extra floating entries, or a shape mismatch.
    """
    own = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(f"weights do not fit the model: missing {missing[:4]}, unexpected {extra[:4]}")
    for k, v in state.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise ValueError(f"weights do not fit the model: {k} is {tuple(v.shape)}, the model has {tuple(own[k].shape)}")
    model.load_state_dict(state, strict=False)


def build_space(model: nn.Module, cfg: FederatedConfig) -> Any:
    from pruning_tools.surgery.channels import PruningSpace

    return PruningSpace(model, tuple(cfg.imgsz), cfg.round_to)


def make_stream(data: Sequence[Path], cfg: FederatedConfig, seed: int, split: str = "train") -> Any:
    """A deterministic batch stream over the train split of ``data`` (several folders: mixed, once each)."""
    from pruning_tools.data.yolo import BatchStream, MixedDataset, YoloDataset

    parts = [YoloDataset(d, split, tuple(cfg.imgsz), cache=True) for d in data]
    ds: Any = parts[0] if len(parts) == 1 else MixedDataset(parts, [1] * len(parts))
    return BatchStream(ds, cfg.batch, seed, cfg.crop_width)


# -------------------------------------------------------------------------------- stage 1
@dataclass
class Stage1Sums:
    """Stage-1 sums of one vehicle (or their aggregate).

    :param layer_sums: per layer, ``importance x batches`` (the mean ``|grad|`` per parameter summed over batches).
    :param channel_scores: layer name -> per-channel summed ``|grad|``.
    :param batches: batches accumulated.
    :param samples: images in them.
    """

    layer_sums: np.ndarray
    channel_scores: dict[str, np.ndarray]
    batches: int
    samples: int


def client_stage1(model: nn.Module, space: Any, stream: Any, batches: int, progress: bool = False) -> Stage1Sums:
    """Stage 1 on a vehicle's own batches with the central code (weights unchanged)."""
    from pruning_tools.search.importance import accumulate_gradients, group_importance

    grads = accumulate_gradients(model, stream, batches, progress)
    res = group_importance(model, space, grads)
    # accumulate_gradients sums over batches and group_importance divides by the parameter count:
    # layer_importance is already a sum over this vehicle's batches
    return Stage1Sums(np.asarray(res.layer_importance, dtype=np.float64),
                      {k: v.detach().cpu().numpy().astype(np.float64) for k, v in res.channel_scores.items()},
                      int(batches), int(batches) * int(stream.batch))


def aggregate_stage1(parts: Sequence[Stage1Sums]) -> Stage1Sums:
    """Add the vehicles' sums (the central pipeline's sum over the union of their batches).

    :raises ValueError: no parts, or parts of different layers / widths.
    """
    if not parts:
        raise ValueError("no stage-1 sums to aggregate")
    names = list(parts[0].channel_scores)
    for p in parts[1:]:
        if list(p.channel_scores) != names or p.layer_sums.shape != parts[0].layer_sums.shape:
            raise ValueError("stage-1 sums of different models cannot be added")
    return Stage1Sums(np.sum([p.layer_sums for p in parts], axis=0),
                      {n: np.sum([p.channel_scores[n] for p in parts], axis=0) for n in names},
                      sum(p.batches for p in parts), sum(p.samples for p in parts))


def budgets(space: Any, sums: Stage1Sums, cfg: FederatedConfig) -> np.ndarray:
    """Per-layer ratios from aggregated stage-1 sums (the central :func:`budgets_from_importance`)."""
    from pruning_tools.search.importance import budgets_from_importance

    return budgets_from_importance(space, sums.layer_sums / max(sums.batches, 1), cfg.target, cfg.max_ratio, cfg.beta)


def keep_masks(space: Any, ratios: Sequence[float], channel_scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per layer, 1 for the channels :func:`apply_ratios` keeps (highest channel scores), 0 for the rest."""
    out = {}
    for layer, r in zip(space.layers, ratios):
        n = layer.channels
        n_prune = n - min(n, space.kept(layer.index, float(r)))
        m = np.ones(n, dtype=np.int8)
        if n_prune > 0:
            s = torch.as_tensor(channel_scores[layer.name], dtype=torch.float32)
            m[torch.argsort(s)[:n_prune].numpy()] = 0
        out[layer.name] = m
    return out


def pruned_from_masks(dense: nn.Module, space: Any, ratios: Sequence[float], masks: dict[str, np.ndarray]) -> nn.Module:
    """A copy of ``dense`` with exactly the ``masks``' channels removed (Torch-Pruning surgery).

    :raises ValueError: a mask whose kept count disagrees with the ratios (another model's masks).
    """
    from pruning_tools.surgery.channels import apply_ratios

    for layer, r in zip(space.layers, ratios):
        m = masks.get(layer.name)
        if m is None or len(m) != layer.channels:
            raise ValueError(f"mask of layer {layer.name} missing or of the wrong width")
        if int(np.sum(m)) != min(layer.channels, space.kept(layer.index, float(r))):
            raise ValueError(f"mask of layer {layer.name} keeps {int(np.sum(m))} channels, its ratio {r:.3f} keeps "
                             f"{space.kept(layer.index, float(r))}")
    model = copy.deepcopy(dense)
    # 0/1 scores: apply_ratios removes the lowest first, i.e. exactly the zeros
    scores = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in masks.items()}
    apply_ratios(model, space, ratios, scores)
    return model


def prune_once(dense: nn.Module, space: Any, ratios: Sequence[float], masks: dict[str, np.ndarray]) -> nn.Module:
    """The server's one-time surgery (the same as a vehicle's :func:`pruned_from_masks`)."""
    return pruned_from_masks(dense, space, ratios, masks)


# -------------------------------------------------------------------------------- stage 3
def local_finetune(model: nn.Module, stream: Any, cfg: FederatedConfig, start: int, steps: int, total: int,
                   teacher: nn.Module | None = None, proximal_mu: float = 0.0, progress: Any = None,
                   optim_in: Path | None = None, optim_out: Path | None = None) -> dict[str, Any]:
    """``steps`` fine-tune batches ``start..start+steps-1`` of a ``total``-batch cosine schedule, then
    BatchNorm re-estimation on ``cfg.bn_batches`` batches of the same stream.

    :param teacher: the dense model for distillation (``cfg.distill_weight > 0``).
    :param proximal_mu: FedProx: adds ``mu * (w - w_global)`` to every gradient before the step
        (Li et al., 2020, "Federated Optimization in Heterogeneous Networks", eq. 2), ``w_global``
        being the weights the round started from.
    :param optim_in: the vehicle's optimiser state (SGD momentum) from its previous round, loaded when
        it exists and fits: the momentum keeps building across rounds as in one central run (with a
        fresh optimiser every round, a few local steps never reach the momentum's full step size).
        It stays on the vehicle.
    :param optim_out: where to write the optimiser state after the steps.
    :return: ``{"loss", "steps"}`` (mean loss per image of the last batches).
    """
    from pruning_tools.train.distill import Distiller
    from pruning_tools.train.loop import make_optimizer, recalibrate_bn, train_steps

    opt = make_optimizer(model, cfg.lr0)
    if optim_in is not None and Path(optim_in).is_file():
        try:
            opt.load_state_dict(torch.load(optim_in, map_location="cpu", weights_only=True))
        except (ValueError, RuntimeError, KeyError):  # another structure: start afresh
            opt = make_optimizer(model, cfg.lr0)
    if proximal_mu > 0:
        anchor = {id(p): p.detach().clone() for p in model.parameters()}

        def prox(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            with torch.no_grad():
                for g in optimizer.param_groups:
                    for p in g["params"]:
                        if p.grad is not None:
                            p.grad.add_(p.detach() - anchor[id(p)], alpha=proximal_mu)

        opt.register_step_pre_hook(prox)
    distiller = Distiller(teacher, cfg.distill_weight, cfg.distill_temperature) if (
        teacher is not None and cfg.distill_weight > 0) else None
    _, losses = train_steps(model, stream, start, start + steps, total, cfg.lr0, opt, lrf=LRF, warmup=0,
                            progress=progress, distiller=distiller)
    if optim_out is not None:
        tmp = Path(optim_out).with_name(f".{Path(optim_out).name}.tmp")
        torch.save(opt.state_dict(), tmp)
        tmp.replace(optim_out)
    recalibrate_bn(model, stream, cfg.bn_batches, start=1_000_000 + start)
    model.eval()
    return {"loss": float(np.mean(losses[-3:])) if losses else float("nan"), "steps": int(steps)}


def evaluate_on(model: nn.Module, data: Path, split: str, cfg: FederatedConfig) -> dict[str, float]:
    """mAP50-95 / mAP50 of ``model`` on ``split`` of YOLO dataset ``data`` (this project's evaluator)."""
    from pruning_tools.train.evaluate import evaluate_model

    res = evaluate_model(model, data, split, tuple(cfg.imgsz))
    n = sum(1 for _ in (Path(data) / "images" / split).iterdir())
    return {"map50_95": float(res["map50_95"]), "map50": float(res["map50"]), "images": n}
