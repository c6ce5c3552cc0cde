"""Flower wiring of a federated job: the ClientApp (a vehicle) and the ServerApp (the fleet's server).

Both are thin: they turn Flower messages into calls of :mod:`pruning_tools.federated.core` and back.
Message types (Flower 1.42 Message API):

* ``query.rollcall`` (server -> every vehicle, at every start): reply ``client`` (its id, frame counts);
  the server learns which node is which vehicle (node ids change when a run is resumed).
* ``query.stage1`` (server -> every vehicle): ``arrays`` = the dense weights; reply ``sums``
  (``layer_sums`` and ``ch.<layer>``: per-layer and per-channel ``|grad|`` sums), ``metrics``
  (batches, samples) and ``client`` (id, frame counts).
* ``train`` (Flower's FedAvg/FedProx ``configure_train``): ``arrays`` = the global pruned weights,
  ``masks`` (``mask.<layer>``: 0/1 per channel, ``ratios``: per-layer ratios), ``config`` (round,
  schedule, proximal-mu);
  reply ``arrays`` (local weights) + ``metrics`` (num-examples, loss).
* ``evaluate`` (Flower's ``configure_evaluate``, and the final test): the same inputs; reply ``metrics``
  (map50_95, map50 on the vehicle's own held-out split).

Two ways to get the job: :func:`build_apps` binds a job file (the simulation engine, where the apps are
Python objects); the module-level :data:`client_app` / :data:`server_app` read ``job`` from the run
config (the deployment engine: ``flwr run APP --run-config 'job="RUN/job.json"'``).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from pruning_tools.federated.config import FederatedConfig
from pruning_tools.federated.job import read_job


# ------------------------------------------------------------------------------------ job
def _job_path(bound: str | None, context: Context) -> str:
    if bound:
        return bound
    job = context.run_config.get("job")
    if not job:
        raise ValueError("no federated job: run with --run-config 'job=\"RUN/job.json\"' (pruning-tools federated writes it)")
    return str(job)


def _partition(context: Context, cfg: FederatedConfig) -> int:
    pid = context.node_config.get("partition-id")
    if pid is None:
        raise ValueError("the SuperNode needs --node-config 'partition-id=N' (N: the vehicle's index in clients)")
    pid = int(pid)
    if not 0 <= pid < len(cfg.clients):
        raise ValueError(f"partition-id {pid} outside 0..{len(cfg.clients) - 1} (the config has {len(cfg.clients)} clients)")
    return pid


# ----------------------------------------------------------------------------- the vehicle
class _Vehicle:
    """A vehicle's process-local state: its data, the dense model, the pruning space."""

    def __init__(self, cfg: FederatedConfig, run_dir: Path, pid: int, progress: bool) -> None:
        import torch

        from pruning_tools.federated.core import build_space
        from pruning_tools.federated.data import prepare_client_data
        from pruning_tools.ultralytics_adapter import load_checkpoint

        torch.set_num_threads(cfg.threads)
        self.cfg, self.spec, self.progress = cfg, cfg.clients[pid], progress
        self.pid = pid
        self.root = run_dir / "clients" / self.spec.id
        self.data = prepare_client_data(cfg, self.spec, self.root, progress)
        self.dense, _ = load_checkpoint(cfg.baseline_path())
        self.space = build_space(self.dense, cfg)
        self._pruned_key: str | None = None
        self._pruned: Any = None

    def stream(self) -> Any:
        from pruning_tools.federated.core import make_stream

        parts = [self.data.generated] + ([self.data.real] if self.data.real else [])
        return make_stream(parts, self.cfg, self.spec.seed)

    def model_for(self, msg: Message) -> Any:
        """The pruned structure from the message's masks and ratios, loaded with its weights."""
        import copy

        from pruning_tools.federated.core import load_float_state, pruned_from_masks

        rec = msg.content["masks"]
        ratios = [float(r) for r in rec["ratios"].numpy()]
        masks = {k[len("mask."):]: v.numpy() for k, v in rec.items() if k.startswith("mask.")}
        key = json.dumps([round(r, 6) for r in ratios]) + str(sorted((k, int(np.sum(v))) for k, v in masks.items()))
        if key != self._pruned_key:
            self._pruned = pruned_from_masks(self.dense, self.space, ratios, masks)
            self._pruned_key = key
        model = copy.deepcopy(self._pruned)
        load_float_state(model, msg.content["arrays"].to_torch_state_dict())
        return model

    def client_record(self) -> ConfigRecord:
        return ConfigRecord({"id": self.spec.id, "frames": self.data.frames, "train_frames": self.data.train_frames,
                             "real_frames": len(self.data.real_ids)})


