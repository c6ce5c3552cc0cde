"""Configuration of ``pruning-tools federated``: YAML or a dict -> frozen, validated dataclasses.

Unknown keys are rejected with their dotted path (``clients[1].frame``); wrong values raise
:class:`FederatedConfigError` naming the field.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from sparse_perception.runtime.conditions import CONDITION_KEYS

STRATEGIES = ("fedavg", "fedprox")
CENTRAL_SCHEDULES = ("equal_steps", "equal_batches")


class FederatedConfigError(ValueError):
    """Invalid federated configuration; the message names the key."""


@dataclass(frozen=True)
class ClientSpec:
    """One vehicle (a Flower client) and the data only it holds.

    :param id: a short name (``night``, ``fog``, ``day``).
    :param conditions: its condition mix: condition keys, repeats weight them
        (``[night_clear, night_clear, day_clear]`` is two thirds night).
    :param frames: generated scenes it holds (split train/val/test 0.8/0.1/0.1 on the vehicle).
    :param seed: its generator seed (its frames are generated in its own process from it).
    :param real_frames: how many of the real KITTI object *train* frames
        (``pruning_tools/assets/kitti_real_split.json``) it holds; vehicles get disjoint shares in
        config order. 0: none (also when ``../shared`` is absent: reported as 0 in ``clients``).
    """

    id: str
    conditions: tuple[str, ...]
    frames: int = 40
    seed: int = 0
    real_frames: int = 0

    def __post_init__(self) -> None:
        if not self.id or not str(self.id).replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"client id must be a non-empty name of letters, digits, '-' and '_', got {self.id!r}")
        if not self.conditions:
            raise ValueError(f"client {self.id}: conditions must name at least one condition key")
        bad = [c for c in self.conditions if c not in CONDITION_KEYS]
        if bad:
            raise ValueError(f"client {self.id}: unknown condition key(s) {bad}; known: {', '.join(CONDITION_KEYS)}")
        if self.frames < 10:
            raise ValueError(f"client {self.id}: frames must be >= 10 (train/val/test on the vehicle), got {self.frames}")
        if self.real_frames < 0:
            raise ValueError(f"client {self.id}: real_frames must be >= 0, got {self.real_frames}")

    def condition_mix(self) -> dict[str, float]:
        """Fraction of each condition key in the mix."""
        n = len(self.conditions)
        return {k: round(self.conditions.count(k) / n, 4) for k in dict.fromkeys(self.conditions)}


@dataclass(frozen=True)
class FaultSpec:
    """A fault injected for tests: ``client`` (its id) fails in ``round`` (1-based) of stage 3.

    :param mode: ``raise``: the vehicle's ClientApp raises mid-round (after receiving the weights,
        before training); Flower returns an error reply and the round goes on without it.
    """

    client: str
    round: int = 1
    mode: str = "raise"

    def __post_init__(self) -> None:
        if self.mode != "raise":
            raise ValueError(f"fault.mode must be 'raise', got {self.mode!r}")
        if self.round < 1:
            raise ValueError(f"fault.round must be >= 1, got {self.round}")


@dataclass(frozen=True)
class FederatedConfig:
    """A federated pruning job.

    :param name: run name.
    :param baseline: dense start checkpoint; ``None``: the shipped ``baseline_yolov5n.pt``.
    :param clients: the vehicles (at least 2).
    :param imgsz: network input (H, W), multiples of 32.
    :param crop_width: random full-height crop width of training batches (``None``: full width).
    :param target: global parameter-sparsity target of the pruned model (stage-1 budgets meet it).
    :param max_ratio: largest per-layer channel ratio.
    :param beta: skew of budgets by importance (0: uniform), as ``importance.beta`` of ``prune``.
    :param round_to: kept channels are multiples of this.
    :param stage1_batches: gradient batches each client accumulates in stage 1.
    :param rounds: stage-3 rounds (FedAvg/FedProx).
    :param local_steps: fine-tune batches per client per round.
    :param batch: images per batch (stage 1 and 3).
    :param lr0: fine-tune learning rate (cosine over all rounds to ``lr0 * 0.5``, as stage 3).
    :param bn_batches: BatchNorm re-estimation batches on the client after its local steps.
    :param strategy: ``fedavg`` or ``fedprox`` (proximal term ``proximal_mu``).
    :param proximal_mu: FedProx ``mu`` (0 with fedprox is FedAvg).
    :param distill_weight: distillation from the dense model on the client (0: off), as stage 3's.
    :param distill_temperature: its temperature.
    :param min_clients: fewest clients that must reply each round (fewer: the run stops with an error).
    :param round_timeout_s: how long the server waits for replies per round.
    :param server_frames: generated held-out frames the server keeps for global metrics (val:
        per-round global mAP, test: the final federated/central numbers), mixing every client's
        conditions; they never train anything.
    :param server_seed: their generator seed (distinct from every client's).
    :param kitti_root: real KITTI object root whose train frames the vehicles share
        (``real_frames`` each); relative paths resolve against the working directory, then the
        repository root; absent: no real frames (said in ``clients``).
    :param central: also train the central baseline on the union of the clients' data at equal steps.
    :param central_schedule: what "equal steps" means for it: ``equal_steps`` — as many optimiser steps
        as each vehicle takes (``rounds x local_steps``), each on a batch as large as the fleet's
        together (``batch x clients``) at ``lr0 / clients`` (the detection loss sums over the batch's
        images): the same images, the same number of sequential updates and the same step per image
        — FedAvg's first-order equivalent;
        ``equal_batches`` — every vehicle's batches one after another (``rounds x local_steps x clients``
        steps of ``batch``): the same images, ``clients`` times the sequential updates.
    :param threads: torch threads per process.
    :param fault: inject a client failure (tests).
    """

    name: str = "federated"
    baseline: str | None = None
    clients: tuple[ClientSpec, ...] = ()
    imgsz: tuple[int, int] = (192, 640)
    crop_width: int | None = 320
    target: float = 0.3
    max_ratio: float = 0.9
    beta: float = 0.5
    round_to: int = 8
    stage1_batches: int = 2
    rounds: int = 3
    local_steps: int = 4
    batch: int = 4
    lr0: float = 0.002
    bn_batches: int = 2
    strategy: str = "fedavg"
    proximal_mu: float = 0.0
    distill_weight: float = 0.0
    distill_temperature: float = 1.0
    min_clients: int = 2
    round_timeout_s: float = 1800.0
    server_frames: int = 24
    server_seed: int = 9000
    kitti_root: str | None = None
    central: bool = True
    central_schedule: str = "equal_steps"
    threads: int = 1
    fault: FaultSpec | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.clients) < 2:
            raise ValueError(f"clients: a fleet needs at least 2 vehicles, got {len(self.clients)}")
        ids = [c.id for c in self.clients]
        if len(set(ids)) != len(ids):
            raise ValueError(f"clients: ids must be unique, got {ids}")
        seeds = [c.seed for c in self.clients] + [self.server_seed]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"clients: every vehicle and the server need their own seed, got {seeds}")
        if len(self.imgsz) != 2 or any(int(v) % 32 or int(v) <= 0 for v in self.imgsz):
            raise ValueError(f"imgsz must be two positive multiples of 32, got {self.imgsz}")
        if self.crop_width is not None and (self.crop_width < 32 or self.crop_width % 32):
            raise ValueError(f"crop_width must be a multiple of 32 >= 32 (or null), got {self.crop_width}")
        if not 0 < self.target < 1:
            raise ValueError(f"target must be in (0, 1), got {self.target}")
        if not 0 < self.max_ratio < 1:
            raise ValueError(f"max_ratio must be in (0, 1), got {self.max_ratio}")
        for k in ("stage1_batches", "rounds", "local_steps", "batch", "round_to", "threads"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.bn_batches < 0:
            raise ValueError(f"bn_batches must be >= 0, got {self.bn_batches}")
        if not self.lr0 > 0:
            raise ValueError(f"lr0 must be > 0, got {self.lr0}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.proximal_mu < 0:
            raise ValueError(f"proximal_mu must be >= 0, got {self.proximal_mu}")
        if self.strategy == "fedavg" and self.proximal_mu:
            raise ValueError("proximal_mu is FedProx's: set strategy: fedprox (or proximal_mu: 0)")
        if self.distill_weight < 0 or not self.distill_temperature > 0:
            raise ValueError("distill_weight must be >= 0 and distill_temperature > 0")
        if not 1 <= self.min_clients <= len(self.clients):
            raise ValueError(f"min_clients must be in 1..{len(self.clients)}, got {self.min_clients}")
        if self.server_frames < 10:
            raise ValueError(f"server_frames must be >= 10 (val and test splits), got {self.server_frames}")
        if self.central_schedule not in CENTRAL_SCHEDULES:
            raise ValueError(f"central_schedule must be one of {', '.join(CENTRAL_SCHEDULES)}, got {self.central_schedule!r}")
        if self.fault is not None and self.fault.client not in ids:
            raise ValueError(f"fault.client {self.fault.client!r} is not a client id ({ids})")
        if self.fault is not None and self.fault.round > self.rounds:
            raise ValueError(f"fault.round {self.fault.round} is after the last round {self.rounds}")

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FederatedConfig":
        """Build from a plain dict (YAML / JSON); unknown keys and bad values raise
        :class:`FederatedConfigError` naming the key."""
        if not isinstance(data, Mapping):
            raise FederatedConfigError(f"a federated config must be a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise FederatedConfigError(f"unknown key(s) {unknown}; known: {', '.join(sorted(names))}")
        kw: dict[str, Any] = dict(data)
        clients = kw.get("clients", ())
        if not isinstance(clients, (list, tuple)):
            raise FederatedConfigError("clients must be a list of mappings")
        specs = []
        cnames = {f.name for f in dataclasses.fields(ClientSpec)}
        for i, c in enumerate(clients):
            if not isinstance(c, Mapping):
                raise FederatedConfigError(f"clients[{i}] must be a mapping")
            bad = sorted(set(c) - cnames)
            if bad:
                raise FederatedConfigError(f"clients[{i}]: unknown key(s) {bad}; known: {', '.join(sorted(cnames))}")
            try:
                cd = dict(c)
                if "conditions" in cd:
                    if isinstance(cd["conditions"], str) or not isinstance(cd["conditions"], (list, tuple)):
                        raise ValueError("conditions must be a list of condition keys")
                    cd["conditions"] = tuple(str(x) for x in cd["conditions"])
                specs.append(ClientSpec(**cd))
            except (TypeError, ValueError) as exc:
                raise FederatedConfigError(f"clients[{i}]: {exc}") from exc
        kw["clients"] = tuple(specs)
        if kw.get("fault") is not None:
            f = kw["fault"]
            if not isinstance(f, Mapping):
                raise FederatedConfigError("fault must be a mapping {client, round, mode}")
            try:
                kw["fault"] = FaultSpec(**dict(f))
            except (TypeError, ValueError) as exc:
                raise FederatedConfigError(f"fault: {exc}") from exc
        if "imgsz" in kw:
            kw["imgsz"] = tuple(int(v) for v in kw["imgsz"])
        try:
            return cls(**kw)
        except (TypeError, ValueError) as exc:
            raise FederatedConfigError(str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; ``from_dict(to_dict())`` gives an equal config."""
        d = dataclasses.asdict(self)
        d["imgsz"] = list(self.imgsz)
        d["clients"] = [{**dataclasses.asdict(c), "conditions": list(c.conditions)} for c in self.clients]
        return d

    def baseline_path(self) -> Path:
        from pruning_tools.assets import DEFAULT_BASELINE

        return Path(self.baseline) if self.baseline else DEFAULT_BASELINE

    def kitti_path(self) -> Path | None:
        """The real KITTI object root, or ``None`` when not configured or absent here."""
        if not self.kitti_root:
            return None
        p = Path(self.kitti_root)
        repo = Path(__file__).resolve().parents[2]
        for cand in ([p] if p.is_absolute() else [Path.cwd() / p, repo / p]):
            if (cand / "training" / "image_2").is_dir() or (cand / "image_2").is_dir():
                return cand
        return None

    def client(self, cid: str) -> ClientSpec:
        for c in self.clients:
            if c.id == cid:
                return c
        raise KeyError(cid)


def read_config_mapping(path: str | Path) -> dict[str, Any]:
    """The YAML mapping in ``path`` (empty file: ``{}``); a missing file, bad YAML or a non-mapping raise
    :class:`FederatedConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FederatedConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise FederatedConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise FederatedConfigError(f"{path}: a federated config must be a mapping")
    return data


def load_config(path: str | Path) -> FederatedConfig:
    """Read a YAML federated config; errors name the file."""
    data = read_config_mapping(path)
    try:
        return FederatedConfig.from_dict(data)
    except FederatedConfigError as exc:
        raise FederatedConfigError(f"{path}: {exc}") from exc
