"""ONNX precisions for the engine zoo: FP32 export, FP16 conversion and INT8 QDQ quantisation.

* **FP32** — :func:`export_fp32`: the checkpoint through the Ultralytics adapter's ONNX export
  (input ``images`` 1x3xHxW float RGB 0..1, output ``output0`` (1, 4+nc, N), class names in metadata).
* **FP16** — :func:`to_fp16`: weights and compute in float16 by ONNX Runtime's
  ``convert_float_to_float16`` with ``keep_io_types=True``: the graph's input and output stay
  float32 (a Cast sits at each end), so every backend feeds the same float32 batch.
* **INT8** — :func:`quantize_int8`: explicit quantisation (QuantizeLinear/DequantizeLinear pairs,
  "QDQ") by ``onnxruntime.quantization.quantize_static`` with per-channel weights, calibrated on
  letterboxed images of the dataset's *train* split (:class:`CalibrationImages`). Layers in
  ``fallback`` (ONNX node names) are excluded from quantisation and stay float32; the Detect head's
  box/score decoding tail (DFL softmax, anchor arithmetic, final Concat) is always kept float:
  it is cheap and a single int8 scale cannot hold pixel boxes and 0..1 scores at once.

The same QDQ graph serves TensorRT (explicit quantisation, no calibrator) when built with
``target="tensorrt"``: symmetric int8 activations (TensorRT requires zero points of 0) and float
biases (no int32 bias Q/DQ), while the
ONNX Runtime CPU target uses asymmetric uint8 activations with int8 weights (U8S8), the layout ONNX
Runtime recommends for x86 CPUs (VNNI or not, ``reduce_range`` off by default).

Calibration runs once per model: its tensor ranges go to a JSON cache (``calibration_cache_path``)
that every later fallback variant reuses, so the bisection re-quantises in well under a second.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

IMG_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
QUANT_TARGETS = ("onnxruntime", "tensorrt")
CALIB_METHODS = ("minmax", "entropy", "percentile")


class QuantizeError(RuntimeError):
    """Quantisation cannot proceed; the message names the file and the reason."""


@dataclass(frozen=True)
class QuantConfig:
    """INT8 quantisation settings.

    :param calib_images: number of train-split images used for calibration (all when fewer).
    :param per_channel: per-output-channel weight scales.
    :param calibrate_method: ``minmax`` | ``entropy`` | ``percentile``.
    :param target: ``onnxruntime`` (U8S8, asymmetric activations) or ``tensorrt`` (S8S8 symmetric).
    :param reduce_range: 7-bit weights (only for x86 CPUs without VNNI).
    :param seed: image subset selection when the split has more than ``calib_images``.
    """

    calib_images: int = 500
    per_channel: bool = True
    calibrate_method: str = "minmax"
    target: str = "onnxruntime"
    reduce_range: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.calib_images) < 1:
            raise ValueError(f"calib_images must be >= 1, got {self.calib_images}")
        if self.calibrate_method not in CALIB_METHODS:
            raise ValueError(f"calibrate_method must be one of {CALIB_METHODS}, got {self.calibrate_method!r}")
        if self.target not in QUANT_TARGETS:
            raise ValueError(f"target must be one of {QUANT_TARGETS}, got {self.target!r}")


# ----------------------------------------------------------------------------------- images
def _letterbox(img_bgr: np.ndarray, imgsz: tuple[int, int]) -> np.ndarray:
    """Deployment pre-processing of one BGR image -> (1,3,H,W) float32 RGB 0..1."""
    try:
        from sparse_perception.runtime.postprocess import letterbox
    except ImportError:  # runtime package not installed: same geometry via the training code
        from pruning_tools.data.yolo import letterbox_np

        out = letterbox_np(img_bgr[:, :, ::-1], tuple(imgsz))[0]
        return np.ascontiguousarray(out.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
    batch, _ = letterbox(img_bgr, new_shape=tuple(imgsz))
    return np.ascontiguousarray(batch, dtype=np.float32)


def split_images(dataset: str | Path, split: str = "train") -> list[Path]:
    """Image files of a YOLO dataset split (``<root>/images/<split>`` or as ``data.yaml`` says), sorted.

    :raises QuantizeError: when the split folder is missing or empty.
    """
    from pruning_tools.data.yolo import DatasetError, resolve_split_dir

    try:
        img_dir, _ = resolve_split_dir(Path(dataset), split)
    except DatasetError as exc:
        raise QuantizeError(f"calibration images: {exc}") from exc
    files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMG_EXTS)
    if not files:
        raise QuantizeError(f"calibration images: no images in {img_dir}")
    return files


def load_image(path: str | Path, imgsz: tuple[int, int]) -> np.ndarray:
    """Read an image and letterbox it like the detector node does.

    :raises QuantizeError: when the file cannot be decoded.
    """
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise QuantizeError(f"cannot read image {path}")
    return _letterbox(img, imgsz)


try:  # CalibrationDataReader is a plain ABC; import lazily-safe at module level
    from onnxruntime.quantization import CalibrationDataReader as _Reader
except ImportError:  # pragma: no cover - onnxruntime is a hard dependency
    _Reader = object  # type: ignore[assignment,misc]


class CalibrationImages(_Reader):  # type: ignore[misc,valid-type]
    """Calibration batches: letterboxed train-split images, one per ``get_next`` call.

    :param files: image files (see :func:`select_calibration_files`).
    :param imgsz: network input (H, W).
    :param input_name: the ONNX graph's input name.
    :param progress: show a progress bar while ONNX Runtime collects ranges.
    """

    def __init__(self, files: Sequence[Path], imgsz: tuple[int, int], input_name: str = "images",
                 progress: bool = False) -> None:
        self.files = list(files)
        self.imgsz = (int(imgsz[0]), int(imgsz[1]))
        self.input_name = input_name
        self.progress = progress
        self._it: Iterator[dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def _gen(self) -> Iterator[dict[str, np.ndarray]]:
        files: Any = self.files
        if self.progress:
            from tqdm import tqdm

            files = tqdm(files, desc="int8 calibration", unit="img", leave=False)
        for f in files:
            yield {self.input_name: load_image(f, self.imgsz)}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = self._gen()
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None


def select_calibration_files(dataset: str | Path, n: int, seed: int = 0, split: str = "train") -> list[Path]:
    """``n`` images of ``split`` (all when the split has fewer), a seeded random subset otherwise."""
    files = split_images(dataset, split)
    if len(files) <= n:
        return files
    idx = np.random.default_rng(seed).choice(len(files), size=int(n), replace=False)
    return [files[i] for i in sorted(idx.tolist())]


# ----------------------------------------------------------------------------------- graph
def node_to_layer(node_name: str) -> str:
    """Torch module path of an exported ONNX node: ``/model.24/cv3.0/cv3.0.2/Conv`` -> ``model.24.cv3.0.2``."""
    parts = [p for p in node_name.strip("/").split("/")[:-1] if p]
    out: list[str] = []
    for p in parts:
        if out and p.startswith(out[-1] + "."):
            out[-1] = p
        else:
            out.append(p)
    return ".".join(out) or node_name


def _load(path: str | Path) -> Any:
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure
        raise QuantizeError(f"cannot read ONNX model {path}: {exc}") from exc


def _head_prefix(model: Any) -> str:
    """Scope prefix of the module producing the graph output (the Detect head), e.g. ``/model.24/``."""
    out_name = model.graph.output[0].name
    for node in model.graph.node:
        if out_name in node.output:
            parts = node.name.strip("/").split("/")
            return "/" + parts[0] + "/" if len(parts) > 1 else ""
    return ""


def decode_tail_nodes(path: str | Path) -> list[str]:
    """Nodes of the Detect head after its last convolutions (DFL, anchors, Concat): always kept float."""
    model = _load(path)
    prefix = _head_prefix(model)
    if not prefix:
        return []
    return [n.name for n in model.graph.node
            if n.name.startswith(prefix) and "/cv2" not in n.name and "/cv3" not in n.name
            and n.op_type not in ("Constant",)]


def fallback_candidates(path: str | Path) -> list[str]:
    """Conv nodes worth keeping in higher precision, in graph order.

    The first convolution (sees raw pixels), every convolution of the Detect head (box and class
    branches, whose output scales differ most), and convolutions adjacent to a Concat (inputs of
    differently-scaled branches share one quantisation scale there).
    """
    model = _load(path)
    nodes = list(model.graph.node)
    prefix = _head_prefix(model)
    producers = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    convs = [n for n in nodes if n.op_type == "Conv"]
    chosen: list[str] = []

    def _through_act(t: str) -> list[Any]:
        # a Conv's output usually passes SiLU (Sigmoid + Mul) before the Concat
        outs = list(consumers.get(t, []))
        for c in list(outs):
            if c.op_type in ("Sigmoid", "Mul"):
                for o in c.output:
                    outs += consumers.get(o, [])
        return outs

    for k, n in enumerate(convs):
        in_head = bool(prefix) and n.name.startswith(prefix)
        feeds_concat = any(c.op_type == "Concat" for c in _through_act(n.output[0]))
        src = producers.get(n.input[0])
        from_concat = src is not None and src.op_type == "Concat"
        if k == 0 or in_head or feeds_concat or from_concat:
            chosen.append(n.name)
    return chosen


def float_weight_convs(path: str | Path) -> set[str]:
    """Conv nodes whose weight input is a plain float initializer (i.e. not fed by DequantizeLinear)."""
    model = _load(path)
    inits = {i.name for i in model.graph.initializer}
    return {n.name for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in inits}


def copy_metadata(src: Any, dst: Any, extra: dict[str, str] | None = None) -> None:
    """Copy ``metadata_props`` (class names, stride, imgsz) from one ModelProto to another."""
    have = {p.key: p.value for p in src.metadata_props}
    have.update(extra or {})
    del dst.metadata_props[:]
    for k, v in have.items():
        prop = dst.metadata_props.add()
        prop.key, prop.value = str(k), str(v)


def _save_atomic(model: Any, path: Path) -> Path:
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------- precisions
def export_fp32(model: Any, path: str | Path, imgsz: tuple[int, int] = (384, 1248),
                class_names: Sequence[str] | None = None, extra_metadata: dict[str, Any] | None = None) -> Path:
    """FP32 ONNX of a torch detector through :func:`pruning_tools.ultralytics_adapter.export_onnx`."""
    from pruning_tools.ultralytics_adapter import export_onnx

    meta = {"precision": "fp32", **(extra_metadata or {})}
    return export_onnx(model, path, imgsz=tuple(imgsz), class_names=class_names, half=False, extra_metadata=meta)


def to_fp16(src: str | Path, dst: str | Path, keep_io_types: bool = True,
            block_list: Sequence[str] | None = None) -> Path:
    """Convert an FP32 ONNX graph to FP16 weights/compute.

    :param keep_io_types: keep the float32 input and output (Casts are inserted at both ends).
    :param block_list: node names kept in float32.
    :return: ``dst``.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = _load(src)
    with contextlib.redirect_stdout(io.StringIO()):
        half = convert_float_to_float16(model, keep_io_types=keep_io_types,
                                        node_block_list=list(block_list) if block_list else None)
    copy_metadata(model, half, {"precision": "fp16", "half": "True", "io_dtype": "float32" if keep_io_types else "float16"})
    return _save_atomic(half, Path(dst))


