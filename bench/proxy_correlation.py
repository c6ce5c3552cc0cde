#!/usr/bin/env python3
"""Does the stage-2 reward proxy rank ratio vectors like fine-tuning does? Spearman over N vectors.

For ``--vectors`` ratio vectors at one level (default 75 %; random per-layer weights solved to the
level, plus the uniform and stage-1 vectors), in one run:

* the **proxy** mAP50-95 — exactly what the PPO reward sees (:class:`pruning_tools.search.env.RewardProxy`:
  physical pruning of a copy, ``--proxy-ft-steps`` fine-tune batches, BN recalibration on
  ``--bn-batches`` batches, val split at ``--proxy-imgsz`` on ``--val-images`` images) and its
  wall time per evaluation;
* the **post-fine-tune** mAP50-95 — stage 3 (:func:`pruning_tools.surgery.finetune.prune_and_finetune`,
  ``--ft-steps`` batches in ``--prune-steps`` increments), val split at the deployment size;

then the Spearman rank correlation between the two (issue 12 asks for >= 0.6 at 75 %). The JSON also
holds the per-evaluation and per-fine-tune wall times (the cost model of ``configs/medium.yaml``).

    .venv/bin/python bench/proxy_correlation.py --quick --json bench/results/proxy_correlation.json
    .venv/bin/python bench/proxy_correlation.py --data DATASET --vectors 24 --ft-steps 150 --json OUT

Without ``--data`` a small dataset of generated scenes is written into a temp folder.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_report.py, also for a test loading this file
from _report import machine_block, spearman, write_result  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="reduced size (8 vectors, 256x832, short fine-tuning): shows the mechanics and the costs")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "proxy_correlation.json")
    p.add_argument("--data", type=Path, default=None, help="YOLO dataset (default: generated scenes in a temp dir)")
    p.add_argument("--frames", type=int, default=None, help="generated scenes without --data (quick 80, else 400)")
    p.add_argument("--model", type=Path, default=REPO / "pruning_tools" / "assets" / "baseline_yolov5n.pt")
    p.add_argument("--level", type=float, default=0.75)
    p.add_argument("--vectors", type=int, default=None, help="ratio vectors (quick 8, else 24)")
    p.add_argument("--imgsz", type=int, nargs=2, default=None, help="deployment input (quick 256 832, else 384 1248)")
    p.add_argument("--proxy-imgsz", type=int, nargs=2, default=None, help="proxy input (default: --imgsz)")
    p.add_argument("--round-to", type=int, default=16)
    p.add_argument("--max-ratio", type=float, default=0.9)
    p.add_argument("--bn-batches", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--proxy-ft-steps", type=int, default=None, help="proxy fine-tune batches (quick 2, else 4)")
    p.add_argument("--val-images", type=int, default=None, help="proxy val images (quick 8, else 32)")
    p.add_argument("--ft-steps", type=int, default=None, help="stage-3 batches per vector (quick 12, else 150)")
    p.add_argument("--prune-steps", type=int, default=2)
    p.add_argument("--crop-width", type=int, default=640, help="training crop width (0: full width)")
    p.add_argument("--channel-choice", choices=("magnitude", "gradient"), default="magnitude",
                   help="channels removed inside a layer (gradient: stage-1 per-channel scores)")
    p.add_argument("--surgery", choices=("mask", "physical"), default="mask",
                   help="proxy: zero the channels (one graph trace) or prune each candidate physically")
    p.add_argument("--variant", nargs=5, type=int, action="append", default=[],
                   metavar=("H", "W", "FT_STEPS", "BN_BATCHES", "VAL_IMAGES"),
                   help="a further proxy setting scored on the same vectors (its own Spearman); may be repeated")
    p.add_argument("--metric", choices=("map50_95", "val_loss"), default="map50_95",
                   help="proxy score (rl.proxy_metric): mAP50-95 after BN recalibration, or L_dense/L of the val "
                        "images' detection loss as one batch with batch-statistics BN (--bn-batches unused)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    import numpy as np
    import torch

    from pruning_tools import ultralytics_adapter as ua
    from pruning_tools.surgery.finetune import FinetuneConfig, prune_and_finetune
    from pruning_tools.search.importance import budgets_from_importance, compute_importance
    from pruning_tools.train.evaluate import evaluate_model
    from pruning_tools.surgery.channels import PruningSpace
    from pruning_tools.search.env import RewardProxy
    from pruning_tools.data.yolo import BatchStream, YoloDataset

    q = a.quick
    n_vec = a.vectors or (8 if q else 24)
    imgsz = tuple(a.imgsz or ((256, 832) if q else (384, 1248)))
    pimgsz = tuple(a.proxy_imgsz or imgsz)
    pft = a.proxy_ft_steps if a.proxy_ft_steps is not None else (2 if q else 4)
    val_n = a.val_images or (8 if q else 32)
    ft = a.ft_steps or (12 if q else 150)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="proxy_corr_") as tmp:
        data = a.data
        if data is None:
            from pruning_tools.data import convert_kitti, generate_dataset

            frames = a.frames or (80 if q else 400)
            generate_dataset(Path(tmp) / "kitti", frames=frames, seed=a.seed + 11, progress=False)
            data = convert_kitti(Path(tmp) / "kitti", Path(tmp) / "yolo", progress=False)
        dense, _ = ua.load_checkpoint(a.model)
        dense.eval()
        space = PruningSpace(dense, imgsz, a.round_to)
        train = YoloDataset(data, "train", imgsz)
        ptrain = train if pimgsz == imgsz else YoloDataset(data, "train", pimgsz)
        crop = a.crop_width or None
        stream = BatchStream(train, a.batch, a.seed, crop)
        calib = BatchStream(ptrain, a.batch, a.seed + 2000, crop if crop and crop < pimgsz[1] else None)
        imp = compute_importance(dense, space, BatchStream(train, a.batch, a.seed + 1000, crop), 4, progress=False)
        scores = imp.channel_scores if a.channel_choice == "gradient" else None

        def val_proxy(m: torch.nn.Module) -> float:
            return float(evaluate_model(m, data, "val", pimgsz, max_images=val_n)["map50_95"])

        if a.metric == "val_loss":
            from pruning_tools.search.proxy import ValLoss

            proxy = RewardProxy(dense, space, calib, ValLoss(data, pimgsz, val_n).set_reference(dense), 0, pft, 0.002,
                                scores, a.surgery)
        else:
            proxy = RewardProxy(dense, space, calib, val_proxy, a.bn_batches, pft, 0.002, scores, a.surgery)
        variants = []
        for h, w, v_ft, v_bn, v_val in a.variant:
            vtrain = YoloDataset(data, "train", (h, w))
            vcalib = BatchStream(vtrain, a.batch, a.seed + 2000, crop if crop and crop < w else None)

            def v_eval(m: torch.nn.Module, sz: tuple[int, int] = (h, w), n: int = v_val) -> float:
                return float(evaluate_model(m, data, "val", sz, max_images=n)["map50_95"])

            variants.append({"name": f"{h}x{w} ft{v_ft} bn{v_bn} val{v_val}", "imgsz": [h, w], "ft_steps": v_ft,
                             "bn_batches": v_bn, "val_images": v_val,
                             "proxy": RewardProxy(dense, space, vcalib, v_eval, v_bn, v_ft, 0.002, scores, a.surgery)})
        rng = np.random.default_rng(a.seed)
        vectors = [("uniform", space.uniform(a.level, a.max_ratio)),
                   ("stage-1", budgets_from_importance(space, imp.layer_importance, a.level, a.max_ratio, 0.5))]
        while len(vectors) < n_vec:
            vectors.append((f"random {len(vectors) - 1}", space.solve(rng.uniform(0.05, 1.0, len(space)), a.level,
                                                                      a.max_ratio)))
        rows = []
        for k, (name, ratios) in enumerate(vectors):
            t1 = time.monotonic()
            pm = proxy(ratios)
            proxy_s = time.monotonic() - t1
            extra = {}
            for v in variants:
                tv = time.monotonic()
                extra[v["name"]] = {"map50_95": round(float(v["proxy"](ratios)), 5), "s": round(time.monotonic() - tv, 2)}
            t2b = time.monotonic()
            cfg = FinetuneConfig(prune_steps=a.prune_steps, steps_per_prune=max(1, ft // (2 * a.prune_steps)),
                                 final_steps=ft - a.prune_steps * max(1, ft // (2 * a.prune_steps)), batch=a.batch,
                                 checkpoint_every=10_000, bn_batches=a.bn_batches, seed=a.seed)
            t2 = t2b
            model, _ = prune_and_finetune(dense, space, ratios, stream, Path(tmp) / f"v{k}", cfg, None, scores,
                                          progress=False)
            t3 = time.monotonic()
            post = float(evaluate_model(model, data, "val", imgsz)["map50_95"])
            t4 = time.monotonic()
            rows.append({"vector": name, "sparsity": round(space.sparsity(ratios), 4), "proxy_score": round(pm, 5),
                         "post_finetune_map50_95": round(post, 5), "proxy_s": round(proxy_s, 2),
                         "finetune_s": round(t3 - t2, 2), "eval_s": round(t4 - t3, 2), "variants": extra})
            print(f"{name:>10}: proxy {pm:.4f}  post-fine-tune {post:.4f}  ({proxy_s:.1f} s proxy, "
                  f"{t3 - t2:.1f} s fine-tune)", flush=True)
    rho = spearman([r["proxy_score"] for r in rows], [r["post_finetune_map50_95"] for r in rows])
    post = [r["post_finetune_map50_95"] for r in rows]
    var_out = []
    for v in variants:
        vals = [r["variants"][v["name"]]["map50_95"] for r in rows]
        v_rho = spearman(vals, post)
        var_out.append({k: v[k] for k in ("name", "imgsz", "ft_steps", "bn_batches", "val_images")}
                       | {"spearman": None if v_rho is None else round(v_rho, 3),
                          "mean_s": round(float(np.mean([r["variants"][v["name"]]["s"] for r in rows])), 2)})
        print(f"variant {v['name']}: Spearman {var_out[-1]['spearman']}, {var_out[-1]['mean_s']} s per evaluation")
    out = {"benchmark": "proxy_correlation", "quick": q, "level": a.level, "vectors": len(rows),
           "imgsz": list(imgsz), "proxy": {"imgsz": list(pimgsz), "bn_batches": a.bn_batches, "ft_steps": pft,
                                           "val_images": val_n, "batch": a.batch,
                                           "surgery": a.surgery},
           "finetune": {"steps": ft, "prune_steps": a.prune_steps, "batch": a.batch, "crop_width": crop},
           "channel_choice": a.channel_choice, "data": str(a.data or "generated scenes"), "threads": a.threads,
           "machine": machine_block(), "load_average": list(os.getloadavg()), "rows": rows,
           "spearman": None if rho is None else round(rho, 3),
           "target": {"spearman_at_least": 0.6, "met": None if rho is None else (rho >= 0.6 and len(rows) >= 20),
                      "note": "the target needs >= 20 vectors"},
           "variants": var_out,
           "mean_proxy_s": round(float(np.mean([r["proxy_s"] for r in rows])), 2),
           "mean_finetune_s_per_step": round(float(np.mean([r["finetune_s"] for r in rows])) / ft, 3),
           "wall_s": round(time.monotonic() - t0, 1)}
    write_result(a.json, out, f"Spearman (proxy vs post-fine-tune mAP50-95, {len(rows)} vectors at {a.level}): "
                              f"{out['spearman']}; proxy {out['mean_proxy_s']} s per evaluation; wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
