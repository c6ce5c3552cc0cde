"""Constrained precision search: the lowest measured latency within an accuracy-drop bound.

For one model and one target backend the search walks precision 32 -> 16 -> 8:

1. **FP32** is measured first: its mAP50-95 is the reference and it is always admissible.
2. **FP16** (whole graph) is measured and admitted when its mAP drop is within ``delta``.
3. **INT8** (QDQ) with a *fallback set* of layers kept in float32. Candidate layers (first conv,
   Detect head convs, Concat-adjacent convs; see :func:`pruning_tools.quant.quantize.fallback_candidates`)
   are ranked by sensitivity: the reduction of the output error against FP32 on a few calibration
   images when that single layer is kept float (cheap: no labels, calibration is cached). Then a
   bisection on ``k``, the number of most sensitive layers kept float, finds the smallest ``k``
   whose mAP drop is within ``delta`` (``k = 0`` first; ``k = K`` bounds feasibility; then halving).
4. Among all admitted candidates the one with the lowest **measured** median latency on the target
   backend is selected. Nothing is assumed about speed: on ONNX Runtime CPU FP16 is typically not
   faster than FP32, and the measurement decides. The latency probes are not taken one candidate
   after another (a shared machine's slow phase would pick the winner): once every candidate of the
   search is built, all of them are timed **interleaved** — round-robin in this one process, the
   order rotated each round, medians (:meth:`Measurer.latencies`, :func:`time_interleaved`).

Every candidate tried — precision, fallback set, mAP, latency, admitted or not, why — is logged to
the console and returned for the JSON search log (:meth:`SearchResult.to_dict`).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from pruning_tools.quant.quantize import Int8Builder, QuantizeError, load_image, node_to_layer, to_fp16

SEARCH_PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class SearchConfig:
    """Search settings.

    :param delta: admissible mAP50-95 drop in points (1.0 = 0.01 mAP).
    :param precisions: precisions to try, from ``fp32``/``fp16``/``int8`` (``fp32`` is always measured).
    :param max_fallback: the largest fallback set tried (``K``).
    :param max_candidates: candidate layers ranked by sensitivity (the first ones by prior order).
    :param sensitivity_images: calibration images used for the sensitivity ranking.
    """

    delta: float = 1.0
    precisions: tuple[str, ...] = SEARCH_PRECISIONS
    max_fallback: int = 8
    max_candidates: int = 16
    sensitivity_images: int = 4

    def __post_init__(self) -> None:
        if not (self.delta >= 0):
            raise ValueError(f"delta must be >= 0 mAP points, got {self.delta}")
        bad = [p for p in self.precisions if p not in SEARCH_PRECISIONS]
        if bad or not self.precisions:
            raise ValueError(f"precisions must be a non-empty subset of {SEARCH_PRECISIONS}, got {self.precisions}")
        for name in ("max_fallback", "max_candidates", "sensitivity_images"):
            if int(getattr(self, name)) < (0 if name == "max_fallback" else 1):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


class Measurer(Protocol):
    """What the search needs from a backend: accuracy and latency of an ONNX file."""

    backend: str

    def accuracy(self, onnx_path: Path) -> dict[str, Any]:
        """:return: ``{"map50_95", "map50", "map_by_condition"}``."""
        ...

    def latency(self, onnx_path: Path) -> dict[str, Any]:
        """:return: ``{"median", "p95", "backend", "device", "threads"}`` in milliseconds."""
        ...

    def latencies(self, onnx_paths: Sequence[Path]) -> list[dict[str, Any]]:
        """Latency of several models timed interleaved (round-robin in one process), one dict per path
        as :meth:`latency`, plus ``"interleaved": True`` and ``"models"``."""
        ...

    def infer_fn(self, onnx_path: Path) -> Callable[[np.ndarray], np.ndarray]:
        """:return: ``raw = f(batch)`` running the model on this backend (CPU reference is fine)."""
        ...


@dataclass
class Candidate:
    """One point of the search path."""

    step: int
    precision: str
    fallback_nodes: list[str]
    path: str
    map50_95: float | None = None
    map50: float | None = None
    map_by_condition: dict[str, dict[str, float | None]] = field(default_factory=dict)
    latency_ms: dict[str, Any] = field(default_factory=dict)
    drop_points: float | None = None
    accepted: bool = False
    reason: str = ""
    selected: bool = False

    @property
    def fallback_layers(self) -> list[str]:
        """Torch module names of the fallback nodes."""
        return [node_to_layer(n) for n in self.fallback_nodes]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fallback_layers"] = self.fallback_layers
        return d


@dataclass
class SearchResult:
    """The search path and its choice for one (model, backend)."""

    label: str
    backend: str
    delta: float
    candidates: list[Candidate]
    sensitivity: list[dict[str, Any]]
    wall_s: float = 0.0

    @property
    def selected(self) -> Candidate:
        return next(c for c in self.candidates if c.selected)

    def best(self, precision: str) -> Candidate | None:
        """The admitted (else the last tried) candidate of ``precision``: the one to ship."""
        cands = [c for c in self.candidates if c.precision == precision]
        ok = [c for c in cands if c.accepted]
        if ok:
            return min(ok, key=lambda c: c.latency_ms.get("median", float("inf")))
        return cands[-1] if cands else None

    def to_dict(self) -> dict[str, Any]:
        sel = self.selected
        return {"label": self.label, "backend": self.backend, "delta_points": self.delta,
                "selected": {"precision": sel.precision, "fallback_layers": sel.fallback_layers, "path": sel.path,
                             "map50_95": sel.map50_95, "latency_ms": sel.latency_ms.get("median")},
                "sensitivity": self.sensitivity, "path": [c.to_dict() for c in self.candidates],
                "wall_s": round(self.wall_s, 1)}


# ------------------------------------------------------------------------------------- helpers
def output_error(ref: np.ndarray, out: np.ndarray, imgsz: tuple[int, int], top: int = 300) -> float:
    """Distance between two raw outputs (1, 4+nc, N): mean |score difference| over all anchors plus
    mean |box difference| (as a fraction of the input size) over the ``top`` anchors by reference score."""
    r, o = ref[0].astype(np.float64), out[0].astype(np.float64)
    score_err = float(np.abs(r[4:] - o[4:]).mean())
    conf = r[4:].max(0)
    idx = np.argsort(-conf)[:top]
    box_err = float(np.abs(r[:4, idx] - o[:4, idx]).mean()) / float(max(imgsz))
    return score_err + box_err


def rank_sensitivity(builder: Int8Builder, measurer: Measurer, candidates: Sequence[str], images: Sequence[Path],
                     imgsz: tuple[int, int], workdir: Path, log: Callable[[str], None] = print,
                     progress: bool = False) -> list[dict[str, Any]]:
    """Rank ``candidates`` by how much keeping each one float reduces the INT8 output error.

    :return: ``[{"node", "layer", "error", "gain"}]`` sorted by ``gain`` (most sensitive first).
    """
    batches = [load_image(p, imgsz) for p in images]
    ref_fn = measurer.infer_fn(builder.fp32)
    refs = [ref_fn(b) for b in batches]

    def err(path: Path) -> float:
        fn = measurer.infer_fn(path)
        return float(np.mean([output_error(r, fn(b), imgsz) for r, b in zip(refs, batches)]))

    base_path = builder.build(workdir / "sens_base.onnx")
    base = err(base_path)
    rows = []
    it: Any = candidates
    if progress:
        from tqdm import tqdm

        it = tqdm(candidates, desc="int8 sensitivity", unit="layer", leave=False)
    tmp = workdir / "sens_one.onnx"
    for node in it:
        e = err(builder.build(tmp, [node]))
        rows.append({"node": node, "layer": node_to_layer(node), "error": round(e, 6), "gain": round(base - e, 6)})
    tmp.unlink(missing_ok=True)
    rows.sort(key=lambda r: -r["gain"])
    log(f"  sensitivity (all-int8 output error {base:.5f}): "
        + ", ".join(f"{r['layer']} {r['gain']:+.5f}" for r in rows[:6]) + (" ..." if len(rows) > 6 else ""))
    return rows


def _prior_order(cands: Sequence[str]) -> list[str]:
    """Candidates in prior order: head output convs, first conv, other head convs, the rest."""
    head = [c for c in cands if "/cv2" in c or "/cv3" in c]
    head_out = [c for c in head if not c.endswith("/conv/Conv")]
    first = [cands[0]] if cands else []
    rest_head = [c for c in head if c not in head_out]
    others = [c for c in cands if c not in head and c not in first]
    seen: list[str] = []
    for c in head_out + first + rest_head + others:
        if c not in seen:
            seen.append(c)
    return seen


# ------------------------------------------------------------------------------------- search
def search_precision(fp32: Path, out_dir: Path, measurer: Measurer, cfg: SearchConfig,
                     builder: Int8Builder | None = None, label: str = "model",
                     log: Callable[[str], None] = print, progress: bool = False) -> SearchResult:
    """Run the constrained search for one FP32 ONNX model (see the module docstring).

    :param fp32: the FP32 ONNX model (also the FP32 candidate).
    :param out_dir: where the FP16 / INT8 candidates are written (``model_fp16.onnx``, ``int8_k<k>.onnx``).
    :param measurer: accuracy + latency on the target backend.
    :param builder: INT8 builder (calibrated on the train split); required when ``int8`` is searched.
    :return: the search path with exactly one candidate ``selected``.
    """
    t0 = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    cands: list[Candidate] = []
    delta = float(cfg.delta)

    def measure(prec: str, path: Path, fallback: Sequence[str], ref: float | None) -> Candidate:
        c = Candidate(step=len(cands), precision=prec, fallback_nodes=list(fallback), path=str(path))
        acc = measurer.accuracy(path)
        c.map50_95, c.map50 = acc.get("map50_95"), acc.get("map50")
        c.map_by_condition = acc.get("map_by_condition", {}) or {}
        if ref is None:
            c.drop_points, c.accepted, c.reason = 0.0, True, "reference"
        else:
            c.drop_points = round((ref - float(c.map50_95 or 0.0)) * 100.0, 4)
            c.accepted = c.drop_points <= delta + 1e-9
            c.reason = f"drop {c.drop_points:.2f} {'<=' if c.accepted else '>'} delta {delta:.2f} points"
        cands.append(c)
        fb = f" fallback {len(fallback)} [{', '.join(node_to_layer(n) for n in fallback)}]" if fallback else ""
        log(f"  [{label}/{measurer.backend}] step {c.step}: {prec}{fb}: mAP50-95 {c.map50_95:.4f} -> "
            f"{'accepted' if c.accepted else 'rejected'} ({c.reason})")
        return c

    ref_c = measure("fp32", fp32, (), None)
    ref = float(ref_c.map50_95 or 0.0)
    if "fp16" in cfg.precisions:
        measure("fp16", to_fp16(fp32, out_dir / "model_fp16.onnx"), (), ref)
    sens: list[dict[str, Any]] = []
    if "int8" in cfg.precisions:
        if builder is None:
            raise QuantizeError("int8 search needs an Int8Builder (calibration images)")
        k0 = measure("int8", builder.build(out_dir / "int8_k0.onnx"), (), ref)
        if not k0.accepted and cfg.max_fallback > 0:
            prior = _prior_order(builder.candidates())[: int(cfg.max_candidates)]
            images = builder.reader.files[: int(cfg.sensitivity_images)]
            sens = rank_sensitivity(builder, measurer, prior, images, builder.reader.imgsz, out_dir, log, progress)
            order = [r["node"] for r in sens]
            kmax = min(int(cfg.max_fallback), len(order))

            def try_k(k: int) -> Candidate:
                return measure("int8", builder.build(out_dir / f"int8_k{k}.onnx", order[:k]), order[:k], ref)

            if kmax > 0 and try_k(kmax).accepted:
                lo, hi = 0, kmax  # lo fails, hi passes
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if try_k(mid).accepted:
                        hi = mid
                    else:
                        lo = mid
            else:
                log(f"  [{label}] int8 infeasible: even {kmax} fallback layers exceed delta {delta:.2f}")
    timed = measure_latencies(measurer, [Path(c.path) for c in cands])
    for c, lat in zip(cands, timed):
        c.latency_ms = lat
    log(f"  [{label}/{measurer.backend}] latency, {len(cands)} candidates interleaved "
        f"({timed[0].get('runs', '?')} rounds, medians): "
        + ", ".join(f"{_tag(c)} {c.latency_ms.get('median', float('nan')):.2f} ms" for c in cands))
    accepted = [c for c in cands if c.accepted]
    best = min(accepted, key=lambda c: (c.latency_ms.get("median", float("inf")), c.step))
    best.selected = True
    fb = f" with fallback {best.fallback_layers}" if best.fallback_nodes else ""
    log(f"  [{label}/{measurer.backend}] selected {best.precision}{fb}: mAP50-95 {best.map50_95:.4f} "
        f"(drop {best.drop_points:.2f} points), {best.latency_ms.get('median', float('nan')):.2f} ms")
    return SearchResult(label=label, backend=measurer.backend, delta=delta, candidates=cands, sensitivity=sens,
                        wall_s=time.monotonic() - t0)


def _tag(c: Candidate) -> str:
    return f"{c.precision}" + (f"+{len(c.fallback_nodes)}fb" if c.fallback_nodes else "")


# ------------------------------------------------------------------------------------- measuring
def measure_latencies(measurer: Any, paths: Sequence[Path]) -> list[dict[str, Any]]:
    """``measurer.latencies(paths)`` (interleaved), or one :meth:`Measurer.latency` after another for a
    measurer that has no interleaved timing (marked ``"interleaved": False``)."""
    fn = getattr(measurer, "latencies", None)
    if fn is not None:
        return list(fn(list(paths)))
    return [{**measurer.latency(p), "interleaved": False} for p in paths]


def time_interleaved(fns: Sequence[Callable[[np.ndarray], Any]], x: np.ndarray, warmup: int, runs: int,
                     **info: Any) -> list[dict[str, Any]]:
    """Median / p95 wall time (ms) of each ``fn(x)``, timed round-robin in this process.

    Every function is warmed up first (``warmup`` calls each, in turn); then each of ``runs`` rounds
    times one call of every function, in an order rotated by one each round, so a slow phase of a
    shared machine hits all of them alike. Compare medians (and their ratios) from one call only.

    :return: one dict per function, in order: ``{"median", "p95", "runs", "interleaved": True, "models", **info}``.
    :raises ValueError: no functions, or ``runs < 1``.
    """
    if not fns:
        raise ValueError("time_interleaved needs at least one function")
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    from pruning_tools.train.measure import round_robin

    n = len(fns)
    times = round_robin([lambda fn=fn: fn(x) for fn in fns], warmup, runs)
    out = []
    for ts in times:
        ts.sort()
        p95 = ts[min(len(ts) - 1, int(round(0.95 * (len(ts) - 1))))]
        out.append({"median": round(statistics.median(ts), 3), "p95": round(p95, 3), "runs": len(ts),
                    "interleaved": True, "models": n, **info})
    return out


def cpu_name() -> str:
    """``cpu: <model name>`` (the manifest's latency ``device`` on ONNX Runtime CPU)."""
    from sparse_perception.runtime.machine import cpu_model

    return "cpu: " + cpu_model()


class OrtMeasurer:
    """Accuracy (project evaluator) and latency of ONNX files on ONNX Runtime CPU.

    :param dataset: YOLO dataset root (``data.yaml``, ``conditions.json``).
    :param split: evaluation split (``test``).
    :param imgsz: network input (H, W).
    :param max_images: evaluate at most this many images (``None``: all).
    :param threads: ONNX Runtime intra-op threads.
    :param warmup: untimed runs before timing.
    :param runs: timed runs (median and p95 reported).
    """

    backend = "onnxruntime"

    def __init__(self, dataset: str | Path, split: str = "test", imgsz: tuple[int, int] = (384, 1248),
                 max_images: int | None = None, threads: int = 2, warmup: int = 3, runs: int = 10) -> None:
        self.dataset, self.split = Path(dataset), split
        self.imgsz = (int(imgsz[0]), int(imgsz[1]))
        self.max_images, self.threads, self.warmup, self.runs = max_images, int(threads), int(warmup), int(runs)
        self.device = cpu_name()

    def _session(self, path: Path) -> Any:
        try:
            from sparse_perception.runtime.backends import create_backend
        except ImportError:
            from pruning_tools.train.measure import ort_session

            sess = ort_session(path, self.threads)
            name = sess.get_inputs()[0].name
            return lambda x: sess.run(None, {name: x})[0]
        be = create_backend(str(path), backend="onnxruntime", threads=self.threads)
        return be.infer

    def infer_fn(self, onnx_path: Path) -> Callable[[np.ndarray], np.ndarray]:
        return self._session(Path(onnx_path))

    def accuracy(self, onnx_path: Path) -> dict[str, Any]:
        return evaluate_onnx(self.infer_fn(onnx_path), self.dataset, self.split, self.imgsz, self.max_images)

    def latency(self, onnx_path: Path) -> dict[str, Any]:
        fn = self.infer_fn(onnx_path)
        x = np.random.default_rng(0).random((1, 3, *self.imgsz), dtype=np.float32)
        return time_fn(fn, x, self.warmup, self.runs, backend=self.backend, device=self.device, threads=self.threads)

    def latencies(self, onnx_paths: Sequence[Path]) -> list[dict[str, Any]]:
        """All of ``onnx_paths`` timed interleaved (:func:`time_interleaved`), every session open at once."""
        fns = [self.infer_fn(Path(p)) for p in onnx_paths]
        x = np.random.default_rng(0).random((1, 3, *self.imgsz), dtype=np.float32)
        return time_interleaved(fns, x, self.warmup, self.runs, backend=self.backend, device=self.device,
                                threads=self.threads)


def time_fn(fn: Callable[[np.ndarray], Any], x: np.ndarray, warmup: int, runs: int, **info: Any) -> dict[str, Any]:
    """Median / p95 wall time of ``fn(x)`` in ms after ``warmup`` calls."""
    for _ in range(max(0, warmup)):
        fn(x)
    ts = []
    for _ in range(max(1, runs)):
        t = time.perf_counter()
        fn(x)
        ts.append((time.perf_counter() - t) * 1e3)
    ts.sort()
    p95 = ts[min(len(ts) - 1, int(round(0.95 * (len(ts) - 1))))]
    return {"median": round(statistics.median(ts), 3), "p95": round(p95, 3), "runs": len(ts), **info}


def evaluate_onnx(infer: Callable[[np.ndarray], np.ndarray], dataset: Path, split: str, imgsz: tuple[int, int],
                  max_images: int | None = None) -> dict[str, Any]:
    """mAP of an inference function through the project's evaluator (per condition where known).

    Uses :func:`pruning_tools.train.evaluate.evaluate_detector`.
    """
    from pruning_tools.train.evaluate import EVALUATOR, evaluate_detector

    kwargs: dict[str, Any] = {}
    if max_images is not None:
        kwargs["max_images"] = max_images
    res = evaluate_detector(infer, Path(dataset), split, tuple(imgsz), **kwargs)
    by_cond = res["by_condition"]
    return {"map50_95": float(res["map50_95"]), "map50": float(res["map50"]),
            "map_by_condition": {k: {"map50_95": _f(v.get("map50_95")), "map50": _f(v.get("map50"))}
                                 for k, v in by_cond.items()},
            "evaluator": EVALUATOR}


def _f(v: Any) -> float | None:
    return None if v is None else float(v)


class TensorRTMeasurer(OrtMeasurer):
    """Latency (and accuracy) of each candidate as a TensorRT engine built on this GPU.

    Engines go next to the ONNX file (``<name>.engine`` + build record). The sensitivity ranking's
    reference outputs use ONNX Runtime CPU (:meth:`infer_fn`), which needs no engine builds.
    """

    backend = "tensorrt"

    def _engine(self, onnx_path: Path) -> Any:
        from pruning_tools.quant.tensorrt_build import EngineSpec, build_engine
        from sparse_perception.runtime.backends.tensorrt_backend import TensorRTBackend

        onnx_path = Path(onnx_path)
        engine = onnx_path.with_suffix(".engine")
        if not engine.is_file():
            build_engine(EngineSpec(onnx_path, engine, declared_precision(onnx_path)))
        return TensorRTBackend(engine)

    def accuracy(self, onnx_path: Path) -> dict[str, Any]:
        be = self._engine(onnx_path)
        try:
            return evaluate_onnx(be.infer, self.dataset, self.split, self.imgsz, self.max_images)
        finally:
            be.close()

    def latency(self, onnx_path: Path) -> dict[str, Any]:
        be = self._engine(onnx_path)
        try:
            x = np.random.default_rng(0).random((1, 3, *self.imgsz), dtype=np.float32)
            return time_fn(be.infer, x, self.warmup, self.runs, backend=self.backend, device=be.device)
        finally:
            be.close()

    def latencies(self, onnx_paths: Sequence[Path]) -> list[dict[str, Any]]:
        """All engines of ``onnx_paths`` open at once and timed interleaved (:func:`time_interleaved`)."""
        engines: list[Any] = []
        try:
            for p in onnx_paths:
                engines.append(self._engine(Path(p)))
            x = np.random.default_rng(0).random((1, 3, *self.imgsz), dtype=np.float32)
            return time_interleaved([e.infer for e in engines], x, self.warmup, self.runs, backend=self.backend,
                                    device=engines[0].device)
        finally:
            for e in engines:
                e.close()


def declared_precision(path: str | Path) -> str:
    """The ``precision`` metadata written by :mod:`pruning_tools.quant.quantize` (``fp32`` when absent) — what
    the file says it is; :func:`sparse_perception.runtime.backends.onnx_precision.onnx_precision` reads what the
    graph is."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    return meta.get("precision", "fp32")
