"""Knowledge distillation from the dense model: its head outputs as soft targets beside the labels.

Stage 3 (:mod:`pruning_tools.surgery.finetune`) fine-tunes the pruned *student* on the detection loss
of the labels plus ``weight`` times :func:`kd_loss` against the frozen dense *teacher*, both fed the
same batch. The shipped heads (Ultralytics ``Detect``: YOLOv5u / v8 / 11) are anchor-free with a DFL
box branch, so the soft targets are, per anchor point:

* **classes** — the teacher's temperature-softened per-class probabilities ``sigmoid(z_t / T)``; the
  loss is the Bernoulli KL divergence to the student's ``sigmoid(z_s / T)`` (the head's classes are
  independent sigmoids, not a softmax), summed over classes and anchors;
* **boxes** — the teacher's DFL bin distributions ``softmax(b_t / T)`` per box side; the loss is the
  KL divergence to the student's, summed over the four sides and weighted per anchor by the teacher's
  highest class probability (background anchors' box distributions carry no information). A head
  without DFL (``reg_max == 1``) gets the squared error of the raw regression outputs instead.

Both terms are multiplied by ``T**2`` (Hinton et al., 2015: gradients keep their scale across
temperatures) and divided by the teacher's soft foreground count (the sum over the batch of each
anchor's highest class probability, at least 1), then multiplied by the batch size — the same
normalisation as Ultralytics' detection loss, so ``weight = 1`` gives the two comparable scales.
Both KL terms are exactly 0 when the student equals the teacher and positive otherwise.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pruning_tools.ultralytics_adapter import HeadOutputs, detect_head, head_outputs

_EPS = 1e-7


@dataclass(frozen=True)
class KDLoss:
    """:param total: ``cls + box`` (to backpropagate, scaled by the batch size).
    :param cls: class term.
    :param box: box term.
    """

    total: torch.Tensor
    cls: torch.Tensor
    box: torch.Tensor


def _bernoulli_kl(t_logits: torch.Tensor, s_logits: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(Bern(sigmoid(t)) || Bern(sigmoid(s))), computed stably from logits."""
    p = torch.sigmoid(t_logits)
    # log p = -softplus(-t), log(1-p) = -softplus(t)
    return (p * (F.softplus(-s_logits) - F.softplus(-t_logits))
            + (1 - p) * (F.softplus(s_logits) - F.softplus(t_logits)))


def kd_loss(student: HeadOutputs, teacher: HeadOutputs, temperature: float = 1.0) -> KDLoss:
    """The distillation loss of ``student``'s head outputs against ``teacher``'s (see the module docstring).

    :param student: the pruned model's head outputs (train mode, with grad).
    :param teacher: the dense model's head outputs on the same batch (no grad).
    :param temperature: softening temperature ``T`` of both terms (> 0).
    :return: :class:`KDLoss`; gradients flow into ``student`` only (the teacher is detached).
    :raises ValueError: on outputs of different shapes (different classes, anchors or DFL bins).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student.scores.shape != teacher.scores.shape or student.boxes.shape != teacher.boxes.shape:
        raise ValueError(f"student and teacher head outputs differ: scores {tuple(student.scores.shape)} vs "
                         f"{tuple(teacher.scores.shape)}, boxes {tuple(student.boxes.shape)} vs "
                         f"{tuple(teacher.boxes.shape)}")
    t2 = float(temperature) ** 2
    ts, tb = teacher.scores.detach().float(), teacher.boxes.detach().float()
    ss, sb = student.scores.float(), student.boxes.float()
    bsz, _, n = ss.shape
    conf = torch.sigmoid(ts).amax(1)  # (B, N): the teacher's highest class probability per anchor
    norm = conf.sum().clamp(min=1.0)
    cls = _bernoulli_kl(ts / temperature, ss / temperature).sum() * t2 / norm
    reg_max = int(teacher.reg_max)
    if reg_max > 1:
        tl = (tb / temperature).view(bsz, 4, reg_max, n)
        sl = (sb / temperature).view(bsz, 4, reg_max, n)
        kl = (F.softmax(tl, 2) * (F.log_softmax(tl, 2) - F.log_softmax(sl, 2))).sum(2)  # (B, 4, N)
        box = (kl.sum(1) * conf).sum() * t2 / norm
    else:
        box = (((sb - tb) ** 2).sum(1) * conf).sum() / norm
    return KDLoss(total=(cls + box) * bsz, cls=cls.detach(), box=box.detach())


class Distiller:
    """The frozen teacher and the KD term of a fine-tuning step.

    The teacher is a private copy of ``teacher`` (eval mode, no gradients); ``teacher`` itself is not
    modified, so rebuilding a :class:`Distiller` from the dense model after a restart gives the same
    targets (nothing of it is checkpointed).

    :param teacher: the dense model.
    :param weight: multiplier of the KD loss beside the detection loss (> 0).
    :param temperature: see :func:`kd_loss`.
    """

    def __init__(self, teacher: nn.Module, weight: float, temperature: float = 1.0) -> None:
        if not weight > 0:
            raise ValueError(f"distillation weight must be > 0, got {weight}")
        if not temperature > 0:
            raise ValueError(f"distillation temperature must be > 0, got {temperature}")
        self.teacher = copy.deepcopy(teacher).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.weight, self.temperature = float(weight), float(temperature)
        self.history: list[float] = []  # weighted KD loss per image of each step (this process)
        self.unlabelled_history: list[float] = []  # the same, of each step's unlabelled batch (train_steps)

    @torch.no_grad()
    def targets(self, img: torch.Tensor) -> HeadOutputs:
        """The teacher's head outputs on ``img``."""
        out = head_outputs(self.teacher, img)
        return HeadOutputs(boxes=out.boxes, scores=out.scores, reg_max=out.reg_max)

    def loss(self, img: torch.Tensor, student: HeadOutputs) -> KDLoss:
        """``weight`` x :func:`kd_loss` of ``student`` (the student's outputs on ``img``) against the teacher."""
        kd = kd_loss(student, self.targets(img), self.temperature)
        return KDLoss(total=kd.total * self.weight, cls=kd.cls, box=kd.box)

    def describe(self) -> dict[str, object]:
        """What the unit's ``finetune`` summary records about the distillation."""
        return {"teacher": "dense model (frozen, eval mode)", "weight": self.weight, "temperature": self.temperature,
                "cls": "Bernoulli KL on sigmoid(logits / T), all anchors",
                "box": ("KL on the DFL bin distributions softmax(logits / T)" if self._reg_max() > 1
                        else "squared error on the raw regression outputs") + ", weighted by teacher confidence",
                "normalisation": "x T^2 / teacher soft foreground count x batch size"}

    def _reg_max(self) -> int:
        return int(detect_head(self.teacher).reg_max)
