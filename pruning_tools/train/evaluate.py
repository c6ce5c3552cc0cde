"""Detector evaluation on a YOLO-format dataset (as written by ``pruning-tools kitti convert``).

:class:`EvalSet` reads a split once (images decoded and letterboxed, labels in original pixels,
condition keys from ``conditions.json``) and evaluates any number of inference functions on it —
the policy/pruning loops call this many times. :func:`evaluate_detector` is the one-shot wrapper.

An inference function takes the letterboxed ``(1, 3, H, W)`` float32 RGB batch and returns the raw
head output ``(1, 4 + nc, N)`` (a wrapped torch model or an ONNX Runtime session alike). Decoding and
NMS are :func:`sparse_perception.runtime.postprocess.decode`; mAP is
:class:`sparse_perception.runtime.metrics.MapAccumulator` (COCO-style), in original image pixels.

Label files: one object per line ``class cx cy w h`` (normalised); an optional sixth column ``1``
marks a box to ignore (DontCare / too hard), which neither counts as a miss nor makes a matching
prediction a false positive.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from sparse_perception.runtime.metrics import MapAccumulator
from sparse_perception.runtime.postprocess import LetterboxInfo, decode, letterbox

__all__ = ["Detector", "EvalSet", "RealFrames", "evaluate_detector", "evaluate_model", "load_detector", "read_labels",
           "resolve_class_map", "torch_detector", "torch_infer_fn"]

InferFn = Callable[[np.ndarray], np.ndarray]
#: the ``evaluator`` value of every result this module computes
EVALUATOR = "pruning_tools.evaluate"
_IMG_EXT = (".png", ".jpg", ".jpeg", ".bmp")


def read_labels(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one YOLO label file.

    :return: ``(boxes xyxy float32 (G,4) in pixels, classes int64 (G,), ignore bool (G,))``.
    :raises ValueError: malformed line (names file and line).
    """
    boxes, classes, ignore = [], [], []
    if path.is_file():
        for ln, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (5, 6):
                raise ValueError(f"{path}:{ln}: expected 'class cx cy w h [ignore]', got {line!r}")
            try:
                c = int(float(parts[0]))
                cx, cy, w, h = (float(v) for v in parts[1:5])
                ig = len(parts) == 6 and float(parts[5]) != 0.0
            except ValueError as exc:
                raise ValueError(f"{path}:{ln}: not a number in {line!r}") from exc
            boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
            classes.append(c)
            ignore.append(ig)
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64), np.asarray(ignore, bool))


