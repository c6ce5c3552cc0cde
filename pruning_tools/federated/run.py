"""``pruning-tools federated``: a federated pruning job end to end, and the central baseline.

::

    pruning-tools federated --config pruning_tools/configs/federated_quick.yaml --out RUN [--ray ADDRESS] [--no-progress]

Runs the Flower ServerApp and one ClientApp per vehicle on Flower's simulation engine (a local Ray on
127.0.0.1, or the cluster at ``--ray ADDRESS``), then the central baseline (the same stages and the
same number of fine-tune batches on the union of the vehicles' data), evaluates both on the same
held-out frames and writes ``RUN/results.json``. Rerunning resumes after the last finished round
(and reuses a finished central model).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from pruning_tools.data.files import write_json
from pruning_tools.federated.config import FederatedConfig, FederatedConfigError, load_config
from pruning_tools.federated.job import write_job

#: the issue's target: federated within this many mAP50-95 points of central at equal steps
TARGET_GAP_POINTS = 1.5


def _init_ray(address: str | None, cfg: FederatedConfig) -> None:
    import ray

    from pruning_tools.pipeline.ray_executor import _is_loopback, parse_address

    if ray.is_initialized():
        return
    addr, host = parse_address(address or "local")
    if _is_loopback(host):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    kw: dict[str, Any] = {"include_dashboard": False} if addr == "local" else {}
    if addr == "local":  # a local Ray on loopback only
        kw["num_cpus"] = max(1, min(len(cfg.clients), os.cpu_count() or 1))
        kw["_node_ip_address"] = "127.0.0.1"
    try:
        ray.init(address=addr, **kw)
    except (ConnectionError, TimeoutError, RuntimeError) as exc:
        raise ConnectionError(f"cannot reach Ray at {addr!r}: {exc}") from exc


def run_simulation_job(cfg: FederatedConfig, run_dir: Path, ray_address: str | None = None,
                       progress: bool = True) -> dict[str, Any]:
    """The federated half on Flower's simulation engine. :return: the server's summary."""
    import json

    import ray
    from flwr.simulation import run_simulation

    from pruning_tools.federated.apps import build_client_app, build_server_app

    run_dir = Path(run_dir).resolve()
    job = str(write_job(cfg, run_dir, progress))
    summary = run_dir / "server" / "summary.json"
    summary.unlink(missing_ok=True)
    import logging

    if not progress:  # Flower logs every round's records at INFO
        logging.getLogger("flwr").setLevel(logging.WARNING)
    _init_ray(ray_address, cfg)
    try:
        run_simulation(server_app=build_server_app(job), client_app=build_client_app(job),
                       num_supernodes=len(cfg.clients),
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
                       verbose_logging=False)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    if not summary.is_file():
        raise RuntimeError(f"the federated run stopped before its end (see the log above); rerun to resume "
                           f"from {run_dir / 'server'}")
    return json.loads(summary.read_text())


def run_central(cfg: FederatedConfig, run_dir: Path, progress: bool = True) -> dict[str, Any]:
    """The central baseline: stage 1 over the union of the vehicles' data with as many gradient batches
    as the fleet together, the same budgets code and surgery, then fine-tuning on the same number of
    images as the fleet (``cfg.central_schedule``: ``rounds x local_steps`` steps of ``batch x clients``
    images, or ``rounds x local_steps x clients`` steps of ``batch``) with the same schedule shape,
    distillation and BN re-estimation. Its data are the vehicles' frames regenerated from their seeds under
    ``RUN/central/data`` (the baseline *is* "all the data in one place").

    :return: ``{"model": path, "ratios", "param_sparsity", "steps", "wall_s"}``.
    """
    import json

    import torch

    from pruning_tools.federated.core import (aggregate_stage1, budgets, build_space, client_stage1, keep_masks,
                                              local_finetune, make_stream, prune_once)
    from pruning_tools.federated.data import prepare_client_data
    from pruning_tools.ultralytics_adapter import load_checkpoint, save_checkpoint

    out = Path(run_dir) / "central"
    model_path = out / "model.pt"
    info_path = out / "central.json"
    if model_path.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("config") == cfg.to_dict():
            return info
    torch.set_num_threads(cfg.threads)
    t0 = time.monotonic()
    parts = []
    for spec in cfg.clients:
        d = prepare_client_data(cfg, spec, out / "data" / spec.id, progress)
        parts += [d.generated] + ([d.real] if d.real else [])
    dense, _ = load_checkpoint(cfg.baseline_path())
    space = build_space(dense, cfg)
    n = len(cfg.clients)
    stream = make_stream(parts, cfg, cfg.seed)
    s1 = aggregate_stage1([client_stage1(dense, space, stream, cfg.stage1_batches * n, progress)])
    ratios = budgets(space, s1, cfg)
    masks = keep_masks(space, ratios, s1.channel_scores)
    model = prune_once(dense, space, ratios, masks)
    ccfg = cfg
    if cfg.central_schedule == "equal_steps":
        # Ultralytics' detection loss is summed over the batch's images: a batch n x larger has an n x
        # larger gradient. lr0 / n keeps the step per image equal to the vehicles' (FedAvg of n vehicles'
        # steps of `batch` images is, to first order, one step of n x `batch` images at lr0 / n).
        steps, batch = cfg.rounds * cfg.local_steps, cfg.batch * n
        ccfg = dataclasses.replace(cfg, batch=batch, lr0=cfg.lr0 / n)
        stream = make_stream(parts, ccfg, cfg.seed)
    else:
        steps, batch = cfg.rounds * cfg.local_steps * n, cfg.batch
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc="central fine-tune", unit="batch", mininterval=1.0)
    res = local_finetune(model, stream, ccfg, 0, steps, steps, dense if cfg.distill_weight > 0 else None, 0.0, bar)
    if bar is not None:
        bar.close()
    save_checkpoint(model, model_path, {"kind": "central", "ratios": [float(r) for r in ratios]})
    info = {"config": cfg.to_dict(), "model": str(model_path), "ratios": [float(r) for r in ratios],
            "param_sparsity": float(space.param_sparsity(ratios)), "stage1_batches": s1.batches,
            "schedule": cfg.central_schedule, "steps": steps, "batch": batch, "images": steps * batch,
            "lr0": ccfg.lr0, "final_loss": res["loss"], "wall_s": round(time.monotonic() - t0, 1)}
    write_json(info_path, info)
    return info


def evaluate_models(cfg: FederatedConfig, run_dir: Path, models: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every model on the server's held-out test frames and on each vehicle's own test split (the
    vehicles' frames as regenerated for the central baseline: the same files the vehicles hold)."""
    from pruning_tools.federated.core import evaluate_on
    from pruning_tools.federated.data import prepare_client_data, prepare_server_data

    server = prepare_server_data(cfg, Path(run_dir) / "server" / "data")
    out: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        res = {"split": "server test (generated, held out, every vehicle's conditions)",
               **evaluate_on(model, server, "test", cfg), "per_client": {}}
        for spec in cfg.clients:
            d = prepare_client_data(cfg, spec, Path(run_dir) / "central" / "data" / spec.id)
            res["per_client"][spec.id] = {"split": f"{spec.id} test (generated)", **evaluate_on(model, d.generated, "test", cfg)}
        out[name] = res
    return out


