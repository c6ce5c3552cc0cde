"""The resolution baseline of a prune run: what a user would do instead of pruning (issue 21, item 5).

The dense model, unpruned, letterboxed to a ladder of smaller inputs (multiples of 32 near the
deployment aspect ratio), evaluated on the same test frames as every pruned model (boxes mapped back
to the original pixels, so the mAP is comparable) and, with ``real_eval``, on the same real frames;
its ONNX models are timed in the same interleaved round-robin as every model of the table
(:meth:`pruning_tools.pipeline.prune.Pipeline.interleave_latency`). A pruned level is then compared
with the baseline at its *measured* latency: :func:`baseline_at`.

Run-directory layout::

    <run>/resolution/<H>x<W>/result.json   its measurements (resume: kept)
    <run>/resolution/<H>x<W>/model.onnx    the dense model exported at H x W

No torch at import time: :mod:`pruning_tools.pipeline.report` uses the pure functions.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

#: ``method`` of the resolution records (never a pruning method's name)
METHOD = "resolution"
#: how the baseline value at a level's latency is taken (results.json ``resolution.how``)
HOW = ("linear interpolation, at the level's measured latency, of the resolution curve's Pareto front (the "
       "dense model at data.imgsz and every smaller size that is more accurate than every faster one); a level "
       "slower than the dense model meets the dense model itself; a level faster than the smallest size beats "
       "the baseline only where it is also more accurate than that size. The most accurate size not slower "
       "than the level is reported beside it.")


def default_ladder(imgsz: Sequence[int], min_height: int | None = None) -> list[tuple[int, int]]:
    """Input sizes below ``imgsz``: heights ``H - 32, H - 64, ...`` down to ``H / 2`` (at least 32), each
    width the multiple of 32 nearest ``height * W / H`` (ties to even).

    For 384x1248: 352x1152, 320x1024, 288x928, 256x832, 224x736, 192x640.

    :param min_height: the smallest height (default ``H / 2`` rounded up to 32).
    """
    h, w = int(imgsz[0]), int(imgsz[1])
    lo = max(32, min_height if min_height is not None else -(-h // 64) * 32)
    out = []
    for hh in range(h - 32, lo - 1, -32):
        ww = max(32, int(round(hh * w / h / 32)) * 32)
        if (hh, ww) != (h, w) and ww <= w:
            out.append((hh, ww))
    return out


def ladder(cfg: Any) -> list[tuple[int, int]]:
    """The sizes a run measures: ``resolution.sizes``, else :func:`default_ladder`; none when disabled
    (or on a config from before the ``resolution`` section)."""
    rc = getattr(cfg, "resolution", None)
    if rc is None or not rc.enabled:
        return []
    sizes = rc.sizes if rc.sizes is not None else default_ladder(cfg.data.imgsz)
    return [(int(h), int(w)) for h, w in sizes]


def size_name(hw: Sequence[int]) -> str:
    """``"<H>x<W>"``."""
    return f"{int(hw[0])}x{int(hw[1])}"


def size_dir(run: Path, hw: Sequence[int]) -> Path:
    """``<run>/resolution/<H>x<W>``."""
    return Path(run) / "resolution" / size_name(hw)


def latency_key(rec: Mapping[str, Any]) -> str:
    """The key of a resolution record in the interleaved round-robin."""
    return f"{METHOD}/{rec['name']}"


# ------------------------------------------------------------------------------------------------ measuring
def measure_ladder(pipe: Any, sizes: Sequence[Sequence[int]]) -> list[dict[str, Any]]:
    """Measure the dense model of ``pipe`` (a :class:`pruning_tools.pipeline.prune.Pipeline`) at every
    size: test-split mAP (the run's ``data.test_images``), GFLOPs, ONNX file, real-frame AP where the run
    has ``real_eval``. Sizes measured before are read back (real-frame AP added when it is missing); an
    ONNX file that is missing is exported again. Latency is not measured here (the round-robin does).

    :return: one record per size, in ``sizes``' order.
    """
    from pruning_tools.data.files import write_json

    out = []
    for hw in sizes:
        d = size_dir(pipe.run, hw)
        path = d / "result.json"
        rec = json.loads(path.read_text()) if path.is_file() else None
        if rec is not None and (pipe.real_eval is None or "real" in rec) and (pipe.run / rec["onnx"]).is_file():
            pipe.log(f"resolution {size_name(hw)}: measured earlier (kept)")
            out.append(rec)
            continue
        dense = pipe.prepare().dense
        if rec is None:
            rec = _measure_size(pipe, dense, (int(hw[0]), int(hw[1])))
        if not (pipe.run / rec["onnx"]).is_file():
            _export(dense, pipe.run / rec["onnx"], hw)
        if pipe.real_eval is not None and "real" not in rec:
            rec["real"] = pipe.measure_real(dense, imgsz=(int(hw[0]), int(hw[1])))
        write_json(path, rec)
        out.append(rec)
    return out


def _export(model: Any, path: Path, hw: Sequence[int]) -> None:
    from pruning_tools.ultralytics_adapter import class_names, export_onnx

    export_onnx(model, path, imgsz=(int(hw[0]), int(hw[1])), class_names=class_names(model))


def _measure_size(pipe: Any, dense: Any, hw: tuple[int, int]) -> dict[str, Any]:
    from pruning_tools.train.evaluate import evaluate_model
    from pruning_tools.train.measure import count_flops

    c = pipe.cfg
    t0 = time.monotonic()
    from pruning_tools.data.yolo import report_split

    split = report_split(pipe.prepare().data)
    m = evaluate_model(dense, pipe.prepare().data, split, hw, max_images=c.data.test_images, progress=pipe.progress)
    gflops, params = count_flops(dense, hw)
    onnx = size_dir(pipe.run, hw) / "model.onnx"
    _export(dense, onnx, hw)
    rec = {"method": METHOD, "name": size_name(hw), "imgsz": list(hw), "map50_95": float(m["map50_95"]),
           "map50": float(m["map50"]), "evaluator": m.get("evaluator"), "gflops": round(gflops, 4), "params": params,
           "size_mb": round(onnx.stat().st_size / 1e6, 3), "onnx": str(onnx.relative_to(pipe.run)),
           "split": split, "n_images": m.get("n_images")}
    rec["wall_s"] = round(time.monotonic() - t0, 1)
    pipe.log(f"resolution {size_name(hw)}: mAP50-95 {rec['map50_95']:.4f} mAP50 {rec['map50']:.4f} "
             f"GFLOPs {rec['gflops']:.2f}")
    return rec


# ------------------------------------------------------------------------------------------------ comparing
def pareto_front(points: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The points ``{"latency_ms", "value", ...}`` not beaten by a faster one: sorted by latency, each
    more accurate than every faster point (a slower size that is no more accurate is never a user's choice)."""
    front: list[Mapping[str, Any]] = []
    for p in sorted(points, key=lambda p: (float(p["latency_ms"]), -float(p["value"]))):
        if not front or float(p["value"]) > float(front[-1]["value"]):
            front.append(p)
    return front


def baseline_at(latency_ms: float, curve: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The resolution baseline's value at ``latency_ms``.

    :param curve: points ``{"name", "latency_ms", "value"}`` (the dense model at full size and the ladder).
    :return: ``{"value", "where", "not_slower"}``: ``value`` interpolated linearly on :func:`pareto_front`
        between the front's points around ``latency_ms`` — the front's most accurate point where the level
        is slower than every point (``where = "slower_than_every_size"``), ``None`` where it is faster than
        every point (``"faster_than_every_size"``); else ``where = "inside"``. ``not_slower``: the most
        accurate point with latency <= ``latency_ms`` (``None`` when there is none).
    :raises ValueError: on an empty curve.
    """
    if not curve:
        raise ValueError("baseline_at needs at least one point of the resolution curve")
    front = pareto_front(curve)
    lat = float(latency_ms)
    slower_ok = [p for p in curve if float(p["latency_ms"]) <= lat]
    not_slower = max(slower_ok, key=lambda p: float(p["value"])) if slower_ok else None
    ns = None if not_slower is None else {"name": not_slower.get("name"), "latency_ms": float(not_slower["latency_ms"]),
                                          "value": float(not_slower["value"])}
    if lat < float(front[0]["latency_ms"]):
        return {"value": None, "where": "faster_than_every_size", "not_slower": ns}
    if lat >= float(front[-1]["latency_ms"]):
        return {"value": float(front[-1]["value"]), "where": "slower_than_every_size" if lat > float(
            max(float(p["latency_ms"]) for p in curve)) else "inside", "not_slower": ns}
    for a, b in zip(front, front[1:]):
        la, lb = float(a["latency_ms"]), float(b["latency_ms"])
        if la <= lat <= lb:
            t = 0.0 if lb == la else (lat - la) / (lb - la)
            return {"value": float(a["value"]) + t * (float(b["value"]) - float(a["value"])), "where": "inside",
                    "not_slower": ns}
    raise AssertionError("unreachable: latency inside the front's range")  # pragma: no cover


def compare(latency_ms: float, value: float, curve: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A level (its measured latency and its value, e.g. mAP50-95) against the resolution baseline.

    ``beats``: ``value`` above the baseline's value at ``latency_ms`` (:func:`baseline_at`; equal is not
    beating); where the level is faster than every size, ``True`` only if it is also more accurate than the
    fastest size (it dominates it), else ``None`` (no size of the ladder is that fast: not decided).
    ``margin_points``: ``(value - baseline) * 100``.
    """
    b = baseline_at(latency_ms, curve)
    ref = b["value"]
    out: dict[str, Any] = {"value": float(value), "latency_ms": float(latency_ms), "baseline": ref,
                           "where": b["where"], "not_slower": b["not_slower"]}
    if ref is None:
        fastest = pareto_front(curve)[0]
        out["beats"] = True if float(value) > float(fastest["value"]) else None
        out["margin_points"] = None
        out["fastest"] = {"name": fastest.get("name"), "value": float(fastest["value"])}
    else:
        out["beats"] = bool(float(value) > ref)
        out["margin_points"] = round((float(value) - ref) * 100, 2)
    return out


def car_ap(rec: Mapping[str, Any]) -> float | None:
    return (((rec.get("real") or {}).get("classes") or {}).get("Car") or {}).get("ap_kitti")


def curve(dense: Mapping[str, Any], sizes: Sequence[Mapping[str, Any]], key: str = "map50_95"
          ) -> list[dict[str, Any]]:
    """The resolution curve of ``key`` (``"map50_95"`` or ``"real_car"``: real-frame Car AP): the dense
    model at full size and every size with that value and a latency; empty when the dense model lacks it."""
    def val(r: Mapping[str, Any]) -> float | None:
        return car_ap(r) if key == "real_car" else r.get(key)

    pts = []
    for name, r in (("dense", dense), *((s["name"], s) for s in sizes)):
        v = val(r)
        if v is not None and r.get("latency_ms") is not None:
            pts.append({"name": name, "latency_ms": float(r["latency_ms"]), "value": float(v)})
    return pts if pts and pts[0]["name"] == "dense" else []


def level_label(row: Mapping[str, Any], records: Sequence[Mapping[str, Any]] = ()) -> str:
    """How tables name a level: its ``level_name`` (latency levels, e.g. ``x2``) where a row or one of
    its records has one, else the target in percent."""
    name = row.get("level_name") or next((r.get("level_name") for r in records if r.get("method") == row["method"]
                                          and abs(float(r["level"]) - float(row["level"])) < 1e-9
                                          and r.get("level_name")), None)
    return str(name) if name else f"{int(round(float(row['level']) * 100))} %"


def comparison(dense: Mapping[str, Any], agg: Sequence[Mapping[str, Any]], sizes: Sequence[Mapping[str, Any]],
               records: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """Every aggregate row (method, level; means over trials) against the resolution baseline at its
    measured latency: on test-split mAP50-95 (``map50_95``) and, where every model has real-frame AP,
    on real Car AP (``real_car``, else ``None``)."""
    cm, cr = curve(dense, sizes, "map50_95"), curve(dense, sizes, "real_car")
    out = []
    for row in agg:
        car = car_ap(row)
        out.append({"method": row["method"], "level": row["level"], "level_name": level_label(row, records),
                    "latency_ms": float(row["latency_ms"]),
                    "speedup": round(float(dense["latency_ms"]) / float(row["latency_ms"]), 3),
                    "map50_95": compare(row["latency_ms"], row["map50_95"], cm) if cm else None,
                    "real_car": compare(row["latency_ms"], car, cr) if cr and car is not None else None})
    return out


def summary(comp: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts for results.json ``targets``: levels compared, beating on mAP50-95 / real Car AP."""
    out: dict[str, Any] = {"levels": len(comp)}
    for key in ("map50_95", "real_car"):
        cs = [c[key] for c in comp if c.get(key)]
        if cs:
            out[f"beat_on_{key}"] = sum(1 for c in cs if c["beats"] is True)
            out[f"not_beaten_on_{key}"] = [f"{c['method']} {c['level_name']}" for c, x in
                                          ((c, c[key]) for c in comp if c.get(key)) if x["beats"] is not True]
            out[f"every_level_beats_resolution_on_{key}"] = all(c["beats"] is True for c in cs)
    return out


# ------------------------------------------------------------------------------------------------ reporting
def _verdict(c: Mapping[str, Any] | None) -> tuple[str, str]:
    """(baseline cell, beats cell) of one comparison, in points."""
    if c is None:
        return "–", "–"
    ns = c.get("not_slower")
    ns_s = f" [{ns['name']}: {ns['value'] * 100:.1f}]" if ns else ""
    if c["baseline"] is None:
        base = f"faster than every size{ns_s}"
        f = c["fastest"]
        verdict = (f"yes (faster and more accurate than {f['name']}: {f['value'] * 100:.1f})" if c["beats"]
                   else f"not decided (faster than every size; {f['name']}: {f['value'] * 100:.1f})")
        return base, verdict
    base = f"{c['baseline'] * 100:.1f}{ns_s}"
    m = c["margin_points"]
    return base, (f"**yes**, by {m:+.1f} points" if c["beats"] else f"**no**, by {m:+.1f} points")


def table_lines(dense: Mapping[str, Any], sizes: Sequence[Mapping[str, Any]], comp: Sequence[Mapping[str, Any]],
                imgsz: Sequence[int], test_what: str, labels: Mapping[str, str]) -> list[str]:
    """Markdown of ``table.md``'s resolution section: the ladder, then every level against it.

    :param imgsz: the run's input size (the dense model's row).
    :param test_what: which frames the mAP comes from, e.g. ``"test split of generated scenes"``.
    :param labels: method -> table label.
    """
    real = bool(curve(dense, sizes, "real_car"))
    d_lat = float(dense["latency_ms"])
    lines = ["## What a user would do instead: the dense model at smaller inputs", "",
             f"The dense model, unpruned, letterboxed to smaller inputs and evaluated on the same frames ({test_what}; "
             "boxes mapped back to the original pixels), its ONNX models timed in the same round-robin as every "
             "model above. Speed-up = dense latency / latency (medians of the same round-robin).", "",
             "| Input | Speed-up vs dense | mAP50-95 | mAP50 |" + (" Car AP real (IoU .7) |" if real else "")
             + " GFLOPs |",
             "|---|---|---|---|" + ("---|" if real else "") + "---|"]
    for name, r in (("dense", dense), *((s["name"], s) for s in sizes)):
        size = f"{size_name(imgsz)} (dense, as deployed)" if name == "dense" else name
        car = car_ap(r)
        lines.append(f"| {size} | {d_lat / float(r['latency_ms']):.2f}× | {r['map50_95'] * 100:.1f} | "
                     f"{r['map50'] * 100:.1f} |" + (f" {car * 100:.1f} |" if real and car is not None else
                                                    " – |" if real else "") + f" {r['gflops']:.2f} |")
    lines += ["", "Every level at its measured latency against the resolution baseline: " + HOW
              + " Baseline cells: the interpolated value [the most accurate size not slower: its value].", "",
              "| Method | Level | Speed-up vs dense | mAP50-95 | Res. baseline mAP50-95 | Beats it? |"
              + (" Car AP real | Res. baseline Car AP | Beats it? |" if real else ""),
              "|---|---|---|---|---|---|" + ("---|---|---|" if real else "")]
    for c in comp:
        m = c["map50_95"]
        bm, vm = _verdict(m)
        row = (f"| {labels.get(c['method'], c['method'])} | {c['level_name']} | {c['speedup']:.2f}× | "
               f"{m['value'] * 100:.1f} | {bm} | {vm} |" if m else
               f"| {labels.get(c['method'], c['method'])} | {c['level_name']} | {c['speedup']:.2f}× | – | – | – |")
        if real:
            rc = c["real_car"]
            br, vr = _verdict(rc)
            row += f" {rc['value'] * 100:.1f} | {br} | {vr} |" if rc else " – | – | – |"
        lines.append(row)
    s = summary(comp)
    lines.append("")
    for key, what in (("map50_95", f"mAP50-95 ({test_what})"), ("real_car", "real-frame Car AP")):
        if f"beat_on_{key}" in s:
            nb = s[f"not_beaten_on_{key}"]
            lines.append(f"* {what}: {s[f'beat_on_{key}']} of {s['levels']} levels beat the resolution baseline at "
                         f"equal measured latency" + (f"; not beaten: {', '.join(nb)}." if nb else "."))
    return lines
