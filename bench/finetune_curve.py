#!/usr/bin/env python3
"""Stage 3's learning curve: mAP and real-frame Car AP against fine-tune steps, with and without distillation.

One level of the shipped baseline (default: ``importance`` at ``target_metric: flops`` 0.5, about a
x2 FLOPs level; ``--method uniform`` or ``--target-metric params`` for others) is pruned once; then
each *arm* (``plain``: the labels' detection loss; ``kd``: plus ``--distill-weight`` x knowledge
distillation from the dense model, :mod:`pruning_tools.train.distill`) fine-tunes the same pruned
model for ``max(--steps)`` batches (one increment, the stage-3 LR schedule ``lr0 -> lr0/2`` over
those batches). At every step count of ``--steps`` a copy gets its BatchNorm statistics re-estimated
(as stage 3 ends) and is evaluated:

* mAP50-95 / mAP50 on the generated **val** split (the split a budget is chosen on) and **test**
  split (reported only);
* KITTI AP (IoU 0.7 for Car) on the real frames no model here was trained or selected on
  (:func:`pruning_tools.train.evaluate.real_eval_frames`: the baseline's real train/val frames of
  ``pruning_tools/assets/kitti_real_split.json`` are left out), when ``--real-root`` exists.

The real *train* frames of that split are mixed into the fine-tuning batches (``--mix-repeats``
copies each, the pipeline's ``--mix`` mechanism). Points along one run are what a run with that
budget would give up to its LR schedule (the LR at step ``s`` of an ``S``-step run is between lr0
and lr0/2 either way).

Resumable: every evaluated step count is written to ``<work>/<arm>/s<step>.json`` as it finishes
and the model + optimiser at that step to ``<work>/<arm>/work.pt``; a rerun with the same ``--work``
skips what is done and continues training from the last step count. Progress: a bar per arm and a
line per evaluation. ``--ray local`` runs the arms as Ray tasks (1 CPU, 1 torch thread each).

    .venv/bin/python bench/finetune_curve.py --quick --json /tmp/fc.json
    .venv/bin/python bench/finetune_curve.py --work runs/ft_curve --json docs/bench/finetune_curve.json \\
        --png docs/bench/finetune_curve.png

Without ``--data`` a dataset of generated scenes is written into ``<work>/data``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_report.py, also for a test loading this file
from _report import machine_block, module_versions, write_result  # noqa: E402

ARMS = ("plain", "kd")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (mechanics and costs only, minutes)")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "finetune_curve.json")
    p.add_argument("--png", type=Path, default=None, help="plot (default: --json with .png)")
    p.add_argument("--work", type=Path, default=None, help="resumable work folder (default: beside --json)")
    p.add_argument("--data", type=Path, default=None, help="YOLO dataset (default: generated into <work>/data)")
    p.add_argument("--frames", type=int, default=None, help="generated scenes without --data (quick 40, else 240)")
    p.add_argument("--generate-seed", type=int, default=7, help="generator seed (the baseline's scenes: seed 100)")
    p.add_argument("--model", type=Path, default=REPO / "pruning_tools" / "assets" / "baseline_yolov5n.pt")
    p.add_argument("--method", default="importance", choices=("importance", "uniform"))
    p.add_argument("--target-metric", default="flops", choices=("flops", "params"))
    p.add_argument("--level", type=float, default=0.5)
    p.add_argument("--round-to", type=int, default=16)
    p.add_argument("--steps", type=int, nargs="+", default=None,
                   help="step counts evaluated (quick 0 2 4, else 0 16 32 64 128 256)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--distill-weight", type=float, default=1.0)
    p.add_argument("--distill-temperature", type=float, default=1.0)
    p.add_argument("--imgsz", type=int, nargs=2, default=None, help="input (quick 128 416, else 384 1248)")
    p.add_argument("--crop-width", type=int, default=None, help="training crop width (quick 0 = full, else 640)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr0", type=float, default=0.002)
    p.add_argument("--bn-batches", type=int, default=None, help="BN re-estimation batches (quick 2, else 8)")
    p.add_argument("--importance-batches", type=int, default=None, help="stage-1 batches (quick 2, else 8)")
    p.add_argument("--val-images", type=int, default=None, help="cap on val images (default all)")
    p.add_argument("--test-images", type=int, default=None, help="cap on test images (default all)")
    p.add_argument("--real-root", type=Path, default=REPO.parent / "shared" / "data" / "kitti_object")
    p.add_argument("--real-split-file", type=Path, default=REPO / "pruning_tools" / "assets" / "kitti_real_split.json")
    p.add_argument("--mix-repeats", type=int, default=4, help="copies of each real train frame per epoch (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ray", default=None, metavar="ADDRESS", help="run the arms as Ray tasks (e.g. 'local')")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the JSON and plot from the step counts finished so far")
    a = p.parse_args(argv)
    q = a.quick
    a.frames = a.frames or (40 if q else 240)
    a.steps = sorted(set(a.steps if a.steps is not None else ([0, 2, 4] if q else [0, 16, 32, 64, 128, 256])))
    a.imgsz = tuple(a.imgsz or ((128, 416) if q else (384, 1248)))
    a.crop_width = (0 if q else 640) if a.crop_width is None else a.crop_width
    a.bn_batches = a.bn_batches if a.bn_batches is not None else (2 if q else 8)
    a.importance_batches = a.importance_batches or (2 if q else 8)
    a.png = a.png or a.json.with_suffix(".png")
    a.work = a.work or a.json.with_suffix("")
    if a.steps[0] < 0:
        p.error("--steps must be >= 0")
    return a


def log(msg: str) -> None:
    print(f"[finetune_curve {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------ set-up
def run_key(a: argparse.Namespace) -> dict[str, Any]:
    """The settings a work folder's results depend on (a rerun with others is refused)."""
    return {"model": str(a.model), "method": a.method, "target_metric": a.target_metric, "level": a.level,
            "round_to": a.round_to, "data": str(a.data) if a.data else None, "frames": a.frames,
            "generate_seed": a.generate_seed, "imgsz": list(a.imgsz), "crop_width": a.crop_width, "batch": a.batch,
            "lr0": a.lr0, "bn_batches": a.bn_batches, "importance_batches": a.importance_batches,
            "mix_repeats": a.mix_repeats, "seed": a.seed, "max_steps": max(a.steps),
            "distill_weight": a.distill_weight, "distill_temperature": a.distill_temperature,
            "val_images": a.val_images, "test_images": a.test_images}


