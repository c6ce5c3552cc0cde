"""``pruning-tools train-baseline``: train/fine-tune the dense baseline on a KITTI-derived YOLO dataset.

Typical use (offline, after ``pruning-tools kitti convert``)::

    pruning-tools train-baseline --data runs/yolo_kitti --cfg yolov5n.yaml --epochs 8 \\
        --out pruning_tools/assets/baseline_yolov5n.pt

Writes the checkpoint (:func:`pruning_tools.ultralytics_adapter.save_checkpoint`, ``weights_only``
loadable) and a JSON sidecar (same stem) with sha256, class names, the commands used and the
mAP measured on the test split at 384x1248 with :mod:`pruning_tools.train.evaluate`.

``--init-from`` optionally starts from another checkpoint: this project's format, or an original
YOLOv5-repository ``.pt`` (e.g. COCO-pretrained ``yolov5n.pt``), whose backbone and neck tensors
are read with a restricted unpickler (only torch tensor/module classes are allowed; YOLOv5 classes
become inert stubs) and copied by name where shapes match. That is a development convenience to
converge faster; nothing in the product needs it.
"""
from __future__ import annotations

import argparse
import builtins
import collections
import hashlib
import json
import os
import pickle
import shlex
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn
from pruning_tools.data.files import strict_dumps


class _InertModule(nn.Module):
    """Stand-in for classes of the YOLOv5 repository while reading its pickles (never run)."""

    def forward(self, *args: Any) -> Any:  # pragma: no cover - never called
        raise RuntimeError("inert stand-in module")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] in ("models", "utils"):
            return _InertModule
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module in ("__builtin__", "builtins") and name in ("set", "dict", "list", "tuple", "frozenset"):
            return getattr(builtins, name)
        if module == "torch" or module == "torch._utils" or module.startswith("torch.nn.modules."):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed by the restricted unpickler")


_RESTRICTED = types.SimpleNamespace(Unpickler=_RestrictedUnpickler, load=pickle.load, __name__="restricted_pickle")


def load_yolov5_repo_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the float state dict of an original YOLOv5-repository checkpoint without running its code.

    :raises pickle.UnpicklingError: when the file needs classes outside the allow-list.
    """
    ckpt = torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=_RESTRICTED)
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else ckpt
    if not isinstance(model, nn.Module):
        raise ValueError(f"{path}: no model inside (keys {list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt)})")
    return {k: v.float() for k, v in model.state_dict().items()}


def init_source(path: str | Path, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The tensors of an ``--init-from`` checkpoint and, where it records one, its model YAML.

    Sources tried in order: this project's checkpoint (``weights_only``), a YOLOv5-repository
    checkpoint (restricted unpickler), and — only with ``trust_pickle`` — an Ultralytics ``.pt``.

    :return: (state dict, model YAML dict or None for a YOLOv5-repository file).
    :raises ValueError: (TrustPickleRequired) for a file that needs full unpickling without ``trust_pickle``.
    """
    from pruning_tools.ultralytics_adapter import AdapterError, TrustPickleRequired, load_checkpoint, \
        load_user_checkpoint

    try:
        src_model, _ = load_checkpoint(path)
        return src_model.state_dict(), src_model.yaml
    except AdapterError:
        try:
            return load_yolov5_repo_state(path), None
        except pickle.UnpicklingError as exc:
            if not trust_pickle:
                raise TrustPickleRequired(f"{path}: {str(exc).splitlines()[0][:160]}. If it is an Ultralytics "
                                          f"checkpoint you trust, pass --trust-pickle") from None
            src_model = load_user_checkpoint(path, trust_pickle=True)[0]
            return src_model.state_dict(), src_model.yaml


def init_from(model: nn.Module, path: str | Path, trust_pickle: bool = False,
              src: dict[str, torch.Tensor] | None = None) -> dict[str, int]:
    """Copy matching tensors (same name and shape) from ``path`` (or the already read ``src``) into ``model``.

    :return: counts ``{"copied": n, "skipped": m}``.
    """
    if src is None:
        src = init_source(path, trust_pickle)[0]
    dst = model.state_dict()
    copied = {k: v for k, v in src.items() if k in dst and dst[k].shape == v.shape}
    dst.update(copied)
    model.load_state_dict(dst)
    return {"copied": len(copied), "skipped": len(src) - len(copied)}


