"""Small real inputs for the quantisation / bisection / export tests.

* a detector: the shipped baseline weights when present (else an untrained yolov5n), optionally
  structurally pruned with Torch-Pruning (``pruning_tools.surgery.channels``);
* a tiny YOLO dataset (``helpers.tiny_data``) whose *test* labels are the FP32 model's own
  detections ("pseudo labels"): FP32 then scores mAP close to 1 and every lower precision is
  measured by how far its detections move away from FP32's — a real, sensitive accuracy signal
  for a model that was never trained on these images.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from helpers.tiny_data import make_yolo_dataset
from helpers.zoo_builder import load_weights

IMGSZ = (96, 320)


def tiny_model(sparsity: float = 0.0):
    """:return: (model in eval mode, source) — baseline weights, pruned uniformly to ``sparsity``."""
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    model, source = load_weights(True)
    if sparsity > 0:
        from pruning_tools.surgery.channels import PruningSpace, apply_ratios

        model = copy.deepcopy(model)
        space = PruningSpace(model, imgsz=IMGSZ)
        apply_ratios(model, space, space.uniform(sparsity))
    return model.eval(), source


def _detections(raw: np.ndarray, conf: float, max_boxes: int) -> list[tuple[int, float, float, float, float]]:
    import torch
    import torchvision

    r = raw[0]
    scores = r[4:].max(0)
    cls = r[4:].argmax(0)
    order = np.argsort(-scores)
    keep = [i for i in order[:300] if scores[i] >= conf] or list(order[:3])
    b = r[:4, keep].T
    xyxy = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)
    k = torchvision.ops.batched_nms(torch.from_numpy(xyxy).float(), torch.from_numpy(scores[keep]).float(),
                                    torch.from_numpy(cls[keep]), 0.5).numpy()[:max_boxes]
    out = []
    for j in k:
        x1, y1, x2, y2 = np.clip(xyxy[j], 0, [IMGSZ[1], IMGSZ[0], IMGSZ[1], IMGSZ[0]])
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        out.append((int(cls[keep][j]), (x1 + x2) / 2 / IMGSZ[1], (y1 + y2) / 2 / IMGSZ[0],
                    (x2 - x1) / IMGSZ[1], (y2 - y1) / IMGSZ[0]))
    return out


def pseudo_label(fp32_onnx: Path, root: Path, split: str = "test", conf: float = 0.2, max_boxes: int = 8) -> int:
    """Replace ``root/labels/<split>`` with the FP32 model's detections; returns the box count."""
    from pruning_tools.train.measure import ort_session
    from pruning_tools.quant.quantize import load_image

    sess = ort_session(fp32_onnx, 2)
    n = 0
    for img in sorted((root / "images" / split).glob("*.png")):
        raw = sess.run(None, {"images": load_image(img, IMGSZ)})[0]
        dets = _detections(raw, conf, max_boxes)
        n += len(dets)
        (root / "labels" / split / f"{img.stem}.txt").write_text(
            "".join(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for c, cx, cy, w, h in dets))
    return n


def tiny_dataset(root: Path, fp32_onnx: Path, n_train: int = 12, n_test: int = 8, seed: int = 0) -> Path:
    """A tiny dataset at :data:`IMGSZ` with pseudo-labelled val and test splits (see module docstring);
    val is the split export's bisection selects on."""
    make_yolo_dataset(root, n_train=n_train, n_val=n_test, n_test=n_test, size=IMGSZ, seed=seed)
    pseudo_label(fp32_onnx, root, "val")
    pseudo_label(fp32_onnx, root, "test")
    return root
