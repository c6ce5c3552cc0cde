"""Structured pruning: cost model, physical channel removal, bad input."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from pruning_tools import ultralytics_adapter as ua
from pruning_tools.train.measure import count_flops
from pruning_tools.surgery.channels import PruningError, PruningSpace, apply_ratios, build_graph, check_target, unstructured_prune

IMGSZ = (96, 320)


@pytest.fixture(scope="module")
def dense() -> nn.Module:
    torch.manual_seed(0)
    return ua.build_model("yolov5n.yaml").eval()


@pytest.fixture(scope="module")
def space(dense: nn.Module) -> PruningSpace:
    return PruningSpace(dense, IMGSZ, round_to=8)


def test_space_lists_head_internals_and_exact_param_model(dense: nn.Module, space: PruningSpace) -> None:
    names = [layer.name for layer in space.layers]
    assert len(names) > 40 and "model.24.cv3.0.0.conv" in names
    assert space.params([0.0] * len(space)) == pytest.approx(sum(p.numel() for p in dense.parameters()))
    ratios = np.random.default_rng(1).uniform(0.0, 0.85, len(space))
    pruned = apply_ratios(copy.deepcopy(dense), space, ratios)
    assert space.params(ratios) == pytest.approx(sum(p.numel() for p in pruned.parameters()))
    gflops, _ = count_flops(pruned, IMGSZ)
    assert 2 * space.flops(ratios) / 1e9 == pytest.approx(gflops, rel=0.05)


@pytest.mark.parametrize("target", [0.5, 0.75, 0.9])
def test_physical_pruning_meets_target_keeps_output_shape(dense: nn.Module, space: PruningSpace, target: float) -> None:
    ratios = space.uniform(target)
    pruned = apply_ratios(copy.deepcopy(dense), space, ratios)
    g0, p0 = count_flops(dense, IMGSZ)
    g1, p1 = count_flops(pruned, IMGSZ)
    assert 1 - p1 / p0 >= target - 1e-6 and 1 - p1 / p0 < target + 0.1
    assert g1 < g0 * (1 - target / 2)
    for name, m in pruned.named_modules():  # channels are multiples of round_to
        if isinstance(m, nn.Conv2d) and name in {layer.name for layer in space.layers}:
            assert m.out_channels % 8 == 0, name
    x = torch.rand(1, 3, *IMGSZ)
    assert ua.raw_forward(pruned, x).shape == ua.raw_forward(dense, x).shape  # (1, 4+nc, N) unchanged


def test_stepwise_application_is_relative_to_dense(dense: nn.Module, space: PruningSpace) -> None:
    ratios = space.uniform(0.75)
    once = apply_ratios(copy.deepcopy(dense), space, ratios)
    steps = apply_ratios(apply_ratios(copy.deepcopy(dense), space, ratios / 2), space, ratios)
    assert sum(p.numel() for p in once.parameters()) == sum(p.numel() for p in steps.parameters())


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 1.5, float("nan"), "x"])
def test_target_outside_open_interval_is_rejected(space: PruningSpace, bad: object) -> None:
    with pytest.raises(PruningError, match="between 0 and 1|number in"):
        check_target(bad)  # type: ignore[arg-type]
    with pytest.raises(PruningError):
        space.uniform(bad)  # type: ignore[arg-type]


def test_unreachable_target_and_wrong_ratio_count(space: PruningSpace) -> None:
    with pytest.raises(PruningError, match="unreachable"):
        space.uniform(0.99, max_ratio=0.5)
    with pytest.raises(PruningError, match="ratios given"):
        space.params([0.1, 0.2])


def test_untraceable_model_gives_clear_error() -> None:
    class Untraceable(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("data-dependent control flow")

    with pytest.raises(PruningError, match="cannot trace Untraceable"):
        build_graph(Untraceable())


def test_unstructured_zeros_keep_shapes(dense: nn.Module) -> None:
    m = unstructured_prune(copy.deepcopy(dense), 0.5)
    convs = [c for _, c in ua.prunable_convs(m)]
    zeros = sum(int((c.weight == 0).sum()) for c in convs)
    total = sum(c.weight.numel() for c in convs)
    assert 0.49 <= zeros / total <= 0.51
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in dense.parameters())


@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo11n.yaml"])
def test_c2f_family_models_prune_and_round_trip(cfg: str, tmp_path) -> None:
    model = ua.build_model(cfg).eval()
    space = PruningSpace(model, IMGSZ)
    ratios = space.uniform(0.5)
    pruned = apply_ratios(copy.deepcopy(model), space, ratios)
    assert space.params(ratios) == pytest.approx(sum(p.numel() for p in pruned.parameters()))
    ua.save_checkpoint(pruned, tmp_path / "p.pt")
    back, _ = ua.load_checkpoint(tmp_path / "p.pt")
    x = torch.rand(1, 3, *IMGSZ)
    torch.testing.assert_close(ua.raw_forward(back, x), ua.raw_forward(pruned.eval(), x))


@pytest.mark.parametrize("target", [0.5, 0.75, 0.9])
def test_uniform_lands_within_one_percent_at_round_to_16(dense: nn.Module, target: float) -> None:
    """One shared ratio overshoots by several % at round_to 16 (53.3 % for 50 % on the baseline);
    uniform keeps two neighbouring ratios so every method meets its level within 1 %."""
    space16 = PruningSpace(dense, IMGSZ, round_to=16)
    ratios = space16.uniform(target, 0.9)
    assert target <= space16.sparsity(ratios) <= target + 0.01
    assert len(np.unique(np.round(ratios, 9))) <= 2


def test_rejected_group_is_an_error_not_a_silent_skip(dense: nn.Module, space: PruningSpace,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import torch_pruning as tp

    monkeypatch.setattr(tp.DependencyGraph, "check_pruning_group", lambda self, group: False)
    with pytest.raises(PruningError, match="rejected"):
        apply_ratios(copy.deepcopy(dense), space, space.uniform(0.5))


def test_channel_masks_give_the_outputs_of_physical_pruning(dense: nn.Module, space: PruningSpace) -> None:
    """The reward proxy's cheap surgery: zeroing the channels apply_ratios removes changes nothing
    the detector outputs (one graph trace per model instead of one per candidate)."""
    from pruning_tools.surgery.channels import ChannelMasks

    masks = ChannelMasks(dense, space)
    x = torch.rand(2, 3, *IMGSZ)
    for seed in (0, 1):
        ratios = np.random.default_rng(seed).uniform(0.0, 0.85, len(space))
        pruned = apply_ratios(copy.deepcopy(dense), space, ratios).eval()
        masked = masks.apply(copy.deepcopy(dense), ratios).eval()
        with torch.no_grad():
            torch.testing.assert_close(ua.raw_forward(masked, x), ua.raw_forward(pruned, x), rtol=1e-4, atol=1e-4)
    assert sum(p.numel() for p in masked.parameters()) == sum(p.numel() for p in dense.parameters())
