"""The fleet server's work (inside the ServerApp): federated stage 1, the one-time surgery, the
stage-3 rounds with Flower's FedAvg / FedProx, per-round checkpoints and resume.

Files under ``RUN/server/`` (each written whole or not at all):

* ``stage1.pt`` + ``stage1.json`` — aggregated sums, budgets (ratios) and keep masks, the vehicles;
* ``round_NNN.pt`` — the global weights after round ``NNN``; ``rounds.json`` — one entry per finished
  round (per-client and global metrics, bytes up/down, wall time). A rerun resumes after the last one;
* ``wire.jsonl`` — every message the server sent or received: its records, each array's key, shape
  and dtype, every metric/config key (what crossed the wire; the wire test reads it);
* ``RUN/federated/model.pt`` — the final global model (:func:`save_checkpoint`).
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx

from pruning_tools.data.files import write_json
from pruning_tools.federated.job import ROLL_CALL, STAGE1, read_job
from pruning_tools.federated.config import FederatedConfig
from pruning_tools.federated.core import Stage1Sums


class FederatedError(RuntimeError):
    """The federated run cannot go on (too few vehicles replied, inconsistent replies)."""


def record_bytes(rd: RecordDict) -> int:
    """Bytes of a message's arrays (the payload FedAvg moves), summed over its ArrayRecords."""
    return int(sum(ar.count_bytes() for ar in rd.array_records.values()))


