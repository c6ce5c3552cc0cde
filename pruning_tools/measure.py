"""Measurements shared by the pipeline, the baseline and the benchmark.

* :func:`evaluate_model` — mAP through :mod:`pruning_tools.evaluate` (the project's single mAP code path);
* :func:`count_flops` — GFLOPs (2 x MACs) and parameters at the deployment input;
* :func:`ort_latency` — ONNX Runtime CPU latency (median after warm-up) of an exported model.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn


def torch_infer_fn(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """:return: ``infer(batch NCHW float32) -> raw (B, 4+nc, N)`` running ``model`` in eval mode."""
    from pruning_tools.ultralytics_adapter import raw_forward

    model.eval()

    def infer(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return raw_forward(model, torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()

    return infer


def evaluate_model(model: nn.Module, data: str | Path, split: str, imgsz: tuple[int, int] = (384, 1248),
                   max_images: int | None = None, progress: bool = False, **kwargs: Any) -> dict[str, Any]:
    """mAP of a torch model on a dataset split.

    Computed by the project's evaluator :func:`pruning_tools.evaluate.evaluate_detector`; only where
    that module is not installed does a built-in COCO-style evaluator (:func:`builtin_map`) step in,
    and the result then says ``"evaluator": "builtin"``.

    :return: ``{"map50_95", "map50", "evaluator", ...}`` (JSON-ready).
    """
    try:
        from pruning_tools.evaluate import evaluate_detector
    except ImportError:
        res = builtin_map(torch_infer_fn(model), Path(data), split, tuple(imgsz), max_images=max_images,
                          progress=progress)
        return {**res, "evaluator": "builtin"}
    if max_images is not None:
        kwargs["max_images"] = max_images
    kwargs.setdefault("progress", progress)
    try:
        raw = evaluate_detector(torch_infer_fn(model), Path(data), split, tuple(imgsz), **kwargs)
    except TypeError as exc:  # an evaluator without image caps: evaluate the whole split
        if "max_images" not in str(exc):
            raise
        kwargs.pop("max_images", None)
        raw = evaluate_detector(torch_infer_fn(model), Path(data), split, tuple(imgsz), **kwargs)
    res = _jsonable(raw)
    if isinstance(res, dict):
        res.setdefault("evaluator", "pruning_tools.evaluate")
    return res


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl, 0, None).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def builtin_map(infer: Callable[[np.ndarray], np.ndarray], data: Path, split: str, imgsz: tuple[int, int],
                max_images: int | None = None, conf_thres: float = 0.001, iou_thres: float = 0.6,
                max_det: int = 300, progress: bool = False) -> dict[str, Any]:
    """COCO-style mAP (101-point, IoU .50:.05:.95) in letterbox pixels; fallback evaluator only."""
    import torchvision

    from pruning_tools.training import YoloDataset

    ds = YoloDataset(data, split, imgsz)
    n = len(ds) if max_images is None else min(len(ds), int(max_images))
    thr = np.linspace(0.5, 0.95, 10)
    per_class: dict[int, list[tuple[float, np.ndarray]]] = {}
    n_gt: dict[int, int] = {}
    from tqdm import tqdm

    for i in tqdm(range(n), desc=f"mAP {split}", unit="img", disable=not progress, leave=False):
        img, lab = ds.load(i)
        raw = infer(img.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)[0]
        boxes_cxcywh, scores = raw[:4].T, raw[4:].T
        cls = scores.argmax(1)
        conf = scores.max(1)
        keep = conf > conf_thres
        b = boxes_cxcywh[keep]
        xyxy = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)
        c, s = cls[keep], conf[keep]
        if len(s):
            off = xyxy + c[:, None] * 4096.0
            k = torchvision.ops.nms(torch.from_numpy(off).float(), torch.from_numpy(s).float(), iou_thres).numpy()
            k = k[:max_det]
            xyxy, c, s = xyxy[k], c[k], s[k]
        gt_c = lab[:, 0].astype(int)
        gt_b = lab[:, 1:5]
        for cl in set(gt_c.tolist()) | set(c.tolist()):
            g = gt_b[gt_c == cl]
            n_gt[cl] = n_gt.get(cl, 0) + len(g)
            pm = c == cl
            pb, ps = xyxy[pm], s[pm]
            order = np.argsort(-ps)
            pb, ps = pb[order], ps[order]
            tp = np.zeros((len(pb), len(thr)), bool)
            if len(g) and len(pb):
                ious = _iou(pb, g)
                for t, th in enumerate(thr):
                    used = np.zeros(len(g), bool)
                    for j in range(len(pb)):
                        cand = np.where((ious[j] >= th) & ~used)[0]
                        if len(cand):
                            best = cand[np.argmax(ious[j, cand])]
                            used[best] = True
                            tp[j, t] = True
            per_class.setdefault(cl, []).extend(zip(ps.tolist(), tp))
    aps = []
    for cl, total in n_gt.items():
        if total == 0:
            continue
        dets = sorted(per_class.get(cl, []), key=lambda d: -d[0])
        if not dets:
            aps.append(np.zeros(len(thr)))
            continue
        tp = np.array([d[1] for d in dets], float)
        ctp, cfp = tp.cumsum(0), (1 - tp).cumsum(0)
        rec = ctp / total
        prec = ctp / np.maximum(ctp + cfp, 1e-9)
        ap = []
        for t in range(len(thr)):
            p = np.maximum.accumulate(prec[::-1, t])[::-1]
            rs = np.linspace(0, 1, 101)
            idx = np.searchsorted(rec[:, t], rs, side="left")
            ap.append(np.mean([p[j] if j < len(p) else 0.0 for j in idx]))
        aps.append(np.array(ap))
    if not aps:
        return {"map50_95": 0.0, "map50": 0.0, "images": n}
    aps_arr = np.stack(aps)
    return {"map50_95": float(aps_arr.mean()), "map50": float(aps_arr[:, 0].mean()), "images": n}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return _jsonable(vars(obj))
    return obj


def count_flops(model: nn.Module, imgsz: tuple[int, int] = (384, 1248)) -> tuple[float, int]:
    """:return: (GFLOPs = 2 x MACs, parameter count) for one image at ``imgsz``."""
    import torch_pruning as tp

    from pruning_tools.ultralytics_adapter import example_input

    was_training = model.training
    model.eval()
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example_input(imgsz))
    model.train(was_training)
    return 2.0 * float(macs) / 1e9, int(params)


def count_params(model: nn.Module) -> int:
    """:return: number of parameters."""
    return int(sum(p.numel() for p in model.parameters()))


def ort_session(onnx_path: str | Path, threads: int = 2) -> Any:
    """:return: an ONNX Runtime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])


