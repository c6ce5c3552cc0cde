"""Stage 1: gradient-L1 importance per coupled channel group -> budgets meeting the target."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.tiny_data import make_yolo_dataset
from pruning_tools import ultralytics_adapter as ua
from pruning_tools.search.importance import budgets_from_importance, compute_importance
from pruning_tools.surgery.channels import PruningError, PruningSpace
from pruning_tools.data.yolo import BatchStream, YoloDataset

IMGSZ = (96, 320)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    torch.manual_seed(0)
    data = make_yolo_dataset(tmp_path_factory.mktemp("imp") / "ds", n_train=8, n_val=2, n_test=2)
    model = ua.build_model("yolov5n.yaml")
    space = PruningSpace(model, IMGSZ)
    stream = BatchStream(YoloDataset(data, "train", IMGSZ), batch=2, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = compute_importance(model, space, stream, batches=2, progress=False)
    return model, space, res, before


def test_importance_per_group_without_changing_weights(setup: tuple) -> None:
    model, space, res, before = setup
    assert res.layer_importance.shape == (len(space),)
    assert np.all(res.layer_importance >= 0) and np.all(np.isfinite(res.layer_importance))
    assert np.mean(res.layer_importance > 0) > 0.8  # heads of scales without targets may get no gradient
    assert all(len(res.channel_scores[layer.name]) == layer.channels for layer in space.layers)
    for k, v in model.state_dict().items():  # weights and BatchNorm statistics alike
        torch.testing.assert_close(v, before[k])
    assert space.layers[0].importance == pytest.approx(res.layer_importance[0])


def test_channel_scores_follow_the_graphs_root_mapping_through_unequal_concats() -> None:
    """yolov8n's C2f concatenates branches of unequal width: a consumer's input index is not the
    root channel modulo the width; the score must land on the graph's root channel."""
    from torch import nn

    from pruning_tools.search.importance import group_importance
    from pruning_tools.surgery.channels import _groups, build_graph

    model = ua.build_model("yolov8n.yaml").eval()
    space = PruningSpace(model, IMGSZ)
    dg = build_graph(model)
    pname = {id(p): n for n, p in model.named_parameters()}
    case = None
    for name, g in _groups(model, dg):
        n = dict(model.named_modules())[name].out_channels
        for item in g:
            mod = item.dep.target.module
            if (isinstance(mod, nn.Conv2d) and mod.groups == 1
                    and not dg.is_out_channel_pruning_fn(item.dep.handler)):
                for i, r in zip(item.idxs, item.root_idxs):
                    if int(i) % n != int(r):
                        case = (name, mod, int(i), int(r))
                        break
            if case:
                break
        if case:
            break
    assert case is not None, "yolov8n has no offset concat input (test premise)"
    name, mod, col, root = case
    grads = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    grads[pname[id(mod.weight)]][:, col] = 1.0
    scores = group_importance(model, space, grads).channel_scores[name]
    assert torch.nonzero(scores).flatten().tolist() == [root]


@pytest.mark.parametrize("target", [0.5, 0.75, 0.9])
def test_budgets_meet_target_and_follow_importance(setup: tuple, target: float) -> None:
    _, space, res, _ = setup
    ratios = budgets_from_importance(space, res.layer_importance, target, max_ratio=0.9, beta=1.0)
    s = space.sparsity(ratios)
    assert target <= s < target + 0.05
    assert np.all(ratios >= 0) and np.all(ratios <= 0.9 + 1e-9)
    # less important layers are pruned at least as hard (ties only where clipped)
    order = np.argsort(res.layer_importance)
    r_sorted = ratios[order]
    assert np.all(np.diff(r_sorted) <= 1e-9)


def test_budget_errors(setup: tuple) -> None:
    _, space, res, _ = setup
    with pytest.raises(PruningError):
        budgets_from_importance(space, res.layer_importance, 1.0)
    with pytest.raises(ValueError):
        budgets_from_importance(space, res.layer_importance[:3], 0.5)


def test_empty_dataset_is_rejected(tmp_path: Path) -> None:
    from pruning_tools.data.yolo import DatasetError

    (tmp_path / "images" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="empty"):
        YoloDataset(tmp_path, "train", IMGSZ)
    with pytest.raises(DatasetError, match="not found"):
        YoloDataset(tmp_path / "nope", "train", IMGSZ)
