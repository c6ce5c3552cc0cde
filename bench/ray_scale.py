#!/usr/bin/env python3
"""Does ``pruning-tools prune --ray`` scale? Reward evaluations per second with 1, 2 (and N) Ray CPUs.

In one run:

1. **scaling** — a fixed small search (a fixed set of stage-2 reward evaluations of the shipped
   baseline on generated scenes: prune, BN recalibration, val mAP) sent as one batch through the
   same Ray path the pipeline uses (:class:`pruning_tools.distributed.RayExecutor`), on a local Ray
   with 1, 2 (and all, where more) worker CPUs; workers are started and have unpacked the shared
   data before timing. Reports evaluations/s, wall time and ``speedup_2_vs_1``;
2. **full-profile cost** — per-batch costs at the full profile's settings (384x1248, batch 8, one
   torch thread = one Ray CPU): a BN-recalibration batch, a fine-tune step, one val/test image;
   from them and ``configs/full.yaml`` the CPU time of each unit and the run's estimated wall time
   on W workers: ``max(total CPU time / W, critical path)``, the critical path being a ``full``
   unit (its PPO rollouts are sequential; only ``episodes_per_update`` evaluations run at once).

    .venv/bin/python bench/ray_scale.py --quick --json bench/results/ray_scale.json

Target: ``speedup_2_vs_1`` >= 1.7 on 2 cores (other load on the machine lowers it; the JSON records
the load average before and after).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_VERBOSE", "false")


def make_data(root: Path, frames: int) -> Path:
    from pruning_tools.kitti import convert_kitti, generate_dataset

    generate_dataset(root / "kitti", frames=frames, seed=3, progress=False)
    return convert_kitti(root / "kitti", root / "yolo", progress=False)


def scaling(work: Path, quick: bool, cpu_list: list[int]) -> dict:
    import numpy as np

    from pruning_tools.distributed import RayExecutor
    from pruning_tools.pipeline import Pipeline, ProxySpec
    from pruning_tools.prune_config import config_from_dict

    imgsz = [128, 416]
    data = make_data(work / "small", 40)
    cfg = config_from_dict({"name": "ray_scale", "threads": 1, "round_to": 8,
                            "data": {"dataset": str(data), "imgsz": imgsz, "val_images": 4},
                            "rl": {"bn_batches": 2, "bn_batch": 4}})
    pipe = Pipeline(cfg, work / "run", progress=False)
    inputs = pipe.prepare()
    n_eval = 8 if quick else 24
    rng = np.random.default_rng(0)
    base = inputs.space.uniform(0.5, cfg.max_ratio)
    batch = [list(np.clip(base + rng.normal(0, 0.1, len(base)), 0.0, cfg.max_ratio)) for _ in range(n_eval)]
    spec = ProxySpec(0, cfg.rl.bn_batches, cfg.rl.ft_steps, cfg.rl.ft_lr, cfg.data.val_images)
    rows = []
    for cpus in cpu_list:
        with RayExecutor("local", num_cpus=cpus) as ex:
            ex.share(pipe, inputs)
            evaluate = ex.batch_evaluator(spec)
            warm = [list(np.clip(base + rng.normal(0, 0.1, len(base)), 0.0, cfg.max_ratio)) for _ in range(2 * cpus)]
            evaluate(warm)  # workers started, data unpacked, torch warmed up on every CPU
            t0 = time.perf_counter()
            values = evaluate(batch)
            wall = time.perf_counter() - t0
        rows.append({"cpus": cpus, "evaluations": n_eval, "wall_s": round(wall, 3),
                     "evaluations_per_s": round(n_eval / wall, 4), "map_mean": round(float(np.mean(values)), 5)})
        print(f"{cpus} CPU(s): {n_eval} evaluations in {wall:.1f} s = {n_eval / wall:.3f}/s", flush=True)
    same = len({r["map_mean"] for r in rows}) == 1
    return {"imgsz": imgsz, "evaluations": n_eval, "rows": rows, "same_values_on_every_cpu_count": same}


def component_costs(work: Path, quick: bool) -> dict:
    """Seconds per BN batch, fine-tune step and evaluated image at full-profile settings, 1 thread."""
    import copy

    import torch

    from pruning_tools import ultralytics_adapter as ua
    from pruning_tools.measure import evaluate_model
    from pruning_tools.pipeline import DEFAULT_BASELINE
    from pruning_tools.pruning import PruningSpace, apply_ratios
    from pruning_tools.prune_config import load_config
    from pruning_tools.training import BatchStream, YoloDataset, recalibrate_bn, train_steps

    full = load_config(REPO / "pruning_tools" / "configs" / "full.yaml")
    torch.set_num_threads(1)
    imgsz = tuple(full.data.imgsz)
    data = make_data(work / "full", 30)
    dense, _ = ua.load_checkpoint(DEFAULT_BASELINE)
    space = PruningSpace(dense, imgsz, full.round_to, full.target_metric)
    m = copy.deepcopy(dense)
    apply_ratios(m, space, space.uniform(0.5, full.max_ratio))
    stream = BatchStream(YoloDataset(data, "train", imgsz), full.rl.bn_batch, 0, full.finetune.crop_width)
    reps = 2 if quick else 4
    recalibrate_bn(m, stream, 1)  # warm-up
    t0 = time.perf_counter()
    recalibrate_bn(m, stream, reps, start=1)
    t_bn = (time.perf_counter() - t0) / reps
    train_steps(m, stream, 0, 1, 1, 0.001)  # warm-up
    t0 = time.perf_counter()
    train_steps(m, stream, 1, 1 + reps, 1 + reps, 0.001)
    t_ft = (time.perf_counter() - t0) / reps
    n_img = 3 if quick else 8
    evaluate_model(m, data, "val", imgsz, max_images=1)
    t0 = time.perf_counter()
    evaluate_model(m, data, "train", imgsz, max_images=n_img)
    t_img = (time.perf_counter() - t0) / n_img
    return {"imgsz": list(imgsz), "threads": 1, "bn_batch_s": round(t_bn, 3), "finetune_step_s": round(t_ft, 3),
            "eval_image_s": round(t_img, 4), "bn_batch": full.rl.bn_batch, "finetune_batch": full.finetune.batch,
            "crop_width": full.finetune.crop_width,
            "note": f"batches of {full.rl.bn_batch} (rl.bn_batch); stage-3 costs are scaled to finetune.batch "
                    f"({full.finetune.batch}) linearly; the dense measurement and stage 1 (driver) are left out"}


def estimate_full(cost: dict, workers: list[int]) -> dict:
    """Full profile's CPU time per unit and wall time on W workers from the measured component costs."""
    from pruning_tools.prune_config import load_config

    c = load_config(REPO / "pruning_tools" / "configs" / "full.yaml")
    frames = c.data.generate_frames
    test_images = c.data.test_images or round(frames * 0.1)
    val_split = round(frames * 0.1)
    ft8 = cost["finetune_step_s"] * c.finetune.batch / cost["bn_batch"]
    ev = (c.rl.bn_batches * cost["bn_batch_s"] + c.rl.ft_steps * cost["finetune_step_s"]
          + c.data.val_images * cost["eval_image_s"])
    rerank = (c.rl.rerank_top + 1) * (c.rl.bn_batches * cost["bn_batch_s"] + c.rl.rerank_ft_steps
                                       * cost["finetune_step_s"] + (c.rl.rerank_val_images or val_split)
                                       * cost["eval_image_s"])
    steps3 = c.finetune.prune_steps * c.finetune.steps_per_prune + c.finetune.final_steps
    stage3 = steps3 * ft8 + (c.finetune.prune_steps + 1) * c.finetune.bn_batches * cost["bn_batch_s"] \
        * c.finetune.batch / cost["bn_batch"] + test_images * cost["eval_image_s"]
    evals = c.rl.warmup_episodes + c.rl.episodes + 1
    full_cpu = evals * ev + rerank + stage3
    n_trials_levels = c.trials * len(c.levels)
    total = n_trials_levels * (2 * stage3 + full_cpu)
    out = {"reward_evaluation_s": round(ev, 1), "stage3_unit_s": round(stage3, 1),
           "full_unit_cpu_s": round(full_cpu, 1),
           "units": n_trials_levels * len(c.methods), "evaluations_per_full_unit": evals,
           "total_cpu_h": round(total / 3600, 2), "wall_h": {}}
    for w in workers:
        par = min(w, c.rl.episodes_per_update)
        crit = (math.ceil(c.rl.warmup_episodes / min(w, c.rl.warmup_episodes)) + math.ceil(c.rl.episodes / par) * 1
                + 1) * ev + rerank / min(w, c.rl.rerank_top + 1) + stage3
        out["wall_h"][str(w)] = round(max(total / w, crit) / 3600, 2)
    out["critical_path_h"] = round(crit / 3600, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer evaluations and repetitions (a few minutes)")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "ray_scale.json")
    a = p.parse_args(argv)

    from sparse_perception.runtime.machine import machine_info

    ncpu = os.cpu_count() or 1
    cpu_list = [1, 2] + ([ncpu] if ncpu > 2 else [])
    load0 = os.getloadavg()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ray_scale_") as tmp:
        sc = scaling(Path(tmp), a.quick, cpu_list)
        load1 = os.getloadavg()
        cost = component_costs(Path(tmp), a.quick)
    rate = {r["cpus"]: r["evaluations_per_s"] for r in sc["rows"]}
    est = estimate_full(cost, [1, 2, 4, 8, 16, 32])
    import ray

    res = {"bench": "ray_scale", "quick": a.quick, "ray": ray.__version__, "machine": machine_info(),
           "speedup_2_vs_1": round(rate[2] / rate[1], 3),
           "target_speedup_2_vs_1": 1.7, "target_met": rate[2] / rate[1] >= 1.7,
           "load_average_before_after_scaling": [round(load0[0], 2), round(load1[0], 2)],
           "scaling": sc, "full_profile_costs": cost, "full_profile_estimate": est,
           "full_profile_wall_h_16_workers": est["wall_h"]["16"], "wall_s": round(time.monotonic() - t0, 1)}
    if ncpu > 2:
        res[f"speedup_{ncpu}_vs_1"] = round(rate[ncpu] / rate[1], 3)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: res[k] for k in ("speedup_2_vs_1", "load_average_before_after_scaling",
                                          "full_profile_wall_h_16_workers")}))
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
