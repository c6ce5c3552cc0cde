"""``pruning-tools export --run DIR --zoo DIR``: a prune run -> quantised engine zoo + manifest.

For the dense baseline (level ``dense``) and each pruned checkpoint of the chosen method
(levels named by the run: ``level_name`` where the run records one, e.g. ``x1.5`` / ``x2`` for
speed-up targets, else ``s50``, ``s75``, ``s90`` ... from the parameter level in ``<run>/summary.json``):

1. export FP32 ONNX at the input shape (default: the run's, else 384x1248);
2. for each backend (``onnxruntime``; ``tensorrt`` where an NVIDIA GPU, tensorrt and pycuda are
   present — elsewhere one message and the ONNX Runtime artifacts are still produced) run the
   constrained precision search (:mod:`pruning_tools.quant.bisection`): FP32 -> FP16 -> INT8 with a
   bisected fallback set, within ``--delta`` mAP50-95 points, lowest measured latency wins (the
   level's candidates timed interleaved in one process, medians of >= 20 rounds);
3. copy each precision's artifact (the admitted variant, or the last one tried when none was)
   into ``<zoo>/<level>/`` and list it in ``<zoo>/manifest.json`` (schema-validated, see
   :mod:`sparse_perception.runtime.zoo`) with mAP overall and per driving condition, measured latency,
   size, sha256, source checkpoint, fallback layers and ``selected`` marking the search's choice;
4. the speed ladder (:mod:`pruning_tools.quant.ladder`): the selected engines of all levels, dense
   included, timed interleaved in one process; each level's ``speedup_vs_dense`` is the dense
   engine's median over its own. A level is kept only when it is faster than every more accurate
   kept level (accuracy: the val-split mAP50-95 the search selected on); the others are printed and
   listed under the manifest's ``ladder.excluded`` (with their artifacts' records), not in
   ``artifacts``, so the node never loads them.

A run whose ``summary.json`` has a ``conditions`` block (a federated run with condition groups,
docs/federated.md: ``{"default": "fed_global", "levels": {"night_fog": "fed_night", ...}, "groups": [...]}``)
gets it in the manifest (:mod:`sparse_perception.runtime.zoo`, what the node's ``policy_path: manifest``
follows). The levels it names are condition-tailored, not rungs of the speed ladder: they are timed
interleaved with the other selected engines (comparable latencies) but never excluded by the ladder
rule; map entries whose level ``--levels`` left out are dropped (printed).

The full search path goes to ``<zoo>/bisection_log.json`` and a plot ``<zoo>/bisection.png``.
The zoo is assembled in ``<zoo>.partial`` and moved into place at the end: an interrupted export
leaves no half-written zoo behind.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from pruning_tools.quant.bisection import SEARCH_PRECISIONS, OrtMeasurer, SearchConfig, SearchResult, search_precision
from pruning_tools.quant.ladder import LadderLevel, monotone_ladder
from pruning_tools.quant.quantize import Int8Builder, QuantConfig, QuantizeError, select_calibration_files, split_images
from sparse_perception.runtime.zoo import LEVEL_RE, RESERVED_LEVELS
from pruning_tools.data.files import strict_dumps

DEFAULT_IMGSZ = (384, 1248)
#: the latency fields an artifact keeps (``interleaved``/``runs``/``models``: how it was timed)
LATENCY_KEYS = ("median", "p95", "backend", "device", "threads", "runs", "interleaved", "models")
#: rounds of every interleaved timing (the bisection's candidates, the ladder): medians of >= 20
TIMING_RUNS = 20
ARTIFACT_NAMES = {"fp32": "model_fp32", "fp16": "model_fp16", "int8": "model_int8"}


class ExportError(RuntimeError):
    """The run or the options cannot be exported; the message names the file or option."""


@dataclass(frozen=True)
class LevelSource:
    """One checkpoint to export."""

    level: str
    sparsity: float
    checkpoint: Path
    speedup_target: float | None = None
    target_metric: str | None = None


@dataclass(frozen=True)
class ExportConfig:
    """Validated ``export`` options (see ``--help``)."""

    run: Path
    zoo: Path
    levels: tuple[str, ...] | None = None
    method: str | None = "full"  # None: the best method the run has (default_method)
    delta: float = 1.0
    imgsz: tuple[int, int] | None = None
    calib_images: int = 500
    dataset: Path | None = None
    split: str = "val"
    backends: tuple[str, ...] = ("onnxruntime",)
    precisions: tuple[str, ...] = SEARCH_PRECISIONS
    quick: bool = False
    eval_images: int | None = None
    threads: int = 2
    max_fallback: int = 8
    max_candidates: int = 16
    overwrite: bool = False
    progress: bool = True
    real_eval: Path | None = None
    real_split_file: Path | None = None
    real_split: str = "test"
    timing_runs: int = TIMING_RUNS

    def __post_init__(self) -> None:
        if self.delta < 0:
            raise ValueError(f"--delta must be >= 0 mAP points, got {self.delta}")
        if self.calib_images < 1:
            raise ValueError(f"--calib-images must be >= 1, got {self.calib_images}")
        bad = [b for b in self.backends if b not in ("onnxruntime", "tensorrt")]
        if bad or not self.backends:
            raise ValueError(f"--backends: unknown {bad}; choose from onnxruntime,tensorrt")
        if self.imgsz is not None and any(int(v) % 32 or int(v) <= 0 for v in self.imgsz):
            raise ValueError(f"--input-shape {self.imgsz}: height and width must be positive multiples of 32")
        if self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")


# ----------------------------------------------------------------------------- run discovery
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ExportError(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from exc


#: ``export --method`` default: the first of these the run has (the search's best first).
METHOD_PREFERENCE = ("full", "importance", "global", "uniform", "random", "federated")


def default_method(run: Path) -> str:
    """The best pruning method present in ``run`` (:data:`METHOD_PREFERENCE`).

    :raises ExportError: when the run has no pruned checkpoints (naming what it has).
    """
    summary_path = run / "summary.json"
    if not summary_path.is_file():
        raise ExportError(f"{run} is not a prune run: {summary_path} not found (run `pruning-tools prune` first)")
    summary = _read_json(summary_path)
    have = {str(c.get("method")) for c in (summary.get("checkpoints") or []) if isinstance(c, dict)} \
        if isinstance(summary, dict) else set()
    for m in METHOD_PREFERENCE:
        if m in have:
            return m
    raise ExportError(f"{summary_path}: no pruned checkpoints to export (methods present: {sorted(have) or 'none'})")


def discover_levels(run: Path, method: str | None = "full") -> tuple[list[LevelSource], dict[str, Any]]:
    """The dense baseline and the method's trial-0 checkpoints of a prune run (``method=None``: the
    best method present, :func:`default_method`).

    :return: ``(levels sorted by sparsity, summary dict)``.
    :raises ExportError: naming the missing file or field.
    """
    if method is None:
        method = default_method(run)
    summary_path = run / "summary.json"
    if not summary_path.is_file():
        raise ExportError(f"{run} is not a prune run: {summary_path} not found (run `pruning-tools prune` first)")
    summary = _read_json(summary_path)
    if not isinstance(summary, dict):
        raise ExportError(f"{summary_path}: expected an object")
    out: list[LevelSource] = []
    base = summary.get("baseline")
    if isinstance(base, str) and base:
        bpath = Path(base) if Path(base).is_absolute() else run / base
        out.append(LevelSource("dense", 0.0, bpath))
    for i, ck in enumerate(summary.get("checkpoints", [])):
        if not isinstance(ck, dict):
            raise ExportError(f"{summary_path}: checkpoints[{i}] is not an object")
        if ck.get("method") != method or int(ck.get("trial", 0)) != 0:
            continue
        for key in ("level", "sparsity", "path"):
            if key not in ck:
                raise ExportError(f"{summary_path}: checkpoints[{i}].{key} missing")
        level = ck.get("level_name") or f"s{int(round(float(ck['level']) * 100)):02d}"
        if not isinstance(level, str) or not LEVEL_RE.fullmatch(level) or level in RESERVED_LEVELS:
            raise ExportError(f"{summary_path}: checkpoints[{i}].level_name {level!r} cannot name a zoo level "
                              f"(letters, digits, _ - and inner dots, e.g. x1.5; not {list(RESERVED_LEVELS)})")
        target = ck.get("speedup_target")
        path = Path(ck["path"])
        out.append(LevelSource(level, float(ck["sparsity"]), path if path.is_absolute() else run / path,
                               float(target) if target is not None else None,
                               str(ck["target_metric"]) if ck.get("target_metric") else None))
    names = [s.level for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ExportError(f"{summary_path}: more than one {method!r} checkpoint named {dup}")
    if not any(s.level != "dense" for s in out):
        methods = sorted({str(c.get("method")) for c in summary.get("checkpoints", []) if isinstance(c, dict)})
        raise ExportError(f"{summary_path}: no checkpoints of method {method!r} (run has {methods or 'none'})")
    return sorted(out, key=lambda s: (s.sparsity, s.level)), summary


def condition_block(summary: dict[str, Any], exported: set[str], log: Any = print) -> dict[str, Any] | None:
    """The run's ``conditions`` block (condition key -> level) restricted to the ``exported`` levels.

    :return: the block for the manifest, or None when the run has none (or none of its levels is exported).
    :raises ExportError: a block that is not ``{"levels": {...}, "default"?: ..., "groups"?: [...]}``.
    """
    block = summary.get("conditions")
    if block is None:
        return None
    if not isinstance(block, dict) or not isinstance(block.get("levels"), dict):
        raise ExportError("summary.json: 'conditions' must be an object with a 'levels' map (condition -> level), "
                          f"got {str(block)[:200]}")
    out: dict[str, Any] = {"levels": {}}
    for key, level in block["levels"].items():
        if level in exported:
            out["levels"][key] = level
        else:
            log(f"note: conditions map entry {key} -> {level} dropped: level {level!r} is not exported")
    default = block.get("default")
    if default is not None:
        if default in exported:
            out["default"] = default
        else:
            log(f"note: conditions default {default!r} dropped: not exported")
    groups = [g for g in block.get("groups") or [] if isinstance(g, dict) and g.get("level") in exported]
    if groups:
        out["groups"] = groups
    return out if out["levels"] else None


def tailored_levels(block: dict[str, Any] | None) -> set[str]:
    """Levels a ``conditions`` block names (kept off the speed ladder)."""
    if not block:
        return set()
    names = set(block["levels"].values()) | {g["level"] for g in block.get("groups", [])}
    return names | ({block["default"]} if "default" in block else set())


def run_dataset(run: Path) -> Path | None:
    """The dataset a prune run used (``config.yaml`` ``data.dataset``, else ``<run>/data/yolo``)."""
    cfg_path = run / "config.yaml"
    if cfg_path.is_file():
        try:
            cfg = yaml.safe_load(cfg_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ExportError(f"{cfg_path}: not valid YAML: {exc}") from exc
        ds = (cfg.get("data") or {}).get("dataset") if isinstance(cfg, dict) else None
        if ds:
            return Path(ds)
    gen = run / "data" / "yolo"
    return gen if (gen / "data.yaml").is_file() else None


# ----------------------------------------------------------------------------- artifacts
def _artifact(zoo: Path, src: LevelSource, prec: str, backend: str, path: Path, cand: Any, imgsz: tuple[int, int],
              names: Sequence[str], selected: bool, trt: dict[str, str] | None) -> dict[str, Any]:
    from sparse_perception.runtime.zoo import artifact_sha256

    art: dict[str, Any] = {
        "level": src.level, "sparsity": round(float(src.sparsity), 4), "precision": prec, "backend": backend,
        "path": path.relative_to(zoo).as_posix(), "sha256": artifact_sha256(path), "size_bytes": path.stat().st_size,
        "input_shape": [1, 3, int(imgsz[0]), int(imgsz[1])], "class_names": list(names), "selected": bool(selected),
        "accepted": bool(cand.accepted), "map_drop_points": cand.drop_points,
        "map50_95": _unit(cand.map50_95), "map50": _unit(cand.map50),
        "map_by_condition": {k: {"map50_95": _unit(v.get("map50_95")), "map50": _unit(v.get("map50"))}
                             for k, v in cand.map_by_condition.items()},
        "latency_ms": {k: v for k, v in cand.latency_ms.items() if k in LATENCY_KEYS},
        "source_checkpoint": str(src.checkpoint), "created": _now(),
        "fallback_layers": cand.fallback_layers, "param_sparsity": round(float(src.sparsity), 4),
    }
    if src.speedup_target is not None:
        art["speedup_target"] = float(src.speedup_target)
    if src.target_metric is not None:
        art["target_metric"] = src.target_metric
    if trt is not None:
        art["tensorrt"] = trt
    return art


def _run_baseline(run: Path) -> str | None:
    """The baseline checkpoint a prune run started from (its ``results.json``), ``None`` when unknown."""
    res = run / "results.json"
    return (_read_json(res) or {}).get("baseline") if res.is_file() else None


def _baseline_licence(run: Path) -> str | None:
    """The licence the run's baseline records (weights trained on KITTI frames carry KITTI's terms)."""
    base = _run_baseline(run)
    side = Path(base).with_suffix(".json") if base else None
    if side is None or not side.is_file():
        return None
    return (_read_json(side) or {}).get("licence")


def _real_of(onnx_path: Path, frames: Any, threads: int) -> dict[str, Any]:
    """Real-frame AP of one exported ONNX artifact (its own session, as the node runs it)."""
    from pruning_tools.train.evaluate import load_detector, real_summary

    det = load_detector(onnx_path, threads=threads)
    try:
        return real_summary(frames.evaluate(det))
    finally:
        det.close()


def _unit(v: Any) -> float | None:
    return None if v is None else round(min(max(float(v), 0.0), 1.0), 6)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


def _ship(result: SearchResult, src: LevelSource, level_dir: Path, ext: str) -> list[tuple[str, Path, Any]]:
    """Copy each precision's best candidate to ``<level_dir>/model_<prec><ext>``."""
    shipped = []
    for prec in SEARCH_PRECISIONS:
        cand = result.best(prec)
        if cand is None:
            continue
        srcfile = Path(cand.path)
        if ext == ".engine":
            srcfile = srcfile.with_suffix(".engine")
        dst = level_dir / f"{ARTIFACT_NAMES[prec]}{ext}"
        if srcfile.resolve() != dst.resolve():
            shutil.copy2(srcfile, dst)
        if ext == ".engine":
            side_src = srcfile.with_name(srcfile.name + ".json")
            shutil.copy2(side_src, dst.with_name(dst.name + ".json"))
        shipped.append((prec, dst, cand))
    return shipped


