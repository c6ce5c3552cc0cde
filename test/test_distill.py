"""Knowledge distillation in stage 3: the KD loss, its gradients, a distilled fine-tune (resume, seed)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from helpers.tiny_data import make_yolo_dataset
from pruning_tools import ultralytics_adapter as ua
from pruning_tools.data.yolo import BatchStream, YoloDataset
from pruning_tools.pipeline.config import ConfigError, config_from_dict
from pruning_tools.surgery.channels import PruningSpace
from pruning_tools.surgery.finetune import FinetuneConfig, prune_and_finetune
from pruning_tools.train.distill import Distiller, kd_loss

IMGSZ = (64, 192)


@pytest.fixture(scope="module")
def dense() -> torch.nn.Module:
    torch.manual_seed(0)
    return ua.build_model("yolov5n.yaml").eval()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_yolo_dataset(tmp_path_factory.mktemp("kd") / "ds", n_train=6, n_val=1, n_test=1, size=IMGSZ)


def _perturbed(model: torch.nn.Module, scale: float, seed: int = 1) -> torch.nn.Module:
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale * (p.abs().mean() + 1e-3))
    return m


def test_kd_loss_zero_for_teacher_itself_and_grows_with_perturbation(dense: torch.nn.Module) -> None:
    x = torch.rand(2, 3, *IMGSZ)
    with torch.no_grad():
        t = ua.head_outputs(dense, x)
        assert t.reg_max == 16 and t.boxes.shape[1] == 64 and t.scores.shape[1] == 3
        same = kd_loss(ua.head_outputs(dense, x), t)
        assert float(same.total) == pytest.approx(0.0, abs=1e-5)
        vals = [float(kd_loss(ua.head_outputs(_perturbed(dense, s), x), t).total) for s in (0.05, 0.2, 0.6)]
    assert 1e-4 < vals[0] < vals[1] < vals[2], vals
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(t, t, temperature=0.0)


def test_kd_gradient_reaches_the_student_only(dense: torch.nn.Module) -> None:
    x = torch.rand(2, 3, *IMGSZ)
    teacher = dense
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller = Distiller(teacher, weight=1.0, temperature=2.0)
    student = _perturbed(dense, 0.2).train()
    kd = distiller.loss(x, ua.head_outputs(student, x))
    kd.total.backward()
    grads = [p.grad for p in student.parameters() if p.requires_grad]  # (DFL's fixed projection has none)
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None and not p.requires_grad for p in distiller.teacher.parameters())
    # the dense model handed in is neither frozen nor changed (other stages deep-copy it to train)
    assert [p.requires_grad for p in teacher.parameters()] == [p.requires_grad for p in student.parameters()]
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    assert not distiller.teacher.training
    with pytest.raises(ValueError, match="weight"):
        Distiller(teacher, weight=0.0)


def _run(dense: torch.nn.Module, data: Path, out: Path, **kw: object) -> tuple[torch.nn.Module, dict]:
    stream = BatchStream(YoloDataset(data, "train", IMGSZ), batch=2, seed=3)
    space = PruningSpace(dense, IMGSZ)
    cfg = FinetuneConfig(**{"prune_steps": 1, "steps_per_prune": 0, "final_steps": 4, "batch": 2,
                            "checkpoint_every": 2, "bn_batches": 1, "seed": 3, "distill_weight": 1.0, **kw})
    torch.manual_seed(3)
    return prune_and_finetune(dense, space, space.uniform(0.5), stream, out, cfg, {"method": "kd"}, progress=False)


def test_distilled_finetune_resumes_and_is_deterministic(dense: torch.nn.Module, data: Path, tmp_path: Path) -> None:
    x = torch.rand(1, 3, *IMGSZ)
    ref, summary = _run(dense, data, tmp_path / "a")
    assert summary["distill"]["weight"] == 1.0 and summary["distill"]["final_kd_loss"] > 0
    assert "DFL" in summary["distill"]["box"]
    assert ua.load_checkpoint(tmp_path / "a" / "model.pt")[1]["finetune"]["distill"]["temperature"] == 1.0
    again, _ = _run(dense, data, tmp_path / "b")  # same seed: the same model
    torch.testing.assert_close(ua.raw_forward(again, x), ua.raw_forward(ref, x))
    # interrupted after its batch-2 checkpoint, then resumed (teacher rebuilt): the same model again
    part, psum = _resume_half(dense, data, tmp_path / "d")
    assert psum["resumed_from"] == 2
    torch.testing.assert_close(ua.raw_forward(part, x), ua.raw_forward(ref, x))
    # without distillation the result differs (the KD term acts) and the summary says it was off
    plain, psum = _run(dense, data, tmp_path / "e", distill_weight=0.0)
    assert psum["distill"] is None
    assert not torch.allclose(ua.raw_forward(plain, x), ua.raw_forward(ref, x))


def _resume_half(dense: torch.nn.Module, data: Path, out: Path) -> tuple[torch.nn.Module, dict]:
    """Run the 4-batch job, interrupted (exception) right after its batch-2 checkpoint, then resume."""
    stream = BatchStream(YoloDataset(data, "train", IMGSZ), batch=2, seed=3)
    orig = stream.get
    calls = {"n": 0}

    def failing_get(step: int) -> dict[str, torch.Tensor]:
        if step < 50_000:  # training batches (BN recalibration reads from 50_000 on)
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt("killed")
        return orig(step)

    stream.get = failing_get  # type: ignore[method-assign]
    space = PruningSpace(dense, IMGSZ)
    cfg = FinetuneConfig(prune_steps=1, steps_per_prune=0, final_steps=4, batch=2, checkpoint_every=2, bn_batches=1,
                         seed=3, distill_weight=1.0)
    torch.manual_seed(3)
    with pytest.raises(KeyboardInterrupt):
        prune_and_finetune(dense, space, space.uniform(0.5), stream, out, cfg, progress=False)
    assert (out / "work.pt").is_file() and json.loads((out / "state.json").read_text())["iter"] == 2
    stream.get = orig  # type: ignore[method-assign]
    torch.manual_seed(3)
    return prune_and_finetune(dense, space, space.uniform(0.5), stream, out, cfg, progress=False)


@pytest.mark.parametrize("section, match", [
    ({"distill_weight": -0.5}, "finetune.distill_weight must be >= 0"),
    ({"distill_temperature": 0}, "finetune.distill_temperature must be > 0"),
    ({"distill_weight": "high"}, "finetune.distill_weight: expected a number"),
    ({"distill_weight": 1.0, "steps_per_prune": 0, "final_steps": 0}, "needs fine-tune batches"),
    ({"distill_weigth": 1.0}, "unknown key 'finetune.distill_weigth'"),
])
def test_distill_config_errors(section: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_dict({"finetune": section})


def test_distill_config_default_off_and_passed_through() -> None:
    assert config_from_dict({}).finetune.distill_weight == 0.0
    c = config_from_dict({"finetune": {"distill_weight": 2, "distill_temperature": 3}}).finetune
    assert (c.distill_weight, c.distill_temperature) == (2.0, 3.0)
    with pytest.raises(ValueError, match="distill_weight"):
        FinetuneConfig(distill_weight=-1.0)


def test_prune_run_passes_distillation_to_stage3_and_records_it(data: Path, tmp_path: Path) -> None:
    from pruning_tools.pipeline.prune import Pipeline

    base = ua.save_checkpoint(ua.build_model("yolov5n.yaml"), tmp_path / "base.pt")
    cfg = config_from_dict({
        "name": "kd", "baseline": str(base), "levels": [0.5], "methods": ["uniform"], "round_to": 8, "threads": 1,
        "data": {"dataset": str(data), "imgsz": list(IMGSZ), "val_images": 1, "test_images": 1},
        "finetune": {"prune_steps": 1, "steps_per_prune": 0, "final_steps": 2, "batch": 2, "crop_width": None,
                     "bn_batches": 1, "distill_weight": 0.5, "distill_temperature": 1.5},
        "latency": {"runs": 1, "warmup": 0}})
    pipe = Pipeline(cfg, tmp_path / "run", progress=False)
    inputs = pipe.prepare()
    dense_res = pipe.measure(inputs.dense, inputs.data)
    rec = pipe.run_unit(inputs, "uniform", 0.5, 0, None, dense_res)
    kd = rec["finetune"]["distill"]
    assert (kd["weight"], kd["temperature"]) == (0.5, 1.5) and kd["final_kd_loss"] > 0
    assert rec["finetune"]["config"]["distill_weight"] == 0.5


def test_unlabelled_batches_add_the_kd_term_alone_and_need_a_teacher(dense: torch.nn.Module, data: Path) -> None:
    """train_steps' ``unlabelled`` stream: one KD-only batch per step (recorded in ``unlabelled_history``), > 0 for a
    student that differs from its teacher; without a distiller it is refused (it would have no targets)."""
    from pruning_tools.train.loop import train_steps

    stream = BatchStream(YoloDataset(data, "train", IMGSZ), batch=2, seed=0)
    student = _perturbed(dense, 0.2)
    distiller = Distiller(dense, 1.0)
    train_steps(student, stream, 0, 2, 2, 0.001, distiller=distiller, unlabelled=stream, batch_offset=7)
    assert len(distiller.history) == 2 and len(distiller.unlabelled_history) == 2
    assert all(v > 0 for v in distiller.unlabelled_history)
    with pytest.raises(ValueError, match="need a distiller"):
        train_steps(copy.deepcopy(dense), stream, 0, 1, 1, 0.001, unlabelled=stream)
