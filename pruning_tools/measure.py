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
                   **kwargs: Any) -> dict[str, Any]:
    """mAP of a torch model on a dataset split, computed by :func:`pruning_tools.evaluate.evaluate_detector`.

    :return: ``{"map50_95", "map50", ...}`` as the evaluator returns them (JSON-ready).
    """
    from pruning_tools.evaluate import evaluate_detector

    res = evaluate_detector(torch_infer_fn(model), Path(data), split, tuple(imgsz), **kwargs)
    return _jsonable(res)


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
