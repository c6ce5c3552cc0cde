"""Measurements shared by the pipeline, the baseline and the benchmark.

* :func:`count_flops` — GFLOPs (2 x MACs) and parameters at the deployment input;
* :func:`ort_latency` — ONNX Runtime CPU latency (median after warm-up) of an exported model.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn


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
    all models alike. Quote medians and ratios from one call. A model whose ONNX input has a static
    ``H x W`` gets a frame of that size (the resolution baseline's models), any other one of ``imgsz``.

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
    for k in keys:
        sess = ort_session(onnx_paths[k], threads)
        inp = sess.get_inputs()[0]
        sessions[k] = sess
        x32 = _random_input(_static_hw(inp.shape) or (int(imgsz[0]), int(imgsz[1])))
        feeds[k] = {inp.name: x32.astype(np.float16) if "float16" in inp.type else x32}
    timed = round_robin([lambda k=k: sessions[k].run(None, feeds[k]) for k in keys], warmup, runs)
    out = {}
    for k, ts in zip(keys, timed):
        ts.sort()
        out[k] = {"median_ms": round(statistics.median(ts), 3), "p90_ms": round(ts[int(0.9 * (len(ts) - 1))], 3),
                  "min_ms": round(ts[0], 3), "runs": len(ts), "interleaved": True, "models": len(keys)}
    return out


def round_robin(calls: Sequence[Callable[[], Any]], warmup: int, runs: int) -> list[list[float]]:
    """The project's interleaved timing: every call warmed up ``warmup`` times (in turn), then ``runs``
    rounds each timing one of every call, the order rotated by one each round, so a slow phase of a
    shared machine hits all of them alike. :return: per call, its ``runs`` times in ms (round order)."""
    n = len(calls)
    for _ in range(max(0, warmup)):
        for call in calls:
            call()
    times: list[list[float]] = [[] for _ in range(n)]
    for r in range(runs):
        for j in range(n):
            i = (j + r) % n
            t0 = time.perf_counter()
            calls[i]()
            times[i].append((time.perf_counter() - t0) * 1e3)
    return times


def _static_hw(shape: Any) -> tuple[int, int] | None:
    """``(H, W)`` of a static ``(1, 3, H, W)`` ONNX input shape; ``None`` where a dimension is symbolic."""
    dims = list(shape or [])
    if len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims[2:]):
        return int(dims[2]), int(dims[3])
    return None


def _random_input(hw: tuple[int, int]) -> np.ndarray:
    """The same seeded random ``(1, 3, H, W)`` float32 frame for every model of one size."""
    return np.random.default_rng(0).random((1, 3, int(hw[0]), int(hw[1]))).astype(np.float32)


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
