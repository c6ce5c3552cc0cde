"""KITTI object layout -> YOLO dataset: real frames, a hand-written tree, class maps, splits, failures."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pruning_tools.data.cli import main as kitti_main
from pruning_tools.data.convert import assign_splits, convert_kitti, read_split_file
from pruning_tools.data.kitti_io import KittiObject, write_labels

W, H = 200, 100


def _obj(type_: str, bbox: tuple[float, float, float, float]) -> KittiObject:
    return KittiObject(type=type_, truncated=0.0, occluded=0, alpha=0.0, bbox=bbox,
                       dimensions=(1.5, 1.6, 4.0), location=(0.0, 1.6, 20.0), rotation_y=0.0)


def _tree(root: Path, frames: dict[str, list[KittiObject]], conditions: dict[str, str] | None = None) -> Path:
    """A small KITTI object tree with W x H images."""
    tr = root / "training"
    for d in ("image_2", "label_2", "condition"):
        (tr / d).mkdir(parents=True, exist_ok=True)
    for i, (fid, objs) in enumerate(frames.items()):
        cv2.imwrite(str(tr / "image_2" / f"{fid}.png"), np.full((H, W, 3), i % 255, np.uint8))
        write_labels(tr / "label_2" / f"{fid}.txt", objs)
        if conditions and fid in conditions:
            illum, weather = conditions[fid].split("_")
            (tr / "condition" / f"{fid}.json").write_text(json.dumps({"illumination": illum, "weather": weather}))
    return root


def _labels(path: Path) -> list[list[float]]:
    return [[float(v) for v in ln.split()] for ln in path.read_text().splitlines() if ln.strip()]


def _find(out: Path, fid: str) -> tuple[str, Path]:
    for s in ("train", "val", "test"):
        p = out / "labels" / s / f"{fid}.txt"
        if p.is_file():
            return s, p
    raise AssertionError(f"{fid} not in output")


def test_convert_real_frames(shared_dir: Path, tmp_path: Path) -> None:
    out = convert_kitti(shared_dir / "data/kitti_object", tmp_path / "yolo", progress=False)
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == ["Car", "Pedestrian", "Cyclist"]
    assert (data["train"], data["val"], data["test"]) == ("images/train", "images/val", "images/test")
    assert Path(data["path"]) == out.resolve()
    # 000000: one Pedestrian (712.40 143.00 810.73 307.92) in a 1224x370 image
    _, p0 = _find(out, "000000")
    (lab,) = _labels(p0)
    assert lab[0] == 1
    assert lab[1:] == pytest.approx([(712.40 + 810.73) / 2 / 1224, (143.00 + 307.92) / 2 / 370,
                                     (810.73 - 712.40) / 1224, (307.92 - 143.00) / 370], abs=1e-6)
    # 000002: Misc dropped by default, the Car stays
    _, p2 = _find(out, "000002")
    labs = _labels(p2)
    assert [int(v[0]) for v in labs] == [0]
    assert labs[0][1] == pytest.approx((657.39 + 700.07) / 2 / 1242, abs=1e-6)
    s2, _ = _find(out, "000002")
    img = out / "images" / s2 / "000002.png"
    assert img.read_bytes() == (shared_dir / "data/kitti_object/training/image_2/000002.png").read_bytes()
    # Misc mapped to a new class
    out2 = convert_kitti(shared_dir / "data/kitti_object", tmp_path / "yolo2", classes={"Misc": "Other"}, progress=False)
    assert yaml.safe_load((out2 / "data.yaml").read_text())["names"] == ["Car", "Pedestrian", "Cyclist", "Other"]
    assert sorted(int(v[0]) for v in _labels(_find(out2, "000002")[1])) == [0, 3]


def test_class_map_dontcare_clipping(tmp_path: Path) -> None:
    root = _tree(tmp_path / "kitti", {
        "000000": [_obj("Car", (-20.0, 10.0, 40.0, 50.0)),       # clipped at x=0
                   _obj("Van", (100.0, 10.0, 150.0, 60.0)),
                   _obj("DontCare", (0.0, 0.0, 200.0, 100.0)),
                   _obj("Cyclist", (150.0, 80.0, 260.0, 130.0)),  # clipped at right/bottom
                   _obj("Pedestrian", (10.0, 10.0, 20.0, 14.0)),  # 4 px high
                   _obj("Car", (300.0, 10.0, 400.0, 50.0))],      # fully outside: dropped
    })
    out = convert_kitti(root, tmp_path / "a", split=(1.0, 0.0, 0.0), progress=False)
    labs = _labels(out / "labels/train/000000.txt")
    assert [int(v[0]) for v in labs] == [0, 2, 1]  # Van and DontCare dropped by default
    assert labs[0][1:] == pytest.approx([20 / W, 30 / H, 40 / W, 40 / H])
    assert labs[1][1:] == pytest.approx([175 / W, 90 / H, 50 / W, 20 / H])
    assert all(0.0 <= v <= 1.0 for lab in labs for v in lab[1:])

    out = convert_kitti(root, tmp_path / "b", classes={"Van": "Car"}, split=(1.0, 0.0, 0.0),
                        min_height_px=5, progress=False)
    labs = _labels(out / "labels/train/000000.txt")
    assert [int(v[0]) for v in labs] == [0, 0, 2]  # Van -> Car, small pedestrian gone
    stats = json.loads((out / "stats.json").read_text())
    assert stats["instances"] == {"Car": 2, "Pedestrian": 0, "Cyclist": 1}

    with pytest.raises(ValueError, match="DontCare"):
        convert_kitti(root, tmp_path / "c", classes={"DontCare": "Car"}, progress=False)
    assert not (tmp_path / "c").exists()


def test_unknown_class_is_an_error_unless_mapped(tmp_path: Path) -> None:
    root = _tree(tmp_path / "kitti", {"000000": [_obj("Car", (0, 0, 10, 10))],
                                      "000001": [_obj("Car", (0, 0, 10, 10)), _obj("Bus", (0, 0, 50, 50))]})
    with pytest.raises(ValueError, match=r"label_2/000001\.txt:2: unknown class 'Bus'"):
        convert_kitti(root, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp left behind
    out = convert_kitti(root, tmp_path / "out", classes={"Bus": "Car"}, split=(1.0, 0.0, 0.0), progress=False)
    assert [int(v[0]) for v in _labels(out / "labels/train/000001.txt")] == [0, 0]
    out = convert_kitti(root, tmp_path / "out2", classes={"Bus": None}, split=(1.0, 0.0, 0.0), progress=False)
    assert len(_labels(out / "labels/train/000001.txt")) == 1


def test_splits_and_split_file_keep_frames_apart(tmp_path: Path) -> None:
    frames = {f"{i:06d}": [_obj("Car", (10, 10, 60, 60))] for i in range(20)}
    conds = {fid: ("night_fog" if i % 2 else "day_clear") for i, fid in enumerate(frames)}
    root = _tree(tmp_path / "kitti", frames, conds)
    out = convert_kitti(root, tmp_path / "a", seed=3, progress=False)
    splits = json.loads((out / "splits.json").read_text())
    assert {s: len(v) for s, v in splits.items()} == {"train": 16, "val": 2, "test": 2}
    assert sorted(sum(splits.values(), [])) == sorted(frames)
    for s, ids in splits.items():
        assert sorted(p.stem for p in (out / "images" / s).iterdir()) == ids
        assert sorted(p.stem for p in (out / "labels" / s).iterdir()) == ids
    assert json.loads((out / "conditions.json").read_text()) == conds

    # same seed, same split; another seed, another split
    again = convert_kitti(root, tmp_path / "b", seed=3, progress=False)
    assert json.loads((again / "splits.json").read_text()) == splits
    other = json.loads((convert_kitti(root, tmp_path / "c", seed=4, progress=False) / "splits.json").read_text())
    assert other != splits

    # more frames later: reusing the split file keeps old val/test frames out of train
    for i in range(20, 40):
        fid = f"{i:06d}"
        cv2.imwrite(str(root / "training/image_2" / f"{fid}.png"), np.zeros((H, W, 3), np.uint8))
        write_labels(root / "training/label_2" / f"{fid}.txt", [])
    grown = convert_kitti(root, tmp_path / "d", seed=99, split_file=out / "splits.json", progress=False)
    new = json.loads((grown / "splits.json").read_text())
    for s in ("train", "val", "test"):
        assert set(splits[s]) <= set(new[s])
    assert len(sum(new.values(), [])) == len(set(sum(new.values(), []))) == 40


def test_split_file_errors_and_assign() -> None:
    ids = [f"{i}" for i in range(3)]
    assert {s: len(v) for s, v in assign_splits(ids, (0.8, 0.1, 0.1)).items()} == {"train": 1, "val": 1, "test": 1}
    assert assign_splits(ids, (1.0, 0.0, 0.0))["train"] == ids
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(ids, (0.5, 0.1, 0.1))


def test_bad_split_file(tmp_path: Path) -> None:
    p = tmp_path / "splits.json"
    p.write_text(json.dumps({"train": ["1", "2"], "val": ["2"]}))
    with pytest.raises(ValueError, match=r"splits\.json: frame '2' is in both 'train' and 'val'"):
        read_split_file(p)
    p.write_text("{nope")
    with pytest.raises(ValueError, match=r"splits\.json: not valid JSON"):
        read_split_file(p)


def test_existing_output_and_half_written_failure(tmp_path: Path) -> None:
    frames = {f"{i:06d}": [_obj("Car", (10, 10, 60, 60))] for i in range(6)}
    root = _tree(tmp_path / "kitti", frames)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="busy"):
        convert_kitti(root, tmp_path / "busy", progress=False)
    assert (tmp_path / "busy" / "keep.txt").read_text() == "x"
    (tmp_path / "empty").mkdir()
    convert_kitti(root, tmp_path / "empty", progress=False)  # an empty folder is fine
    assert (tmp_path / "empty" / "data.yaml").is_file()

    # a corrupt image half-way: nothing at out, no temp folder
    (root / "training/image_2/000004.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match=r"000004\.png: cannot decode"):
        convert_kitti(root, tmp_path / "fail", progress=False)
    assert not (tmp_path / "fail").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "empty", "kitti"]


def test_missing_label_file(tmp_path: Path) -> None:
    root = _tree(tmp_path / "kitti", {"000000": [], "000001": []})
    (root / "training/label_2/000001.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"label_2/000001\.txt: label file missing"):
        convert_kitti(root, tmp_path / "out", progress=False)


def test_cli_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = {f"{i:06d}": [_obj("Van", (10, 10, 60, 60))] for i in range(5)}
    root = _tree(tmp_path / "kitti", frames)
    cmap = tmp_path / "classes.yaml"
    cmap.write_text("classes:\n  Van: Car\n  Misc: null\n")
    assert kitti_main(["convert", "--kitti-root", str(root), "--out", str(tmp_path / "y"), "--classes", str(cmap),
                       "--split", "0.6,0.2,0.2", "--no-progress"]) == 0
    splits = json.loads((tmp_path / "y/splits.json").read_text())
    assert {s: len(v) for s, v in splits.items()} == {"train": 3, "val": 1, "test": 1}
    assert kitti_main(["convert", "--kitti-root", str(root), "--out", str(tmp_path / "z"),
                       "--split-file", str(tmp_path / "y/splits.json"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "z/splits.json").read_text()) == splits
    capsys.readouterr()
    # bad input: one line on stderr, exit 2, no traceback
    assert kitti_main(["convert", "--kitti-root", str(root), "--out", str(tmp_path / "y"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "y: output exists" in err
    assert kitti_main(["convert", "--kitti-root", str(tmp_path / "nope"), "--out", str(tmp_path / "q")]) == 2
    assert "nope" in capsys.readouterr().err
    cmap.write_text("- not a map\n")
    assert kitti_main(["convert", "--kitti-root", str(root), "--out", str(tmp_path / "q"), "--classes", str(cmap)]) == 2
    assert "classes.yaml: expected a mapping" in capsys.readouterr().err
    assert kitti_main(["convert", "--kitti-root", str(root), "--out", str(tmp_path / "q"), "--split", "0.5,0.5"]) == 2
    assert not (tmp_path / "q").exists()
    shutil.rmtree(tmp_path / "z")


def test_only_ids_converts_just_those_frames(tmp_path: Path) -> None:
    frames = {f"{i:06d}": [_obj("Car", (10, 10, 60, 60))] for i in range(6)}
    root = _tree(tmp_path / "kitti", frames)
    out = convert_kitti(root, tmp_path / "yolo", split=(1.0, 0.0, 0.0), only_ids=["000001", "000004"],
                        progress=False)
    assert sorted(p.stem for p in (out / "images" / "train").iterdir()) == ["000001", "000004"]
    assert json.loads((out / "splits.json").read_text()) == {"train": ["000001", "000004"], "val": [], "test": []}
    with pytest.raises(ValueError, match="not found"):
        convert_kitti(root, tmp_path / "yolo2", only_ids=["000009"], progress=False)
    assert not (tmp_path / "yolo2").exists()


def test_dontcare_as_target_and_inverted_boxes_are_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 24 item 6: `--classes` with `Car: DontCare` is an error (docs/data.md); x2 < x1 boxes are counted."""
    root = _tree(tmp_path / "kitti", {"000000": [_obj("Car", (10.0, 10.0, 60.0, 50.0)),
                                                 _obj("Car", (80.0, 10.0, 30.0, 50.0)),     # x2 < x1
                                                 _obj("Cyclist", (80.0, 60.0, 120.0, 20.0))]})  # y2 < y1
    with pytest.raises(ValueError, match="Car: DontCare"):
        convert_kitti(root, tmp_path / "d", classes={"Car": "DontCare"}, progress=False)
    assert not (tmp_path / "d").exists()
    out = convert_kitti(root, tmp_path / "ok", split=(1.0, 0.0, 0.0), progress=False)
    assert len(_labels(out / "labels/train/000000.txt")) == 1
    assert json.loads((out / "stats.json").read_text())["inverted_boxes_dropped"] == 2
    err = capsys.readouterr().err
    assert "warning: 2 label box(es) with x2 < x1 or y2 < y1 dropped" in err and "000000.txt:2" in err