class Wire:
    """Logs what every message carries (``wire.jsonl``) and counts array bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def log(self, direction: str, phase: str, msgs: Iterable[Message]) -> int:
        total = 0
        lines = []
        for m in msgs:
            entry: dict[str, Any] = {"dir": direction, "phase": phase, "type": m.metadata.message_type,
                                     "node": int(m.metadata.dst_node_id if direction == "down" else m.metadata.src_node_id)}
            if m.has_error():
                entry["error"] = str(m.error.reason)[:300]
            else:
                rd = m.content
                entry["arrays"] = {rk: {k: {"shape": list(a.shape), "dtype": str(a.dtype)} for k, a in ar.items()}
                                   for rk, ar in rd.array_records.items()}
                entry["metrics"] = {rk: sorted(mr.keys()) for rk, mr in rd.metric_records.items()}
                entry["configs"] = {rk: {k: type(v).__name__ for k, v in cr.items()} for rk, cr in rd.config_records.items()}
                entry["bytes"] = record_bytes(rd)
                total += entry["bytes"]
            lines.append(json.dumps(entry))
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as fh:
                fh.write("".join(line + "\n" for line in lines))
        return total


def _masks_record(masks: dict[str, np.ndarray], ratios: Any) -> ArrayRecord:
    from flwr.app import Array

    rec = {f"mask.{k}": Array(np.ascontiguousarray(v, dtype=np.int8)) for k, v in masks.items()}
    rec["ratios"] = Array(np.asarray(ratios, dtype=np.float64))
    return ArrayRecord(rec)


def make_strategy(cfg: FederatedConfig, masks: dict[str, np.ndarray], ratios: Any, wire: Wire,
                  names: dict[int, str]) -> Any:
    """Flower's FedAvg or FedProx, recording per-client replies and bytes, adding the masks to every
    message (the vehicles rebuild the pruned structure from them) and failing when fewer than
    ``min_clients`` vehicles reply.

    A vehicle that dies (its SuperNode gone) is survived with Flower's own means: the ``min_*`` node
    counts are ``min_clients`` (not the fleet's size), so with ``fraction_train``/``fraction_evaluate`` 1.0
    Flower samples every vehicle *connected* at the time (``grid.get_node_ids()`` lists only nodes whose
    heartbeat is current); a message to a node that went offline comes back as an error reply
    ("node unavailable", once the SuperLink misses its heartbeats) and a node that neither replies nor
    drops out is cut off by the round's ``timeout``. Both end up in the round's ``failed`` list."""
    base = FedProx if cfg.strategy == "fedprox" else FedAvg
    n = len(cfg.clients)
    m = cfg.min_clients
    kw: dict[str, Any] = {"min_train_nodes": m, "min_evaluate_nodes": m, "min_available_nodes": m}
    if cfg.strategy == "fedprox":
        kw["proximal_mu"] = cfg.proximal_mu
    mrec = _masks_record(masks, ratios)

    class Fleet(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(**kw)
            self.log: dict[str, Any] = {"train": {}, "evaluate": {}, "failed": [], "bytes_down": 0, "bytes_up": 0,
                                        "sampled": {"train": [], "evaluate": []}}
            self._sent: dict[str, list[Message]] = {"train": [], "evaluate": []}

        def _sample(self, kind: str, msgs: list[Message]) -> list[Message]:
            self._sent[kind] = msgs  # the Grid sets their message ids when it pushes them
            self.log["sampled"][kind] = sorted(names.get(int(m.metadata.dst_node_id), str(m.metadata.dst_node_id))
                                               for m in msgs)
            return msgs

        def _add_masks(self, msgs: Iterable[Message]) -> list[Message]:
            out = list(msgs)
            for m in out:
                m.content["masks"] = mrec
            return out

        def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Any:
            # Flower's sample_nodes waits (forever) for min_available_nodes: fail clearly instead
            wait_nodes(grid, cfg.min_clients, cfg.min_clients, cfg.round_timeout_s, f"round {server_round} (train)")
            msgs = self._sample("train", self._add_masks(super().configure_train(server_round, arrays, config, grid)))
            self.log["bytes_down"] += wire.log("down", "train", msgs)
            return msgs

        def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Any:
            wait_nodes(grid, cfg.min_clients, cfg.min_clients, cfg.round_timeout_s, f"round {server_round} (evaluate)")
            msgs = self._sample("evaluate", self._add_masks(super().configure_evaluate(server_round, arrays, config, grid)))
            self.log["bytes_down"] += wire.log("down", "evaluate", msgs)
            return msgs

        def _note(self, kind: str, replies: list[Message]) -> list[Message]:
            self.log["bytes_up"] += wire.log("up", kind, replies)
            # a reply's vehicle: the node its message went to (the SuperLink itself is the source of a
            # "node unavailable" error reply)
            to = {m.metadata.message_id: int(m.metadata.dst_node_id) for m in self._sent[kind]}
            answered = set()
            for m in replies:
                node = to.get(m.metadata.reply_to_message_id, int(m.metadata.src_node_id))
                answered.add(node)
                if m.has_error():
                    self.log["failed"].append({"phase": kind, "node": node, "client": names.get(node),
                                               "reason": str(m.error.reason)[:300]})
                    continue
                cid = str(m.content["client"]["id"]) if "client" in m.content.config_records else names.get(node)
                names[node] = cid
                self.log[kind][cid] = {k: float(v) for k, v in m.content["metrics"].items() if k != "partition-id"}
            # sent but neither answered nor reported offline before the round's timeout
            for node in sorted(set(to.values()) - answered):
                self.log["failed"].append({"phase": kind, "node": node, "client": names.get(node),
                                           "reason": f"no reply within round_timeout_s={cfg.round_timeout_s:g} s"})
            return replies

        def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> Any:
            replies = self._note("train", list(replies))
            ok = [m for m in replies if not m.has_error()]
            if len(ok) < cfg.min_clients:
                raise FederatedError(f"round {server_round}: only {len(ok)} of {n} vehicles finished the round; "
                                     f"min_clients is {cfg.min_clients}; failures: {self.log['failed']}")
            return super().aggregate_train(server_round, ok)

        def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> Any:
            replies = self._note("evaluate", list(replies))
            return super().aggregate_evaluate(server_round, [m for m in replies if not m.has_error()])

    return Fleet()


def wait_nodes(grid: Grid, want: int, need: int, timeout: float, what: str) -> list[int]:
    """The connected vehicles' node ids, once ``want`` are connected or ``timeout`` s have passed;
    :raises FederatedError: fewer than ``need`` connected by then."""
    t0 = time.monotonic()
    while len(ids := list(grid.get_node_ids())) < want:
        if time.monotonic() - t0 > timeout:
            if len(ids) >= need:
                break
            raise FederatedError(f"{what}: only {len(ids)} vehicles connected within {timeout:.0f} s; "
                                 f"min_clients is {need}")
        time.sleep(0.5)
    return sorted(ids)


def _roll_call(grid: Grid, cfg: FederatedConfig, wire: Wire) -> dict[int, str]:
    """Which node is which vehicle (asked at every start: node ids are new in a resumed run)."""
    nodes = wait_nodes(grid, len(cfg.clients), cfg.min_clients, cfg.round_timeout_s, "roll call")
    msgs = [Message(RecordDict(), dst_node_id=nid, message_type=ROLL_CALL) for nid in nodes]
    wire.log("down", "rollcall", msgs)
    replies = list(grid.send_and_receive(msgs, timeout=cfg.round_timeout_s))
    wire.log("up", "rollcall", replies)
    return {int(m.metadata.src_node_id): str(m.content["client"]["id"]) for m in replies if not m.has_error()}


def _stage1(grid: Grid, cfg: FederatedConfig, dense: Any, space: Any, wire: Wire, sdir: Path) -> dict[str, Any]:
    """Federated stage 1 (or its saved result)."""
    from pruning_tools.federated.core import aggregate_stage1, budgets, float_state, keep_masks

    done = sdir / "stage1.pt"
    if done.is_file():
        saved = torch.load(done, map_location="cpu", weights_only=True)
        meta = json.loads((sdir / "stage1.json").read_text())
        return {"ratios": [float(r) for r in saved["ratios"]],
                "masks": {k: v.numpy() for k, v in saved["masks"].items()}, **meta}
    t0 = time.monotonic()
    nodes = wait_nodes(grid, len(cfg.clients), cfg.min_clients, cfg.round_timeout_s, "stage 1")
    arrays = ArrayRecord(float_state(dense))
    msgs = [Message(RecordDict({"arrays": arrays}), dst_node_id=nid, message_type=STAGE1) for nid in nodes]
    down = wire.log("down", "stage1", msgs)
    replies = list(grid.send_and_receive(msgs, timeout=cfg.round_timeout_s))
    up = wire.log("up", "stage1", replies)
    ok = [m for m in replies if not m.has_error()]
    failed = [{"node": int(m.metadata.src_node_id), "reason": str(m.error.reason)[:300]} for m in replies if m.has_error()]
    if len(ok) < cfg.min_clients:
        raise FederatedError(f"stage 1: only {len(ok)} of {len(nodes)} vehicles replied (min_clients {cfg.min_clients}); "
                             f"failures: {failed}")
    parts, clients = [], []
    for m in ok:
        sums = m.content["sums"]
        met = m.content["metrics"]
        parts.append(Stage1Sums(sums["layer_sums"].numpy().astype(np.float64),
                                {k[3:]: sums[k].numpy().astype(np.float64) for k in sums.keys() if k.startswith("ch.")},
                                int(met["batches"]), int(met["samples"])))
        c = m.content["client"]
        spec = cfg.client(str(c["id"]))
        clients.append({"id": spec.id, "node": int(m.metadata.src_node_id), "conditions": list(spec.conditions),
                        "condition_mix": spec.condition_mix(), "seed": spec.seed,
                        "n_frames": int(c["frames"]), "train_frames": int(c["train_frames"]),
                        "real_frames": int(c["real_frames"]), "stage1_batches": int(met["batches"]),
                        "stage1_samples": int(met["samples"])})
    # keep the order of the config (node ids are random)
    order = {c.id: i for i, c in enumerate(cfg.clients)}
    clients.sort(key=lambda c: order[c["id"]])
    agg = aggregate_stage1(parts)
    ratios = budgets(space, agg, cfg)
    masks = keep_masks(space, ratios, agg.channel_scores)
    meta = {"clients": clients, "failed": failed, "bytes_down": down, "bytes_up": up,
            "wall_s": round(time.monotonic() - t0, 2), "batches": agg.batches, "samples": agg.samples,
            "layer_importance": {layer.name: float(v) for layer, v in zip(space.layers, agg.layer_sums / max(agg.batches, 1))},
            "param_sparsity": float(space.param_sparsity(ratios))}
    torch.save({"ratios": torch.as_tensor(np.asarray(ratios, dtype=np.float64)),
                "masks": {k: torch.as_tensor(v) for k, v in masks.items()}}, sdir / ".stage1.pt.tmp")
    (sdir / ".stage1.pt.tmp").replace(done)
    write_json(sdir / "stage1.json", meta)
    return {"ratios": [float(r) for r in ratios], "masks": masks, **meta}


def _last_round(sdir: Path, rounds: int) -> tuple[int, list[dict[str, Any]]]:
    path = sdir / "rounds.json"
    if not path.is_file():
        return 0, []
    entries = json.loads(path.read_text())
    k = len(entries)
    while k > 0 and not (sdir / f"round_{k:03d}.pt").is_file():
        k -= 1
    return min(k, rounds), entries[:k]


def serve(grid: Grid, job: str | Path) -> dict[str, Any]:
    """The whole server side of a job; see the module docstring. :return: the ``federated`` summary."""
    from pruning_tools.federated.core import build_space, evaluate_on, float_state, load_float_state, prune_once
    from pruning_tools.federated.data import prepare_server_data
    from pruning_tools.ultralytics_adapter import load_checkpoint, save_checkpoint

    cfg, run_dir, progress = read_job(job)
    torch.set_num_threads(cfg.threads)
    sdir = run_dir / "server"
    sdir.mkdir(parents=True, exist_ok=True)
    wire = Wire(sdir / "wire.jsonl")
    dense, _ = load_checkpoint(cfg.baseline_path())
    space = build_space(dense, cfg)
    names = _roll_call(grid, cfg, wire)
    s1 = _stage1(grid, cfg, dense, space, wire, sdir)
    ratios, masks = s1["ratios"], s1["masks"]
    model = prune_once(dense, space, ratios, masks)
    server_data = prepare_server_data(cfg, run_dir / "server" / "data", progress)
    done, entries = _last_round(sdir, cfg.rounds)
    if done:
        load_float_state(model, torch.load(sdir / f"round_{done:03d}.pt", map_location="cpu", weights_only=True))
    total = cfg.rounds * cfg.local_steps
    for rnd in range(done + 1, cfg.rounds + 1):
        t0 = time.monotonic()
        strategy = make_strategy(cfg, masks, ratios, wire, names)
        common = {"round": rnd}
        result = strategy.start(grid, ArrayRecord(float_state(model)), num_rounds=1, timeout=cfg.round_timeout_s,
                                train_config=ConfigRecord({**common, "local-steps": cfg.local_steps, "total-steps": total}),
                                evaluate_config=ConfigRecord({**common, "split": "val"}))
        if result.arrays is None or not len(result.arrays):
            raise FederatedError(f"round {rnd}: no weights aggregated (every vehicle failed?)")
        load_float_state(model, result.arrays.to_torch_state_dict())
        glob = evaluate_on(model, server_data, "val", cfg)
        log = strategy.log
        entry = {"round": rnd, "wall_s": round(time.monotonic() - t0, 2),
                 "bytes_down": int(log["bytes_down"]), "bytes_up": int(log["bytes_up"]),
                 "clients": {cid: {"train": log["train"].get(cid), "val": log["evaluate"].get(cid)}
                             for cid in [c.id for c in cfg.clients]},
                 "sampled": log["sampled"], "failed": log["failed"],
                 "global": {"split": "server val (generated, held out)", **glob}}
        torch.save(float_state(model), sdir / f".round_{rnd:03d}.pt.tmp")
        (sdir / f".round_{rnd:03d}.pt.tmp").replace(sdir / f"round_{rnd:03d}.pt")
        entries.append(entry)
        write_json(sdir / "rounds.json", entries)
        if progress:
            print(f"federated round {rnd}/{cfg.rounds}: global val mAP50-95 {glob['map50_95']:.4f}, "
                  f"{entry['bytes_down'] + entry['bytes_up']} bytes, {entry['wall_s']} s", flush=True)
    out_model = run_dir / "federated" / "model.pt"
    save_checkpoint(model, out_model, {"kind": "federated", "ratios": list(ratios), "rounds": cfg.rounds})
    summary = {"stage1": {k: v for k, v in s1.items() if k != "masks"}, "rounds": entries, "model": str(out_model)}
    write_json(sdir / "summary.json", summary)
    return summary
