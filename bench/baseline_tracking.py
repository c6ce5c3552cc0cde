#!/usr/bin/env python3
"""Baseline snapshots on the real frames: KITTI AP per class on the VAL frames (they choose) and, only
reported, on the TEST frames, of the object split and the tracking sequence's time split.

* object frames: ``pruning_tools/assets/kitti_real_split.json`` (val 10 frames, test 25);
* tracking sequence 0000: ``pruning_tools/assets/kitti_tracking_split.json`` (val frames 91-112, test 118-153).

The choice criterion (``criterion`` in the JSON) is the mean KITTI AP over the val (set, class) pairs
that hold ground truth: object val Car / Pedestrian / Cyclist and tracking val Car / Cyclist (the
tracking val frames hold no pedestrian). Test figures never enter it.

    .venv/bin/python bench/baseline_tracking.py --models pruning_tools/assets/baseline_yolov5n.pt \\
        runs/ft.step100.pt runs/ft.step200.pt --json docs/bench/baseline_tracking.json \\
        --png docs/bench/baseline_tracking.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_report.py
from _report import machine_block, module_versions, write_result  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "pruning_tools" / "assets"
CLASSES = ("Car", "Pedestrian", "Cyclist")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", type=Path, required=True, help="checkpoints (.pt), in training order")
    p.add_argument("--labels", nargs="*", default=None, help="a label per model (default: file names)")
    p.add_argument("--kitti-object", type=Path, default=REPO.parent / "shared" / "data" / "kitti_object")
    p.add_argument("--kitti-tracking", type=Path, default=REPO.parent / "shared" / "data" / "kitti_tracking")
    p.add_argument("--object-split", type=Path, default=ASSETS / "kitti_real_split.json")
    p.add_argument("--tracking-split", type=Path, default=ASSETS / "kitti_tracking_split.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--png", type=Path, default=None)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    labels = args.labels or [m.name for m in args.models]
    if len(labels) != len(args.models):
        print("baseline_tracking: --labels needs one label per model", file=sys.stderr)
        return 2
    for root in (args.kitti_object, args.kitti_tracking):
        if not root.is_dir():
            print(f"baseline_tracking: {root} not found (real KITTI frames are needed)", file=sys.stderr)
            return 2
    import torch
    from tqdm import tqdm

    from pruning_tools.train.baseline import sha256_file, tracking_split_range
    from pruning_tools.train.evaluate import RealFrames, load_detector, real_eval_frames, real_summary

    torch.set_num_threads(max(1, args.threads))
    machine = machine_block(threads=args.threads)  # the load before the run
    sets = {}
    for split in ("val", "test"):
        sets[f"object_{split}"] = real_eval_frames(args.kitti_object, split_file=args.object_split, split=split)
        seq, span = tracking_split_range(args.tracking_split, split)
        sets[f"tracking_{split}"] = RealFrames.from_kitti_tracking(args.kitti_tracking, seq, span)
    rows = []
    for label, model in tqdm(list(zip(labels, args.models)), desc="models", disable=args.no_progress):
        det = load_detector(model)
        row = {"label": label, "model": str(model), "sha256": sha256_file(model)}
        for name, frames in sets.items():
            row[name] = real_summary(frames.evaluate(det))
        vals = [row["object_val"]["classes"][c]["ap_kitti"] for c in CLASSES] + \
               [row["tracking_val"]["classes"][c]["ap_kitti"] for c in ("Car", "Cyclist")]
        row["criterion"] = sum(vals) / len(vals)
        rows.append(row)
        print(label, f"val criterion {row['criterion']:.3f}", " ".join(
            f"{n}:" + "/".join(f"{row[n]['classes'][c]['ap_kitti']:.3f}" for c in CLASSES) for n in sets), flush=True)
    best = max(range(len(rows)), key=lambda i: rows[i]["criterion"])
    out = {"about": __doc__.split("\n\n")[0], "data": {n: s.description for n, s in sets.items()},
           "metric": "KITTI AP|R40, moderate cut, Car IoU 0.7, Pedestrian/Cyclist IoU 0.5 (nan: no ground truth)",
           "chosen_on_val": rows[best]["label"], "rows": rows, "machine": machine,
           "versions": module_versions("torch", "ultralytics")}
    if args.png is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 4, figsize=(16, 4), sharey=True)
        x = range(len(rows))
        for ax, name in zip(axes, sets):
            for c in CLASSES:
                ys = [r[name]["classes"][c]["ap_kitti"] for r in rows]
                n_gt = rows[0][name]["classes"][c]["n_gt"]
                ax.plot(x, ys, marker="o", label=f"{c} (n_gt {n_gt})")
            ax.set_title(name.replace("_", " ") + (" (chooses)" if name.endswith("val") else " (reported only)"))
            ax.set_xticks(list(x), labels, rotation=30, ha="right")
            ax.axvline(best, color="grey", ls=":", lw=1)
            ax.legend(fontsize=8)
        axes[0].set_ylabel("KITTI AP (moderate)")
        fig.suptitle(f"baseline snapshots on real KITTI frames; dotted: chosen on val ({rows[best]['label']})")
        fig.tight_layout()
        fig.savefig(args.png, dpi=110)
    write_result(args.json, out, f"chosen on val: {rows[best]['label']}; wrote {args.json}"
                 + (f" and {args.png}" if args.png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
