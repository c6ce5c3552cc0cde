#!/usr/bin/env python3
"""Federated pruning (issue 25 item 5): per round, the federated model against central training at equal steps.

In one run, from a fleet config (default ``pruning_tools/configs/federated_quick.yaml``):

1. **federated** — ``pruning-tools federated``'s job (:func:`pruning_tools.federated.run.run_federated`: Flower
   simulation engine on a local Ray, 127.0.0.1): per round the global model's mAP50-95 / mAP50 on the
   server's held-out generated **test** frames (the round checkpoints ``server/round_NNN.pt``), each
   vehicle's mAP on its own val split (reported by the client that round), bytes sent per round
   (server -> clients and back, as Flower serialised them), round wall time;
2. **central at equal steps** — for round ``r`` the central baseline trained on the union of the
   vehicles' data with ``r x local_steps x vehicles`` fine-tune batches (the same stage-1 batches,
   budgets code, surgery, distillation and BN re-estimation;
   :func:`pruning_tools.federated.run.run_central` with ``rounds = r``: its learning-rate schedule spans
   its own ``r`` rounds), on the same test frames;
3. **real frames** — where the KITTI object root exists, KITTI Car AP (IoU 0.7) of every round's federated
   and central model and of the dense start on real frames no model here trained or was selected on
   (:func:`pruning_tools.train.evaluate.real_eval_frames`: the baseline's real train/val frames left out;
   the vehicles' shares come from that train split);
4. with ``--groups CONFIG`` also ``pruning-tools federated-groups`` (:mod:`pruning_tools.federated.tailored`):
   each condition group's own level against the single global level on the group's held-out scenes.

Writes ``--json`` (machine, versions, every figure, ratios) and a PNG per round (``--png``, default next to it)::

    .venv/bin/python bench/federated.py --quick --json bench/results/federated.json

Targets (issue 25): federated within 1.5 mAP50-95 points of central at equal steps; each group's level
>= the global one by >= 1 point on its group's held-out data; bytes per round stated.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_report.py, also for a test loading this file
from _report import machine_block, module_versions, write_result  # noqa: E402
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_VERBOSE", "false")

TARGET_GAP_POINTS = 1.5


def _pts(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(100.0 * (a - b), 3)


def central_at_rounds(cfg: Any, work: Path, rounds: int, final: dict[str, Any] | None, progress: bool
                      ) -> dict[int, dict[str, Any]]:
    """``{r: run_central info}`` for r = 1..rounds (r = rounds reuses the run's own central model)."""
    from pruning_tools.federated.run import run_central

    out: dict[int, dict[str, Any]] = {}
    shared = work / "fed" / "central" / "data"  # the vehicles' frames, regenerated once from their seeds
    for r in range(1, rounds + 1):
        if r == rounds and final is not None:
            out[r] = final
            continue
        rdir = work / f"central_r{r}"
        link = rdir / "central" / "data"
        if shared.is_dir() and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(shared, target_is_directory=True)
        out[r] = run_central(dataclasses.replace(cfg, rounds=r), rdir, progress)
    return out


def round_model(structure: Any, state_path: Path) -> Any:
    """The global model after one round: the run's pruned structure with that round's averaged weights
    (``server/round_NNN.pt`` holds :func:`pruning_tools.federated.core.float_state`)."""
    import copy

    import torch

    from pruning_tools.federated.core import load_float_state

    model = copy.deepcopy(structure)
    load_float_state(model, torch.load(state_path, map_location="cpu", weights_only=True))
    return model.eval()


def real_frames(root: Path, baseline: Path, limit: int | None) -> Any:
    """Real frames never trained or selected on (at most ``limit``, the first by id), or None without the root."""
    if not root.is_dir():
        return None
    from pruning_tools.train.evaluate import RealFrames, real_eval_frames

    frames = real_eval_frames(root, baseline)
    if limit is not None and len(frames) > limit:
        frames = RealFrames(frames.frames[:limit], f"{frames.description}, first {limit} by id")
    return frames


def car_ap(model: Any, frames: Any, imgsz: tuple[int, int]) -> float | None:
    """KITTI Car AP (IoU 0.7) of a torch model on real frames."""
    if frames is None:
        return None
    from pruning_tools.train.evaluate import real_summary, torch_detector
    from pruning_tools.ultralytics_adapter import class_names

    rs = real_summary(frames.evaluate(torch_detector(model, class_names(model), imgsz)))
    return (rs["classes"].get("Car") or {}).get("ap_kitti")


def run(a: argparse.Namespace) -> dict[str, Any]:
    import torch

    from pruning_tools.federated.config import load_config
    from pruning_tools.federated.core import evaluate_on
    from pruning_tools.federated.data import prepare_server_data
    from pruning_tools.federated.run import run_federated
    from pruning_tools.ultralytics_adapter import load_checkpoint

    machine = machine_block()
    cfg = load_config(a.config)
    torch.set_num_threads(cfg.threads)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="bench_federated_"))
    t0 = time.monotonic()
    res = run_federated(cfg, work / "fed", progress=a.progress)
    t_job = time.monotonic() - t0
    fed_dir = work / "fed"
    server = prepare_server_data(cfg, fed_dir / "server" / "data")
    imgsz = tuple(cfg.imgsz)
    frames = real_frames(a.real_root, cfg.baseline_path(), a.real_frames)
    t1 = time.monotonic()
    own_central = fed_dir / "central" / "model.pt"  # run_federated's central baseline: all rounds' steps
    final = {"model": str(own_central), "steps": res["central"]["steps_total"]} \
        if "central" in res and own_central.is_file() else None
    central = central_at_rounds(cfg, work, cfg.rounds, final, a.progress) if cfg.central else {}
    t_central = time.monotonic() - t1
    dense, _ = load_checkpoint(cfg.baseline_path())
    dense_test = evaluate_on(dense, server, "test", cfg)
    dense_car = car_ap(dense, frames, imgsz)
    final_fed, _ = load_checkpoint(fed_dir / "federated" / "model.pt")  # the pruned structure every round shares
    rows = []
    for entry in res["rounds"]:
        r = int(entry["round"])
        fmodel = round_model(final_fed, fed_dir / "server" / f"round_{r:03d}.pt")
        ftest = evaluate_on(fmodel, server, "test", cfg)
        row: dict[str, Any] = {
            "round": r, "steps_per_client": r * cfg.local_steps, "steps_total": r * cfg.local_steps * len(cfg.clients),
            "federated": {"test": ftest, "val": entry.get("global"), "real_car_ap": car_ap(fmodel, frames, imgsz)},
            "clients": {cid: (c.get("val") or {}) for cid, c in (entry.get("clients") or {}).items()},
            "failed": entry.get("failed", []),
            "bytes_down": entry["bytes_down"], "bytes_up": entry["bytes_up"],
            "bytes_total": entry["bytes_down"] + entry["bytes_up"], "wall_s": entry.get("wall_s"),
        }
        if r in central:
            cmodel, _ = load_checkpoint(central[r]["model"])
            ctest = evaluate_on(cmodel, server, "test", cfg)
            row["central"] = {"test": ctest, "real_car_ap": car_ap(cmodel, frames, imgsz),
                              "steps": central[r].get("steps", r * cfg.local_steps * len(cfg.clients))}
            row["gap_points"] = _pts(ctest["map50_95"], ftest["map50_95"])
            row["ratio_federated_to_central"] = (round(ftest["map50_95"] / ctest["map50_95"], 4)
                                                 if ctest["map50_95"] else None)
        rows.append(row)
        print(f"round {r}: federated test mAP50-95 {ftest['map50_95']:.4f}"
              + (f", central {row['central']['test']['map50_95']:.4f} (gap {row['gap_points']:+.2f} points)"
                 if "central" in row else "") + f", {row['bytes_total'] / 1e6:.1f} MB", flush=True)
    last = rows[-1]
    stage1_bytes = res["stage1"].get("bytes_down", 0) + res["stage1"].get("bytes_up", 0)
    out: dict[str, Any] = {
        "bench": "federated", "quick": bool(a.quick), "config": str(a.config), "work": str(work),
        "data": {"generated": "pruning_tools.data.generator scenes: each vehicle its own condition mix and seed; the "
                              f"server's held-out test half ({dense_test['images']} images, never trained on)",
                 "real": frames.description if frames is not None else "none (no KITTI object root here)",
                 "real_frames": len(frames) if frames is not None else 0,
                 "vehicle_real_train_frames": {c["id"]: c.get("real_frames", 0) for c in res["clients"]}},
        "engine": res.get("engine"), "vehicles": len(cfg.clients), "rounds_n": cfg.rounds,
        "rounds": rows,
        "stage1": {"bytes": stage1_bytes, "wall_s": res["stage1"].get("wall_s"),
                   "param_sparsity": res["stage1"].get("param_sparsity")},
        "bytes_per_round": [r["bytes_total"] for r in rows],
        "dense": {"test": dense_test, "real_car_ap": dense_car},
        "final": {"federated_map50_95": last["federated"]["test"]["map50_95"],
                  "central_map50_95": (last.get("central") or {}).get("test", {}).get("map50_95"),
                  "dense_map50_95": dense_test["map50_95"], "gap_points": last.get("gap_points"),
                  "ratio_federated_to_central": last.get("ratio_federated_to_central"),
                  "ratio_federated_to_dense": (round(last["federated"]["test"]["map50_95"] / dense_test["map50_95"], 4)
                                               if dense_test["map50_95"] else None)},
        "target": {"max_gap_points": TARGET_GAP_POINTS, "gap_points": last.get("gap_points"),
                   "met": None if last.get("gap_points") is None else bool(last["gap_points"] <= TARGET_GAP_POINTS),
                   "on": "server test (generated, held out)"},
        "wall_s": {"federated_job_incl_central": round(t_job, 1), "federated": res["federated"].get("wall_s"),
                   "central_equal_steps_extra": round(t_central, 1), "total": round(time.monotonic() - t0, 1)},
        "versions": module_versions("flwr", "ray", "torch", "torch_pruning", "onnxruntime"),
    }
    if a.groups is not None:
        from pruning_tools.federated.tailored import load_groups_config, run_tailored

        gcfg, groups, hframes, budget = load_groups_config(a.groups)
        tg = time.monotonic()
        tail = run_tailored(gcfg, work / "groups", groups, progress=a.progress, heldout_frames=hframes,
                            group_budget=budget, control=True)
        out["groups"] = {"config": str(a.groups), "wall_s": round(time.monotonic() - tg, 1),
                         "group_budget": tail["group_budget"], "global_batches": tail["global"]["batches"],
                         "rows": [{"name": g["name"], "level": g["level"], "clients": g["clients"], "mix": g["mix"],
                                   "heldout": g["heldout"], "bytes_per_round": g["bytes_per_round"],
                                   "batches": g["batches"], "wall_s": g["wall_s"]}
                                  for g in tail["groups"]],
                         "global_bytes_per_round": tail["global"]["bytes_per_round"],
                         "conditions": tail["conditions"], "target": tail["target"],
                         "cross_map50_95": tail["cross_map50_95"], "global_wall_s": tail["global"]["wall_s"],
                         "control": tail.get("control")}
        if frames is not None:  # real KITTI frames are daytime: each level's Car AP there, next to the global one
            from pruning_tools.ultralytics_adapter import load_checkpoint as _load

            summ = json.loads((work / "groups" / "summary.json").read_text())
            out["groups"]["real_car_ap"] = {
                "frames": frames.description, "note": "KITTI object frames are daytime, mostly clear",
                **{c["level_name"]: car_ap(_load(c["path"])[0], frames, tuple(gcfg.imgsz)) for c in summ["checkpoints"]}}
    out["machine"] = machine
    out["machine_after"] = {"loadavg": machine_block().get("loadavg")}
    return out


def plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rounds"]
    rs = [r["round"] for r in rows]
    real = any(r["federated"].get("real_car_ap") is not None for r in rows)
    fig, axes = plt.subplots(1, 3 if real else 2, figsize=(15 if real else 10, 4.2))
    ax = axes[0]
    ax.plot(rs, [r["federated"]["test"]["map50_95"] for r in rows], "o-", label="federated (global, test)")
    if all("central" in r for r in rows):
        ax.plot(rs, [r["central"]["test"]["map50_95"] for r in rows], "s-", label="central, equal steps (test)")
    for cid in rows[0]["clients"]:
        ys = [r["clients"].get(cid, {}).get("map50_95") for r in rows]
        ax.plot(rs, [float("nan") if y is None else y for y in ys], ":", marker=".", label=f"vehicle {cid} (own val)")
    ax.axhline(result["dense"]["test"]["map50_95"], color="grey", lw=0.8, ls="--", label="dense start (test)")
    ax.set_xlabel("round")
    ax.set_ylabel("mAP50-95 (generated scenes)")
    ax.set_xticks(rs)
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.bar(rs, [r["bytes_down"] / 1e6 for r in rows], label="server -> vehicles")
    ax.bar(rs, [r["bytes_up"] / 1e6 for r in rows], bottom=[r["bytes_down"] / 1e6 for r in rows],
           label="vehicles -> server")
    ax.set_xlabel("round")
    ax.set_ylabel("MB per round")
    ax.set_xticks(rs)
    ax.legend(fontsize=7)
    if real:
        ax = axes[2]
        ax.plot(rs, [r["federated"]["real_car_ap"] for r in rows], "o-", label="federated")
        if all("central" in r for r in rows):
            ax.plot(rs, [r["central"]["real_car_ap"] for r in rows], "s-", label="central, equal steps")
        if result["dense"].get("real_car_ap") is not None:
            ax.axhline(result["dense"]["real_car_ap"], color="grey", lw=0.8, ls="--", label="dense start")
        ax.set_xlabel("round")
        ax.set_ylabel(f"real KITTI Car AP, IoU 0.7 ({result['data']['real_frames']} frames)")
        ax.set_xticks(rs)
        ax.legend(fontsize=7)
    fig.suptitle(f"federated pruning, {result['vehicles']} vehicles ({Path(result['config']).name})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=REPO / "pruning_tools" / "configs" / "federated_quick.yaml")
    p.add_argument("--groups", type=Path, default=None,
                   help="also run federated-groups on this fleet config (e.g. pruning_tools/configs/federated_groups.yaml)")
    p.add_argument("--work", type=Path, default=None, help="work folder (default: a new temp folder; reruns resume)")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--png", type=Path, default=None, help="plot per round (default: --json with .png)")
    p.add_argument("--real-root", type=Path, default=REPO.parent / "shared" / "data" / "kitti_object")
    p.add_argument("--real-frames", type=int, default=None, help="at most N real frames (default all; 25 with --quick)")
    p.add_argument("--quick", action="store_true", help="the config as given, real frames capped at 25")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.real_frames is None and a.quick:
        a.real_frames = 25
    result = run(a)
    png = plot(result, a.png or a.json.with_suffix(".png"))
    result["png"] = str(png)
    f = result["final"]
    summary = (f"federated mAP50-95 {f['federated_map50_95']:.4f}, central {f['central_map50_95']}, gap "
               f"{f['gap_points']} points (target <= {TARGET_GAP_POINTS}); bytes per round "
               f"{[round(b / 1e6, 1) for b in result['bytes_per_round']]} MB; plot {png}")
    write_result(a.json, result, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
