"""The latency model of the deployment target: what a pruned model costs in time, predicted from its widths.

Per convolution of a :class:`~pruning_tools.surgery.channels.PruningSpace` (each belongs to one coupled
layer as its output and to one or more as its input), latency is a lookup table over its kept *input*
and *output* channels, measured on the target runtime and precision: every grid point is the conv at
its real geometry (kernel, stride, padding, input H x W at the deployment size) plus its SiLU, built as
its own ONNX graph and timed in ONNX Runtime (FP32, or INT8 QDQ with the zoo's own quantisation
settings; the INT8 block takes and returns quantised tensors, as it does inside a quantised network,
where the Q/DQ pairs between layers fold into ``QLinearConv``). Between grid points the table is
interpolated bilinearly and made monotone (more channels never predict less time). A model's latency
is ``offset + scale * sum(blocks)``: the two numbers are fitted on a few whole pruned networks measured
interleaved (:func:`calibrate`), so what the blocks do not see (concats, upsampling, pooling, the
head's float decode tail, layout reorders, the Q/DQ at the network's ends) is absorbed without being
modelled op by op.

The tables are cached per machine, runtime, precision and thread count (``latency_<runtime>_<precision>
_t<threads>_<fingerprint>.json`` under :func:`default_cache_dir`), with how they were measured; a
table measured elsewhere (another CPU, core count or ONNX Runtime version) is never reused.

Per-layer latency lookup tables as the resource model of a pruning search come from NetAdapt
(Yang et al., ECCV 2018) and HALP (Shen et al., NeurIPS 2022); the block construction, the
interpolation and the calibration here are this project's.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

RUNTIMES = ("onnxruntime",)
PRECISIONS = ("fp32", "int8")
#: bump when the block construction or the timing changes: cached tables of another version are re-measured
TABLE_VERSION = 1


class LatencyModelError(ValueError):
    """Bad latency-model input (precision, runtime, level, table); the message says which."""


# ------------------------------------------------------------------------------------------ levels
def speedup_level(speedup: float) -> float:
    """The level (fraction of the dense latency removed) of a speed-up ``x``: ``1 - 1/x``.

    :raises LatencyModelError: unless ``speedup`` > 1.
    """
    try:
        x = float(speedup)
    except (TypeError, ValueError):
        raise LatencyModelError(f"a speed-up must be a number > 1, got {speedup!r}") from None
    if not x > 1.0 or not np.isfinite(x):
        raise LatencyModelError(f"a speed-up must be > 1 (x1.5 = 1.5 times faster than dense), got {speedup!r}")
    return 1.0 - 1.0 / x


# ------------------------------------------------------------------------------------------ blocks
@dataclass(frozen=True)
class Block:
    """One conv (+ its SiLU when ``act``) at a given width: what one table entry times."""

    cin: int
    cout: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    hw: tuple[int, int]
    act: bool

    def key(self) -> str:
        k, s, p, (h, w) = self.kernel, self.stride, self.padding, self.hw
        return (f"c{self.cin}-{self.cout}_k{k[0]}x{k[1]}_s{s[0]}x{s[1]}_p{p[0]}x{p[1]}_g{self.groups}"
                f"_{h}x{w}{'_silu' if self.act else ''}")


def block_graph(block: Block) -> Any:
    """The FP32 ONNX graph of ``block``: input ``x`` (1, cin, H, W) -> Conv (+ Sigmoid * x) -> ``y``."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    cin_g = block.cin // block.groups
    w = (rng.standard_normal((block.cout, cin_g, *block.kernel)) * (1.0 / np.sqrt(cin_g * np.prod(block.kernel))))
    b = rng.standard_normal(block.cout) * 0.1
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, block.cin, *block.hw])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    conv_out = "c" if block.act else "y"
    nodes = [helper.make_node("Conv", ["x", "w", "b"], [conv_out], name="conv", kernel_shape=list(block.kernel),
                              strides=list(block.stride), pads=[*block.padding, *block.padding], group=block.groups)]
    if block.act:
        nodes += [helper.make_node("Sigmoid", ["c"], ["sg"], name="sigmoid"),
                  helper.make_node("Mul", ["c", "sg"], ["y"], name="silu")]
    graph = helper.make_graph(nodes, "block", [x], [y], [numpy_helper.from_array(w.astype(np.float32), "w"),
                                                          numpy_helper.from_array(b.astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


class _OneBatch:
    """A calibration reader of one random batch (ranges for timing only)."""

    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        self.feed = {name: np.random.default_rng(1).random(shape, dtype=np.float32)}
        self.done = False

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.done:
            return None
        self.done = True
        return self.feed

    def rewind(self) -> None:
        self.done = False


def _strip_io_qdq(model: Any) -> Any:
    """Drop the QuantizeLinear on the graph input and the DequantizeLinear on its output, so the block
    takes and returns quantised tensors as it does between two quantised layers of a network."""
    from onnx import TensorProto, helper

    g = model.graph
    in_name, out_name = g.input[0].name, g.output[0].name
    q = next(n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == in_name)
    dq = next(n for n in g.node if n.op_type == "DequantizeLinear" and n.output[0] == out_name)
    zp = {t.name: t for t in g.initializer}
    qtype = zp[q.input[2]].data_type if len(q.input) > 2 and q.input[2] in zp else TensorProto.UINT8
    dims = [d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    g.node.remove(q)
    g.node.remove(dq)
    del g.input[:]
    g.input.append(helper.make_tensor_value_info(q.output[0], qtype, dims))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(dq.input[0], qtype, None))
    return model


def block_model(block: Block, precision: str, workdir: str | Path) -> bytes:
    """``block`` as a serialised ONNX model at ``precision`` (INT8: the zoo's QDQ settings)."""
    import onnx

    graph = block_graph(block)
    if precision == "fp32":
        return graph.SerializeToString()
    if precision != "int8":
        raise LatencyModelError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    from onnxruntime.quantization import quantize_static

    from pruning_tools.quant.quantize import QuantConfig, static_options

    src, dst = Path(workdir) / "block.onnx", Path(workdir) / "block_int8.onnx"
    onnx.save(graph, str(src))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(str(src), str(dst), _OneBatch("x", (1, block.cin, *block.hw)), **static_options(QuantConfig()))
    finally:
        root.setLevel(level)
    return _strip_io_qdq(onnx.load(str(dst))).SerializeToString()


def time_block(data: bytes, threads: int = 2, warmup: int = 2, runs: int = 7) -> float:
    """Median ONNX Runtime CPU latency (ms) of a serialised block model."""
    import onnxruntime as ort

    from pruning_tools.train.measure import round_robin

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = int(threads), 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [int(d) for d in inp.shape]
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 255, shape).astype(np.uint8) if "uint8" in inp.type
         else rng.integers(-127, 127, shape).astype(np.int8) if "int8" in inp.type
         else rng.random(shape, dtype=np.float32))
    feed = {inp.name: x}
    (ts,) = round_robin([lambda: sess.run(None, feed)], warmup, max(1, runs))
    return float(statistics.median(ts))


# ------------------------------------------------------------------------------------------ table
def fingerprint() -> dict[str, Any]:
    """What a cached table must match to be reused: CPU model, cores, ONNX Runtime version, arch."""
    from importlib import metadata

    from sparse_perception.runtime.machine import cpu_model

    try:
        ort_version = metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        ort_version = None
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "arch": platform.machine(), "onnxruntime": ort_version}