def level_cost(a: argparse.Namespace, setup: dict[str, Any]) -> dict[str, Any]:
    """Parameters and GFLOPs of the dense model and of the pruned level (structure only)."""
    import numpy as np
    import torch

    from pruning_tools.surgery.channels import PruningSpace, apply_ratios
    from pruning_tools.train.measure import count_flops
    from pruning_tools.ultralytics_adapter import load_checkpoint

    dense, _ = load_checkpoint(a.model)
    g0, p0 = count_flops(dense, a.imgsz)
    space = PruningSpace(dense, a.imgsz, a.round_to, a.target_metric)
    pruned = copy.deepcopy(dense)
    scores = {k: torch.tensor(v) for k, v in setup["channel_scores"].items()} if setup["channel_scores"] else None
    apply_ratios(pruned, space, np.asarray(setup["ratios"]), scores)
    g1, p1 = count_flops(pruned, a.imgsz)
    return {"dense_gflops": round(g0, 4), "dense_params": p0, "gflops": round(g1, 4), "params": p1,
            "flops_reduction": round(1 - g1 / g0, 4), "params_sparsity": round(1 - p1 / p0, 4)}


def prepare(a: argparse.Namespace) -> dict[str, Any]:
    """Dataset, real frames converted for mixing, the level's ratios (written to ``<work>/setup.json``)."""
    from pruning_tools.data import convert_kitti
    from pruning_tools.pipeline.config import config_from_dict
    from pruning_tools.pipeline.prune import Pipeline
    from pruning_tools.search.strategies import UnitContext, get_method

    from pruning_tools.data.files import write_json

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    setup_path = work / "setup.json"
    key = run_key(a)
    if setup_path.is_file():
        setup = json.loads(setup_path.read_text())
        if setup.get("args", key) != key:
            changed = sorted(k for k in key if setup["args"].get(k) != key[k])
            raise SystemExit(f"{work} holds a run with other settings ({', '.join(changed)}): "
                             "give another --work, or delete it to start over")
        if "args" not in setup:
            write_json(setup_path, {**setup, "args": key})
        return setup
    real_yolo = None
    if a.real_root.is_dir() and a.mix_repeats > 0:
        real_yolo = work / "real_yolo"
        if not (real_yolo / "data.yaml").is_file():
            log(f"converting the real frames of {a.real_root} with {a.real_split_file.name} (train split mixed in)")
            convert_kitti(a.real_root, real_yolo, split_file=a.real_split_file, progress=False)
    cfg = config_from_dict({
        "name": "finetune_curve", "baseline": str(a.model), "levels": [a.level], "methods": [a.method],
        "round_to": a.round_to, "target_metric": a.target_metric, "threads": a.threads, "seed": a.seed,
        "data": {"dataset": str(a.data) if a.data else None, "generate_frames": a.frames,
                 "generate_seed": a.generate_seed, "imgsz": list(a.imgsz)},
        "importance": {"batches": a.importance_batches, "batch": a.batch, "channel_choice": "gradient"},
        "finetune": {"batch": a.batch, "crop_width": a.crop_width or None},
    })
    mix = [(real_yolo, a.mix_repeats)] if real_yolo is not None else []
    pipe = Pipeline(cfg, work, progress=not a.no_progress, mix=mix)
    inputs = pipe.prepare()
    session = pipe.session(inputs)
    stage1 = session.stage1(0) if get_method(a.method).uses_importance else None
    if stage1:
        for layer, imp in zip(inputs.space.layers, stage1["importance"]):
            layer.importance = float(imp)
    res = get_method(a.method).ratios(UnitContext(session, a.level, 0, work / "unit", stage1))
    ratios = [float(r) for r in res.ratios]
    setup = {"data": str(inputs.data), "real_yolo": str(real_yolo) if real_yolo else None,
             "mix": [[str(d), r] for d, r in mix], "ratios": ratios,
             "achieved_target": float(inputs.space.sparsity(ratios)), "args": key,
             "channel_scores": ({k: v.tolist() for k, v in res.channel_scores.items()}
                                if res.channel_scores is not None else None)}
    write_json(setup_path, setup)
    return setup


