"""The vehicles' own data: generated scenes with each vehicle's condition mix (from its own seed, in its
own process) and a disjoint share of the real KITTI object train frames; the server's held-out set.

Nothing here sends data anywhere: a client builds its folders under ``RUN/clients/<id>/`` and trains
from them; only weights, masks, sums and metrics leave it (:mod:`pruning_tools.federated.client`).
The central baseline (:func:`pruning_tools.federated.run.run_central`) regenerates the same frames
from the same seeds — it stands for "all the data in one place", the comparison federated learning
is measured against.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pruning_tools.data.files import write_json
from pruning_tools.federated.config import ClientSpec, FederatedConfig

#: generated frames are split train/val/test on the vehicle
CLIENT_SPLIT = (0.8, 0.1, 0.1)
#: the server's held-out frames: val (per-round global mAP) and test (final numbers); train is unused
SERVER_SPLIT = (0.1, 0.45, 0.45)


@dataclass(frozen=True)
class ClientData:
    """A vehicle's datasets.

    :param generated: YOLO dataset of its generated scenes (train/val/test).
    :param real: YOLO dataset of its share of real KITTI train frames (train split only), or ``None``.
    :param real_ids: the real frame ids it holds.
    :param frames: generated frames.
    :param train_frames: generated train frames.
    """

    generated: Path
    real: Path | None
    real_ids: tuple[str, ...]
    frames: int
    train_frames: int


def real_shares(cfg: FederatedConfig) -> dict[str, list[str]]:
    """Disjoint shares of the real KITTI object *train* frames (``assets/kitti_real_split.json``), in
    config order; empty lists when ``kitti_root`` is absent. Val/test real frames are never shared out.

    :raises ValueError: when the vehicles ask for more frames than the train split has.
    """
    from pruning_tools.assets import ASSETS

    ids = json.loads((ASSETS / "kitti_real_split.json").read_text())["train"]
    want = sum(c.real_frames for c in cfg.clients)
    if want > len(ids):
        raise ValueError(f"clients ask for {want} real frames; the real train split has {len(ids)}")
    out: dict[str, list[str]] = {}
    have = cfg.kitti_path() is not None
    off = 0
    for c in cfg.clients:
        out[c.id] = list(ids[off:off + c.real_frames]) if have else []
        off += c.real_frames
    return out


def generated_dataset(root: Path, frames: int, seed: int, conditions: list[str], split: tuple[float, float, float],
                      progress: bool, tag: dict[str, Any] | None = None) -> Path:
    """Generate + convert once into ``root/{kitti,yolo}`` (a finished ``yolo/data.yaml`` made for the same
    request — ``tag`` included — is reused); :return: the YOLO dataset folder."""
    from pruning_tools.data.convert import convert_kitti
    from pruning_tools.data.generator import generate_dataset

    req = {**(tag or {}), "frames": frames, "seed": seed, "conditions": conditions, "split": list(split)}
    marker = root / "prepared.json"
    yolo = root / "yolo"
    if marker.is_file() and json.loads(marker.read_text()) == req and (yolo / "data.yaml").is_file():
        return yolo
    import shutil

    for d in (root / "kitti", yolo):
        shutil.rmtree(d, ignore_errors=True)
    generate_dataset(root / "kitti", frames, seed=seed, conditions=conditions, progress=progress)
    convert_kitti(root / "kitti", yolo, split=split, seed=seed, progress=progress)
    write_json(marker, req)
    return yolo


def prepare_client_data(cfg: FederatedConfig, spec: ClientSpec, root: Path, progress: bool = False) -> ClientData:
    """Build (or reuse) vehicle ``spec``'s datasets under ``root`` (its own folder).

    :return: :class:`ClientData`.
    """
    from pruning_tools.data.convert import convert_kitti

    root = Path(root)
    gen = generated_dataset(root / "generated", spec.frames, spec.seed, list(spec.conditions), CLIENT_SPLIT, progress)
    ids = real_shares(cfg)[spec.id]
    real = None
    if ids:
        real = root / "real" / "yolo"
        marker = root / "real" / "prepared.json"
        if not (marker.is_file() and json.loads(marker.read_text()) == ids and (real / "data.yaml").is_file()):
            import shutil

            shutil.rmtree(real, ignore_errors=True)
            real.parent.mkdir(parents=True, exist_ok=True)
            split_file = root / "real" / "splits.json"
            write_json(split_file, {"train": ids, "val": [], "test": []})
            convert_kitti(cfg.kitti_path(), real, split_file=split_file, only_ids=ids, progress=progress)
            write_json(marker, ids)
    n_train = len(list((gen / "images" / "train").iterdir()))
    return ClientData(gen, real, tuple(ids), spec.frames, n_train)


def server_conditions(cfg: FederatedConfig) -> list[str]:
    """The server's held-out mix: every client's conditions with the client's weights, one block per
    client (so each vehicle's mix is represented equally)."""
    out: list[str] = []
    for c in cfg.clients:
        out += list(c.conditions)
    return out


def prepare_server_data(cfg: FederatedConfig, root: Path, progress: bool = False) -> Path:
    """The server's held-out generated frames (val half: per-round global mAP; test half: the final
    federated/central numbers); they never train anything."""
    # the converter needs a train split: its tenth is never read
    return generated_dataset(Path(root), cfg.server_frames, cfg.server_seed, server_conditions(cfg), SERVER_SPLIT, progress)