def ort_latency(onnx_path: str | Path, imgsz: tuple[int, int] = (384, 1248), threads: int = 2,
                warmup: int = 3, runs: int = 10) -> dict[str, float]:
    """ONNX Runtime CPU latency of one 1x3xHxW inference.

    :return: ``{"median_ms", "p90_ms", "min_ms", "runs"}``.
    """
    sess = ort_session(onnx_path, threads)
    name = sess.get_inputs()[0].name
    dtype = np.float16 if "float16" in sess.get_inputs()[0].type else np.float32
    x = np.random.default_rng(0).random((1, 3, int(imgsz[0]), int(imgsz[1]))).astype(dtype)
    for _ in range(max(0, warmup)):
        sess.run(None, {name: x})
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"median_ms": round(statistics.median(times), 3), "p90_ms": round(times[int(0.9 * (len(times) - 1))], 3),
            "min_ms": round(times[0], 3), "runs": len(times)}


def interleaved_latency(onnx_paths: dict[str, str | Path], imgsz: tuple[int, int] = (384, 1248), threads: int = 2,
                        warmup: int = 3, runs: int = 20) -> dict[str, dict[str, float]]:
    """ONNX Runtime CPU latency of several models measured round-robin in this one process.

    Every session is created and warmed up first; then each of ``runs`` rounds times one inference
    of every model, in an order rotated by one each round, so slow phases of a shared machine hit
    all models alike. Quote medians and ratios from one call.

    :param onnx_paths: key -> ONNX file.
    :return: key -> ``{"median_ms", "p90_ms", "min_ms", "runs", "interleaved": True, "models": N}``.
    :raises ValueError: on an empty mapping or ``runs < 1``.
    """
    if not onnx_paths:
        raise ValueError("interleaved_latency needs at least one model")
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    keys = list(onnx_paths)
    sessions, feeds = {}, {}
    x32 = np.random.default_rng(0).random((1, 3, int(imgsz[0]), int(imgsz[1]))).astype(np.float32)
    for k in keys:
        sess = ort_session(onnx_paths[k], threads)
        inp = sess.get_inputs()[0]
        sessions[k] = sess
        feeds[k] = {inp.name: x32.astype(np.float16) if "float16" in inp.type else x32}
    for _ in range(max(0, warmup)):
        for k in keys:
            sessions[k].run(None, feeds[k])
    times: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(runs):
        for j in range(len(keys)):
            k = keys[(j + r) % len(keys)]
            t0 = time.perf_counter()
            sessions[k].run(None, feeds[k])
            times[k].append((time.perf_counter() - t0) * 1e3)
    out = {}
    for k, ts in times.items():
        ts.sort()
        out[k] = {"median_ms": round(statistics.median(ts), 3), "p90_ms": round(ts[int(0.9 * (len(ts) - 1))], 3),
                  "min_ms": round(ts[0], 3), "runs": len(ts), "interleaved": True, "models": len(keys)}
    return out


def model_latency(model: nn.Module, imgsz: tuple[int, int] = (384, 1248), threads: int = 2, warmup: int = 3,
                  runs: int = 10, keep: str | Path | None = None) -> dict[str, float]:
    """Export ``model`` to ONNX (to ``keep`` or a temp file) and measure :func:`ort_latency`."""
    from pruning_tools.ultralytics_adapter import class_names, export_onnx

    with tempfile.TemporaryDirectory(prefix="sp_lat_") as tmp:
        path = Path(keep) if keep is not None else Path(tmp) / "model.onnx"
        export_onnx(model, path, imgsz=imgsz, class_names=class_names(model))
        out = ort_latency(path, imgsz, threads, warmup, runs)
        out["onnx_bytes"] = path.stat().st_size
    return out