# ------------------------------------------------------------------------------------------------ one arm
class Evaluator:
    """Generated val/test mAP and real-frame AP of a model (the frames read once)."""

    def __init__(self, a: argparse.Namespace, data: Path) -> None:
        from pruning_tools.train.evaluate import EvalSet, real_eval_frames

        self.imgsz = tuple(a.imgsz)
        self.val = EvalSet(data, "val", self.imgsz, limit=a.val_images, progress=False)
        self.test = EvalSet(data, "test", self.imgsz, limit=a.test_images, progress=False)
        self.real = real_eval_frames(a.real_root, a.model) if a.real_root.is_dir() else None

    def __call__(self, model: Any) -> dict[str, Any]:
        from pruning_tools.train.evaluate import real_summary, torch_detector, torch_infer_fn
        from pruning_tools.ultralytics_adapter import class_names

        out: dict[str, Any] = {}
        for name, es in (("val", self.val), ("test", self.test)):
            r = es.evaluate(torch_infer_fn(model))
            out[name] = {"map50_95": round(float(r["map50_95"]), 5), "map50": round(float(r["map50"]), 5),
                         "images": len(es)}
        if self.real is not None:
            rs = real_summary(self.real.evaluate(torch_detector(model, class_names(model), self.imgsz)))
            car = rs["classes"].get("Car", {})
            out["real"] = {"car_ap_kitti": car.get("ap_kitti"), "map_kitti": rs["map_kitti"],
                           "map50_95": rs["map50_95"], "images": rs["n_images"], "car_gt": car.get("n_gt"),
                           "frames": self.real.description}
        return out


