"""Structured (channel) pruning of YOLO detectors with Torch-Pruning's dependency graph.

Vocabulary used across :mod:`pruning_tools`:

* a **layer** is a coupled channel group of the dependency graph (channels that must be removed
  together: a conv's outputs, the BN after it, the inputs of every consumer, residual partners).
  It is named after its root convolution, and layers are ordered as the model runs;
* a layer's **ratio** is the fraction of its channels removed (kept channels are rounded to a
  multiple of ``round_to``, at least ``round_to``);
* a model's **sparsity** is the fraction of the dense model's parameters removed. Targets of
  0.5/0.75/0.9 are parameter sparsities, directly comparable with unstructured sparsity (the
  fraction of zeroed weights) in ``bench/prune_speed.py``. ``PruningSpace(metric="flops")`` makes
  the targets fractions of convolution FLOPs removed instead (a speed-oriented budget).

:class:`PruningSpace` computes parameters and FLOPs for any ratio vector analytically (exact up to
parameters outside convs/BNs), so budgets can be solved and the RL agent can clip its actions to
keep the global target reachable, without touching the model. :func:`apply_ratios` then removes
channels physically (lowest L2 magnitude first, per group).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch_pruning as tp
from torch import nn


#: what a level is a fraction of: parameters removed, conv FLOPs removed, or predicted latency removed
#: (a speed-up ``x`` is the level ``1 - 1/x``; :func:`pruning_tools.quant.latency.speedup_level`)
METRICS = ("params", "flops", "latency")


class PruningError(ValueError):
    """Bad pruning input (target, ratios, model); the message says which."""


def check_target(target: float, name: str = "target") -> float:
    """:return: ``target`` as float when strictly inside (0, 1).

    :raises PruningError: otherwise.
    """
    try:
        t = float(target)
    except (TypeError, ValueError):
        raise PruningError(f"{name} must be a number in (0, 1), got {target!r}") from None
    if not (0.0 < t < 1.0) or math.isnan(t):
        raise PruningError(f"{name} must be strictly between 0 and 1 (fraction of parameters removed), got {target!r}")
    return t


@dataclass
class Layer:
    """One prunable coupled channel group.

    :param index: position in model order.
    :param name: root convolution's qualified name.
    :param channels: channels in the group.
    :param kernel: root conv kernel size.
    :param flops: dense MACs of the convs whose outputs belong to the group (at the space's imgsz).
    :param params: dense parameters touched by the group (outputs and consumer inputs).
    """

    index: int
    name: str
    channels: int
    kernel: int
    flops: float
    params: float
    flops_share: float = 0.0
    importance: float = 0.0


@dataclass
class _ConvRec:
    name: str
    out_ch: int
    in_ch: int
    k2: int
    depthwise: bool
    hw: int
    has_bn: bool
    bias: bool
    out_group: int | None = None
    in_groups: list[tuple[int, int]] = field(default_factory=list)
    #: geometry for the latency model (:mod:`pruning_tools.quant.latency`): kernel (kh, kw), stride,
    #: padding, groups, the input's (H, W)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    in_hw: tuple[int, int] = (0, 0)


def _ignored_modules(model: nn.Module) -> list[nn.Module]:
    from pruning_tools.ultralytics_adapter import ignored_layers

    out: list[nn.Module] = []
    for m in ignored_layers(model):
        out.extend(m.modules())
    return out


def build_graph(model: nn.Module, imgsz: tuple[int, int] = (64, 64)) -> tp.DependencyGraph:
    """Trace ``model`` into a Torch-Pruning dependency graph.

    :raises PruningError: when the model cannot be traced (names the failure).
    """
    from pruning_tools.ultralytics_adapter import example_input

    was_training = model.training
    model.eval()
    try:
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_input(imgsz))
    except Exception as exc:  # noqa: BLE001 - tracing failures come in many types
        raise PruningError(f"cannot trace {type(model).__name__} for dependency analysis: "
                           f"{type(exc).__name__}: {exc}") from exc
    finally:
        model.train(was_training)
    return dg


def _groups(model: nn.Module, dg: tp.DependencyGraph) -> list[tuple[str, tp.Group]]:
    names = {m: n for n, m in model.named_modules()}
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    out = []
    for g in dg.get_all_groups(ignored_layers=_ignored_modules(model), root_module_types=[nn.Conv2d]):
        root = g[0].dep.target.module
        if not isinstance(root, nn.Conv2d) or root.out_channels < 2:
            continue
        out.append((names[root], g))
    out.sort(key=lambda t: order[t[0]])
    return out


def _kept_channels(n: np.ndarray, ratios: np.ndarray, round_to: int) -> np.ndarray:
    """The channel-rounding rule of :class:`PruningSpace`: ``n * (1 - ratio)`` rounded (half to even) to a
    multiple of ``round_to``, at least ``round_to``, at most ``n``; layers of ``<= round_to`` channels and
    ratios ``<= 0`` keep all ``n``."""
    keep = n * (1.0 - np.clip(ratios, 0.0, 1.0))
    kept = np.minimum(n, np.maximum(round_to, np.round(keep / round_to) * round_to))
    return np.where((n <= round_to) | (ratios <= 0), n, kept)


class PruningSpace:
    """Per-layer description of a model's prunable groups with an analytic cost model.

    :param model: the dense model (not modified).
    :param imgsz: input (H, W) for FLOPs.
    :param round_to: kept channels are multiples of this.
    """

    def __init__(self, model: nn.Module, imgsz: tuple[int, int] = (384, 1248), round_to: int = 8,
                 metric: str = "params") -> None:
        if metric not in METRICS:
            raise PruningError(f"target metric must be one of {', '.join(METRICS)}, got {metric!r}")
        self.metric = metric
        #: the latency model ``metric="latency"`` targets (:meth:`attach_latency`)
        self.latency: Any = None
        self.imgsz = (int(imgsz[0]), int(imgsz[1]))
        self.round_to = int(round_to)
        dg = build_graph(model)
        groups = _groups(model, dg)
        if not groups:
            raise PruningError("model has no prunable channel groups")
        modules = dict(model.named_modules())
        hw, in_hw = self._output_hw(model)
        self.convs: dict[str, _ConvRec] = {}
        for name, m in modules.items():
            if isinstance(m, nn.Conv2d):
                parent = modules.get(name.rsplit(".", 1)[0]) if "." in name else None
                pad = m.padding if isinstance(m.padding, tuple) else (0, 0)
                self.convs[name] = _ConvRec(
                    name, m.out_channels, m.in_channels, int(np.prod(m.kernel_size)),
                    m.groups > 1 and m.groups == m.in_channels, hw.get(name, 0),
                    isinstance(getattr(parent, "bn", None), nn.BatchNorm2d), m.bias is not None,
                    kernel=(int(m.kernel_size[0]), int(m.kernel_size[1])),
                    stride=(int(m.stride[0]), int(m.stride[1])), padding=(int(pad[0]), int(pad[1])),
                    groups=int(m.groups), in_hw=in_hw.get(name, (0, 0)))
        names = {m: n for n, m in modules.items()}
        self.layers: list[Layer] = []
        for gi, (root_name, g) in enumerate(groups):
            for dep, idxs in g:
                tgt = dep.target.module
                if not isinstance(tgt, nn.Conv2d) or tgt not in names:
                    continue
                rec = self.convs[names[tgt]]
                if dg.is_out_channel_pruning_fn(dep.handler):
                    rec.out_group = gi
                else:
                    rec.in_groups.append((gi, len(idxs)))
            root = modules[root_name]
            self.layers.append(Layer(gi, root_name, int(root.out_channels), int(root.kernel_size[0]), 0.0, 0.0))
        # depthwise convs follow their input group
        for rec in self.convs.values():
            if rec.depthwise and rec.out_group is None and rec.in_groups:
                rec.out_group = rec.in_groups[0][0]
        self._channels = np.array([layer.channels for layer in self.layers], dtype=np.float64)
        self.total_params_dense = float(sum(p.numel() for p in model.parameters()))
        dense_p, dense_f = self._cost(np.ones(len(self.layers)) * 0, per_layer=True)
        self.dense_conv_params, self.dense_flops = dense_p, dense_f
        self.other_params = self.total_params_dense - dense_p
        total_f = max(dense_f, 1.0)
        for layer in self.layers:
            layer.flops_share = layer.flops / total_f

    def __len__(self) -> int:
        return len(self.layers)

    def _output_hw(self, model: nn.Module) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
        """:return: every conv's output pixels (H x W) and its input's (H, W) at the space's imgsz."""
        from pruning_tools.ultralytics_adapter import example_input

        hw: dict[str, int] = {}
        in_hw: dict[str, tuple[int, int]] = {}

        def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor, n: str) -> None:
            hw[n] = int(out.shape[-1] * out.shape[-2])
            in_hw[n] = (int(inp[0].shape[-2]), int(inp[0].shape[-1]))

        hooks = []
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                hooks.append(m.register_forward_hook(lambda mod, inp, out, n=name: hook(mod, inp, out, n)))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(example_input(self.imgsz))
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)
        return hw, in_hw

    def kept(self, layer: int, ratio: float) -> int:
        """Channels kept in ``layer`` at ``ratio`` (multiple of ``round_to``, >= ``round_to``)."""
        return int(_kept_channels(self._channels[layer:layer + 1], np.array([ratio], dtype=np.float64),
                                  self.round_to)[0])

    def kept_counts(self, ratios: Sequence[float]) -> tuple[int, ...]:
        """:meth:`kept` of every layer at once (e.g. a search candidate's identity)."""
        return tuple(_kept_channels(self._channels, np.asarray(ratios, dtype=np.float64), self.round_to)
                     .astype(int).tolist())

    def _kept_fraction(self, ratios: np.ndarray) -> np.ndarray:
        """:meth:`kept` / channels for every layer at once."""
        return _kept_channels(self._channels, np.asarray(ratios, dtype=np.float64), self.round_to) / self._channels

    def conv_widths(self, ratios: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """Output and input channels of every conv (in :attr:`convs` order) after pruning with ``ratios``
        (channel rounding applied; consumers of several groups sum their kept inputs)."""
        self._vectors()
        v = self._vec
        frac = np.append(self._kept_fraction(np.asarray(ratios, dtype=np.float64)), 1.0)  # -1: outside every group
        return v["out_ch"] * frac[v["out"]], v["base_in"] + v["m"] @ frac[:-1]

    def _vectors(self) -> None:
        if getattr(self, "_vec", None) is None:
            convs = list(self.convs.values())
            m = np.zeros((len(convs), len(self.layers)))
            for j, rec in enumerate(convs):
                for g, c in rec.in_groups:
                    m[j, g] += c
            self._vec = {
                "out": np.array([-1 if rec.out_group is None else rec.out_group for rec in convs]),
                "out_ch": np.array([rec.out_ch for rec in convs], dtype=np.float64),
                "dw": np.array([rec.depthwise for rec in convs]),
                "base_in": np.array([rec.in_ch - sum(c for _, c in rec.in_groups) for rec in convs], dtype=np.float64),
                "m": m, "k2": np.array([rec.k2 for rec in convs], dtype=np.float64),
                "hw": np.array([rec.hw for rec in convs], dtype=np.float64),
                "extra": np.array([(1.0 if rec.bias else 0.0) + (2.0 if rec.has_bn else 0.0) for rec in convs]),
            }

    def _vector_cost(self, ratios: np.ndarray) -> tuple[float, float]:
        """:meth:`_cost` as array arithmetic (the search calls it thousands of times per episode batch)."""
        o, i = self.conv_widths(ratios)
        v = self._vec
        w = np.where(v["dw"], o * v["k2"], o * i * v["k2"])
        return float(np.sum(w + o * v["extra"])), float(np.sum(w * v["hw"]))

    def _cost(self, ratios: np.ndarray, per_layer: bool = False) -> tuple[float, float]:
        if not per_layer:
            return self._vector_cost(ratios)
        frac = self._kept_fraction(np.asarray(ratios))
        params = flops = 0.0
        for rec in self.convs.values():
            o = rec.out_ch * (frac[rec.out_group] if rec.out_group is not None else 1.0)
            if rec.depthwise:
                w = o * rec.k2
            else:
                i_cnt = sum(c for _, c in rec.in_groups)
                i = (rec.in_ch - i_cnt) + sum(c * frac[g] for g, c in rec.in_groups)
                w = o * i * rec.k2
            p = w + (o if rec.bias else 0.0) + (2 * o if rec.has_bn else 0.0)
            params += p
            flops += w * rec.hw
            if per_layer:
                if rec.out_group is not None and not rec.depthwise:
                    self.layers[rec.out_group].flops += w * rec.hw
                for g, _ in ([(rec.out_group, 0)] if rec.out_group is not None else []) + rec.in_groups:
                    self.layers[g].params += p
        return params, flops

    def params(self, ratios: Sequence[float]) -> float:
        """Estimated total parameters after pruning with ``ratios`` (one per layer)."""
        r = self._check(ratios)
        return self._cost(r)[0] + self.other_params

    def flops(self, ratios: Sequence[float]) -> float:
        """Estimated MACs of convolutions after pruning."""
        return self._cost(self._check(ratios))[1]

    def sparsity(self, ratios: Sequence[float]) -> float:
        """Fraction of the dense model's parameters removed by ``ratios`` (the targeted quantity;
        with ``metric="flops"`` the fraction of convolution FLOPs removed instead)."""
        if self.metric == "flops":
            return 1.0 - self.flops(ratios) / self.dense_flops
        if self.metric == "latency":
            return self.latency_reduction(ratios)
        return self.param_sparsity(ratios)

    def attach_latency(self, latency: Any) -> None:
        """Use ``latency`` (a :class:`pruning_tools.quant.latency.LatencyModel` of this space) for
        :meth:`latency_reduction` and, with ``metric="latency"``, as the targeted quantity."""
        self.latency = latency

    def latency_reduction(self, ratios: Sequence[float]) -> float:
        """Fraction of the dense model's latency removed by ``ratios``, as the attached latency model
        predicts it (``1 - 1/speed-up``).

        :raises PruningError: when no latency model is attached.
        """
        if self.latency is None:
            raise PruningError("no latency model attached to this pruning space (target_metric: latency "
                               "needs one: pruning_tools.quant.latency.LatencyModel)")
        r = self._check(ratios)
        return 1.0 - self.latency.predict(r) / self.latency.dense_ms

    def param_sparsity(self, ratios: Sequence[float]) -> float:
        """Fraction of the dense model's parameters removed by ``ratios``."""
        return 1.0 - self.params(ratios) / self.total_params_dense

    def _check(self, ratios: Sequence[float]) -> np.ndarray:
        r = np.asarray(ratios, dtype=np.float64).reshape(-1)
        if r.shape[0] != len(self.layers):
            raise PruningError(f"{r.shape[0]} ratios given for {len(self.layers)} layers")
        if np.any(~np.isfinite(r)) or np.any(r < 0) or np.any(r >= 1):
            raise PruningError("layer ratios must be finite and in [0, 1)")
        return r

    def max_sparsity(self, max_ratio: float) -> float:
        """Largest reachable sparsity with every layer at ``max_ratio``."""
        return self.sparsity([max_ratio] * len(self.layers))

    def solve(self, weights: Sequence[float], target: float, max_ratio: float = 0.95,
              floor: Sequence[float] | None = None) -> np.ndarray:
        """Scale per-layer ``weights`` to ratios ``clip(a * w, floor, max_ratio)`` meeting ``target``.

        Bisection on ``a``; the result's :meth:`sparsity` is the smallest reachable value >= target
        (ratios are rounded to channel multiples, so it can overshoot slightly).

        :raises PruningError: when ``target`` is outside (0,1) or unreachable with ``max_ratio``.
        """
        target = check_target(target)
        w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
        lo_r = np.zeros(len(w)) if floor is None else np.asarray(floor, dtype=np.float64)
        if w.shape[0] != len(self.layers):
            raise PruningError(f"{w.shape[0]} weights given for {len(self.layers)} layers")
        if self.max_sparsity(max_ratio) < target - 1e-9:
            raise PruningError(f"target sparsity {target:.3f} unreachable: at most {self.max_sparsity(max_ratio):.3f} "
                               f"with max layer ratio {max_ratio}")
        if not np.any(w > 0):
            w = np.ones_like(w)

        def ratios(a: float) -> np.ndarray:
            return np.clip(np.maximum(a * w, lo_r), 0.0, max_ratio)

        lo, hi = 0.0, 1.0
        while self.sparsity(ratios(hi)) < target and hi < 1e6:
            hi *= 2.0
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            if self.sparsity(ratios(mid)) >= target:
                hi = mid
            else:
                lo = mid
        return ratios(hi)

    def uniform(self, target: float, max_ratio: float = 0.95) -> np.ndarray:
        """Same ratio for every layer, meeting ``target`` as closely as channel rounding allows.

        One shared ratio jumps in large steps (many layers have the same width and round together:
        53.3 % instead of 50 % for yolov5n at ``round_to`` 16). So: the largest shared ratio ``r_lo``
        below the target everywhere, then layers are moved one at a time (smallest sparsity step
        first) to the smallest shared ratio ``r_hi`` that meets it, until the target is met. Every
        layer's ratio is ``r_lo`` or ``r_hi`` (one rounding step apart).
        """
        hi_r = self.solve(np.ones(len(self.layers)), target, max_ratio)
        r_hi = float(hi_r[0])
        lo, hi = 0.0, r_hi
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if self.sparsity(np.full(len(self.layers), mid)) >= target:
                hi = mid
            else:
                lo = mid
        r_lo = lo
        ratios = np.full(len(self.layers), r_lo)
        if self.sparsity(ratios) >= target:
            return ratios
        base = self.sparsity(ratios)
        gains = []
        for i in range(len(self.layers)):
            r = ratios.copy()
            r[i] = r_hi
            gains.append(self.sparsity(r) - base)
        for i in np.argsort(gains, kind="stable"):
            if gains[i] <= 0:
                continue
            ratios[i] = r_hi
            if self.sparsity(ratios) >= target:
                return ratios
        return hi_r

    def descriptors(self) -> np.ndarray:
        """(L, 4) per-layer features: log2 channels / 10, kernel / 7, FLOPs share, importance (normalised)."""
        imp = np.array([layer.importance for layer in self.layers], dtype=np.float64)
        imp = imp / imp.max() if imp.max() > 0 else imp
        return np.array([[math.log2(layer.channels) / 10.0, layer.kernel / 7.0, layer.flops_share, imp[i]]
                         for i, layer in enumerate(self.layers)], dtype=np.float32)


def apply_ratios(model: nn.Module, space: PruningSpace, ratios: Sequence[float],
                 channel_scores: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Physically remove channels from ``model`` (in place) following per-layer ``ratios``.

    Channels with the lowest group L2 magnitude go first, or the lowest ``channel_scores[layer]``
    when given. Kept counts follow :meth:`PruningSpace.kept`.

    :return: ``model``.
    """
    from pruning_tools.ultralytics_adapter import reset_criterion

    r = space._check(ratios)
    dg = build_graph(model)
    modules = dict(model.named_modules())
    imp_fn = tp.importance.GroupMagnitudeImportance(p=2)
    for layer, ratio in zip(space.layers, r):
        root = modules.get(layer.name)
        if not isinstance(root, nn.Conv2d):
            raise PruningError(f"layer {layer.name!r} is missing from the model being pruned")
        n = root.out_channels  # may already be pruned (stepwise pruning): ratios stay relative to dense
        n_prune = n - min(n, space.kept(layer.index, float(ratio)))
        if n_prune <= 0:
            continue
        full = dg.get_pruning_group(root, tp.prune_conv_out_channels, idxs=list(range(n)))
        scores = channel_scores.get(layer.name) if channel_scores else None
        if scores is None or len(scores) != n:
            scores = imp_fn(full)
        idxs = torch.argsort(torch.as_tensor(scores, dtype=torch.float32))[:n_prune].tolist()
        group = dg.get_pruning_group(root, tp.prune_conv_out_channels, idxs=sorted(idxs))
        if not dg.check_pruning_group(group):
            raise PruningError(f"layer {layer.name!r}: Torch-Pruning rejected removing {n_prune} of {n} channels "
                               f"(ratio {float(ratio):.3f}); the model would not reach its ratios")
        group.prune()
        if root.out_channels != n - n_prune:
            raise PruningError(f"layer {layer.name!r}: {root.out_channels} channels after pruning, "
                               f"expected {n - n_prune}")
    reset_criterion(model)
    return model


class ChannelMasks:
    """The effect of :func:`apply_ratios` on a dense model without its surgery: the channels it would
    remove are zeroed instead (conv output filters and bias, BatchNorm weight and bias of every
    out-channel item of the layer's group). A zeroed channel outputs exactly 0 after BN (and after a
    BN re-estimation: its batch mean and variance are 0), so consumers, residual sums and concats
    see what physical removal gives them. Built once per dense model (one dependency graph), each
    application costs a tensor write per touched module instead of a graph trace per candidate.

    :param model: the dense model (read only).
    :param space: its pruning space.
    :param channel_scores: per-layer scores choosing the channels (lowest first); default group L2
        magnitude, as :func:`apply_ratios`.
    """

    def __init__(self, model: nn.Module, space: PruningSpace,
                 channel_scores: dict[str, torch.Tensor] | None = None) -> None:
        self.space = space
        dg = build_graph(model)
        modules = dict(model.named_modules())
        names = {m: n for n, m in modules.items()}
        imp_fn = tp.importance.GroupMagnitudeImportance(p=2)
        self.order: list[list[int]] = []
        self.items: list[list[tuple[str, list[int]]]] = []
        for layer in space.layers:
            root = modules[layer.name]
            n = root.out_channels
            group = dg.get_pruning_group(root, tp.prune_conv_out_channels, idxs=list(range(n)))
            scores = channel_scores.get(layer.name) if channel_scores else None
            if scores is None or len(scores) != n:
                scores = imp_fn(group)
            self.order.append(torch.argsort(torch.as_tensor(scores, dtype=torch.float32)).tolist())
            outs = []
            for item in group:
                mod = item.dep.target.module
                if dg.is_out_channel_pruning_fn(item.dep.handler) and isinstance(mod, (nn.Conv2d, nn.BatchNorm2d)) \
                        and mod in names:
                    roots = getattr(item, "root_idxs", None) or list(item.idxs)
                    outs.append((names[mod], [int(i) for i in item.idxs], [int(r) for r in roots]))
            self.items.append(outs)  # type: ignore[arg-type]

    def apply(self, model: nn.Module, ratios: Sequence[float]) -> nn.Module:
        """Zero the channels ``apply_ratios(dense, space, ratios)`` would remove, in ``model`` (a copy
        of the dense model), in place. :return: ``model``."""
        r = self.space._check(ratios)
        modules = dict(model.named_modules())
        with torch.no_grad():
            for layer, ratio, order, outs in zip(self.space.layers, r, self.order, self.items):
                n_prune = layer.channels - self.space.kept(layer.index, float(ratio))
                if n_prune <= 0:
                    continue
                gone = set(order[:n_prune])
                for name, idxs, roots in outs:  # type: ignore[misc]
                    sel = [i for i, rt in zip(idxs, roots) if rt in gone]
                    if not sel:
                        continue
                    mod = modules[name]
                    ix = torch.as_tensor(sel, dtype=torch.long)
                    mod.weight.index_fill_(0, ix, 0.0)
                    if mod.bias is not None:
                        mod.bias.index_fill_(0, ix, 0.0)
        return model


def unstructured_prune(model: nn.Module, sparsity: float) -> nn.Module:
    """Zero the smallest-magnitude weights of every prunable conv (global threshold) in place.

    Shapes do not change: this is the contrast case showing zeros alone do not speed up dense runtimes.
    """
    from pruning_tools.ultralytics_adapter import prunable_convs

    s = check_target(sparsity, "sparsity")
    convs = [m for _, m in prunable_convs(model)]
    allw = torch.cat([m.weight.detach().abs().flatten() for m in convs])
    k = int(s * allw.numel())
    thr = torch.kthvalue(allw, max(1, k)).values
    with torch.no_grad():
        for m in convs:
            m.weight.mul_((m.weight.abs() > thr).float())
    return model