# ----------------------------------------------------------------------------- main flow
def export_zoo(cfg: ExportConfig, log: Any = print) -> Path:
    """Run the export (module docstring) and return the manifest path.

    :raises ExportError: bad run / options. :raises QuantizeError: quantisation failures.
    """
    import torch

    from pruning_tools.ultralytics_adapter import class_names as model_class_names
    from pruning_tools.ultralytics_adapter import load_checkpoint, model_family
    from pruning_tools.quant.quantize import export_fp32
    from sparse_perception.runtime.zoo import write_manifest

    torch.set_num_threads(max(1, cfg.threads))
    t0 = time.monotonic()
    method = cfg.method or default_method(cfg.run)
    log(f"exporting method {method!r}")
    levels, summary = discover_levels(cfg.run, method)
    if cfg.levels:
        known = {s.level for s in levels}
        missing = [lv for lv in cfg.levels if lv not in known]
        if missing:
            raise ExportError(f"--levels {missing} not in run {cfg.run} (has {sorted(known)})")
        levels = [s for s in levels if s.level in cfg.levels]
    for s in levels:
        if not s.checkpoint.is_file():
            raise ExportError(f"checkpoint of level {s.level!r} not found: {s.checkpoint}")
    conditions = condition_block(summary, {s.level for s in levels}, log)
    tailored = tailored_levels(conditions)
    if tailored:
        log(f"condition-tailored levels (conditions map, kept off the speed ladder): {sorted(tailored)}")
    dataset = cfg.dataset or run_dataset(cfg.run)
    if dataset is None:
        raise ExportError(f"no dataset: {cfg.run}/config.yaml names none and {cfg.run}/data/yolo is absent; "
                          "pass --dataset DIR")
    split_images(dataset, cfg.split)  # clear error early
    real_frames = None
    if cfg.real_eval is not None:
        from pruning_tools.train.evaluate import real_eval_frames

        real_frames = real_eval_frames(cfg.real_eval, _run_baseline(cfg.run), cfg.real_split_file, cfg.real_split)
        log(f"real-frame AP of every ONNX Runtime artifact on {real_frames.description}")
    imgsz = tuple(cfg.imgsz or summary.get("imgsz") or DEFAULT_IMGSZ)
    imgsz = (int(imgsz[0]), int(imgsz[1]))
    if cfg.zoo.exists() and not cfg.overwrite and any(cfg.zoo.iterdir()):
        raise ExportError(f"zoo folder {cfg.zoo} exists and is not empty (use --overwrite)")
    calib = select_calibration_files(dataset, cfg.calib_images, split="train")
    if len(calib) < min(500, cfg.calib_images):
        log(f"note: {len(calib)} calibration images in the train split (asked for {cfg.calib_images})")
    backends = list(cfg.backends)
    trt_note = None
    if "tensorrt" in backends:
        from pruning_tools.quant.tensorrt_build import tensorrt_status

        ok, why = tensorrt_status()
        if ok:
            log(f"TensorRT engines will be built: {why}")
        else:
            trt_note = f"TensorRT engines skipped: {why}"
            log(trt_note + " -- the ONNX Runtime artifacts are still produced.")
            backends.remove("tensorrt")
        if not backends:
            backends = ["onnxruntime"]
    scfg = SearchConfig(delta=cfg.delta, precisions=tuple(cfg.precisions), max_fallback=cfg.max_fallback,
                        max_candidates=cfg.max_candidates)
    runs, warmup = max(TIMING_RUNS, cfg.timing_runs), (2 if cfg.quick else 5)
    work = cfg.zoo.with_name(cfg.zoo.name + ".partial")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    artifacts: list[dict[str, Any]] = []
    log_entries: list[dict[str, Any]] = []
    names: list[str] = []
    family = "unknown"
    from tqdm import tqdm

    bar = tqdm(levels, desc="export", unit="level", disable=not cfg.progress)
    for src in bar:
        bar.set_postfix_str(src.level)
        model, _meta = load_checkpoint(src.checkpoint)
        names = list(model_class_names(model))
        family = model_family(model)
        level_dir = work / src.level
        scratch = work / ".search" / src.level
        scratch.mkdir(parents=True, exist_ok=True)
        fp32 = export_fp32(model, level_dir / "model_fp32.onnx", imgsz, names,
                           {"level": src.level, "sparsity": src.sparsity})
        del model
        for backend in backends:
            log(f"[{src.level}] precision search on {backend} (delta {cfg.delta} mAP50-95 points)")
            if backend == "onnxruntime":
                from pruning_tools.quant.bisection import OrtMeasurer as M
            else:
                from pruning_tools.quant.bisection import TensorRTMeasurer as M  # type: ignore[assignment]
            measurer: OrtMeasurer = M(dataset, cfg.split, imgsz, cfg.eval_images, cfg.threads, warmup, runs)
            bdir = scratch / backend
            builder = None
            if "int8" in cfg.precisions:
                qcfg = QuantConfig(calib_images=cfg.calib_images, target=backend)
                builder = Int8Builder(fp32, bdir, calib, imgsz, qcfg, progress=cfg.progress)
            fp32_src = fp32
            if backend == "tensorrt":  # engines are built next to a copy so ORT files stay clean
                bdir.mkdir(parents=True, exist_ok=True)
                fp32_src = bdir / "model_fp32.onnx"
                shutil.copy2(fp32, fp32_src)
            result = search_precision(fp32_src, bdir, measurer, scfg, builder, src.level, log, cfg.progress)
            shipped = _ship(result, src, level_dir, ".onnx" if backend == "onnxruntime" else ".engine")
            for prec, path, cand in shipped:
                trt = None
                if backend == "tensorrt":
                    from pruning_tools.quant.tensorrt_build import manifest_field
                    from sparse_perception.runtime.backends.tensorrt_backend import read_sidecar

                    trt = manifest_field(read_sidecar(path))
                sel = cand.selected
                art = _artifact(work, src, prec, backend, path, cand, imgsz, names, sel, trt)
                if real_frames is not None and backend == "onnxruntime":
                    art["real"] = _real_of(path, real_frames, cfg.threads)
                artifacts.append(art)
            entry = result.to_dict()
            entry["level"], entry["sparsity"], entry["checkpoint"] = src.level, src.sparsity, str(src.checkpoint)
            for c in entry["path"]:
                c["path"] = os.path.relpath(c["path"], work)
            entry["selected"]["path"] = os.path.relpath(entry["selected"]["path"], work)
            log_entries.append(entry)
    bar.close()
    shutil.rmtree(work / ".search", ignore_errors=True)
    sources = {s.level: s for s in levels}
    ladders = []
    for backend in backends:
        if backend == "onnxruntime":
            from pruning_tools.quant.bisection import OrtMeasurer as M
        else:
            from pruning_tools.quant.bisection import TensorRTMeasurer as M  # type: ignore[assignment]
        timer = M(dataset, cfg.split, imgsz, cfg.eval_images, cfg.threads, warmup, runs)
        ladders.append(build_ladder(work, artifacts, backend, timer, sources, log, tailored))
    artifacts, ladder = apply_ladders(artifacts, ladders)
    ladder["timing"] = {"method": "every selected engine round-robin in one process, the order rotated each "
                                  "round; medians", "runs": runs, "warmup": warmup, "threads": cfg.threads,
                        "bisection": "each level's candidates timed the same way, before its choice"}
    manifest = {
        "schema_version": 1, "created": _now(), "model_family": family, "class_names": names,
        "data": {"source": "prune run", "run": str(cfg.run), "method": method, "dataset": str(dataset),
                 **({"weights_licence": lic} if (lic := _baseline_licence(cfg.run)) else {}),
                 "split": cfg.split, "eval_images": cfg.eval_images, "calibration_split": "train",
                 "calibration_images": len(calib), "delta_points": cfg.delta, "quick": cfg.quick,
                 "latency_timing": {"interleaved": True, "runs": runs, "warmup": warmup, "threads": cfg.threads},
                 **({"tensorrt_skipped": trt_note} if trt_note else {})},
        "artifacts": artifacts,
        "ladder": ladder,
        **({"conditions": conditions} if conditions else {}),
    }
    _write_log(work / "bisection_log.json", {"delta_points": cfg.delta, "searches": log_entries,
                                             "wall_s": round(time.monotonic() - t0, 1)})
    try:
        _plot(work / "bisection.png", log_entries, cfg.delta)
    except Exception as exc:  # noqa: BLE001 - a plot must not lose the zoo
        log(f"plotting failed: {type(exc).__name__}: {exc}")
    write_manifest(work / "manifest.json", manifest)
    if cfg.zoo.exists():
        shutil.rmtree(cfg.zoo)
    os.replace(work, cfg.zoo)
    log(f"wrote {cfg.zoo}/manifest.json: {len(artifacts)} artifacts, {len(levels)} levels "
        f"({time.monotonic() - t0:.0f} s); search log {cfg.zoo}/bisection_log.json")
    for ex in ladder["excluded"]:
        log(f"  excluded from the zoo: {ex['level']} ({ex['backend']}): {ex['reason']}")
    for e in log_entries:
        s = e["selected"]
        fb = f", fallback {s['fallback_layers']}" if s["fallback_layers"] else ""
        log(f"  {e['level']:>6} {e['backend']}: {s['precision']}{fb} ({s['latency_ms']} ms, mAP50-95 {s['map50_95']:.4f})")
    return cfg.zoo / "manifest.json"