def preprocess_for_quant(src: str | Path, dst: str | Path) -> Path:
    """``quant_pre_process``: symbolic shape inference + ONNX Runtime graph optimisation before QDQ."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    try:
        quant_pre_process(str(src), str(tmp), skip_symbolic_shape=False)
    except Exception as exc:  # noqa: BLE001 - fall back to the plain graph, logged in metadata
        logging.getLogger(__name__).warning("quant_pre_process failed on %s (%s); quantising the plain graph", src, exc)
        _save_atomic(_load(src), tmp)
    os.replace(tmp, dst)
    return dst


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


def static_options(cfg: QuantConfig) -> dict[str, Any]:
    """The ``quantize_static`` settings of ``cfg`` (format, types, per-channel, calibration method): one
    place for the zoo's INT8 graphs and the latency model's INT8 blocks (:mod:`pruning_tools.quant.latency`)."""
    from onnxruntime.quantization import QuantFormat, QuantType

    symmetric = cfg.target == "tensorrt"
    return {"quant_format": QuantFormat.QDQ, "per_channel": cfg.per_channel, "reduce_range": cfg.reduce_range,
            "activation_type": QuantType.QInt8 if symmetric else QuantType.QUInt8, "weight_type": QuantType.QInt8,
            "calibrate_method": _method(cfg.calibrate_method),
            # TensorRT fuses float biases into its int8 convolutions; int32 bias Q/DQ is an ORT-only idiom
            "extra_options": {"ActivationSymmetric": symmetric, "WeightSymmetric": True, "QuantizeBias": not symmetric}}


def quantize_int8(src: str | Path, dst: str | Path, reader: CalibrationImages | None, cfg: QuantConfig,
                  fallback: Sequence[str] = (), cache: str | Path | None = None,
                  original: str | Path | None = None) -> Path:
    """INT8 QDQ quantisation of ``src`` (ideally :func:`preprocess_for_quant` output).

    :param reader: calibration data; may be ``None`` when ``cache`` already holds the ranges.
    :param fallback: node names kept in float32 (besides the always-float decode tail).
    :param cache: JSON calibration cache written on first use and reused afterwards.
    :param original: model whose metadata (class names, stride) to copy; defaults to ``src``.
    :return: ``dst``.
    :raises QuantizeError: with the model path and ONNX Runtime's reason.
    """
    import onnx
    from onnxruntime.quantization import quantize_static

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if reader is None and (cache is None or not Path(cache).is_file()):
        raise QuantizeError(f"quantising {src}: no calibration images and no calibration cache")
    exclude = sorted(set(decode_tail_nodes(src)) | set(fallback))
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    if reader is not None:
        reader.rewind()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static logs every excluded/unsupported node
    try:
        quantize_static(str(src), str(tmp), reader, nodes_to_exclude=exclude, **static_options(cfg),
                        calibration_cache_path=str(cache) if cache is not None else None)
    except Exception as exc:  # noqa: BLE001 - name the model
        tmp.unlink(missing_ok=True)
        raise QuantizeError(f"INT8 quantisation of {src} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        root.setLevel(level)
    q = onnx.load(str(tmp))
    copy_metadata(_load(original or src), q, {"precision": "int8", "quant_target": cfg.target,
                                               "fallback_layers": ",".join(node_to_layer(n) for n in fallback)})
    onnx.save(q, str(tmp))
    os.replace(tmp, dst)
    return dst


class Int8Builder:
    """Calibrate a model once and build INT8 variants with different fallback sets.

    :param fp32: the FP32 ONNX model.
    :param workdir: folder for the pre-processed graph and the calibration cache.
    :param calib_files: calibration images (train split).
    :param imgsz: network input (H, W).
    :param cfg: quantisation settings.
    :param progress: progress bar during calibration.
    """

    def __init__(self, fp32: str | Path, workdir: str | Path, calib_files: Sequence[Path], imgsz: tuple[int, int],
                 cfg: QuantConfig | None = None, progress: bool = False) -> None:
        self.fp32 = Path(fp32)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg if cfg is not None else QuantConfig()
        self.pre = preprocess_for_quant(self.fp32, self.workdir / f"{self.fp32.stem}_pre.onnx")
        self.cache = self.workdir / f"{self.fp32.stem}_calib_{self.cfg.calibrate_method}.json"
        self.reader = CalibrationImages(calib_files, imgsz, progress=progress)
        if not len(self.reader):
            raise QuantizeError(f"no calibration images for {self.fp32}")

    def candidates(self) -> list[str]:
        """Fallback candidates of the pre-processed graph (see :func:`fallback_candidates`)."""
        return fallback_candidates(self.pre)

    def build(self, dst: str | Path, fallback: Sequence[str] = ()) -> Path:
        """INT8 model at ``dst`` with ``fallback`` nodes kept float (calibrates on first call)."""
        reader = None if self.cache.is_file() else self.reader
        return quantize_int8(self.pre, dst, reader, self.cfg, fallback, self.cache, original=self.fp32)


def temp_dir(prefix: str = "sp_quant_") -> tempfile.TemporaryDirectory[str]:
    """A temporary working folder (callers use it as a context manager)."""
    return tempfile.TemporaryDirectory(prefix=prefix)