_VEHICLES: dict[tuple[str, int], _Vehicle] = {}
_LOCK = threading.Lock()


def _vehicle(job: str, context: Context) -> _Vehicle:
    cfg, run_dir, progress = read_job(job)
    pid = _partition(context, cfg)
    with _LOCK:
        v = _VEHICLES.get((job, pid))
        if v is None:
            v = _VEHICLES[(job, pid)] = _Vehicle(cfg, run_dir, pid, progress)
    return v


def _maybe_fail(v: _Vehicle, rnd: int) -> None:
    f = v.cfg.fault
    if f is not None and f.client == v.spec.id and f.round == rnd:
        raise RuntimeError(f"injected fault: vehicle {v.spec.id} fails in round {rnd}")


def build_client_app(job: str | None = None) -> ClientApp:
    """The vehicle's ClientApp; ``job``: a job file bound to it (else the run config's ``job``)."""
    app = ClientApp()

    @app.query("rollcall")
    def rollcall(msg: Message, context: Context) -> Message:
        v = _vehicle(_job_path(job, context), context)
        return Message(RecordDict({"client": v.client_record()}), reply_to=msg)

    @app.query("stage1")
    def stage1(msg: Message, context: Context) -> Message:
        from pruning_tools.federated.core import client_stage1, load_float_state

        v = _vehicle(_job_path(job, context), context)
        import copy

        model = copy.deepcopy(v.dense)
        load_float_state(model, msg.content["arrays"].to_torch_state_dict())
        sums = client_stage1(model, v.space, v.stream(), v.cfg.stage1_batches, v.progress)
        arrays = {"layer_sums": np.asarray(sums.layer_sums, np.float64)}
        arrays.update({f"ch.{k}": np.asarray(s, np.float64) for k, s in sums.channel_scores.items()})
        content = RecordDict({"sums": ArrayRecord({k: _array(a) for k, a in arrays.items()}),
                              "metrics": MetricRecord({"batches": sums.batches, "samples": sums.samples,
                                                       "num-examples": sums.samples, "partition-id": v.pid}),
                              "client": v.client_record()})
        return Message(content, reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        from pruning_tools.federated.core import float_state, local_finetune

        v = _vehicle(_job_path(job, context), context)
        cfgr = msg.content["config"]
        rnd, local, total = int(cfgr["round"]), int(cfgr["local-steps"]), int(cfgr["total-steps"])
        model = v.model_for(msg)
        _maybe_fail(v, rnd)
        teacher = v.dense if v.cfg.distill_weight > 0 else None
        odir = v.root / "optim"
        odir.mkdir(parents=True, exist_ok=True)
        out = local_finetune(model, v.stream(), v.cfg, (rnd - 1) * local, local, total, teacher,
                             float(cfgr.get("proximal-mu", 0.0)), optim_in=odir / f"round_{rnd - 1:03d}.pt",
                             optim_out=odir / f"round_{rnd:03d}.pt")
        content = RecordDict({"arrays": ArrayRecord(float_state(model)),
                              "metrics": MetricRecord({"num-examples": local * v.cfg.batch, "loss": out["loss"],
                                                       "partition-id": v.pid}),
                              "client": v.client_record()})
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        from pruning_tools.federated.core import evaluate_on

        v = _vehicle(_job_path(job, context), context)
        split = str(msg.content["config"].get("split", "val"))
        model = v.model_for(msg)
        res = evaluate_on(model, v.data.generated, split, v.cfg)
        content = RecordDict({"metrics": MetricRecord({"num-examples": res["images"], "map50_95": _num(res["map50_95"]),
                                                       "map50": _num(res["map50"]), "partition-id": v.pid}),
                              "client": v.client_record()})
        return Message(content, reply_to=msg)

    return app


def _array(a: np.ndarray) -> Any:
    from flwr.app import Array

    return Array(np.ascontiguousarray(a))


def _num(x: float) -> float:
    return -1.0 if x != x else float(x)  # MetricRecord has no NaN-free guarantee downstream: -1 = no ground truth


# ------------------------------------------------------------------------------ the server
def build_server_app(job: str | None = None) -> ServerApp:
    """The fleet server's ServerApp (:func:`pruning_tools.federated.server.serve`)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        from pruning_tools.federated.server import serve

        serve(grid, _job_path(job, context))

    return app


#: for the deployment engine (``flwr run``): the job comes from the run config's ``job``
client_app = build_client_app()
server_app = build_server_app()
