"""ONNX Runtime backend (CPU by default) for Ultralytics-layout detection ONNX models."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sparse_perception.runtime.backends.onnx_precision import onnx_precision
from sparse_perception.runtime.zoo import capped

__all__ = ["SUPPORTED_LAYOUTS", "OnnxRuntimeBackend", "check_output_layout", "parse_names"]

DEFAULT_HW = (384, 1248)


def parse_names(text: str) -> tuple[str, ...]:
    """Class names from Ultralytics' ONNX metadata (``"{0: 'person', ...}"``) or a list literal.

    :raises ValueError: not a dict/list literal.
    """
    try:
        val = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"ONNX metadata 'names' is not a dict/list literal: {text[:80]!r}") from exc
    if isinstance(val, dict):
        return tuple(str(val[k]) for k in sorted(val, key=int))
    if isinstance(val, (list, tuple)):
        return tuple(str(v) for v in val)
    raise ValueError(f"ONNX metadata 'names' must be a dict or list, got {type(val).__name__}")


SUPPORTED_LAYOUTS = ("Ultralytics detect head (YOLOv5u/v8/11 export): one output (1, 4+nc, N), "
                     "rows cx, cy, w, h then nc class scores (no objectness), N anchors >= 4+nc")


def check_output_layout(path: str | Path, shape: Sequence[Any]) -> None:
    """Refuse an output layout the decoder cannot read, naming the supported one.

    Anchors-first layouts such as YOLOX or original YOLOv5 exports ``(1, N, 5+nc)`` and
    outputs that are not 3-D are refused here, before class names are looked for.

    :raises ValueError: naming the file, the shape and :data:`SUPPORTED_LAYOUTS`.
    """
    dims = list(shape)
    why = ""
    if len(dims) != 3:
        why = f"{len(dims)}-D output"
    elif isinstance(dims[0], int) and dims[0] != 1:
        why = f"batch {dims[0]} (one image per call)"
    elif isinstance(dims[1], int) and dims[1] < 5:
        why = f"{dims[1]} rows per anchor (need 4 box values + >= 1 class)"
    elif isinstance(dims[1], int) and isinstance(dims[2], int) and dims[1] > dims[2]:
        why = "anchors first (1, N, C), as YOLOX or original YOLOv5 exports"
    if why:
        raise ValueError(f"{path}: unsupported output layout {dims}: {why}; supported: {SUPPORTED_LAYOUTS}")


class OnnxRuntimeBackend:
    """A real ONNX Runtime session.

    :param path: ``.onnx`` file.
    :param threads: intra-op threads.
    :param expected: optional ``class_names`` / ``input_shape`` / ``precision`` from the manifest.
    :param providers: execution providers (default CPU; CUDA used only where available).
    :raises FileNotFoundError: missing file.
    :raises ValueError: unusable model (input/output layout, names).
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int = 2, expected: dict[str, Any] | None = None,
                 providers: tuple[str, ...] | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ONNX model not found")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        expected = dict(expected or {})
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        avail = ort.get_available_providers()
        provs = [p for p in (providers or ("CPUExecutionProvider",)) if p in avail] or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), so, providers=provs)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors (InvalidProtobuf, Fail, ...) share no type
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{path}: not a loadable ONNX model "
                             f"({type(exc).__name__}: {capped(first, 300)})") from None
        self.path = path
        self.device = "cuda" if provs[0] == "CUDAExecutionProvider" else "cpu"
        inp = self.session.get_inputs()
        if len(inp) != 1 or len(inp[0].shape) != 4:
            raise ValueError(f"{path}: expected one 4-D image input, got {[(i.name, i.shape) for i in inp]}")
        self._input = inp[0].name
        shape = inp[0].shape
        if shape[1] not in (3, "3") and isinstance(shape[1], int):
            raise ValueError(f"{path}: input must have 3 channels, got shape {shape}")
        exp_shape = expected.get("input_shape")
        if isinstance(shape[2], int) and isinstance(shape[3], int):
            hw = (shape[2], shape[3])
            if exp_shape and (int(exp_shape[2]), int(exp_shape[3])) != hw:
                raise ValueError(f"{path}: the ONNX's input is {list(shape)}, the manifest says input_shape "
                                 f"{list(exp_shape)}")
        elif exp_shape:
            hw = (int(exp_shape[2]), int(exp_shape[3]))
        else:
            hw = DEFAULT_HW
        self.input_shape = (1, 3, int(hw[0]), int(hw[1]))
        self._fp16 = inp[0].type == "tensor(float16)"
        # what the file holds, not what a manifest or name says (engine_status reports it)
        self.precision = onnx_precision(path, inp[0].type)
        outs = self.session.get_outputs()
        self._output = outs[0].name
        oshape = outs[0].shape
        check_output_layout(path, oshape)  # before names: a foreign layout is the first thing to say
        meta = self.session.get_modelmeta().custom_metadata_map
        if "names" in meta:
            self.class_names = parse_names(meta["names"])
            listed = tuple(str(n) for n in expected.get("class_names") or ())
            if listed and listed != self.class_names:  # a reordered label map would publish cars as pedestrians
                raise ValueError(f"{path}: the ONNX's class names {capped(list(self.class_names))} differ from the "
                                 f"manifest's {capped(list(listed))} (same classes in the same order required)")
        elif expected.get("class_names"):
            self.class_names = tuple(str(n) for n in expected["class_names"])
        else:
            raise ValueError(f"{path}: no class names (ONNX metadata 'names' or manifest class_names)")
        if len(oshape) != 3 or (isinstance(oshape[1], int) and oshape[1] != 4 + len(self.class_names)):
            raise ValueError(f"{path}: output shape {oshape} does not fit (1, 4+{len(self.class_names)}, N)")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch (1, 3, H, W) float32 -> raw (1, 4 + nc, N) float32."""
        if batch.shape != self.input_shape:
            raise ValueError(f"input batch shape {batch.shape} != model input {self.input_shape}")
        x = batch.astype(np.float16) if self._fp16 else np.ascontiguousarray(batch, np.float32)
        out = self.session.run([self._output], {self._input: x})[0]
        if out.ndim != 3 or out.shape[1] != 4 + len(self.class_names):
            raise ValueError(f"{self.path}: output shape {out.shape} does not fit (1, 4+{len(self.class_names)}, N)")
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        """Drop the session."""
        self.session = None  # type: ignore[assignment]
