"""How accuracy falls with staleness on a REAL drive: KITTI tracking sequence 0000 (raw drive 2011_09_26_drive_0005).

Each ground-truth frame ``i`` is paired with the detections of frame ``i - k`` (k = 0..5 frames stale,
the pairing :mod:`pruning_tools.train.streaming` makes when a detector answers k frames late) and scored
with KITTI's rules (:class:`pruning_tools.train.kitti_ap.KittiEvaluator`: Car IoU 0.7, Pedestrian/Cyclist
0.5). Only frames ``i >= 5`` are scored for every k, so each k sees the same ground truth. Two detectors:

* ``dense``: the shipped baseline checkpoint (the bench zoo's dense level; torch, letterboxed 384x1248);
* ``gt``: the ground-truth boxes themselves (Car / Pedestrian / Cyclist, score 1) — a perfect detector,
  so its fall is motion alone.

Staleness of k frames in ms comes from the drive's real camera stamps. The retention ``mAP50-95(k) /
mAP50-95(0)`` of ``dense`` is the curve the drive simulator (:mod:`pruning_tools.train.drive_sim`,
``KITTI_STALENESS``) multiplies each level's accuracy by. Writes the JSON and a PNG.

    python bench/staleness_curve.py --json docs/bench/staleness_curve.json [--root ../shared/data/kitti_tracking]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_block, module_versions, write_result  # noqa: E402

CLASSES = ("Car", "Pedestrian", "Cyclist")


def _score(truths, dets, k: int, first: int):
    from pruning_tools.train.kitti_ap import KittiEvaluator

    ev = KittiEvaluator(CLASSES)
    for i in range(first, len(truths)):
        b, s, n = dets[i - k]
        ev.add(truths[i], b, s, n)
    return ev.compute()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "kitti_tracking")
    p.add_argument("--sequence", default="0000")
    p.add_argument("--max-k", type=int, default=5)
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped baseline)")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "staleness_curve.json")
    p.add_argument("--quick", action="store_true", help="the first 60 frames only (make bench)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if not (a.root / "training" / "image_02" / a.sequence).is_dir():
        write_result(a.json, {"skipped": f"{a.root}: no KITTI tracking sequence {a.sequence} (../shared absent?)"})
        return 0
    import torch
    from tqdm import tqdm

    from pruning_tools.data.kitti_tracking import TrackingSequence
    from pruning_tools.train.evaluate import load_detector, resolve_class_map
    from pruning_tools.train.kitti_ap import truth_from_kitti
    from sparse_perception.runtime.postprocess import decode, letterbox

    torch.set_num_threads(1)
    machine = machine_block()
    seq = TrackingSequence(a.root, a.sequence)
    n = min(len(seq), 60) if a.quick else len(seq)
    truths = [truth_from_kitti(seq.labels(i)) for i in range(n)]
    det = load_detector(a.model)
    cmap = resolve_class_map(det.class_names, None, CLASSES)
    lookup = np.asarray([cmap.get(n, "") for n in det.class_names], dtype=object)
    model_dets, gt_dets = [], []
    for i in tqdm(range(n), desc="detect", unit="img", disable=a.no_progress):
        batch, info = letterbox(seq.image(i), tuple(det.input_hw))
        d = decode(np.asarray(det.infer(batch)), 0.001, 0.6, 300, info)
        names = lookup[d.class_ids] if len(d) else np.zeros(0, dtype=object)
        keep = names != ""
        model_dets.append((d.boxes[keep], d.scores[keep], list(names[keep])))
        t = truths[i]
        m = np.asarray([ty in CLASSES for ty in t.types], bool)
        gt_dets.append((t.boxes[m], np.ones(int(m.sum())), [ty for ty, ok in zip(t.types, m) if ok]))
    stamps = np.asarray(seq.timestamps[:n], np.int64)
    first = a.max_k
    rows = []
    for k in range(a.max_k + 1):
        stale_ms = float(np.mean((stamps[first:] - stamps[first - k:len(stamps) - k]) / 1e6))
        dm, gm = _score(truths, model_dets, k, first), _score(truths, gt_dets, k, first)
        rows.append({"k": k, "staleness_ms": stale_ms,
                     "dense": {"map50_95": dm["map50_95"], "map_kitti": dm["map_kitti"],
                               "ap_kitti": {c: dm["classes"][c]["ap_kitti"] for c in CLASSES}},
                     "gt": {"map50_95": gm["map50_95"], "map_kitti": gm["map_kitti"],
                            "ap_kitti": {c: gm["classes"][c]["ap_kitti"] for c in CLASSES}}})
    for who in ("dense", "gt"):
        for key in ("map50_95", "map_kitti"):
            base = rows[0][who][key]
            for r in rows:
                r[who][f"retention_{key}"] = r[who][key] / base if base > 0 else float("nan")
    png = a.json.with_suffix(".png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x = [r["staleness_ms"] for r in rows]
    for who, key, style in (("dense", "map50_95", "o-"), ("dense", "map_kitti", "o--"),
                            ("gt", "map50_95", "s-"), ("gt", "map_kitti", "s--")):
        ax.plot(x, [r[who][f"retention_{key}"] for r in rows], style, label=f"{who} {key}")
    ax.set_xlabel("staleness (ms; k = 0..%d frames of the real drive)" % a.max_k)
    ax.set_ylabel("accuracy retained (k / k=0)")
    ax.set_title(f"KITTI tracking {seq.sequence} (real drive): accuracy vs staleness")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    out = {"machine": machine, "versions": module_versions("numpy", "torch"),
           "data": f"real KITTI tracking sequence {seq.sequence} ({seq.root}), {n} of {len(seq)} frames, real "
                   f"camera stamps; frames {first}..{n - 1} scored for every k",
           "model": det.name, "quick": a.quick, "scored_frames": n - first, "rows": rows, "png": str(png)}
    summary = "\n".join(f"k={r['k']} {r['staleness_ms']:6.1f} ms  dense mAP50-95 {r['dense']['map50_95']:.3f} "
                        f"(x{r['dense']['retention_map50_95']:.3f})  kittiAP {r['dense']['map_kitti']:.3f}  "
                        f"gt mAP50-95 x{r['gt']['retention_map50_95']:.3f}" for r in rows)
    write_result(a.json, out, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
