"""KITTI object layout -> Ultralytics YOLO dataset.

Output (``out``)::

    images/{train,val,test}/<id>.png     hard links of image_2 files (copies across file systems)
    labels/{train,val,test}/<id>.txt     "class cx cy w h", normalised to [0, 1]
    data.yaml                            path, train/val/test folders, names
    splits.json                          {"train": [ids], "val": [ids], "test": [ids]}
    conditions.json                      {id: condition key}, only when condition sidecars exist

The whole tree is built in a temporary sibling folder and renamed into place, so a failure
leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pruning_tools.data.kitti_dataset import KittiObjectDataset
from pruning_tools.data.kitti_io import KITTI_TYPES, check_new_output, iter_labels, publish_dir, read_image
from sparse_perception.runtime.conditions import read_condition
from sparse_perception.runtime.partials import make_partial_dir, remove_stale_partials

#: Default class map: the three KITTI benchmark classes; every other type is dropped.
DEFAULT_CLASSES: dict[str, str | None] = {
    "Car": "Car", "Pedestrian": "Pedestrian", "Cyclist": "Cyclist",
    "Van": None, "Truck": None, "Person_sitting": None, "Tram": None, "Misc": None, "DontCare": None,
}
SPLITS: tuple[str, ...] = ("train", "val", "test")


def resolve_class_map(classes: Mapping[str, str | None] | None) -> tuple[dict[str, str | None], list[str]]:
    """Merge ``classes`` over :data:`DEFAULT_CLASSES` and list the target names.

    :param classes: KITTI type -> target name, or ``None`` to drop it. Types that are not KITTI
        types (e.g. ``"Bus"`` in a custom dataset) may be added here.
    :return: ``(full map, target names)``; names keep the order Car, Pedestrian, Cyclist, then
        new target names in the order they first appear in ``classes``.
    :raises ValueError: ``DontCare`` mapped to a target, or a non-string key/value.
    """
    cmap: dict[str, str | None] = dict(DEFAULT_CLASSES)
    for k, v in (classes or {}).items():
        if not isinstance(k, str) or not (v is None or (isinstance(v, str) and v)):
            raise ValueError(f"class map entries must be 'KittiType: TargetName' or 'KittiType: null', got {k!r}: {v!r}")
        cmap[k] = v
    if cmap["DontCare"] is not None:
        raise ValueError("DontCare marks ignored regions and can never be a target class")
    as_target = sorted(k for k, v in cmap.items() if v == "DontCare")
    if as_target:
        raise ValueError("DontCare marks ignored regions and can never be a target class, "
                         f"got {as_target[0]}: DontCare")
    names: list[str] = []
    for v in cmap.values():
        if v is not None and v not in names:
            names.append(v)
    if not names:
        raise ValueError("class map drops every class: nothing to train on")
    return cmap, names


def load_class_map(path: Path) -> dict[str, str | None]:
    """Read a class map YAML: ``{Van: Car, Misc: null}`` or the same under a ``classes:`` key.

    :raises ValueError: not a mapping (names the file).
    """
    import yaml

    from sparse_perception.runtime.zoo import capped, safe_load_yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: class map file not found")
    try:
        data = safe_load_yaml(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({capped(str(e), 500)})") from None
    if isinstance(data, dict) and isinstance(data.get("classes"), dict):
        data = data["classes"]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping 'KittiType: TargetName|null'")
    try:
        resolve_class_map(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return data


def read_split_file(path: Path) -> dict[str, list[str]]:
    """Read a ``splits.json`` (as :func:`convert_kitti` writes it).

    Keys starting with ``_`` (e.g. ``"_about"``) are comments and ignored.

    :raises ValueError: bad JSON, unknown split names, or one id in two splits (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not {k for k in data if not str(k).startswith("_")} <= set(SPLITS):
        raise ValueError(f"{path}: expected {{'train': [ids], 'val': [ids], 'test': [ids]}} "
                         "(keys starting with '_' are comments)")
    seen: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for split in SPLITS:
        ids = data.get(split, [])
        if not isinstance(ids, list):
            raise ValueError(f"{path}: {split!r} must be a list of frame ids")
        for fid in ids:
            fid = str(fid)
            if fid in seen:
                raise ValueError(f"{path}: frame {fid!r} is in both {seen[fid]!r} and {split!r}")
            seen[fid] = split
        out[split] = [str(i) for i in ids]
    return out


def assign_splits(ids: Sequence[str], split: tuple[float, float, float], seed: int = 0,
                  fixed: Mapping[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Assign frame ids to train/val/test.

    Ids listed in ``fixed`` keep their split; the others are shuffled with ``seed`` and cut by
    the ``split`` fractions (every split with a non-zero fraction gets at least one frame when
    there are enough frames).

    :param ids: all frame ids.
    :param split: (train, val, test) fractions, summing to 1.
    :param seed: shuffle seed.
    :param fixed: splits to keep (from a split file).
    :return: split -> sorted ids.
    """
    fr = np.asarray(split, dtype=np.float64)
    if fr.shape != (3,) or (fr < 0).any() or abs(fr.sum() - 1.0) > 1e-6 or fr[0] <= 0:
        raise ValueError(f"split must be three non-negative fractions summing to 1 with train > 0, got {tuple(split)}")
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    where = {fid: s for s, lst in (fixed or {}).items() for fid in lst}
    rest = []
    for fid in ids:
        if fid in where:
            out[where[fid]].append(fid)
        else:
            rest.append(fid)
    rng = np.random.default_rng(seed)
    rest = [rest[i] for i in rng.permutation(len(rest))]
    n = len(rest)
    counts = [0, int(round(n * fr[1])), int(round(n * fr[2]))]
    nonzero = [i for i in (1, 2) if fr[i] > 0]
    if n >= 1 + len(nonzero):
        for i in nonzero:
            counts[i] = max(counts[i], 1)
    while counts[1] + counts[2] >= n and n > 0 and (counts[1] or counts[2]):
        j = 1 if counts[1] >= counts[2] else 2
        counts[j] -= 1
    counts[0] = n - counts[1] - counts[2]
    out["val"] += rest[: counts[1]]
    out["test"] += rest[counts[1]: counts[1] + counts[2]]
    out["train"] += rest[counts[1] + counts[2]:]
    return {s: sorted(v) for s, v in out.items()}


def yolo_lines(objects: Sequence[tuple[str, Any]], width: int, height: int, cmap: Mapping[str, str | None],
               names: list[str], min_height_px: float, inverted: list[str] | None = None) -> list[str]:
    """YOLO label lines of ``(where, KittiObject)`` pairs (``where``: "file:line" for errors); boxes with
    x2 < x1 or y2 < y1 are dropped and their ``where`` appended to ``inverted``."""
    lines = []
    for where, obj in objects:
        if obj.type not in cmap:
            raise ValueError(f"{where}: unknown class {obj.type!r} (KITTI types: "
                             f"{', '.join(KITTI_TYPES)}); map or drop it with a class map (--classes)")
        target = cmap[obj.type]
        if target is None:
            continue
        x1, y1, x2, y2 = obj.bbox
        if (x2 < x1 or y2 < y1) and inverted is not None:
            inverted.append(where)
        x1, x2 = np.clip([x1, x2], 0.0, width)
        y1, y2 = np.clip([y1, y2], 0.0, height)
        if x2 <= x1 or y2 <= y1 or (y2 - y1) < min_height_px:
            continue
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        w, h = (x2 - x1) / width, (y2 - y1) / height
        lines.append(f"{names.index(target)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def convert_kitti(kitti_root: Path, out: Path, *, classes: Mapping[str, str | None] | None = None,
                  split: tuple[float, float, float] = (0.8, 0.1, 0.1), split_file: Path | None = None,
                  seed: int = 0, min_height_px: float = 0, progress: bool = True,
                  only_ids: Sequence[str] | None = None) -> Path:
    """Convert a KITTI object layout into an Ultralytics YOLO dataset.

    :param kitti_root: folder with ``training/{image_2,label_2[,calib,condition]}`` (or ``training`` itself).
    :param out: output folder; must not exist or be empty.
    :param classes: class map over :data:`DEFAULT_CLASSES` (e.g. ``{"Van": "Car"}``); ``None`` drops.
    :param split: (train, val, test) fractions for frames not fixed by ``split_file``.
    :param split_file: a ``splits.json`` whose frames keep their split (keeps val/test apart on reuse).
    :param seed: shuffle seed of the split.
    :param min_height_px: boxes lower than this (after clipping) are not targets.
    :param progress: show a progress bar.
    :param only_ids: convert only these frames (e.g. the real frames a model may be fine-tuned on).
    :return: ``out``.
    :raises FileExistsError: ``out`` exists and is not empty.
    :raises ValueError: unknown class (names the label file and line), bad labels/images/split file.
    """
    out = Path(out)
    check_new_output(out)
    cmap, names = resolve_class_map(classes)
    ds = KittiObjectDataset(kitti_root)
    ids = list(ds.ids)
    if only_ids is not None:
        wanted = {str(i) for i in only_ids}
        missing = sorted(wanted - set(ids))
        if missing:
            raise ValueError(f"{ds.root}: frames {missing[:5]} not found ({len(missing)} missing)")
        ids = [i for i in ids if i in wanted]
    fixed = read_split_file(split_file) if split_file is not None else None
    splits = assign_splits(ids, split, seed, fixed)
    split_of = {fid: s for s, lst in splits.items() for fid in lst}
    items = [(fid, img_path, (lambda f=fid: [(f"{ds.label_dir / f}.txt:{i}", o)
                                              for i, o in iter_labels(ds.label_dir / f"{f}.txt")]),
              ds.condition_dir / f"{fid}.json") for fid, img_path in zip(ds.ids, ds.image_paths) if fid in split_of]
    return _write_yolo(out, items, splits, cmap, names, min_height_px, str(ds.root.resolve()), progress)


def _write_yolo(out: Path, items: Sequence[tuple[str, Path, Any, Path | None]], splits: dict[str, list[str]],
                cmap: dict[str, str | None], names: list[str], min_height_px: float, source: str,
                progress: bool, extra_stats: dict[str, Any] | None = None) -> Path:
    """Write the YOLO tree of ``items`` (frame id, image, () -> [(where, KittiObject)], condition JSON or None)."""
    import yaml
    from tqdm import tqdm

    split_of = {fid: s for s, lst in splits.items() for fid in lst}
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out)  # left by a killed earlier run (its process is gone)
    tmp = make_partial_dir(out)
    try:
        for s in SPLITS:
            (tmp / "images" / s).mkdir(parents=True)
            (tmp / "labels" / s).mkdir(parents=True)
        conditions: dict[str, str] = {}
        counts: dict[str, int] = {n: 0 for n in names}
        inverted: list[str] = []
        for fid, img_path, objects, cond in tqdm(items, desc="convert", unit="frame", disable=not progress,
                                                 leave=False):
            h, w = read_image(img_path).shape[:2]
            lines = yolo_lines(objects(), w, h, cmap, names, min_height_px, inverted)
            for ln in lines:
                counts[names[int(ln.split()[0])]] += 1
            s = split_of[fid]
            _link_or_copy(img_path, tmp / "images" / s / f"{fid}{img_path.suffix.lower()}")
            (tmp / "labels" / s / f"{fid}.txt").write_text("".join(f"{ln}\n" for ln in lines))
            if cond is not None and cond.is_file():
                conditions[fid] = read_condition(cond).key
        data: dict[str, Any] = {"path": str(out.resolve()), "train": "images/train", "val": "images/val",
                                "test": "images/test", "nc": len(names), "names": names}
        (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        (tmp / "splits.json").write_text(json.dumps(splits, indent=1) + "\n")
        if conditions:
            (tmp / "conditions.json").write_text(json.dumps(conditions, indent=1, sort_keys=True) + "\n")
        (tmp / "stats.json").write_text(json.dumps(
            {"frames": {s: len(v) for s, v in splits.items()}, "instances": counts,
             "class_map": cmap, "source": source, "inverted_boxes_dropped": len(inverted), **(extra_stats or {})},
            indent=1) + "\n")
        publish_dir(tmp, out)
        if inverted:  # said, not silent: a label tool that swapped corners loses these boxes
            print(f"warning: {len(inverted)} label box(es) with x2 < x1 or y2 < y1 dropped (first: "
                  f"{', '.join(inverted[:3])}); counted in stats.json 'inverted_boxes_dropped'", file=sys.stderr)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def time_splits(n: int, split: tuple[float, float, float], gap: int) -> list[str | None]:
    """Split ``n`` consecutive frames by time: the first ``split[0]`` train, then val, then test, with ``gap``
    frames dropped (``None``) between two parts, so no held-out frame sits next to a trained one.

    :raises ValueError: bad fractions or gap, or too few frames for a non-empty train part.
    """
    fr = np.asarray(split, dtype=np.float64)
    if fr.shape != (3,) or (fr < 0).any() or abs(fr.sum() - 1.0) > 1e-6 or fr[0] <= 0:
        raise ValueError(f"split must be three non-negative fractions summing to 1 with train > 0, got {tuple(split)}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0 frames, got {gap}")
    parts = [i for i in range(3) if fr[i] > 0]
    usable = n - gap * (len(parts) - 1)
    if usable < len(parts):
        raise ValueError(f"{n} frames are too few for split {tuple(split)} with gaps of {gap}")
    sizes = [int(round(usable * fr[i])) if i in parts else 0 for i in range(3)]
    for i in parts:
        sizes[i] = max(sizes[i], 1)
    sizes[0] = usable - sizes[1] - sizes[2]
    out: list[str | None] = []
    for k, i in enumerate(parts):
        if k:
            out += [None] * gap
        out += [SPLITS[i]] * sizes[i]
    return out


def convert_tracking(root: Path, sequence: str, out: Path, *, classes: Mapping[str, str | None] | None = None,
                     split: tuple[float, float, float] = (0.7, 0.0, 0.3), gap: int = 5, min_height_px: float = 0,
                     progress: bool = True) -> Path:
    """Convert a KITTI tracking sequence into a YOLO dataset, split by time (:func:`time_splits`).

    Frame ids are ``SSSS_NNNNNN`` (never clash with object frames when datasets are mixed); ``splits.json``
    lists them and ``stats.json`` records the frame ranges and the dropped gap frames.

    :raises FileExistsError: ``out`` exists and is not empty.
    :raises ValueError: bad labels (file and line named), unknown class, bad split or gap.
    """
    from pruning_tools.data.kitti_tracking import TrackingSequence

    out = Path(out)
    check_new_output(out)
    cmap, names = resolve_class_map(classes)
    seq = TrackingSequence(root, sequence, timing=False)
    where = time_splits(len(seq), split, gap)
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    ranges: dict[str, list[int]] = {}
    items = []
    for i, s in enumerate(where):
        if s is None:
            continue
        fid = seq.frame_id(i)
        splits[s].append(fid)
        r = ranges.setdefault(s, [seq.frame_numbers[i], seq.frame_numbers[i]])
        r[1] = seq.frame_numbers[i]
        items.append((fid, seq.image_paths[i],
                      (lambda i=i: [(f"{seq.label_path} (frame {seq.frame_numbers[i]})", o) for o in seq.labels(i)]),
                      None))
    dropped = [seq.frame_numbers[i] for i, s in enumerate(where) if s is None]
    return _write_yolo(out, items, splits, cmap, names, min_height_px, str(seq.root.resolve()), progress,
                       {"sequence": seq.sequence, "frame_ranges": ranges, "gap_frames": dropped})