def run_arm(a: argparse.Namespace, setup: dict[str, Any], arm: str) -> list[dict[str, Any]]:
    """Fine-tune one arm through every step count of ``a.steps`` (resuming), evaluating each."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from pruning_tools.data.files import write_json
    from pruning_tools.data.yolo import BatchStream, MixedDataset, YoloDataset
    from pruning_tools.surgery.channels import PruningSpace, apply_ratios
    from pruning_tools.surgery.finetune import _atomic_torch_save
    from pruning_tools.train.distill import Distiller
    from pruning_tools.train.loop import make_optimizer, recalibrate_bn, train_steps
    from pruning_tools.ultralytics_adapter import load_checkpoint, save_checkpoint

    torch.set_num_threads(a.threads)
    out = Path(a.work) / arm
    out.mkdir(parents=True, exist_ok=True)
    dense, _ = load_checkpoint(a.model)
    ds: Any = YoloDataset(setup["data"], "train", a.imgsz)
    if setup["mix"]:
        ds = MixedDataset([ds, *(YoloDataset(d, "train", a.imgsz, cache=True) for d, _ in setup["mix"])],
                          [1, *(int(r) for _, r in setup["mix"])])
    stream = BatchStream(ds, a.batch, a.seed, a.crop_width or None)
    total = max(a.steps)
    todo = [s for s in a.steps if not (out / f"s{s}.json").is_file()]
    done = [json.loads((out / f"s{s}.json").read_text()) for s in a.steps if s not in todo]
    if not todo or a.report_only:
        log(f"{arm}: " + (f"step counts {todo} not done yet (--report-only)" if todo
                          else "every step count done earlier"))
        return done
    work, optim = out / "work.pt", out / "optim.pt"
    step, model = 0, None
    if work.is_file():
        model, meta = load_checkpoint(work)
        step = int(meta["step"])
        if step > min(todo):  # a step count before the checkpoint is missing: start over
            model, step = None, 0
    if model is None:
        torch.manual_seed(a.seed)
        model = copy.deepcopy(dense)
        space = PruningSpace(dense, a.imgsz, a.round_to, a.target_metric)
        scores = ({k: torch.tensor(v) for k, v in setup["channel_scores"].items()}
                  if setup["channel_scores"] else None)
        apply_ratios(model, space, np.asarray(setup["ratios"]), scores)
        recalibrate_bn(model, stream, a.bn_batches, start=50_000)
    opt = make_optimizer(model, a.lr0)
    if step and optim.is_file():
        saved = torch.load(optim, map_location="cpu", weights_only=True)
        if saved.get("step") == step:
            opt.load_state_dict(saved["state"])
    distiller = Distiller(dense, a.distill_weight, a.distill_temperature) if arm == "kd" else None
    evaluate = Evaluator(a, Path(setup["data"]))
    bar = tqdm(total=total, initial=step, desc=f"finetune_curve {arm}", unit="batch", disable=a.no_progress,
               mininterval=2.0)
    for target in todo:
        t0 = time.monotonic()
        h0 = len(distiller.history) if distiller else 0
        if target > step:
            train_steps(model, stream, step, target, total, a.lr0, opt, lrf=0.5, warmup=0, progress=bar,
                        distiller=distiller)
            step = target
            _atomic_torch_save({"step": step, "state": opt.state_dict()}, optim)
            save_checkpoint(model, work, {"step": step, "arm": arm})
        t_train = time.monotonic() - t0
        ev = copy.deepcopy(model)
        recalibrate_bn(ev, stream, a.bn_batches, start=200_000)  # as stage 3 ends
        t1 = time.monotonic()
        rec = {"arm": arm, "step": step, **evaluate(ev),
               "kd_loss": float(np.mean(distiller.history[h0:])) if distiller and distiller.history[h0:] else None,
               "train_s": round(t_train, 1), "eval_s": round(time.monotonic() - t1, 1)}
        write_json(out / f"s{step}.json", rec)
        real = rec.get("real", {}).get("car_ap_kitti")
        log(f"{arm} step {step}: val mAP50-95 {rec['val']['map50_95']:.4f} test {rec['test']['map50_95']:.4f}"
            + (f" real Car AP {real:.3f}" if real is not None else ""))
        done.append(rec)
    bar.close()
    return sorted(done, key=lambda r: r["step"])


def dense_reference(a: argparse.Namespace, setup: dict[str, Any]) -> dict[str, Any]:
    from pruning_tools.data.files import write_json
    from pruning_tools.ultralytics_adapter import load_checkpoint

    path = Path(a.work) / "dense.json"
    if path.is_file():
        return json.loads(path.read_text())
    dense, _ = load_checkpoint(a.model)
    rec = Evaluator(a, Path(setup["data"]))(dense)
    write_json(path, rec)
    return rec


def _arm_task(args: dict[str, Any], setup: dict[str, Any], arm: str) -> list[dict[str, Any]]:
    """A Ray task: one arm in a worker process (1 torch thread, no bar)."""
    sys.path.insert(0, str(REPO))
    a = argparse.Namespace(**args)
    a.no_progress, a.threads = True, 1
    return run_arm(a, setup, arm)


def run_arms(a: argparse.Namespace, setup: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    if not a.ray or a.report_only:
        return {arm: run_arm(a, setup, arm) for arm in a.arms}
    import ray

    kw: dict[str, Any] = {"include_dashboard": False}
    if a.ray == "local":
        kw.update(num_cpus=len(a.arms), _node_ip_address="127.0.0.1")
    ray.init(address=a.ray, runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}}, **kw)
    try:
        task = ray.remote(num_cpus=1)(_arm_task)
        args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
        for k in ("work", "model", "real_root", "real_split_file", "json", "png"):
            args[k] = Path(args[k])
        refs = {arm: task.remote(args, setup, arm) for arm in a.arms}
        log(f"{len(refs)} arms as Ray tasks at {a.ray}; per-step-count results appear under {a.work}/<arm>/")
        return {arm: ray.get(ref) for arm, ref in refs.items()}
    finally:
        ray.shutdown()


# ------------------------------------------------------------------------------------------------ report
def flattening(points: list[tuple[int, float]], frac: float = 0.9) -> int | None:
    """Smallest step count whose value reaches ``frac`` of the gain from step 0 to the best value."""
    if len(points) < 2:
        return None
    v0, best = points[0][1], max(v for _, v in points)
    if best <= v0:
        return points[0][0]
    return next(s for s, v in points if v - v0 >= frac * (best - v0))


def plot(path: Path, curves: dict[str, list[dict[str, Any]]], dense: dict[str, Any], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("val", "map50_95", "val mAP50-95 (generated)"), ("test", "map50_95", "test mAP50-95 (generated)")]
    if dense.get("real"):
        panels.append(("real", "car_ap_kitti", "real KITTI Car AP (IoU 0.7)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8))
    for ax, (split, key, label) in zip(axes, panels):
        for arm, recs in curves.items():
            xs = [max(r["step"], 1) for r in recs]
            ax.plot(xs, [r[split][key] for r in recs], "o-", label=arm)
        ax.axhline(dense[split][key], color="k", ls="--", lw=1, label="dense")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("fine-tune batches (0 plotted at 1)")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    t0 = time.monotonic()
    machine = machine_block()
    setup = prepare(a)
    log(f"{a.method} at {a.target_metric} {a.level}: ratios reach {setup['achieved_target']:.4f}; data {setup['data']}"
        + (f"; real train frames mixed in x{a.mix_repeats}" if setup["mix"] else "; no real frames mixed in"))
    dense = dense_reference(a, setup)
    curves = run_arms(a, setup)
    flat = {arm: {split: flattening([(r["step"], r[split]["map50_95"]) for r in recs]) for split in ("val", "test")}
            for arm, recs in curves.items()}
    for arm, recs in curves.items():
        if recs and recs[0].get("real"):
            flat[arm]["real_car_ap"] = flattening([(r["step"], r["real"]["car_ap_kitti"]) for r in recs])
    result = {
        "bench": "finetune_curve", "what": __doc__.split("\n\n")[0],
        "level": {"method": a.method, "target_metric": a.target_metric, "level": a.level,
                  "achieved_target": setup["achieved_target"], "round_to": a.round_to, **level_cost(a, setup)},
        "settings": {"imgsz": list(a.imgsz), "crop_width": a.crop_width or None, "batch": a.batch, "lr0": a.lr0,
                     "lr_schedule": f"cosine lr0 -> lr0/2 over {max(a.steps)} batches (one run per arm)",
                     "steps": a.steps, "bn_batches": a.bn_batches, "importance_batches": a.importance_batches,
                     "distill_weight": a.distill_weight, "distill_temperature": a.distill_temperature,
                     "seed": a.seed, "threads": a.threads, "quick": a.quick, "ray": a.ray},
        "missing": {arm: [s for s in a.steps if s not in {r["step"] for r in recs}] for arm, recs in curves.items()},
        "data": {"dataset": setup["data"], "generated_frames": None if a.data else a.frames,
                 "generate_seed": None if a.data else a.generate_seed, "mix": setup["mix"],
                 "real_eval": dense.get("real", {}).get("frames")},
        "dense": dense, "curves": curves,
        "flattens_at": {"definition": "smallest step count reaching 90 % of the arm's gain from step 0 to its best",
                        **flat},
        "versions": module_versions("torch", "ultralytics", "numpy"),
        "wall_s": round(time.monotonic() - t0, 1), "machine": machine,
    }
    plot(a.png, curves, dense, f"{a.method} {a.target_metric} {a.level} of {a.model.name}, {a.imgsz[0]}x{a.imgsz[1]}")
    lines = [f"{arm} step {r['step']:4d}: val {r['val']['map50_95']:.4f} test {r['test']['map50_95']:.4f}"
             + (f" real Car AP {r['real']['car_ap_kitti']:.3f}" if r.get("real") else "")
             for arm, recs in curves.items() for r in recs]
    write_result(a.json, result, "\n".join(lines + [f"flattens at: {json.dumps(flat)}", f"wrote {a.json}, {a.png}"]))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