def run_federated(config: Mapping[str, Any] | FederatedConfig, out: str | Path, ray_address: str | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """A federated job from a config dict (or :class:`FederatedConfig`) into folder ``out``.

    :return: the results dict also written to ``out/results.json`` (and the per-round plot ``out/rounds.png``): ``rounds``, ``clients``,
        ``federated`` / ``central`` / ``dense`` (``map50_95``, ``map50``, per-client), ``stage1``,
        ``target`` (the 1.5-point gap), ``wall_s``.
    :raises FederatedConfigError: a bad config. :raises ConnectionError: Ray unreachable.
    """
    from pruning_tools.ultralytics_adapter import load_checkpoint

    cfg = config if isinstance(config, FederatedConfig) else FederatedConfig.from_dict(config)
    run_dir = Path(out).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    fed = run_simulation_job(cfg, run_dir, ray_address, progress)
    t_fed = time.monotonic() - t0
    models: dict[str, Any] = {"federated": load_checkpoint(fed["model"])[0], "dense": load_checkpoint(cfg.baseline_path())[0]}
    central = None
    if cfg.central:
        central = run_central(cfg, run_dir, progress)
        models["central"] = load_checkpoint(central["model"])[0]
    evals = evaluate_models(cfg, run_dir, models)
    results: dict[str, Any] = {
        "name": cfg.name, "engine": "flwr simulation (Ray" + (f" at {ray_address})" if ray_address else ", local 127.0.0.1)"),
        "data": "generated scenes (pruning_tools.data.generator)" + (" + real KITTI object train frames"
                                                                      if any(c["real_frames"] for c in fed["stage1"]["clients"]) else ""),
        "config": cfg.to_dict(),
        "rounds": fed["rounds"],
        "clients": [{**c, "test": {m: evals[m]["per_client"][c["id"]] for m in evals}} for c in fed["stage1"]["clients"]],
        "stage1": {k: v for k, v in fed["stage1"].items() if k != "clients"},
        "federated": {**evals["federated"], "steps_per_client": cfg.rounds * cfg.local_steps, "batch": cfg.batch,
                      "train_images": cfg.rounds * cfg.local_steps * len(cfg.clients) * cfg.batch,
                      "steps_total": cfg.rounds * cfg.local_steps * len(cfg.clients), "wall_s": round(t_fed, 1)},
        "dense": evals["dense"],
        "bytes_per_round": [r["bytes_down"] + r["bytes_up"] for r in fed["rounds"]],
    }
    if central is not None:
        results["central"] = {**evals["central"], "schedule": central["schedule"], "steps_total": central["steps"],
                              "batch": central["batch"], "lr0": central["lr0"], "train_images": central["images"],
                              "wall_s": central["wall_s"],
                              "param_sparsity": central["param_sparsity"]}
        gap = 100.0 * (results["central"]["map50_95"] - results["federated"]["map50_95"])
        results["target"] = {"max_gap_points": TARGET_GAP_POINTS, "gap_points": round(gap, 3),
                             "met": bool(gap <= TARGET_GAP_POINTS),
                             "on": "server test (generated, held out)"}
    results["wall_s"] = round(time.monotonic() - t0, 1)
    write_json(run_dir / "results.json", results)
    plot_rounds(results, run_dir / "rounds.png")
    return results


def plot_rounds(results: Mapping[str, Any], path: Path) -> Path:
    """Per round: the global model's mAP50-95 on the server's val frames and each vehicle's on its own
    val split, the final federated / central / dense test numbers as lines, and the bytes per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in results["rounds"]]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax.plot(rounds, [100 * r["global"]["map50_95"] for r in results["rounds"]], "k-o", label="global (server val)")
    for c in results["clients"]:
        ys = [100 * ((r["clients"].get(c["id"]) or {}).get("val") or {}).get("map50_95", float("nan"))
              for r in results["rounds"]]
        ax.plot(rounds, ys, "--.", label=f"{c['id']} (own val)")
    for name, style in (("federated", "C0:"), ("central", "C3:"), ("dense", "C7:")):
        if name in results:
            ax.axhline(100 * results[name]["map50_95"], color=style[:2], ls=":", label=f"{name} (server test)")
    ax.set_xlabel("round")
    ax.set_ylabel("mAP50-95 (points)")
    ax.set_xticks(rounds)
    ax.legend(fontsize=7)
    ax.set_title(f"{results.get('name', '')}: generated scenes", fontsize=9)
    bx.bar(rounds, [r["bytes_down"] / 1e6 for r in results["rounds"]], label="down (server -> vehicles)")
    bx.bar(rounds, [r["bytes_up"] / 1e6 for r in results["rounds"]], bottom=[r["bytes_down"] / 1e6 for r in results["rounds"]],
           label="up (vehicles -> server)")
    bx.set_xlabel("round")
    bx.set_ylabel("MB of arrays per round")
    bx.set_xticks(rounds)
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pruning-tools federated", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="federated YAML (pruning_tools/configs/federated_quick.yaml)")
    p.add_argument("--out", type=Path, required=True, help="run folder (results.json, per-round checkpoints; rerun resumes)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run the simulation engine on this Ray cluster (HOST:PORT, 'auto'); default: a local Ray on 127.0.0.1")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or per-round lines")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        cfg = load_config(a.config)
        if a.ray is not None:
            from pruning_tools.pipeline.ray_executor import parse_address

            parse_address(a.ray)
    except (FederatedConfigError, ValueError) as exc:
        print(f"pruning-tools federated: {exc}", file=sys.stderr)
        return 2
    try:
        res = run_federated(cfg, a.out, a.ray, progress=not a.no_progress)
    except (FederatedConfigError, ConnectionError, ValueError) as exc:
        print(f"pruning-tools federated: {exc}", file=sys.stderr)
        return 2
    line = f"federated mAP50-95 {res['federated']['map50_95']:.4f}"
    if "central" in res:
        line += f", central {res['central']['map50_95']:.4f} (gap {res['target']['gap_points']:+.2f} points)"
    print(f"{line}; results: {Path(a.out) / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
