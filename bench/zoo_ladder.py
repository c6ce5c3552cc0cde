"""The engine zoo as a speed ladder: every selected engine timed round-robin in one process, speed-ups
over the dense engine, and real-frame KITTI Car AP per level.

For each level of the zoo (the levels the node loads, and the ones ``pruning-tools export`` left out of
the ladder, marked ``excluded``) the bench takes the engine the precision search selected, opens one ONNX
Runtime session per engine in this one process and times them interleaved: ``--runs`` rounds (>= 20),
each timing one inference of every engine in an order rotated by one each round, after ``--warmup``
untimed rounds (:func:`pruning_tools.train.measure.interleaved_latency`). A level's speed-up is the dense
engine's median over its own, both at the precision the zoo selects; where the dense level's selected
engine is not INT8 and it has an INT8 artifact, that one is timed too and ``speedup_vs_dense_int8`` given.

With ``--real-eval DIR`` (a real KITTI object root) each timed engine is evaluated through ONNX Runtime
on the real frames that neither the baseline nor the prune run trained or selected on (the baseline's
recorded real train/val frames are left out, as in ``pruning-tools export --real-eval``): KITTI AP|R40
(Car at IoU 0.7) and that AP as a fraction of the dense engine's.

Usage::

    python bench/zoo_ladder.py --zoo ZOO --json OUT [--real-eval DIR] [--runs N] [--warmup N] [--threads N]

``ZOO`` is a zoo folder or its ``manifest.json``. Targets (issue 21, on real frames): x1.5 / x2 / x3
levels >= 1.5x / 2x / 3x faster than the dense INT8 engine keeping >= 97 / 93 / 85 % of its real Car AP;
they are judged only for levels whose manifest records a ``speedup_target``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_report.py, also for a test loading this file
from _report import machine_block, module_versions, write_result  # noqa: E402

#: issue 21's targets: speed-up -> share of the dense engine's real Car AP a level must keep
AP_TARGETS = {1.5: 0.97, 2.0: 0.93, 3.0: 0.85}
MIN_RUNS = 20


def zoo_engines(manifest: Any, backend: str = "onnxruntime") -> list[dict[str, Any]]:
    """The selected engine of every level, kept (the ladder) and excluded, plus the dense INT8 engine
    where the dense level selected another precision.

    :param manifest: a :class:`sparse_perception.runtime.zoo.Manifest`.
    :return: ``[{"key", "level", "precision", "path", "sha256", "kept", "role", "record"}]``, ladder order
        (kept levels as the manifest's ladder lists them, then the excluded ones).
    """
    from sparse_perception.runtime.zoo import ManifestError, contained_path

    out: list[dict[str, Any]] = []
    order = [r["level"] for r in manifest.ladder.get("levels", [])] or manifest.levels(backend)
    order += [lv for lv in manifest.levels(backend) if lv not in order]
    for lv in order:
        a = manifest.select(lv, backend)
        out.append({"key": lv, "level": lv, "precision": a.precision, "path": a.path, "sha256": a.sha256,
                    "kept": True, "role": "level", "record": a.raw})
    for i, row in enumerate(manifest.excluded(backend)):
        sel = [a for a in row.get("artifacts", []) if a.get("selected")]
        if not sel:
            continue
        a = sel[0]
        path = contained_path(manifest.root, a["path"], f"{manifest.path}: ladder.excluded[{i}].artifacts")
        out.append({"key": row["level"], "level": row["level"], "precision": a["precision"], "path": path,
                    "sha256": a["sha256"], "kept": False, "role": "level", "record": {**a, "ladder": row}})
    dense = next((e for e in out if e["level"] == "dense"), None)
    if dense is not None and dense["precision"] != "int8":
        try:
            d8 = manifest.select("dense", backend, "int8")
        except ManifestError:
            d8 = None
        if d8 is not None:
            out.append({"key": "dense/int8", "level": "dense", "precision": "int8", "path": d8.path,
                        "sha256": d8.sha256, "kept": True, "role": "reference", "record": d8.raw})
    return out


def _verify(engines: list[dict[str, Any]]) -> None:
    from sparse_perception.runtime.zoo import ManifestError, sha256_file

    for e in engines:
        if not Path(e["path"]).is_file():
            raise ManifestError(f"engine of level {e['level']!r} is missing: {e['path']}")
        if sha256_file(e["path"]) != e["sha256"]:
            raise ManifestError(f"engine {e['path']} (level {e['level']!r}) failed its sha256 check")


def _real_frames(manifest: Any, root: Path, split_file: Path | None, split: str) -> Any:
    """The real frames to report on: the split file's, else every frame but the baseline's real train/val ones."""
    from pruning_tools.train.evaluate import real_eval_frames

    baseline = None
    run = (manifest.raw.get("data") or {}).get("run")
    res = Path(run) / "results.json" if run else None
    if res is not None and res.is_file():
        baseline = json.loads(res.read_text()).get("baseline")
    if baseline is None:
        from pruning_tools.assets import DEFAULT_BASELINE

        baseline = DEFAULT_BASELINE
    return real_eval_frames(root, baseline, split_file, split)


def car_ap(real: dict[str, Any] | None) -> float | None:
    """KITTI AP|R40 of ``Car`` in a real-frame record (``None`` when absent)."""
    return (((real or {}).get("classes") or {}).get("Car") or {}).get("ap_kitti")


def judge(speedup: float | None, target: float | None, ap_fraction: float | None) -> dict[str, Any] | None:
    """Issue 21's target of a latency level: the measured speed-up and the real Car AP it keeps."""
    if target is None:
        return None
    need = AP_TARGETS.get(round(float(target), 2))
    return {"speedup_target": target, "speedup_met": None if speedup is None else bool(speedup >= target),
            "real_car_ap_fraction_target": need,
            "real_car_ap_met": None if need is None or ap_fraction is None else bool(ap_fraction >= need)}


def run_bench(zoo: Path, runs: int = 40, warmup: int = 5, threads: int = 2, real_eval: Path | None = None,
              real_split_file: Path | None = None, real_split: str = "test", log: Any = print) -> dict[str, Any]:
    """Time and (optionally) evaluate every selected engine of a zoo; the bench's JSON result (module docstring).

    :raises ValueError: ``runs`` < 20. :raises ManifestError: an unusable or tampered zoo.
    """
    from pruning_tools.train.measure import interleaved_latency
    from sparse_perception.runtime.zoo import load_manifest

    if runs < MIN_RUNS:
        raise ValueError(f"--runs must be >= {MIN_RUNS} (medians of at least {MIN_RUNS} interleaved rounds)")
    machine = machine_block()  # the load before the run
    path = zoo / "manifest.json" if zoo.is_dir() else zoo
    manifest = load_manifest(path)
    engines = zoo_engines(manifest)
    _verify(engines)
    shape = tuple(engines[0]["record"]["input_shape"][2:4])
    log(f"zoo_ladder: {len(engines)} engines interleaved, {runs} rounds ({warmup} warm-up), {threads} threads, "
        f"input {shape[0]}x{shape[1]}: {', '.join(e['key'] + '/' + e['precision'] for e in engines)}")
    timing = interleaved_latency({e["key"]: e["path"] for e in engines}, shape, threads, warmup, runs)
    frames = None
    if real_eval is not None:
        frames = _real_frames(manifest, real_eval, real_split_file, real_split)
        log(f"zoo_ladder: real-frame AP on {frames.description}")
    dense = next((e for e in engines if e["key"] == "dense"), None)
    ref = timing["dense"]["median_ms"] if dense is not None else None
    ref8_key = "dense/int8" if "dense/int8" in timing else ("dense" if dense and dense["precision"] == "int8" else None)
    ref8_ms = timing[ref8_key]["median_ms"] if ref8_key else None
    rows: list[dict[str, Any]] = []
    for e in engines:
        rec, t = e["record"], timing[e["key"]]
        row: dict[str, Any] = {
            "level": e["level"], "precision": e["precision"], "role": e["role"],
            "in_zoo": e["kept"], "path": str(Path(e["path"]).relative_to(manifest.root)),
            "param_sparsity": rec.get("param_sparsity", rec.get("sparsity")),
            "speedup_target": rec.get("speedup_target"),
            "latency_ms": {k: t[k] for k in ("median_ms", "p90_ms", "min_ms", "runs")},
            "speedup_vs_dense": round(ref / t["median_ms"], 4) if ref else None,
            "speedup_vs_dense_int8": round(ref8_ms / t["median_ms"], 4) if ref8_ms else None,
            "export_speedup_vs_dense": (rec.get("speedup_vs_dense") if e["kept"]
                                        else (rec.get("ladder") or {}).get("speedup_vs_dense")),
            "val_map50_95": rec.get("map50_95"),
        }
        if not e["kept"]:
            row["excluded_reason"] = (rec.get("ladder") or {}).get("reason")
        if frames is not None:
            from pruning_tools.train.evaluate import load_detector, real_summary

            det = load_detector(Path(e["path"]), threads=threads)
            try:
                row["real"] = real_summary(frames.evaluate(det))
            finally:
                det.close()
            row["real_car_ap"] = car_ap(row["real"])
        rows.append(row)
    dense_row = next((r for r in rows if r["level"] == "dense" and r["role"] == "level"), None)
    dense8_row = next((r for r in rows if r["level"] == "dense" and r["precision"] == "int8"), None)
    for r in rows:
        base = dense8_row or dense_row
        if frames is not None and base is not None and base.get("real_car_ap"):
            r["real_car_ap_vs_dense"] = round(r["real_car_ap"] / base["real_car_ap"], 4) \
                if r.get("real_car_ap") is not None else None
        verdict = judge(r["speedup_vs_dense_int8"] or r["speedup_vs_dense"], r["speedup_target"],
                        r.get("real_car_ap_vs_dense"))
        if verdict is not None:
            r["target"] = verdict
    kept = [r for r in rows if r["in_zoo"] and r["role"] == "level"]
    lat = [r["latency_ms"]["median_ms"] for r in kept]
    return {
        "bench": "zoo_ladder", "zoo": str(manifest.path), "manifest_created": manifest.raw.get("created"),
        "zoo_data": {k: v for k, v in (manifest.raw.get("data") or {}).items()
                     if k in ("run", "method", "dataset", "split", "quick", "delta_points", "weights_licence")},
        "ladder_rule": manifest.ladder.get("rule"),
        "config": {"runs": runs, "warmup": warmup, "threads": threads, "input_shape": list(shape),
                   "timing": "every engine round-robin in one process, order rotated each round; medians"},
        "reference": {"speedup_vs_dense": f"dense ({dense_row['precision']})" if dense_row else None,
                      "speedup_vs_dense_int8": "dense (int8)" if ref8_ms else None},
        "levels": rows,
        "ladder_monotone_here": all(a > b for a, b in zip(lat, lat[1:])),
        "excluded": [r["level"] for r in rows if not r["in_zoo"]],
        "real_eval": ({"data": frames.description, "n_images": rows[0]["real"].get("n_images"),
                       "metric": "KITTI AP|R40, Car at IoU 0.7, moderate cut, DontCare ignored"}
                      if frames is not None else None),
        "versions": module_versions("onnxruntime", "numpy"),
        "machine": machine,
    }


def summary_lines(res: dict[str, Any]) -> list[str]:
    """The printed table: one line per engine."""
    real = res.get("real_eval") is not None
    out = [f"zoo {res['zoo']} ({res['config']['runs']} interleaved rounds, medians)",
           f"{'level':>8} {'prec':>5} {'zoo':>4} {'ms':>8} {'x dense':>8} {'x d-int8':>8}"
           + (f" {'Car AP':>7} {'of dense':>8}" if real else "")]
    for r in res["levels"]:
        def f(v: Any, spec: str = ".2f") -> str:
            return "-" if v is None else format(v, spec)

        out.append(f"{r['level']:>8} {r['precision']:>5} {'yes' if r['in_zoo'] else 'NO':>4} "
                   f"{r['latency_ms']['median_ms']:8.2f} {f(r['speedup_vs_dense']):>8} "
                   f"{f(r['speedup_vs_dense_int8']):>8}"
                   + (f" {f(r.get('real_car_ap'), '.3f'):>7} {f(r.get('real_car_ap_vs_dense'), '.1%'):>8}"
                      if real else "")
                   + (f"  ({r['excluded_reason']})" if r.get("excluded_reason") else ""))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", required=True, type=Path, help="zoo folder or its manifest.json")
    ap.add_argument("--json", required=True, type=Path, help="output JSON")
    ap.add_argument("--runs", type=int, default=40, help=f"interleaved rounds (>= {MIN_RUNS}; default 40)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    from pruning_tools.train.evaluate import add_real_eval_args

    add_real_eval_args(ap, "per level (each engine through ONNX Runtime)")
    args = ap.parse_args(argv)
    from pruning_tools.cli import set_offline_env
    from sparse_perception.runtime.zoo import ManifestError

    set_offline_env()
    try:
        res = run_bench(args.zoo, args.runs, args.warmup, args.threads, args.real_eval, args.real_split_file,
                        args.real_split)
    except (ValueError, ManifestError, FileNotFoundError) as exc:
        print(f"zoo_ladder: error: {exc}", file=sys.stderr)
        return 2
    write_result(args.json, res, "\n".join(summary_lines(res)) + f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
