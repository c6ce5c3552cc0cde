"""End to end: generate scenes -> convert to YOLO -> data.yaml usable; generate --sequence -> to-bag."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pruning_tools.data.cli import main as kitti_main
from pruning_tools.data.kitti_io import read_labels, read_timestamps

generator = pytest.importorskip("pruning_tools.data.generator", reason="scene generator not present")

RAW_DRIVE = "data/kitti_raw/2011_09_26_drive_0001_sync/2011_09_26/2011_09_26_drive_0001_sync"
CAM_TO_CAM = "data/kitti_raw/2011_09_26_calib/2011_09_26/calib_cam_to_cam.txt"


def test_generate_convert_data_yaml(tmp_path: Path) -> None:
    from pruning_tools.data.yolo import resolve_split_dir

    gen = tmp_path / "gen"
    assert kitti_main(["generate", "--out", str(gen), "--frames", "12", "--seed", "5", "--no-progress"]) == 0
    labels = sorted((gen / "training/label_2").glob("*.txt"))
    assert len(labels) == 12
    assert kitti_main(["convert", "--kitti-root", str(gen), "--out", str(tmp_path / "yolo"),
                       "--split", "0.5,0.25,0.25", "--no-progress"]) == 0

    data_yaml = tmp_path / "yolo/data.yaml"
    data = yaml.safe_load(data_yaml.read_text())
    assert data["names"] == ["Car", "Pedestrian", "Cyclist"] and data["nc"] == 3
    root = Path(data["path"])
    n_images = n_boxes = 0
    for split in ("train", "val", "test"):
        img_dir, lbl_dir = resolve_split_dir(data_yaml, split)
        assert img_dir == root / data[split]
        imgs = sorted(img_dir.glob("*.png"))
        assert imgs, split
        n_images += len(imgs)
        for img in imgs:
            for line in (lbl_dir / f"{img.stem}.txt").read_text().splitlines():
                cls, *box = line.split()
                assert 0 <= int(cls) < 3 and all(0.0 <= float(v) <= 1.0 for v in box)
                n_boxes += 1
    assert n_images == 12
    # every Car/Pedestrian/Cyclist label with a visible box became a target
    def visible(b: tuple[float, float, float, float]) -> bool:  # area left inside the 1242x375 image
        return min(b[2], 1242) > max(b[0], 0) and min(b[3], 375) > max(b[1], 0)

    want = sum(1 for p in labels for o in read_labels(p)
               if o.type in ("Car", "Pedestrian", "Cyclist") and visible(o.bbox))
    assert n_boxes == want > 0
    conds = json.loads((tmp_path / "yolo/conditions.json").read_text())
    assert len(conds) == 12


def test_generate_sequence_to_bag(tmp_path: Path, shared_dir: Path) -> None:
    from rosbags.rosbag2 import Reader

    from sparse_perception.tools.bag_types import typestore

    ts_file = shared_dir / RAW_DRIVE / "image_02/timestamps.txt"
    drive = generator.generate_dataset(tmp_path / "seq", 10, seed=2, sequence=True, segment_frames=5,
                                       conditions=["day_clear", "night_fog"], timestamps=ts_file,
                                       calib=shared_dir / CAM_TO_CAM, progress=False)
    stamps = read_timestamps(Path(drive) / "image_02/timestamps.txt")
    assert stamps == read_timestamps(ts_file)[:10]
    assert kitti_main(["to-bag", "--raw-drive", str(drive), "--out", str(tmp_path / "bag"), "--no-progress"]) == 0
    ts = typestore()
    seen: dict[str, list[int]] = {}
    keys = []
    with Reader(tmp_path / "bag") as r:
        for c, t, raw in r.messages():
            seen.setdefault(c.topic, []).append(t)
            if c.topic == "/driving_condition":
                m = ts.deserialize_cdr(raw, c.msgtype)
                keys.append((m.illumination, m.weather))
    for topic in ("/kitti/camera_color_left/image_raw", "/kitti/camera_color_left/camera_info",
                  "/kitti/ground_truth", "/driving_condition"):
        assert seen[topic] == stamps, topic
    assert len(seen["/tf_static"]) == 1
    # two segments of 5 frames, condition constant within each
    assert len(set(keys[:5])) == 1 and len(set(keys[5:])) == 1