def default_cache_dir() -> Path:
    """``$SPARSE_PERCEPTION_CACHE/latency`` or ``~/.cache/sparse_perception/latency``."""
    root = os.environ.get("SPARSE_PERCEPTION_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "sparse_perception") / "latency"


class LatencyTable:
    """Measured block latencies (ms) of one machine, runtime, precision and thread count.

    :param precision: ``fp32`` or ``int8``.
    :param threads: ONNX Runtime intra-op threads (as the deployment runs).
    :param runs: timed runs per block (median), after ``warmup`` untimed ones.
    """

    def __init__(self, precision: str = "fp32", threads: int = 2, runtime: str = "onnxruntime", runs: int = 7,
                 warmup: int = 2, entries: dict[str, float] | None = None) -> None:
        if precision not in PRECISIONS:
            raise LatencyModelError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if runtime not in RUNTIMES:
            raise LatencyModelError(f"runtime must be one of {RUNTIMES} (TensorRT tables need a GPU), got {runtime!r}")
        if threads < 1 or runs < 1 or warmup < 0:
            raise LatencyModelError("threads and runs must be >= 1, warmup >= 0")
        self.precision, self.threads, self.runtime = precision, int(threads), runtime
        self.runs, self.warmup = int(runs), int(warmup)
        self.entries: dict[str, float] = dict(entries or {})
        self.machine = fingerprint()

    def meta(self) -> dict[str, Any]:
        return {"version": TABLE_VERSION, "runtime": self.runtime, "precision": self.precision,
                "threads": self.threads, "runs": self.runs, "warmup": self.warmup, "machine": self.machine,
                "method": "each entry: one conv (+SiLU) at its real geometry as its own ONNX graph, "
                          f"median of {self.runs} ONNX Runtime CPU runs after {self.warmup} warm-up runs"
                          + ("; INT8: the zoo's QDQ settings, quantised input and output" if self.precision == "int8"
                             else "")}

    def path(self, cache_dir: str | Path | None = None) -> Path:
        """This table's cache file."""
        fp = hashlib.sha1(json.dumps(self.machine, sort_keys=True).encode()).hexdigest()[:10]
        return (Path(cache_dir) if cache_dir else default_cache_dir()) / \
            f"latency_{self.runtime}_{self.precision}_t{self.threads}_{fp}.json"

    @classmethod
    def cached(cls, precision: str = "fp32", threads: int = 2, cache_dir: str | Path | None = None,
               runs: int = 7, warmup: int = 2) -> "LatencyTable":
        """The cached table of this machine (empty when there is none, or when the cached one was
        measured differently: another machine, table version, ``runs`` or ``warmup``)."""
        table = cls(precision, threads, runs=runs, warmup=warmup)
        path = table.path(cache_dir)
        if not path.is_file():
            return table
        try:
            raw = json.loads(path.read_text())
            meta, entries = raw["meta"], raw["entries"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logging.getLogger(__name__).warning("latency table %s unreadable (%s): measuring anew", path, exc)
            return table
        want = table.meta()
        if any(meta.get(k) != want[k] for k in ("version", "runtime", "precision", "threads", "runs", "warmup",
                                                 "machine")):
            return table
        if not isinstance(entries, dict) or not all(isinstance(v, (int, float)) and v > 0 for v in entries.values()):
            logging.getLogger(__name__).warning("latency table %s has invalid entries: measuring anew", path)
            return table
        table.entries = {str(k): float(v) for k, v in entries.items()}
        return table

    def save(self, path: str | Path) -> Path:
        from pruning_tools.data.files import write_json

        write_json(Path(path), {"meta": self.meta(), "entries": dict(sorted(self.entries.items()))})
        return Path(path)

    def missing(self, blocks: Sequence[Block]) -> list[Block]:
        seen: set[str] = set()
        out = []
        for b in blocks:
            k = b.key()
            if k not in self.entries and k not in seen:
                seen.add(k)
                out.append(b)
        return out

    def measure(self, blocks: Sequence[Block], progress: bool = False, cache_dir: str | Path | None = None,
                save_every: int = 50) -> int:
        """Time every block not in the table yet (saved to the cache every ``save_every`` blocks, so a
        killed measurement resumes). :return: blocks measured."""
        todo = self.missing(blocks)
        if not todo:
            return 0
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc=f"latency table ({self.precision}, {len(todo)} blocks)", unit="block")
        with tempfile.TemporaryDirectory(prefix="sp_latency_") as tmp:
            for n, b in enumerate(todo, 1):
                self.entries[b.key()] = time_block(block_model(b, self.precision, tmp), self.threads, self.warmup,
                                                   self.runs)
                if bar is not None:
                    bar.update(1)
                if n % save_every == 0:
                    self.save(self.path(cache_dir))
        if bar is not None:
            bar.close()
        self.save(self.path(cache_dir))
        return len(todo)

    def __getitem__(self, block: Block) -> float:
        try:
            return self.entries[block.key()]
        except KeyError:
            raise LatencyModelError(f"block {block.key()} is not in the {self.precision} latency table "
                                    "(measure it first)") from None


# ------------------------------------------------------------------------------------------ model
def _grid_points(values: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` of the sorted ``values``, evenly spread, first and last included."""
    values = np.unique(values)
    if len(values) <= n:
        return values
    return np.unique(values[np.round(np.linspace(0, len(values) - 1, n)).astype(int)])


class LatencyModel:
    """Predicted latency (ms) of a pruning space's ratio vectors at the table's precision.

    :param space: the pruning space (its convs' geometry at the deployment size).
    :param table: the measured block latencies (:meth:`blocks` lists what it must hold).
    :param grid: table points per channel axis of each conv (bilinear in between).
    :param offset: ms added to the blocks' sum (fitted by :func:`calibrate`).
    :param scale: factor on the blocks' sum (fitted by :func:`calibrate`).
    """

    def __init__(self, space: Any, table: LatencyTable, grid: int = 5, offset: float = 0.0, scale: float = 1.0) -> None:
        if grid < 2:
            raise LatencyModelError(f"grid must be >= 2 points per axis, got {grid}")
        self.space, self.table, self.grid = space, table, int(grid)
        self.offset, self.scale = float(offset), float(scale)
        self.calibration: dict[str, Any] | None = None
        self._recs = list(space.convs.values())
        r = space.round_to
        lo_frac = space._kept_fraction(np.full(len(space), 0.999))  # the fewest channels a layer keeps
        self._cin_axes: list[np.ndarray] = []
        self._cout_axes: list[np.ndarray] = []
        for rec in self._recs:
            if rec.out_group is None:
                cout = np.array([rec.out_ch], dtype=np.float64)
            else:
                n = rec.out_ch
                cand = np.array([k for k in range(r, n + 1, r)] + [n], dtype=np.float64) if n > r else np.array([n], float)
                cout = _grid_points(cand, self.grid)
            if rec.depthwise or not rec.in_groups:
                cin = np.array([rec.in_ch], dtype=np.float64)
            else:
                base = rec.in_ch - sum(c for _, c in rec.in_groups)
                lo = base + sum(c * lo_frac[g] for g, c in rec.in_groups)
                cin = np.unique(np.round(np.linspace(lo, rec.in_ch, self.grid)))
            self._cin_axes.append(cin)
            self._cout_axes.append(cout)
        self._values: np.ndarray | None = None
        self._dense_sum: float | None = None  # the blocks' sum at the dense widths (the table is fixed)

    # -- the blocks of the grid
    def _block(self, rec: Any, cin: float, cout: float) -> Block:
        groups = int(cout) if rec.depthwise else rec.groups
        cin_i = int(cout) if rec.depthwise else int(cin)
        return Block(cin_i, int(cout), rec.kernel, rec.stride, rec.padding, groups, rec.in_hw, bool(rec.has_bn))

    def blocks(self) -> list[Block]:
        """Every block of the grid (what :meth:`LatencyTable.measure` must time)."""
        return [self._block(rec, ci, co) for rec, cins, couts in zip(self._recs, self._cin_axes, self._cout_axes)
                for ci in cins for co in couts]

    def _build(self) -> None:
        g = max(max(len(a) for a in self._cin_axes), max(len(a) for a in self._cout_axes))
        j = len(self._recs)
        self._ci = np.zeros((j, g))
        self._co = np.zeros((j, g))
        self._values = np.zeros((j, g, g))
        for n, (rec, cins, couts) in enumerate(zip(self._recs, self._cin_axes, self._cout_axes)):
            v = np.array([[self.table[self._block(rec, ci, co)] for co in couts] for ci in cins])
            v = np.maximum.accumulate(np.maximum.accumulate(v, axis=0), axis=1)  # monotone in both widths
            self._ci[n] = np.pad(cins, (0, g - len(cins)), mode="edge")
            self._co[n] = np.pad(couts, (0, g - len(couts)), mode="edge")
            self._values[n] = np.pad(v, ((0, g - len(cins)), (0, g - len(couts))), mode="edge")

    @staticmethod
    def _locate(axis: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = axis.shape[1]
        if g == 1:
            return np.zeros(len(x), int), np.zeros(len(x))
        i = np.clip((axis[:, 1:] < x[:, None]).sum(axis=1), 0, g - 2)
        x0, x1 = axis[np.arange(len(x)), i], axis[np.arange(len(x)), i + 1]
        span = x1 - x0
        t = np.where(span > 0, (x - x0) / np.where(span > 0, span, 1.0), 0.0)
        return i, np.clip(t, 0.0, 1.0)

    def per_conv(self, ratios: Sequence[float]) -> np.ndarray:
        """Interpolated block latency (ms) of every conv at ``ratios``."""
        if self._values is None:
            self._build()
        assert self._values is not None
        cout, cin = self.space.conv_widths(ratios)
        ic, tc = self._locate(self._ci, cin)
        io, to = self._locate(self._co, cout)
        rows = np.arange(len(cin))
        g = self._values.shape[1]
        ic1, io1 = np.minimum(ic + 1, g - 1), np.minimum(io + 1, g - 1)
        v = self._values
        return ((1 - tc) * (1 - to) * v[rows, ic, io] + (1 - tc) * to * v[rows, ic, io1]
                + tc * (1 - to) * v[rows, ic1, io] + tc * to * v[rows, ic1, io1])

    def block_sum(self, ratios: Sequence[float]) -> float:
        return float(self.per_conv(ratios).sum())

    def predict(self, ratios: Sequence[float]) -> float:
        """Predicted latency (ms) of the model pruned with ``ratios``."""
        return self.offset + self.scale * self.block_sum(ratios)

    @property
    def dense_ms(self) -> float:
        """Predicted latency of the dense model (its blocks' sum is computed once: every
        :meth:`PruningSpace.latency_reduction` of the search divides by it)."""
        if self._dense_sum is None:
            self._dense_sum = self.block_sum(np.zeros(len(self.space)))
        return self.offset + self.scale * self._dense_sum

    def speedup(self, ratios: Sequence[float]) -> float:
        """Predicted speed-up of ``ratios`` over the dense model."""
        return self.dense_ms / self.predict(ratios)

    def fit(self, samples: Sequence[tuple[Sequence[float], float]], offset: bool | None = None) -> dict[str, Any]:
        """Fit ``scale`` (and ``offset``) to whole-model measurements ``[(ratios, measured_ms), ...]``.

        :param offset: fit an offset too (least squares; a fit with a negative offset or a flat scale
            falls back to ``scale`` alone). ``None``: only for INT8 — its networks have a large part that
            does not shrink with the widths (measured: 14 ms of 45 here), while for FP32 an offset fitted on
            a handful of noisy networks mostly caps the reachable speed-ups (x3 became unreachable in one
            run with a 6.9 ms offset) and predicted no better (docs/pruning.md).
        :return: the calibration record (also kept as :attr:`calibration`)."""
        if not samples:
            raise LatencyModelError("calibration needs at least one measured model")
        if offset is None:
            offset = self.table.precision == "int8"
        s = np.array([self.block_sum(r) for r, _ in samples])
        m = np.array([float(ms) for _, ms in samples])
        fit_offset = offset
        offset, scale = 0.0, float(m.sum() / s.sum())
        if fit_offset and len(samples) >= 2 and np.ptp(s) > 1e-9:
            b, a = np.polyfit(s, m, 1)
            if a >= 0 and b > 1e-3 * scale:  # a flat or falling fit is no latency model
                offset, scale = float(a), float(b)
        self.offset, self.scale = offset, scale
        pred = offset + scale * s
        self.calibration = {"offset_ms": round(offset, 4), "scale": round(scale, 5), "models": len(samples),
                            "blocks_ms": [round(float(v), 4) for v in s], "measured_ms": [round(float(v), 4) for v in m],
                            "fit_rel_error": [round(float(abs(p - v) / v), 4) for p, v in zip(pred, m)]}
        return self.calibration

    def save(self, path: str | Path) -> Path:
        """The model as JSON: how its table was measured, the grid's entries, offset, scale, calibration
        (what a resumed run, a reward worker or a report needs; nothing is re-measured on load)."""
        from pruning_tools.data.files import write_json

        keys = sorted({b.key() for b in self.blocks()})
        write_json(Path(path), {**self.describe(), "entries": {k: self.table.entries[k] for k in keys}})
        return Path(path)

    @classmethod
    def load(cls, space: Any, path: str | Path) -> "LatencyModel":
        """A model written by :meth:`save`, for ``space``.

        :raises LatencyModelError: when the file is unreadable or does not cover ``space``'s grid.
        """
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
            meta = raw["table"]
            table = LatencyTable(meta["precision"], int(meta["threads"]), meta["runtime"], int(meta["runs"]),
                                 int(meta["warmup"]), {str(k): float(v) for k, v in raw["entries"].items()})
            table.machine = meta["machine"]
            lm = cls(space, table, int(raw["grid"]), float(raw["offset_ms"]), float(raw["scale"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LatencyModelError(f"{path}: not a latency model file ({type(exc).__name__}: {exc})") from None
        lost = table.missing(lm.blocks())
        if lost:
            raise LatencyModelError(f"{path}: {len(lost)} blocks of this pruning space are not in the file "
                                    f"(another model, imgsz or round_to?), e.g. {lost[0].key()}")
        lm.calibration = raw.get("calibration")
        return lm

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the table's meta, grid, calibration and dense prediction."""
        return {"table": self.table.meta(), "grid": self.grid, "convs": len(self._recs),
                "blocks": len(self.blocks()), "offset_ms": round(self.offset, 4), "scale": round(self.scale, 5),
                "dense_pred_ms": round(self.dense_ms, 4), "calibration": self.calibration}


# ------------------------------------------------------------------------------------------ whole models
def pruned_copy(dense: Any, space: Any, ratios: Sequence[float]) -> Any:
    """A physically pruned deep copy of ``dense`` (the dense model is untouched)."""
    import copy

    from pruning_tools.surgery.channels import apply_ratios

    return apply_ratios(copy.deepcopy(dense), space, ratios)


def export_for_timing(model: Any, path: str | Path, imgsz: tuple[int, int], precision: str) -> Path:
    """``model`` as the ONNX file the target runs: FP32, or INT8 QDQ with the zoo's settings (calibrated
    on one random image: the ranges do not change the time, so the file is for timing only)."""
    from pruning_tools.quant.quantize import QuantConfig, preprocess_for_quant, quantize_int8
    from pruning_tools.ultralytics_adapter import class_names, export_onnx

    path = Path(path)
    fp32 = path if precision == "fp32" else path.with_name(path.stem + "_fp32.onnx")
    export_onnx(model, fp32, imgsz=imgsz, class_names=class_names(model))
    if precision == "fp32":
        return path
    if precision != "int8":
        raise LatencyModelError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    pre = preprocess_for_quant(fp32, path.with_name(path.stem + "_pre.onnx"))
    quantize_int8(pre, path, _OneBatch("images", (1, 3, int(imgsz[0]), int(imgsz[1]))), QuantConfig(), original=fp32)
    for p in (fp32, pre):
        p.unlink(missing_ok=True)
    return path


def time_models(dense: Any, space: Any, vectors: dict[str, Sequence[float]], imgsz: tuple[int, int], precision: str,
                threads: int = 2, runs: int = 20, warmup: int = 3, workdir: str | Path | None = None,
                log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Prune, export and time ``vectors`` (name -> ratios) interleaved round-robin in this process.

    :return: name -> median ms.
    """
    from pruning_tools.train.measure import interleaved_latency

    with tempfile.TemporaryDirectory(prefix="sp_lattime_") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        paths = {}
        for n, (name, r) in enumerate(vectors.items(), 1):
            p = root / f"{name}_{precision}.onnx"
            if not p.is_file():
                model = dense if not np.any(np.asarray(r) > 0) else pruned_copy(dense, space, r)
                export_for_timing(model, p, imgsz, precision)
            paths[name] = p
            if log is not None:
                log(f"latency model: exported {n}/{len(vectors)} ({name}, {precision})")
        lat = interleaved_latency(paths, imgsz, threads, warmup, runs)
    return {k: v["median_ms"] for k, v in lat.items()}


def calibration_vectors(space: Any, n_random: int = 2, seed: int = 0, max_ratio: float = 0.9) -> dict[str, np.ndarray]:
    """The whole models :func:`calibrate` measures: dense, uniform at 0.3 and 0.6, and ``n_random``
    random ratio vectors (per-layer ``U(0, max_ratio)``)."""
    rng = np.random.default_rng(seed + 7919)
    out = {"dense": np.zeros(len(space)), "uniform30": np.full(len(space), 0.3), "uniform60": np.full(len(space), 0.6)}
    for k in range(n_random):
        out[f"random{k}"] = rng.uniform(0.0, max_ratio, len(space))
    return out


def calibrate(model: LatencyModel, dense: Any, imgsz: tuple[int, int], n_random: int = 2, seed: int = 0,
              runs: int = 20, warmup: int = 3, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fit ``model``'s offset and scale on :func:`calibration_vectors` measured interleaved."""
    vecs = calibration_vectors(model.space, n_random, seed)
    measured = time_models(dense, model.space, vecs, imgsz, model.table.precision, model.table.threads, runs, warmup,
                           log=log)
    rec = model.fit([(vecs[k], measured[k]) for k in vecs])
    rec["vectors"] = list(vecs)
    return rec


def build_latency_model(space: Any, dense: Any, precision: str = "fp32", threads: int = 2, grid: int = 5,
                        cache_dir: str | Path | None = None, calibrate_models: int = 2, seed: int = 0,
                        runs: int = 20, progress: bool = False,
                        log: Callable[[str], None] | None = None) -> LatencyModel:
    """The latency model of ``space`` at ``precision``: the cached table (missing blocks measured and
    cached), then calibrated on dense + 2 uniform + ``calibrate_models`` random pruned networks."""
    table = LatencyTable.cached(precision, threads, cache_dir)
    lm = LatencyModel(space, table, grid)
    todo = table.missing(lm.blocks())
    if todo and log is not None:
        log(f"latency model: measuring {len(todo)} of {len(lm.blocks())} blocks ({precision}, {threads} threads; "
            f"cache {table.path(cache_dir)})")
    table.measure(todo, progress=progress, cache_dir=cache_dir)
    calibrate(lm, dense, space.imgsz, calibrate_models, seed, runs, log=log)
    return lm