#: ``--init-from`` refuses a source of which fewer tensors than this fraction fit the model.
MIN_INIT_FIT = 0.9


def sha256_file(path: str | Path) -> str:
    """:return: hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pruning-tools train-baseline", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="YOLO dataset root or its data.yaml (kitti convert)")
    p.add_argument("--out", type=Path, default=Path("baseline.pt"), help="checkpoint to write (.pt); JSON beside it")
    p.add_argument("--mix", nargs=2, action="append", default=[], metavar=("DIR", "REPEATS"),
                   help="also train on this YOLO dataset's train split, its images repeated REPEATS times per "
                        "epoch (e.g. a few real KITTI frames beside many generated ones); may be given again")
    p.add_argument("--keep-snapshots", action="store_true",
                   help="keep every --save-every snapshot as <out stem>.step<N>.pt (to choose one on a val split)")
    p.add_argument("--licence", default="", help="licence of the weights (recorded in the JSON), e.g. KITTI's terms")
    p.add_argument("--splits", type=Path, default=None,
                   help="JSON file of the real frames' train/val/test ids (recorded in the JSON)")
    p.add_argument("--real-eval", type=Path, default=None,
                   help="real KITTI object root: also measure KITTI AP on the val and test frames of --splits "
                        "(recorded in the JSON as real_metrics)")
    p.add_argument("--real-eval-tracking", type=Path, default=None,
                   help="KITTI tracking root: also measure KITTI AP on the val and test frames of --tracking-splits "
                        "(recorded in the JSON as real_metrics_tracking)")
    p.add_argument("--tracking-splits", type=Path, default=None,
                   help="JSON of a tracking sequence's time split (ids SSSS_NNNNNN, e.g. "
                        "pruning_tools/assets/kitti_tracking_split.json; recorded in the JSON as tracking_splits)")
    p.add_argument("--cfg", default=None,
                   help="model YAML (yolov5n.yaml, yolov8n.yaml, yolo11n.yaml); default: the --init-from "
                        "checkpoint's own architecture, else yolov5n.yaml")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from this checkpoint (this project's format or a YOLOv5-repository .pt)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow full unpickling of an Ultralytics .pt given to --init-from (trusted files only)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps", type=int, default=None, help="exact optimiser steps (overrides --epochs)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr0", type=float, default=0.01)
    p.add_argument("--imgsz", type=int, nargs=2, default=(384, 1248), metavar=("H", "W"))
    p.add_argument("--crop-width", type=int, default=640, help="random full-height crops (0: full width)")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-split", default="test", help="split to measure mAP on after training ('' to skip)")
    p.add_argument("--data-command", default="", help="the command that produced --data (recorded in the JSON)")
    p.add_argument("--fp32", dest="fp16", action="store_false", help="store FP32 weights (default: FP16 storage)")
    p.add_argument("--save-every", type=int, default=200, help="steps between <out>.partial.pt snapshots (0: off)")
    p.add_argument("--eval-only", action="store_true", help="only (re)measure the existing --out checkpoint")
    p.add_argument("--meta-from", type=Path, default=None,
                   help="with --eval-only: take the training record (commands, data, summary) from this checkpoint, "
                        "e.g. the run's final checkpoint when --out is one of its snapshots chosen on val")
    p.add_argument("--note", default="", help="free text recorded in the JSON")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pruning_tools.data.yolo import DatasetError, resolve_split_dir
    from pruning_tools.train.loop import TrainConfig, train_detector
    from pruning_tools import ultralytics_adapter as ua

    torch.set_num_threads(max(1, args.threads))
    if args.real_eval_tracking is not None:  # checked before any training or writing
        if args.tracking_splits is None:
            print("train-baseline: --real-eval-tracking needs --tracking-splits (which frames are val and test)",
                  file=sys.stderr)
            return 2
        try:
            track_spans = {s: tracking_split_range(args.tracking_splits, s) for s in ("val", "test")}
        except (OSError, ValueError) as exc:
            print(f"train-baseline: --tracking-splits: {exc}", file=sys.stderr)
            return 2
    try:
        resolve_split_dir(args.data, "train")
    except DatasetError as exc:
        print(f"train-baseline: {exc}", file=sys.stderr)
        return 2
    names = _class_names(args.data)
    try:
        mix = [(Path(d), int(r)) for d, r in args.mix]
        for d, _ in mix:
            resolve_split_dir(d, "train")
            if _class_names(d) != names:
                raise DatasetError(f"{d}: class names {_class_names(d)} differ from {args.data}'s {names}")
    except ValueError as exc:
        print(f"train-baseline: --mix: {exc}", file=sys.stderr)
        return 2
    if args.eval_only:
        model, meta = ua.load_checkpoint(args.out)
        meta = dict(meta)
        if args.meta_from is not None:
            step = meta.get("step")
            meta = {**dict(ua.load_checkpoint(args.meta_from)[1]), "chosen_snapshot_step": step}
        if args.data_command:
            meta["data_command"] = args.data_command
    else:
        init = None
        try:
            src, src_yaml = init_source(args.init_from, args.trust_pickle) if args.init_from else ({}, None)
            if args.cfg is None:  # the family comes from the checkpoint, never assumed
                args.cfg = ua.model_family(src_yaml) + ".yaml" if src_yaml else "yolov5n.yaml"
            model = ua.build_model(src_yaml if src_yaml and args.cfg == ua.model_family(src_yaml) + ".yaml"
                                   else args.cfg, nc=len(names), class_names=names)
            if args.init_from is not None:
                init = init_from(model, args.init_from, src=src)
                print(f"initialised from {args.init_from}: {init}", flush=True)
                if init["copied"] < MIN_INIT_FIT * max(1, len(src)):
                    raise ValueError(f"--init-from {args.init_from}: only {init['copied']} of {len(src)} tensors fit "
                                     f"{args.cfg} ({init['skipped']} dropped, < {MIN_INIT_FIT:.0%}); give the "
                                     f"checkpoint's own --cfg ({ua.model_family(src_yaml) if src_yaml else 'yolov5n'}.yaml)")
        except (OSError, ValueError, ua.AdapterError) as exc:
            print(f"train-baseline: {exc}", file=sys.stderr)
            return 2
        cfg = TrainConfig(epochs=args.epochs, steps=args.steps, imgsz=tuple(args.imgsz),
                          crop_width=args.crop_width or None, batch=args.batch, lr0=args.lr0, seed=args.seed,
                          max_images=args.max_images)
        snapshot = args.out.with_name(args.out.stem + ".partial.pt")

        def save_partial(step: int, loss: float) -> None:
            if args.save_every and (step + 1) % args.save_every == 0:
                snap_meta = {"kind": "partial", "step": step + 1, "loss": loss, "class_names": names}
                ua.save_checkpoint(model, snapshot, snap_meta)
                if args.keep_snapshots:
                    ua.save_checkpoint(model, args.out.with_name(f"{args.out.stem}.step{step + 1}.pt"), snap_meta,
                                       half=args.fp16)
                model.train()

        summary = train_detector(model, args.data, cfg, progress=not args.no_progress, on_step=save_partial,
                                 mix=mix)
        snapshot.unlink(missing_ok=True)
        print(f"training done: {summary}", flush=True)
        command = "pruning-tools train-baseline " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                                         else sys.argv[1:]))
        meta = {"kind": "baseline", "cfg": args.cfg, "class_names": names, "train": summary,
                "train_config": {k: v for k, v in cfg.__dict__.items() if k != "extra"},
                "training_command": command, "data_command": args.data_command,
                "init_from": str(args.init_from.name) if args.init_from else None, "init": init,
                "data": [{"root": str(args.data), "repeats": 1}] + [{"root": str(d), "repeats": r} for d, r in mix]}
        if args.splits is not None:
            meta["real_splits"] = json.loads(args.splits.read_text())
    if args.licence:
        meta["licence"] = args.licence
    if args.note:
        meta["note"] = args.note
    # store FP16 (a few MB) and measure the model exactly as it is reloaded from the file
    ua.save_checkpoint(model, args.out, meta, half=args.fp16)
    model, _ = ua.load_checkpoint(args.out)
    if args.eval_split:
        from pruning_tools.train.evaluate import evaluate_model

        metrics = evaluate_model(model, args.data, args.eval_split, tuple(args.imgsz), progress=not args.no_progress)
        keep = {k: v for k, v in metrics.items() if k in ("map50_95", "map50", "per_class", "images", "n_images", "evaluator")}
        meta["metrics"] = {"split": args.eval_split, "imgsz": list(args.imgsz), **keep}
        print(f"{args.eval_split}: mAP50-95 {metrics['map50_95']:.4f} mAP50 {metrics['map50']:.4f}", flush=True)
        ua.save_checkpoint(model, args.out, meta, half=args.fp16)
    if args.real_eval is not None:
        from pruning_tools.train.evaluate import real_eval_frames, real_summary, torch_detector

        if args.splits is None:
            print("train-baseline: --real-eval needs --splits (which real frames are val and test)", file=sys.stderr)
            return 2
        meta["real_splits"] = json.loads(args.splits.read_text())
        meta["real_metrics"] = {}
        for split in ("val", "test"):
            frames = real_eval_frames(args.real_eval, split_file=args.splits, split=split)
            res = frames.evaluate(torch_detector(model, names, tuple(args.imgsz)))
            meta["real_metrics"][split] = real_summary(res)
            cls = res["classes"]
            print(f"real {split} ({res['n_images']} frames): Car AP {cls['Car']['ap_kitti']:.3f} (IoU 0.7), "
                  f"Pedestrian AP {cls['Pedestrian']['ap_kitti']:.3f}, Cyclist AP {cls['Cyclist']['ap_kitti']:.3f} "
                  f"(IoU 0.5; KITTI moderate, AP|R40)", flush=True)
        ua.save_checkpoint(model, args.out, meta, half=args.fp16)
    if args.tracking_splits is not None:
        meta["tracking_splits"] = json.loads(args.tracking_splits.read_text())
    if args.real_eval_tracking is not None:
        from pruning_tools.train.evaluate import RealFrames, real_summary, torch_detector

        meta["real_metrics_tracking"] = {}
        for split in ("val", "test"):
            sequence, span = track_spans[split]
            frames = RealFrames.from_kitti_tracking(args.real_eval_tracking, sequence, span)
            res = frames.evaluate(torch_detector(model, names, tuple(args.imgsz)))
            meta["real_metrics_tracking"][split] = real_summary(res)
            cls = res["classes"]
            print(f"tracking {sequence} {split} (frames {span[0]}-{span[1]}): "
                  + ", ".join(f"{c} AP {cls[c]['ap_kitti']:.3f} (n_gt {cls[c]['n_gt']})" for c in cls), flush=True)
        ua.save_checkpoint(model, args.out, meta, half=args.fp16)
    sidecar = {"checkpoint": args.out.name, "sha256": sha256_file(args.out), "size_bytes": args.out.stat().st_size,
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **meta,
               "versions": {"torch": str(torch.__version__), "ultralytics": ua.ultralytics_version()}}
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(strict_dumps(sidecar, indent=2) + "\n")
    os.replace(tmp, args.out.with_suffix(".json"))
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


def tracking_split_range(path: Path, split: str) -> tuple[str, tuple[int, int]]:
    """``(sequence, (first, last))`` of one split of a tracking time split (ids ``SSSS_NNNNNN``).

    :raises ValueError: empty split, ids of two sequences, malformed ids, or frames that are not consecutive
        (a time split is one unbroken run of frames per part).
    """
    from pruning_tools.data.convert import read_split_file

    ids = read_split_file(Path(path))[split]
    if not ids:
        raise ValueError(f"{path}: split {split!r} is empty")
    try:
        pairs = [(a, int(b)) for a, b in (i.rsplit("_", 1) for i in ids)]
    except ValueError:
        raise ValueError(f"{path}: {split!r} ids must be SSSS_NNNNNN (kitti convert --tracking)") from None
    seqs = {a for a, _ in pairs}
    if len(seqs) != 1:
        raise ValueError(f"{path}: {split!r} mixes sequences {sorted(seqs)}")
    nums = sorted(n for _, n in pairs)
    if nums != list(range(nums[0], nums[-1] + 1)):
        raise ValueError(f"{path}: {split!r} frames are not consecutive (a time split has one run per part)")
    return seqs.pop(), (nums[0], nums[-1])


def _class_names(data: Path) -> list[str]:
    import yaml

    cfg_path = data if data.is_file() else data / "data.yaml"
    if cfg_path.is_file():
        names = (yaml.safe_load(cfg_path.read_text()) or {}).get("names")
        if isinstance(names, dict):
            return [str(names[k]) for k in sorted(names)]
        if isinstance(names, list):
            return [str(n) for n in names]
    return ["Car", "Pedestrian", "Cyclist"]


if __name__ == "__main__":
    sys.exit(main())