# ----------------------------------------------------------------------------- the speed ladder
def build_ladder(zoo: Path, artifacts: list[dict[str, Any]], backend: str, timer: Any,
                 sources: dict[str, LevelSource], log: Any = print, tailored: set[str] | frozenset[str] = frozenset(),
                 ) -> dict[str, Any]:
    """Time every level's selected ``backend`` artifact interleaved (``timer.latencies``) and apply
    :func:`pruning_tools.quant.ladder.monotone_ladder`.

    :param zoo: the folder the artifacts' paths are relative to.
    :param artifacts: the manifest's artifact records (not changed here).
    :param timer: a :class:`pruning_tools.quant.bisection.Measurer` of ``backend``.
    :param tailored: condition-tailored levels: timed with the others, never ladder rungs (never excluded).
    :return: ``{"backend", "decisions": [LadderDecision], "timing": {level: latency dict}}``.
    """
    from pruning_tools.quant.bisection import measure_latencies

    sel = [a for a in artifacts if a["backend"] == backend and a.get("selected")]
    if not sel:
        return {"backend": backend, "decisions": [], "timing": {}}
    log(f"[ladder/{backend}] timing the {len(sel)} selected engines interleaved "
        f"({getattr(timer, 'runs', '?')} rounds): {', '.join(a['level'] for a in sel)}")
    timed = measure_latencies(timer, [zoo / a["path"] for a in sel])
    timing = {a["level"]: {k: v for k, v in t.items() if k in LATENCY_KEYS} for a, t in zip(sel, timed)}
    rungs = [LadderLevel(a["level"], a.get("map50_95"), float(timing[a["level"]]["median"]),
                         float(a.get("param_sparsity", a["sparsity"]))) for a in sel if a["level"] not in tailored]
    for a in sel:
        if a["level"] in tailored:
            log(f"  {a['level']:>6} {backend}: {timing[a['level']]['median']:.2f} ms, mAP50-95 "
                f"{_fmt(a.get('map50_95'))}: kept (condition-tailored level, off the speed ladder)")
    decisions = monotone_ladder(rungs)
    for d in decisions:
        src = sources.get(d.level.level)
        tgt = f" (target x{src.speedup_target:g})" if src is not None and src.speedup_target is not None else ""
        sp = f"x{d.speedup_vs_dense:.2f}" if d.speedup_vs_dense is not None else "-"
        log(f"  {d.level.level:>6} {backend}: {d.level.latency_ms:.2f} ms, {sp} vs dense{tgt}, "
            f"mAP50-95 {_fmt(d.level.accuracy)}: {'kept' if d.kept else 'EXCLUDED'} ({d.reason})")
    return {"backend": backend, "decisions": decisions, "timing": timing}