def iter_yolo_split(root: Path, split: str, names: Sequence[str], limit: int | None = None,
                    progress: bool = False) -> Iterator[tuple[Path, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """``(image path, BGR image, boxes, classes, ignore)`` for every image of a YOLO split, sorted by name.

    :param limit: only the first ``limit`` images.
    :raises FileNotFoundError: no image folder for ``split``.
    :raises ValueError: an image that does not decode, a malformed label or a class id out of range.
    """
    from tqdm import tqdm

    img_dir = root / "images" / split
    if not img_dir.is_dir():
        raise FileNotFoundError(f"{img_dir}: no image folder for split {split!r}")
    files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in _IMG_EXT)
    if limit is not None:
        files = files[: max(0, int(limit))]
    for p in tqdm(files, desc=f"load {split}", unit="img", disable=not progress, leave=False):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{p}: cannot decode image")
        label = root / "labels" / split / f"{p.stem}.txt"
        boxes, classes, ignore = read_labels(label, img.shape[1], img.shape[0])
        if classes.size and (classes.min() < 0 or classes.max() >= len(names)):
            raise ValueError(f"{label}: class id out of range for {len(names)} names")
        yield p, img, boxes, classes, ignore


@dataclass
class _Item:
    stem: str
    batch: np.ndarray
    info: LetterboxInfo
    gt_boxes: np.ndarray
    gt_classes: np.ndarray
    gt_ignore: np.ndarray
    condition: str | None


class EvalSet:
    """A dataset split loaded once into memory (letterboxed batches + labels) for repeated evaluation.

    :param dataset_dir: YOLO dataset root (with ``data.yaml``, ``images/<split>``, ``labels/<split>``).
    :param split: ``"train"``, ``"val"`` or ``"test"``.
    :param imgsz: network ``(height, width)``.
    :param limit: use only the first ``limit`` images (sorted by name).
    :param progress: show a progress bar while loading.
    :raises FileNotFoundError: missing dataset/split folder.
    :raises ValueError: malformed labels or names.
    """

    def __init__(self, dataset_dir: str | Path, split: str = "val", imgsz: tuple[int, int] = (384, 1248),
                 limit: int | None = None, progress: bool = True) -> None:
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {split!r}")
        root = Path(dataset_dir)
        if root.is_file() and root.suffix in (".yaml", ".yml"):
            root = root.parent
        self.root = root
        self.split = split
        self.imgsz = (int(imgsz[0]), int(imgsz[1]))
        self.class_names = self._names(root)
        cond_path = root / "conditions.json"
        conditions: dict[str, str] = json.loads(cond_path.read_text()) if cond_path.is_file() else {}
        self.items: list[_Item] = []
        for p, img, boxes, classes, ignore in iter_yolo_split(root, split, self.class_names, limit, progress):
            batch, info = letterbox(img, self.imgsz)
            self.items.append(_Item(p.stem, batch, info, boxes, classes, ignore, conditions.get(p.stem)))

    @staticmethod
    def _names(root: Path) -> list[str]:
        data = root / "data.yaml"
        if not data.is_file():
            raise FileNotFoundError(f"{data}: dataset has no data.yaml")
        cfg = yaml.safe_load(data.read_text()) or {}
        names = cfg.get("names")
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names, key=int)]
        if not isinstance(names, list) or not names:
            raise ValueError(f"{data}: 'names' must be a non-empty list or mapping")
        return [str(n) for n in names]

    def __len__(self) -> int:
        return len(self.items)

    def batches(self) -> Iterator[np.ndarray]:
        """Yield the cached ``(1, 3, H, W)`` float32 batches (e.g. for BN re-calibration)."""
        for it in self.items:
            yield it.batch

    def evaluate(self, infer_fn: InferFn, conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300,
                 progress: bool = False) -> dict[str, Any]:
        """mAP of ``infer_fn`` on this split.

        :return: :meth:`MapAccumulator.compute` result plus ``"split"``, ``"class_names"``, ``"imgsz"``.
        """
        acc = MapAccumulator(len(self.class_names), self.class_names)
        from tqdm import tqdm

        for it in tqdm(self.items, desc=f"mAP {self.split}", unit="img", disable=not progress, leave=False):
            raw = np.asarray(infer_fn(it.batch))
            if raw.ndim != 3 or raw.shape[1] != 4 + len(self.class_names):
                raise ValueError(f"inference output shape {raw.shape} does not fit (1, {4 + len(self.class_names)}, N) "
                                 f"for {len(self.class_names)} classes")
            det = decode(raw, conf_thres, iou_thres, max_det, it.info)
            acc.add(det.boxes, det.scores, det.class_ids, it.gt_boxes, it.gt_classes, it.gt_ignore, it.condition)
        res = acc.compute()
        res.update(split=self.split, class_names=list(self.class_names), imgsz=list(self.imgsz))
        return res


def evaluate_detector(infer_fn: InferFn, dataset_dir: str | Path, split: str = "val",
                      imgsz: tuple[int, int] = (384, 1248), conf_thres: float = 0.001, iou_thres: float = 0.6,
                      max_det: int = 300, limit: int | None = None, progress: bool = False,
                      max_images: int | None = None) -> dict[str, Any]:
    """Evaluate ``infer_fn`` once on a dataset split (loads the split, then :meth:`EvalSet.evaluate`).

    :param max_images: alias of ``limit``.
    """
    if limit is None:
        limit = max_images
    es = EvalSet(dataset_dir, split, imgsz, limit=limit, progress=progress)
    return es.evaluate(infer_fn, conf_thres, iou_thres, max_det, progress=progress)


