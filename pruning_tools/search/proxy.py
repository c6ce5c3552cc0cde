"""Stage 2's reward proxies: what one proxy is (:class:`ProxySpec`) and the val-split scores a pruned
candidate gets from it (:class:`ValMap`: mAP50-95; :class:`ValLoss`: dense loss / candidate loss).

Both scores are picklable callables ``model -> float`` so worker processes (the local pool, Ray)
rebuild the same proxy from a spec.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class ProxySpec:
    """A stage-2 reward proxy: calibration seed, BN batches, fine-tune batches and lr, val images and
    the per-channel scores choosing the removed channels (``((layer, scores), ...)``; ``None``: L2
    magnitude). Hashable: workers keep one proxy per spec."""

    seed: int
    bn_batches: int
    ft_steps: int
    ft_lr: float
    val_images: int | None
    channel_scores: tuple[tuple[str, tuple[float, ...]], ...] | None = None


class _ValScore:
    """A score of a model on the first ``max_images`` images of the val split at ``imgsz``."""

    def __init__(self, data: Path, imgsz: tuple[int, int], max_images: int | None) -> None:
        self.data, self.imgsz, self.max_images = Path(data), tuple(imgsz), max_images

    def __call__(self, model: torch.nn.Module) -> float:
        raise NotImplementedError


class ValMap(_ValScore):
    """mAP50-95 on the val images (``rl.proxy_metric: map50_95``; the proxy recalibrates BN first)."""

    def __call__(self, model: torch.nn.Module) -> float:
        from pruning_tools.train.evaluate import evaluate_model

        return float(evaluate_model(model, self.data, "val", self.imgsz, max_images=self.max_images)["map50_95"])


class ValLoss(_ValScore):
    """``L_dense / L`` from the detection loss on the val images (``rl.proxy_metric: val_loss``).

    The images form one batch and the model runs in train mode (no gradients): every BatchNorm layer
    normalises with this batch's own statistics, which is a BN recalibration on these images in the
    same forward pass. The score is 1.0 for the dense model and falls towards 0 as the loss grows,
    so the reward's dmAP term becomes ``(score - 1) x 100`` "points" of relative loss. Unlike mAP
    after BN recalibration — which reads ~0 for most candidates at 75 % and ties them — the loss is
    continuous: bench/proxy_correlation.py measures how both rank candidates like stage 3.
    """

    def __init__(self, data: Path, imgsz: tuple[int, int], max_images: int | None) -> None:
        super().__init__(data, imgsz, max_images)
        self.reference: float | None = None
        self._batch: dict[str, torch.Tensor] | None = None

    def loss(self, model: torch.nn.Module) -> float:
        from pruning_tools.data.yolo import YoloDataset, collate
        from pruning_tools.ultralytics_adapter import detection_loss

        if self._batch is None:
            ds = YoloDataset(self.data, "val", self.imgsz)
            n = len(ds) if self.max_images is None else min(self.max_images, len(ds))
            self._batch = collate([ds.load(i) for i in range(n)])
        was = model.training
        # a train-mode forward updates the BN running statistics: the scored model keeps its own
        buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        model.train()
        try:
            with torch.no_grad():
                return float(detection_loss(model, self._batch)[0])
        finally:
            with torch.no_grad():
                for n, b in model.named_buffers():
                    b.copy_(buffers[n])
            model.train(was)

    def set_reference(self, dense: torch.nn.Module) -> "ValLoss":
        """Measure the dense model's loss (the model is left as it was)."""
        self.reference = self.loss(dense)
        return self

    def __call__(self, model: torch.nn.Module) -> float:
        if self.reference is None:
            raise RuntimeError("ValLoss needs set_reference(dense) before scoring")
        return self.reference / max(self.loss(model), 1e-9)