def _fmt(v: float | None) -> str:
    return "?" if v is None else f"{v:.4f}"


def apply_ladders(artifacts: list[dict[str, Any]], ladders: list[dict[str, Any]]) -> tuple[list[dict[str, Any]],
                                                                                          dict[str, Any]]:
    """The manifest's artifacts and ``ladder`` block after the ladder rule.

    Each kept level's selected artifact gets ``speedup_vs_dense`` and the ladder's interleaved
    ``latency_ms`` (every selected engine from one timing: comparable across levels); the artifacts
    of an excluded (level, backend) move to ``ladder.excluded[].artifacts``.

    :return: ``(artifacts kept, {"rule", "levels": [...], "excluded": [...]})``.
    """
    kept_rows: list[dict[str, Any]] = []
    excluded_rows: list[dict[str, Any]] = []
    out = [dict(a) for a in artifacts]
    for lad in ladders:
        backend = lad["backend"]
        laddered = {d.level.level for d in lad["decisions"]}
        for a in out:  # off-ladder (condition-tailored) levels: the same interleaved timing as the rungs
            if a["backend"] == backend and a.get("selected") and a["level"] in lad["timing"] \
                    and a["level"] not in laddered:
                a["latency_ms"] = dict(lad["timing"][a["level"]])
                if "dense" in lad["timing"]:
                    a["speedup_vs_dense"] = round(float(lad["timing"]["dense"]["median"])
                                                  / float(a["latency_ms"]["median"]), 4)
        for d in lad["decisions"]:
            level = d.level.level
            mine = [a for a in out if a["level"] == level and a["backend"] == backend]
            sel = next(a for a in mine if a.get("selected"))
            row: dict[str, Any] = {
                "level": level, "backend": backend, "precision": sel["precision"], "map50_95": sel.get("map50_95"),
                "latency_ms": lad["timing"][level], "speedup_vs_dense": d.speedup_vs_dense,
                "param_sparsity": sel.get("param_sparsity", sel["sparsity"]),
                **({"speedup_target": sel["speedup_target"]} if "speedup_target" in sel else {}),
                "reason": d.reason}
            if d.speedup_vs_dense is None:
                row.pop("speedup_vs_dense")
            if d.kept:
                sel["latency_ms"] = dict(lad["timing"][level])
                if d.speedup_vs_dense is not None:
                    sel["speedup_vs_dense"] = d.speedup_vs_dense
                kept_rows.append(row)
            else:
                excluded_rows.append({**row, "beaten_by": d.beaten_by, "artifacts": mine})
                out = [a for a in out if not (a["level"] == level and a["backend"] == backend)]
    rule = ("levels ordered dense first, then by the val-split mAP50-95 of their selected engine; a level is kept "
            "only when its selected engine's median latency is lower than that of every more accurate kept level")
    return out, {"rule": rule, "levels": kept_rows, "excluded": excluded_rows}