def torch_infer_fn(model: Any) -> InferFn:
    """:return: ``infer(batch NCHW float32) -> raw (B, 4+nc, N)`` running ``model`` in eval mode."""
    import torch

    from pruning_tools.ultralytics_adapter import raw_forward

    model.eval()

    def infer(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return raw_forward(model, torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()

    return infer


def evaluate_model(model: Any, data: str | Path, split: str, imgsz: tuple[int, int] = (384, 1248),
                   max_images: int | None = None, progress: bool = False, **kwargs: Any) -> dict[str, Any]:
    """mAP of a torch model on a dataset split (:func:`evaluate_detector` on :func:`torch_infer_fn`).

    :return: ``{"map50_95", "map50", "evaluator", ...}`` (JSON-ready).
    """
    res = evaluate_detector(torch_infer_fn(model), Path(data), split, tuple(imgsz), max_images=max_images,
                            progress=progress, **kwargs)
    return {**_jsonable(res), "evaluator": EVALUATOR}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


# ------------------------------------------------------------------------------------------------
# KITTI-aware evaluation of any detector (``pruning-tools evaluate``)
# ------------------------------------------------------------------------------------------------
#: The three KITTI benchmark classes every report uses.
KITTI_CLASSES: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
#: Model class name -> KITTI class for detectors trained on other label sets (COCO's names).
COCO_TO_KITTI: dict[str, str] = {"car": "Car", "person": "Pedestrian", "bicycle": "Cyclist"}


@dataclass
class Detector:
    """Anything that maps a letterboxed batch to the raw ``(1, 4 + nc, N)`` head output.

    :param name: what was loaded (a path, ``"manifest:level"``).
    :param class_names: the model's class names, in output order.
    :param input_hw: network input (height, width) the frames are letterboxed to.
    :param infer: the inference function.
    :param close: frees the backend.
    """

    name: str
    class_names: tuple[str, ...]
    input_hw: tuple[int, int]
    infer: InferFn
    close: Callable[[], None] = lambda: None


def torch_detector(model: Any, class_names: Sequence[str], imgsz: tuple[int, int] = (384, 1248),
                   name: str = "torch model") -> Detector:
    """A :class:`Detector` over a torch detection model (this project's checkpoints, pruned or not)."""
    return Detector(name, tuple(str(n) for n in class_names), (int(imgsz[0]), int(imgsz[1])), torch_infer_fn(model))


def load_detector(model: str | Path | None = None, level: str | None = None, imgsz: tuple[int, int] = (384, 1248),
                  threads: int = 2, trust_pickle: bool = False) -> Detector:
    """Load a detector from a project checkpoint or (with ``trust_pickle``) an Ultralytics ``.pt``, an
    Ultralytics-layout ``.onnx`` or a zoo manifest (``.json``, with ``level``); ``None`` loads the shipped
    baseline.

    :param imgsz: input size for a ``.pt`` (ONNX models and zoo artifacts carry their own).
    :raises FileNotFoundError: missing file.
    :raises ValueError: unknown file kind, missing/unknown level, unusable model.
    """
    from sparse_perception.runtime.backends import create_backend

    if model is None:
        from pruning_tools.assets import DEFAULT_BASELINE  # the shipped checkpoint

        model = DEFAULT_BASELINE
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model not found")
    suffix = path.suffix.lower()
    if suffix == ".pt":
        from pruning_tools.ultralytics_adapter import load_user_checkpoint

        net, meta = load_user_checkpoint(path, trust_pickle=trust_pickle)
        names = meta.get("class_names") or list(getattr(net, "names", {}).values())
        if not names:
            raise ValueError(f"{path}: checkpoint records no class names")
        return torch_detector(net, names, imgsz, str(path))
    if suffix == ".onnx":
        if level is not None:
            raise ValueError("--level goes with a zoo manifest (.json), not an ONNX file")
        be = create_backend(path, "onnxruntime", threads)
        return Detector(str(path), tuple(be.class_names), tuple(be.input_shape[2:4]), be.infer, be.close)
    if suffix == ".json":
        from sparse_perception.runtime.zoo import load_manifest

        m = load_manifest(path)
        if level is None:
            raise ValueError(f"{path}: a zoo manifest needs --level (one of {m.levels('onnxruntime')})")
        art = m.select(level, "onnxruntime")
        art.verify()
        be = create_backend(art.path, "onnxruntime", threads,
                            expected={"class_names": list(art.class_names), "input_shape": list(art.input_shape),
                                      "precision": art.precision})
        return Detector(f"{path}:{level}", tuple(be.class_names), tuple(be.input_shape[2:4]), be.infer, be.close)
    raise ValueError(f"{path}: expected a checkpoint (.pt), an ONNX model (.onnx) or a zoo manifest (.json)")


def resolve_class_map(model_names: Sequence[str], override: dict[str, str | None] | None = None,
                      targets: Sequence[str] = KITTI_CLASSES) -> dict[str, str]:
    """Model class name -> evaluated class name.

    Names that already are targets map to themselves, COCO's ``car``/``person``/``bicycle`` map to
    Car/Pedestrian/Cyclist (:data:`COCO_TO_KITTI`); ``override`` entries win (``None`` drops a name).
    Model classes mapped to nothing are ignored.

    :raises ValueError: nothing maps onto a target class, or an override names an unknown class.
    """
    cmap: dict[str, str | None] = {}
    for n in model_names:
        cmap[n] = n if n in targets else COCO_TO_KITTI.get(n)
    for k, v in (override or {}).items():
        if k not in cmap:
            raise ValueError(f"class map names {k!r}, which the model does not have (it has {list(model_names)})")
        if v is not None and v not in targets:
            raise ValueError(f"class map target {v!r} is not one of {list(targets)}")
        cmap[k] = v
    out = {k: v for k, v in cmap.items() if v is not None}
    if not out:
        raise ValueError(f"no model class maps onto {list(targets)}; model classes: {list(model_names)[:12]} "
                         "(give --class-map model_name=Target,...)")
    return out


@dataclass
class _Frame:
    stem: str
    image: np.ndarray
    truth: Any  # FrameTruth


class RealFrames:
    """Frames with KITTI-style ground truth, decoded once, for evaluating many detectors.

    Use :meth:`from_kitti_root` (a KITTI object root: occlusion, truncation and DontCare known) or
    :meth:`from_yolo` (a YOLO dataset split: height cut and the ignore column only).
    """

    def __init__(self, frames: list[_Frame], description: str) -> None:
        if not frames:
            raise ValueError(f"{description}: no frames to evaluate")
        self.frames = frames
        self.description = description
        self._batches: dict[tuple[int, int], list[tuple[np.ndarray, LetterboxInfo]]] = {}

    def __len__(self) -> int:
        return len(self.frames)

    @classmethod
    def from_kitti_root(cls, root: str | Path, ids: Sequence[str] | None = None, progress: bool = False) -> "RealFrames":
        """Every frame of a KITTI object root (or those in ``ids``), each at its own image size.

        :raises FileNotFoundError: not a KITTI object layout.
        :raises ValueError: an id not in the root, an unreadable image or label.
        """
        from tqdm import tqdm

        from pruning_tools.data.kitti_dataset import KittiObjectDataset
        from pruning_tools.train.kitti_ap import truth_from_kitti

        ds = KittiObjectDataset(Path(root))
        index = {fid: i for i, fid in enumerate(ds.ids)}
        wanted = list(ds.ids) if ids is None else [str(i) for i in ids]
        missing = [i for i in wanted if i not in index]
        if missing:
            raise ValueError(f"{ds.root}: frames {missing[:5]} not found ({len(missing)} missing)")
        frames = []
        for fid in tqdm(wanted, desc="load frames", unit="img", disable=not progress, leave=False):
            fr = ds[index[fid]]
            frames.append(_Frame(fid, fr.image(), truth_from_kitti(fr.labels)))
        what = f"{ds.root}" + (f" ({len(wanted)} of {len(ds)} frames)" if ids is not None else "")
        return cls(frames, what)

    @classmethod
    def from_kitti_tracking(cls, root: str | Path, sequence: str, frames: tuple[int, int] | None = None,
                            progress: bool = False) -> "RealFrames":
        """The frames of a KITTI tracking sequence (or those numbered ``frames[0]..frames[1]``), KITTI rules
        as for object frames (tracking truncation levels mapped by
        :func:`pruning_tools.data.kitti_tracking.truncation_fraction`).

        :raises FileNotFoundError: not a tracking layout. :raises ValueError: bad labels, an empty range.
        """
        from tqdm import tqdm

        from pruning_tools.data.kitti_tracking import TrackingSequence
        from pruning_tools.train.kitti_ap import truth_from_kitti

        seq = TrackingSequence(Path(root), sequence, timing=False)
        idx = [i for i, n in enumerate(seq.frame_numbers) if frames is None or frames[0] <= n <= frames[1]]
        if not idx:
            raise ValueError(f"{seq.root}: sequence {seq.sequence} has no frames in {frames[0]}-{frames[1]}")
        out = [_Frame(seq.frame_id(i), seq.image(i), truth_from_kitti(seq.labels(i)))
               for i in tqdm(idx, desc="load frames", unit="img", disable=not progress, leave=False)]
        span = "" if frames is None else f" frames {frames[0]}-{frames[1]}"
        return cls(out, f"{seq.root} tracking {seq.sequence}{span} ({len(out)} frames)")

    @classmethod
    def from_yolo(cls, data: str | Path, split: str, progress: bool = False) -> "RealFrames":
        """A YOLO dataset split (``pruning-tools kitti convert`` output): class names from ``data.yaml``.

        :raises FileNotFoundError: missing split.
        :raises ValueError: malformed labels.
        """
        from pruning_tools.train.kitti_ap import FrameTruth

        root = Path(data)
        if root.is_file():
            root = root.parent
        names = EvalSet._names(root)
        frames = []
        for p, img, boxes, classes, ignore in iter_yolo_split(root, split, names, progress=progress):
            g = len(classes)
            frames.append(_Frame(p.stem, img, FrameTruth(boxes, [names[c] for c in classes], np.full(g, -1),
                                                         np.zeros(g), ignore)))
        return cls(frames, f"{root} split {split}")

    def _letterboxed(self, hw: tuple[int, int]) -> list[tuple[np.ndarray, LetterboxInfo]]:
        if hw not in self._batches:
            self._batches[hw] = [letterbox(f.image, hw) for f in self.frames]
        return self._batches[hw]

    def evaluate(self, detector: Detector, class_map: dict[str, str | None] | None = None,
                 classes: Sequence[str] = KITTI_CLASSES, conf_thres: float = 0.001, iou_thres: float = 0.6,
                 max_det: int = 300, progress: bool = False) -> dict[str, Any]:
        """KITTI-aware AP of ``detector`` on these frames (:class:`pruning_tools.train.kitti_ap.KittiEvaluator`).

        :param class_map: overrides of the model-name -> class mapping (:func:`resolve_class_map`).
        :return: ``{"classes": {name: {"ap_kitti", "ap50", "ap50_95", "n_gt", "iou"}}, "map50_95", "map50",
            "map_kitti", "n_images", "model", "data", "class_map"}``.
        """
        from tqdm import tqdm

        from pruning_tools.train.kitti_ap import KittiEvaluator

        cmap = resolve_class_map(detector.class_names, class_map, classes)
        lookup = np.asarray([cmap.get(n, "") for n in detector.class_names], dtype=object)
        ev = KittiEvaluator(classes)
        batches = self._letterboxed(tuple(detector.input_hw))
        nc = len(detector.class_names)
        for fr, (batch, info) in tqdm(list(zip(self.frames, batches)), desc="evaluate", unit="img",
                                      disable=not progress, leave=False):
            raw = np.asarray(detector.infer(batch))
            if raw.ndim != 3 or raw.shape[1] != 4 + nc:
                raise ValueError(f"{detector.name}: output shape {raw.shape} does not fit (1, {4 + nc}, N)")
            det = decode(raw, conf_thres, iou_thres, max_det, info)
            names = lookup[det.class_ids] if len(det) else np.zeros(0, dtype=object)
            keep = names != ""
            ev.add(fr.truth, det.boxes[keep], det.scores[keep], names[keep])
        res = ev.compute()
        res.update(model=detector.name, data=self.description, class_map=cmap)
        return res


def format_kitti_table(res: dict[str, Any]) -> str:
    """A plain-text table of :meth:`RealFrames.evaluate`'s result."""
    lines = [f"model: {res.get('model')}", f"data:  {res.get('data')} ({res.get('n_images')} images)",
             f"{'class':<11} {'n_gt':>5} {'AP@KITTI IoU':>13} {'AP50':>7} {'AP50-95':>8}"]
    for name, v in res["classes"].items():
        lines.append(f"{name:<11} {v['n_gt']:>5} {v['ap_kitti']:>9.3f} @{v['iou']:.1f} {v['ap50']:>7.3f} "
                     f"{v['ap50_95']:>8.3f}")
    lines.append(f"{'mean':<11} {'':>5} {res['map_kitti']:>13.3f} {res['map50']:>7.3f} {res['map50_95']:>8.3f}")
    lines.append("(moderate cut: height >= 25 px, occlusion <= 1, truncation <= 0.30; DontCare ignored; "
                 "AP@KITTI IoU is AP|R40)")
    return "\n".join(lines)


def _parse_class_map(text: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"class map entries are model_name=Target (or model_name=), got {item!r}")
        k, v = (s.strip() for s in item.split("=", 1))
        out[k] = v or None
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pruning-tools evaluate",
        description="Evaluate a detector KITTI-style: per-class AP at KITTI's IoU (Car 0.7, Pedestrian/Cyclist 0.5) "
                    "on the moderate cut with DontCare ignored, plus AP50 and AP50-95.")
    p.add_argument("--model", default=None,
                   help="project checkpoint (.pt), Ultralytics-layout ONNX (.onnx) or zoo manifest (.json, with "
                        "--level); default: the shipped baseline")
    p.add_argument("--level", default=None, help="zoo level to evaluate (with a manifest)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--kitti-root", type=Path, help="KITTI object root (training/{image_2,label_2}); every frame")
    src.add_argument("--data", type=Path, help="YOLO dataset root (pruning-tools kitti convert output)")
    src.add_argument("--kitti-tracking", type=Path,
                     help="KITTI tracking root (training/{image_02,label_02}); with --sequence SSSS")
    src.add_argument("--streaming", action="store_true",
                     help="streaming AP of a recorded run (--gt-bag, --detections-bag): each ground-truth frame "
                          "scored on the latest detections published by its camera time + one frame period")
    p.add_argument("--sequence", default=None, help="with --kitti-tracking: the sequence (e.g. 0000)")
    p.add_argument("--frames", default=None,
                   help="with --kitti-tracking: frame range FIRST-LAST (inclusive), e.g. 108-153 (default: all)")
    p.add_argument("--gt-bag", type=Path, default=None, help="with --streaming: `kitti to-bag` bag with ground truth")
    p.add_argument("--detections-bag", type=Path, default=None,
                   help="with --streaming: recorded run (detections topic; the image topic aligns the clocks)")
    p.add_argument("--detections-topic", default="/detector/detections", help="with --streaming (default %(default)s)")
    p.add_argument("--period", type=float, default=None,
                   help="with --streaming: grace in s (default: the ground truth's median frame period)")
    p.add_argument("--split", default=None, help="with --data: the split (train/val/test); with --kitti-root and "
                                                 "--split-file: only that split's frames")
    p.add_argument("--split-file", type=Path, default=None,
                   help="with --kitti-root: JSON {train,val,test: [ids]} selecting --split's frames")
    p.add_argument("--class-map", type=_parse_class_map, default=None,
                   help="model class -> KITTI class overrides, e.g. 'car=Car,truck=Car,bicycle=' (empty drops)")
    p.add_argument("--imgsz", type=int, nargs=2, default=(384, 1248), metavar=("H", "W"),
                   help="input size for a .pt (ONNX/zoo models use their own)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling an Ultralytics .pt given to --model (it can run code: trusted files only)")
    p.add_argument("--json", type=Path, default=None, help="write the result here")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    args = build_parser().parse_args(list(argv) if argv is not None else None)
    if args.streaming:
        return _main_streaming(args)
    try:
        import torch

        torch.set_num_threads(max(1, args.threads))
        if args.kitti_tracking is not None:
            if args.sequence is None:
                raise ValueError("--kitti-tracking needs --sequence SSSS")
            frames = RealFrames.from_kitti_tracking(args.kitti_tracking, args.sequence, _frame_range(args.frames),
                                                    progress=not args.no_progress)
        elif args.data is not None:
            if args.split is None:
                raise ValueError("--data needs --split (train, val or test)")
            frames = RealFrames.from_yolo(args.data, args.split, progress=not args.no_progress)
        else:
            ids = None
            if args.split_file is not None or args.split is not None:
                if args.split_file is None or args.split is None:
                    raise ValueError("--split-file and --split go together with --kitti-root")
                from pruning_tools.data.convert import read_split_file

                ids = read_split_file(args.split_file)[args.split]
            frames = RealFrames.from_kitti_root(args.kitti_root, ids, progress=not args.no_progress)
            if ids is not None:
                frames.description = f"{frames.description} [{args.split} of {args.split_file}]"
        det = load_detector(args.model, args.level, tuple(args.imgsz), args.threads, args.trust_pickle)
        try:
            res = frames.evaluate(det, args.class_map, progress=not args.no_progress)
        finally:
            det.close()
    except (OSError, ValueError, KeyError) as exc:
        print(f"pruning-tools evaluate: {exc}", file=sys.stderr)
        return 2
    print(format_kitti_table(res))
    if args.json is not None:
        _write_json(args.json, res)
    return 0


def _frame_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        a, b = (int(v) for v in text.split("-", 1))
    except ValueError:
        raise ValueError(f"--frames expects FIRST-LAST (e.g. 108-153), got {text!r}") from None
    if a < 0 or b < a:
        raise ValueError(f"--frames expects 0 <= FIRST <= LAST, got {text!r}")
    return a, b


def _write_json(path: Path, res: dict[str, Any]) -> None:
    """Strict JSON (NaN -> null) through a temporary file and a rename (:func:`pruning_tools.data.files.write_json`)."""
    from pruning_tools.data.files import write_json

    write_json(path, res)
    print(f"wrote {path}")


def _main_streaming(args: argparse.Namespace) -> int:
    import sys

    from pruning_tools.train.streaming import evaluate_streaming_bags

    if args.gt_bag is None or args.detections_bag is None:
        print("pruning-tools evaluate: --streaming needs --gt-bag and --detections-bag", file=sys.stderr)
        return 2
    try:
        res = evaluate_streaming_bags(args.gt_bag, args.detections_bag, period_s=args.period,
                                      det_topic=args.detections_topic, model=args.model or "")
    except (OSError, ValueError, KeyError) as exc:
        print(f"pruning-tools evaluate: {exc}", file=sys.stderr)
        return 2
    print(f"streaming: {res['frames']} frames, {res['answered']} answered, {res['on_time']} on time, "
          f"mean staleness {res['mean_staleness_ms']:.1f} ms (clock from {res['clock']})")
    for c in res["sap"]:
        print(f"{c:<11} sAP {res['sap'][c]:.3f}  AP {res['ap'][c]:.3f}")
    if args.json is not None:
        _write_json(args.json, res)
    return 0


# ------------------------------------------------------------------------------------------------
# Real-frame columns of the prune table, the zoo manifest and the demo report (``--real-eval DIR``)
# ------------------------------------------------------------------------------------------------
def add_real_eval_args(parser: argparse.ArgumentParser, what: str) -> None:
    """``--real-eval DIR``, ``--real-split-file F`` and ``--real-split S`` of ``prune`` and ``export``.

    :param what: what gets the real-frame AP, e.g. ``"columns"`` or ``"to every ONNX Runtime artifact"``.
    """
    parser.add_argument("--real-eval", type=Path, default=None,
                        help=f"real KITTI object root: add real-frame AP {what} (the baseline's real train/val "
                             "frames are left out)")
    parser.add_argument("--real-split-file", type=Path, default=None,
                        help="with --real-eval: evaluate only --real-split's frames of this JSON {train,val,test: [ids]}")
    parser.add_argument("--real-split", default="test", help="split of --real-split-file (default test)")


def baseline_real_splits(baseline: str | Path) -> dict[str, list[str]]:
    """The real frames a baseline checkpoint was trained and selected on (``real_splits`` of its
    JSON sidecar or checkpoint meta); empty when it records none."""
    path = Path(baseline)
    side = path.with_suffix(".json")
    meta: dict[str, Any] = {}
    if side.is_file():
        meta = json.loads(side.read_text())
    elif path.is_file():
        from pruning_tools.ultralytics_adapter import load_checkpoint

        meta = dict(load_checkpoint(path)[1])
    splits = meta.get("real_splits") or {}
    return {k: [str(i) for i in v] for k, v in splits.items() if k in ("train", "val", "test") and isinstance(v, list)}


def real_eval_frames(root: str | Path, baseline: str | Path | None = None, split_file: str | Path | None = None,
                     split: str = "test", progress: bool = False) -> RealFrames:
    """The real frames that real-frame columns report on.

    With ``split_file``, the ``split`` frames it lists. Otherwise every frame of ``root`` except those
    the baseline records as its real train/val frames (:func:`baseline_real_splits`), so a number never
    comes from a frame the model was trained or selected on.

    :raises ValueError: no frame left, or ids missing from ``root``.
    """
    from pruning_tools.data.kitti_dataset import KittiObjectDataset

    if split_file is not None:
        from pruning_tools.data.convert import read_split_file

        ids = read_split_file(Path(split_file))[split]
        frames = RealFrames.from_kitti_root(root, ids, progress)
        frames.description = f"{frames.description} [{split} of {split_file}]"
        return frames
    seen = baseline_real_splits(baseline) if baseline is not None else {}
    used = set(seen.get("train", [])) | set(seen.get("val", []))
    all_ids = KittiObjectDataset(Path(root)).ids
    ids = [i for i in all_ids if i not in used]
    if not ids:
        raise ValueError(f"{root}: every frame is one the baseline was trained or selected on; "
                         "give frames it never saw (or a split file)")
    frames = RealFrames.from_kitti_root(root, ids, progress)
    n_out = len(all_ids) - len(ids)
    frames.description = f"{Path(root)}: {len(ids)} real frames" + (
        f" ({n_out} left out: the baseline's real train/val frames)" if n_out else "")
    return frames


def real_summary(res: dict[str, Any]) -> dict[str, Any]:
    """The compact real-frame record stored per model (prune records, zoo artifacts)."""
    return {"data": res.get("data"), "n_images": res.get("n_images"), "map_kitti": res.get("map_kitti"),
            "map50": res.get("map50"), "map50_95": res.get("map50_95"),
            "classes": {k: {kk: v[kk] for kk in ("ap_kitti", "ap50", "ap50_95", "n_gt")}
                        for k, v in res.get("classes", {}).items()}}
