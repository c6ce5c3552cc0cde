"""Stage 1: per-layer importance from the L1 norm of gradients, turned into pruning budgets.

Gradients of the detection loss are accumulated (absolute values, summed) over the first ``K``
training batches without updating the weights. Each coupled channel group of the dependency
graph (a *layer*, see :mod:`pruning_tools.surgery.channels`) gets

* a per-channel score: the summed ``|grad|`` of every weight slice that channel owns in the group
  (conv output filters, BN affine parameters, consumer input slices);
* a layer importance: the mean ``|grad|`` per touched parameter (so wide and narrow layers compare).

Budgets: ``ratio_l = clip(a * (imp_l / median imp) ** -beta, 0, max_ratio)`` with ``a`` solved so
the model meets the global parameter-sparsity target. Less important layers are pruned harder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pruning_tools.surgery.channels import PruningSpace, build_graph, check_target, _groups
from pruning_tools.data.yolo import BatchStream


@dataclass
class ImportanceResult:
    """Stage-1 output.

    :param layer_importance: per layer (model order), mean |grad| per parameter.
    :param channel_scores: layer name -> per-channel summed |grad|.
    :param batches: number of batches accumulated.
    """

    layer_importance: np.ndarray
    channel_scores: dict[str, torch.Tensor]
    batches: int

    def to_dict(self, space: PruningSpace) -> dict[str, float]:
        return {layer.name: float(v) for layer, v in zip(space.layers, self.layer_importance)}


def accumulate_gradients(model: nn.Module, stream: BatchStream, batches: int, progress: bool = True
                         ) -> dict[str, torch.Tensor]:
    """Sum of ``|grad|`` of every parameter over ``batches`` batches (weights unchanged).

    :return: parameter name -> accumulated absolute gradient.
    """
    from pruning_tools.ultralytics_adapter import detection_loss, reset_criterion

    if batches < 1:
        raise ValueError(f"importance batches must be >= 1, got {batches}")
    reset_criterion(model)
    was_training = model.training
    # forward passes in train mode update BatchNorm running statistics: keep the dense model's own
    bn_state = {n: b.detach().clone() for n, b in model.named_buffers()}
    model.train()
    acc = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for step in tqdm(range(batches), desc="stage 1: gradients", unit="batch", disable=not progress):
        model.zero_grad(set_to_none=True)
        loss, _ = detection_loss(model, stream.get(step))
        loss.backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                acc[n] += p.grad.detach().abs()
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(bn_state[n])
    model.train(was_training)
    return acc


def group_importance(model: nn.Module, space: PruningSpace, grads: dict[str, torch.Tensor]) -> ImportanceResult:
    """Aggregate accumulated gradients per coupled channel group (Torch-Pruning dependency graph)."""
    dg = build_graph(model)
    groups = dict(_groups(model, dg))
    pname = {id(p): n for n, p in model.named_parameters()}
    layer_imp = np.zeros(len(space.layers))
    scores: dict[str, torch.Tensor] = {}
    for layer in space.layers:
        g = groups.get(layer.name)
        if g is None:
            raise ValueError(f"layer {layer.name} not found in the dependency graph")
        n = layer.channels
        ch = torch.zeros(n)
        total, count = 0.0, 0
        for item in g:
            dep, idxs = item.dep, item.idxs
            mod = dep.target.module
            is_out = dg.is_out_channel_pruning_fn(dep.handler)
            for p_name in ("weight", "bias"):
                p = getattr(mod, p_name, None)
                if not isinstance(p, nn.Parameter) or id(p) not in pname:
                    continue
                gabs = grads[pname[id(p)]]
                idx = torch.as_tensor([int(i) for i in idxs], dtype=torch.long)
                root = _root_indices(getattr(item, "root_idxs", None), len(idxs), n, layer.name)
                if is_out or isinstance(mod, nn.BatchNorm2d) or p_name == "bias":
                    if p_name == "bias" and not (is_out or isinstance(mod, nn.BatchNorm2d)):
                        continue
                    sl = gabs.index_select(0, idx)
                elif isinstance(mod, nn.Conv2d) and mod.groups > 1:
                    continue  # depthwise inputs equal outputs, already counted
                else:
                    sl = gabs.index_select(1, idx).transpose(0, 1)
                per = sl.reshape(len(idx), -1).sum(1)
                # the graph's own mapping back to the root conv's channels (concats of unequal
                # widths, SPPF's 4x concat, splits): each index carries its root index
                ch.index_add_(0, root, per)
                total += float(sl.sum())
                count += sl.numel()
        layer_imp[layer.index] = total / max(count, 1)
        scores[layer.name] = ch
        layer.importance = float(layer_imp[layer.index])
    return ImportanceResult(layer_imp, scores, 0)


def _root_indices(root_idxs: Sequence[int] | None, count: int, n: int, name: str) -> torch.Tensor:
    """Root-channel index of every entry of a group item (Torch-Pruning's ``GroupItem.root_idxs``,
    the dependency graph's own index mapping back through concats, splits and repeats).

    :raises ValueError: when the mapping is missing or falls outside the root's ``n`` channels.
    """
    if root_idxs is None or len(root_idxs) != count:
        raise ValueError(f"layer {name}: the dependency graph gave no root-channel mapping for a group item")
    out = torch.as_tensor([int(-1 if r is None else r) for r in root_idxs], dtype=torch.long)
    if out.numel() and (int(out.min()) < 0 or int(out.max()) >= n):
        raise ValueError(f"layer {name}: root-channel mapping outside 0..{n - 1}")
    return out


def compute_importance(model: nn.Module, space: PruningSpace, stream: BatchStream, batches: int,
                       progress: bool = True) -> ImportanceResult:
    """Stage 1 end to end: accumulate gradients over ``batches`` and aggregate per layer.

    Also stores each layer's importance in ``space.layers[i].importance`` (an RL state feature).
    """
    grads = accumulate_gradients(model, stream, batches, progress)
    res = group_importance(model, space, grads)
    res.batches = batches
    return res


def budgets_from_importance(space: PruningSpace, importance: Sequence[float], target: float,
                            max_ratio: float = 0.9, beta: float = 1.0) -> np.ndarray:
    """Per-layer ratios meeting ``target``; less important layers get larger ratios.

    :param beta: strength of the importance skew (0: uniform).
    :raises PruningError: when the target is outside (0, 1) or unreachable.
    """
    check_target(target)
    imp = np.asarray(importance, dtype=np.float64)
    if imp.shape[0] != len(space.layers):
        raise ValueError(f"{imp.shape[0]} importances for {len(space.layers)} layers")
    pos = imp[imp > 0]
    ref = float(np.median(pos)) if pos.size else 1.0
    rel = np.clip(imp / ref, 1e-3, 1e3)
    weights = rel ** (-float(beta))
    return space.solve(weights, target, max_ratio)