def _write_log(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(strict_dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def _plot(path: Path, entries: list[dict[str, Any]], delta: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    marks = {"fp32": "o", "fp16": "s", "int8": "^"}
    for e in entries:
        for c in e["path"]:
            lat = (c.get("latency_ms") or {}).get("median")
            if lat is None or c.get("map50_95") is None:
                continue
            ax.scatter(lat, c["map50_95"], marker=marks[c["precision"]], s=60 if c["selected"] else 25,
                       facecolors="none" if not c["accepted"] else None,
                       edgecolors="k", color=f"C{entries.index(e) % 10}")
        ax.plot([], [], color=f"C{entries.index(e) % 10}", label=f"{e['level']} ({e['backend']})")
    ax.set_xlabel("median latency (ms)")
    ax.set_ylabel("mAP50-95")
    ax.set_title(f"precision search (delta {delta} points; o fp32, s fp16, ^ int8; hollow = rejected)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI
def _shape(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        vals = [int(p) for p in parts if p]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--input-shape {text!r}: expected HxW, e.g. 384x1248") from exc
    if len(vals) == 4:
        vals = vals[2:]
    if len(vals) != 2:
        raise argparse.ArgumentTypeError(f"--input-shape {text!r}: expected HxW, e.g. 384x1248")
    return vals[0], vals[1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pruning-tools export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="prune run folder (with summary.json)")
    p.add_argument("--zoo", required=True, type=Path, help="output zoo folder")
    p.add_argument("--levels", help="comma list of levels, e.g. dense,s50,s75,s90 (default: all in the run)")
    p.add_argument("--method", default=None,
                   help="pruning method whose checkpoints to export (default: the best the run has, in the order "
                        f"{', '.join(METHOD_PREFERENCE)})")
    p.add_argument("--delta", type=float, default=1.0, help="admissible mAP50-95 drop in points (default 1.0)")
    p.add_argument("--input-shape", type=_shape, help="network input HxW (default: the run's, else 384x1248)")
    p.add_argument("--calib-images", type=int, help="INT8 calibration images from the train split (default 500; "
                                                    "32 with --quick)")
    p.add_argument("--dataset", type=Path, help="YOLO dataset (default: the run's)")
    p.add_argument("--split", default="val",
                   help="selection split: the bisection accepts precisions by its mAP and the manifest's "
                        "per-condition mAP (the condition policy's training data) come from it (default val; "
                        "the test split is only reported, by prune)")
    p.add_argument("--eval-images", type=int, help="evaluate at most N images (default all; 48 with --quick)")
    p.add_argument("--backends", default="onnxruntime", help="onnxruntime[,tensorrt]")
    p.add_argument("--precisions", default="fp32,fp16,int8", help="precisions searched (default fp32,fp16,int8)")
    p.add_argument("--max-fallback", type=int, help="largest fallback set tried (default 8; 4 with --quick)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime / torch threads (default 2)")
    p.add_argument("--quick", action="store_true", help="fewer calibration/eval images and timing runs")
    p.add_argument("--overwrite", action="store_true", help="replace an existing zoo folder")
    from pruning_tools.train.evaluate import add_real_eval_args

    add_real_eval_args(p, "to every ONNX Runtime artifact")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def config_from_args(args: argparse.Namespace) -> ExportConfig:
    q = bool(args.quick)
    return ExportConfig(
        run=args.run, zoo=args.zoo,
        levels=tuple(x.strip() for x in args.levels.split(",") if x.strip()) if args.levels else None,
        method=args.method, delta=float(args.delta), imgsz=args.input_shape,
        calib_images=int(args.calib_images if args.calib_images is not None else (32 if q else 500)),
        dataset=args.dataset, split=args.split,
        backends=tuple(x.strip() for x in args.backends.split(",") if x.strip()),
        precisions=tuple(x.strip() for x in args.precisions.split(",") if x.strip()), quick=q,
        eval_images=args.eval_images if args.eval_images is not None else (48 if q else None),
        threads=int(args.threads), max_fallback=int(args.max_fallback if args.max_fallback is not None else (4 if q else 8)),
        max_candidates=8 if q else 16, overwrite=bool(args.overwrite), progress=not args.no_progress,
        real_eval=args.real_eval, real_split_file=args.real_split_file, real_split=args.real_split)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        for flag, values in (("--levels", cfg.levels or ()), ("--backends", cfg.backends),
                             ("--precisions", cfg.precisions)):
            if len(set(values)) != len(values):
                raise ValueError(f"{flag}: each value once, got {','.join(values)}")
        if "fp32" not in cfg.precisions:
            raise ValueError("--precisions must include fp32 (the reference)")
        export_zoo(cfg)
    except (ValueError, ExportError, QuantizeError, FileNotFoundError) as exc:
        print(f"pruning-tools export: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
