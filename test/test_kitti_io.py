"""KITTI readers/writers on real shared frames and on broken input."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pruning_tools.data.kitti_dataset import CameraInfoData, KittiObjectDataset, RawDrive
from pruning_tools.data.kitti_io import (
    KittiObject,
    format_label_line,
    format_timestamp,
    parse_timestamp,
    read_cam_to_cam,
    read_image,
    read_labels,
    read_object_calib,
    read_timestamps,
    write_cam_to_cam,
    write_labels,
    write_object_calib,
    write_timestamps,
)

RAW_DRIVE = "data/kitti_raw/2011_09_26_drive_0001_sync/2011_09_26/2011_09_26_drive_0001_sync"
CAM_TO_CAM = "data/kitti_raw/2011_09_26_calib/2011_09_26/calib_cam_to_cam.txt"


def _obj(**kw: object) -> KittiObject:
    base = dict(type="Car", truncated=0.0, occluded=0, alpha=-1.5, bbox=(100.0, 100.0, 200.0, 150.0),
                dimensions=(1.5, 1.6, 4.0), location=(1.0, 1.6, 20.0), rotation_y=-1.55)
    base.update(kw)
    return KittiObject(**base)  # type: ignore[arg-type]


# ----------------------------------------------------------------- real object frames


def test_real_labels_parse(shared_dir: Path) -> None:
    lab = shared_dir / "data/kitti_object/training/label_2"
    first = (lab / "000000.txt").read_text().split()
    objs0 = read_labels(lab / "000000.txt")
    assert [o.type for o in objs0] == [first[0]] == ["Pedestrian"]
    assert objs0[0].bbox == pytest.approx(tuple(float(v) for v in first[4:8]))
    assert objs0[0].bbox == pytest.approx((712.40, 143.00, 810.73, 307.92))
    assert objs0[0].dimensions == pytest.approx((1.89, 0.48, 1.20))
    assert objs0[0].location == pytest.approx((1.84, 1.47, 8.41))
    assert objs0[0].rotation_y == pytest.approx(0.01)
    assert objs0[0].score is None

    objs2 = read_labels(lab / "000002.txt")
    lines = [ln.split() for ln in (lab / "000002.txt").read_text().splitlines() if ln.strip()]
    assert [o.type for o in objs2] == [ln[0] for ln in lines] == ["Misc", "Car"]
    for o, ln in zip(objs2, lines):
        assert o.bbox == pytest.approx(tuple(float(v) for v in ln[4:8]))
        assert o.occluded == int(ln[2]) and o.truncated == float(ln[1])
    assert objs2[1].bbox == pytest.approx((657.39, 190.13, 700.07, 223.39))
    # 33 px high car, unoccluded, untruncated: moderate (easy needs 40 px)
    assert objs2[1].difficulty == "moderate"
    assert objs0[0].difficulty == "easy"


def test_real_calib_and_images(shared_dir: Path) -> None:
    root = shared_dir / "data/kitti_object/training"
    calib = read_object_calib(root / "calib/000000.txt")
    assert calib.P2.shape == (3, 4) and calib.R0_rect.shape == (3, 3)
    assert calib.P2[0, 0] == pytest.approx(7.070493e02)
    assert calib.P2[0, 3] == pytest.approx(4.575831e01)
    assert calib.Tr_velo_to_cam[2, 3] == pytest.approx(-3.321029e-01)
    assert calib.Tr_imu_to_velo[0, 3] == pytest.approx(-8.086759e-01)
    assert read_image(root / "image_2/000000.png").shape == (370, 1224, 3)
    img = read_image(root / "image_2/000002.png")
    assert img.shape == (375, 1242, 3) and img.dtype == np.uint8


def test_object_dataset_reads_real_frames(shared_dir: Path) -> None:
    for root in (shared_dir / "data/kitti_object", shared_dir / "data/kitti_object/training"):
        ds = KittiObjectDataset(root)
        assert ds.ids == sorted(ds.ids) and len(ds) == len(ds.ids) >= 2 and ds.ids[:3] == ["000000", "000001", "000002"]
        frames = [ds[0], ds[ds.ids.index("000002")]]
        assert [o.type for o in frames[1].labels] == ["Misc", "Car"]
        assert frames[0].calib is not None and frames[0].calib.P2[1, 2] == pytest.approx(1.805066e02)
        assert frames[0].condition is None and not ds.has_conditions
        assert frames[1].image().shape == (375, 1242, 3)


def test_calib_round_trip(shared_dir: Path, tmp_path: Path) -> None:
    src = shared_dir / "data/kitti_object/training/calib/000002.txt"
    a = read_object_calib(src)
    write_object_calib(tmp_path / "c.txt", a)
    b = read_object_calib(tmp_path / "c.txt")
    for k in ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


# ----------------------------------------------------------------- real raw drive metadata


def test_real_timestamps_exact_ns(shared_dir: Path, tmp_path: Path) -> None:
    path = shared_dir / RAW_DRIVE / "image_02/timestamps.txt"
    lines = path.read_text().splitlines()
    ns = read_timestamps(path)
    assert len(ns) == len(lines) == 108
    # 2011-09-26 13:02:25 UTC = 1317042145 s; fraction taken digit by digit
    assert lines[0] == "2011-09-26 13:02:25.961661696"
    assert ns[0] == 1_317_042_145_961_661_696
    assert all(b > a for a, b in zip(ns, ns[1:]))
    assert [format_timestamp(t) for t in ns] == lines
    write_timestamps(tmp_path / "t.txt", ns)
    assert (tmp_path / "t.txt").read_text() == path.read_text()
    # float seconds would lose the last digits here
    assert parse_timestamp("2011-09-26 13:02:25.964389445") % 1_000_000_000 == 964_389_445
    assert parse_timestamp("2011-09-26 13:02:25.5") % 1_000_000_000 == 500_000_000


def test_real_cam_to_cam_and_camera_info(shared_dir: Path, tmp_path: Path) -> None:
    path = shared_dir / CAM_TO_CAM
    cc = read_cam_to_cam(path)
    assert cc.calib_time == "09-Jan-2012 13:57:47" and cc.corner_dist == pytest.approx(0.0995)
    assert sorted(cc.cameras) == ["00", "01", "02", "03"]
    info = CameraInfoData.from_calib(cc, "02")
    assert (info.width, info.height) == (1242, 375)
    assert info.K[0, 0] == pytest.approx(9.597910e02) and info.K[1, 2] == pytest.approx(2.241806e02)
    assert info.D == pytest.approx([-3.691481e-01, 1.968681e-01, 1.353473e-03, 5.677587e-04, -6.770705e-02])
    assert info.R[0, 1] == pytest.approx(1.511453e-02)
    assert info.P[0, 3] == pytest.approx(4.485728e01) and info.P[2, 3] == pytest.approx(2.745884e-03)
    write_cam_to_cam(tmp_path / "c.txt", cc)
    assert (tmp_path / "c.txt").read_text() == path.read_text()
    with pytest.raises(KeyError, match="'04'"):
        cc.camera("04")


# ----------------------------------------------------------------- labels: writing, difficulty, errors


def test_label_round_trip_and_score(tmp_path: Path) -> None:
    objs = [_obj(), _obj(type="Pedestrian", occluded=1, truncated=0.25, score=0.8765),
            _obj(type="DontCare", bbox=(0.0, 0.0, 10.0, 10.0))]
    write_labels(tmp_path / "l.txt", objs)
    back = read_labels(tmp_path / "l.txt")
    assert back == objs
    assert len(format_label_line(objs[1]).split()) == 16
    write_labels(tmp_path / "e.txt", [])
    assert read_labels(tmp_path / "e.txt") == []


@pytest.mark.parametrize("kw,expected", [
    (dict(bbox=(0, 0, 10, 40)), "easy"),
    (dict(bbox=(0, 0, 10, 39.9)), "moderate"),
    (dict(bbox=(0, 0, 10, 25)), "moderate"),
    (dict(bbox=(0, 0, 10, 24.9)), None),
    (dict(occluded=1), "moderate"),
    (dict(occluded=2), "hard"),
    (dict(occluded=3), None),
    (dict(truncated=0.15), "easy"),
    (dict(truncated=0.2), "moderate"),
    (dict(truncated=0.3), "moderate"),
    (dict(truncated=0.4), "hard"),
    (dict(truncated=0.51), None),
    (dict(occluded=1, truncated=0.45), "hard"),
])
def test_difficulty_levels(kw: dict, expected: str | None) -> None:
    base: dict = dict(bbox=(0.0, 0.0, 10.0, 50.0))
    base.update(kw)
    assert _obj(**base).difficulty == expected


@pytest.mark.parametrize("line,match", [
    ("Car 0.00 0 -1.5 1 2 3", r":2: expected 15 or 16 columns"),
    ("Car 0.00 0 -1.5 1 2 3 4 1.5 1.6 4.0 1 1.6 20 x", r":2: non-numeric"),
    ("Car 0.00 0.5 -1.5 1 2 3 4 1.5 1.6 4.0 1 1.6 20 0.1", r":2: occluded must be an integer"),
    ("Car 0.00 0 -1.5 1 2 3 4 1.5 1.6 4.0 1 1.6 20 0.1 0.9 7", r":2: expected 15 or 16 columns"),
])
def test_malformed_label_names_file_and_line(tmp_path: Path, line: str, match: str) -> None:
    p = tmp_path / "000007.txt"
    p.write_text(format_label_line(_obj()) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=r"000007\.txt" + match):
        read_labels(p)


def test_malformed_calib_and_timestamps(tmp_path: Path, shared_dir: Path) -> None:
    text = (shared_dir / "data/kitti_object/training/calib/000000.txt").read_text()
    bad = tmp_path / "calib.txt"
    bad.write_text(text.replace("P2: 7.070493000000e+02 ", "P2: "))
    with pytest.raises(ValueError, match=r"calib\.txt:3: P2: expected 12 values, got 11"):
        read_object_calib(bad)
    bad.write_text("\n".join(ln for ln in text.splitlines() if not ln.startswith("R0_rect")))
    with pytest.raises(ValueError, match=r"calib\.txt: missing entry 'R0_rect'"):
        read_object_calib(bad)
    ts = tmp_path / "timestamps.txt"
    ts.write_text("2011-09-26 13:02:25.961661696\n2011-09-26 13:02:26,064785152\n")
    with pytest.raises(ValueError, match=r"timestamps\.txt:2: expected 'YYYY-MM-DD"):
        read_timestamps(ts)
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        read_labels(tmp_path / "nothere.txt")


def test_corrupt_and_missing_png(tmp_path: Path, shared_dir: Path) -> None:
    good = (shared_dir / "data/kitti_object/training/image_2/000000.png").read_bytes()
    bad = tmp_path / "000000.png"
    bad.write_bytes(good[:200])  # truncated PNG
    with pytest.raises(ValueError, match=r"000000\.png: cannot decode image"):
        read_image(bad)
    bad.write_bytes(b"")
    with pytest.raises(ValueError, match=r"000000\.png"):
        read_image(bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        read_image(tmp_path / "missing.png")


# ----------------------------------------------------------------- raw drive reader


def _raw_drive(shared_dir: Path, tmp_path: Path, n: int) -> Path:
    import cv2

    date = tmp_path / "2011_09_26"
    drive = date / "2011_09_26_drive_0001_sync"
    (drive / "image_02/data").mkdir(parents=True)
    shutil.copy(shared_dir / CAM_TO_CAM, date / "calib_cam_to_cam.txt")
    lines = (shared_dir / RAW_DRIVE / "image_02/timestamps.txt").read_text().splitlines()[:n]
    (drive / "image_02/timestamps.txt").write_text("\n".join(lines) + "\n")
    for i in range(n):
        cv2.imwrite(str(drive / f"image_02/data/{i:010d}.png"), np.full((375, 1242, 3), 10 * i, np.uint8))
    return drive


def test_raw_drive_reader(shared_dir: Path, tmp_path: Path) -> None:
    drive = _raw_drive(shared_dir, tmp_path, 4)
    rd = RawDrive(drive)
    assert len(rd) == 4 and rd.name == "2011_09_26_drive_0001_sync"
    assert rd.timestamps == read_timestamps(shared_dir / RAW_DRIVE / "image_02/timestamps.txt")[:4]
    assert (rd.camera_info.width, rd.camera_info.height) == (1242, 375)
    assert rd.labels(0) is None and rd.condition(0) is None
    assert int(rd.image(3)[0, 0, 0]) == 30


def test_raw_drive_count_mismatch(shared_dir: Path, tmp_path: Path) -> None:
    drive = _raw_drive(shared_dir, tmp_path, 4)
    (drive / "image_02/data/0000000003.png").unlink()
    with pytest.raises(ValueError, match=r"timestamps\.txt: 4 timestamps but 3 images"):
        RawDrive(drive)


def test_raw_drive_missing_extension_file(shared_dir: Path, tmp_path: Path) -> None:
    drive = _raw_drive(shared_dir, tmp_path, 3)
    (drive / "label_02/data").mkdir(parents=True)
    for i in range(2):
        write_labels(drive / f"label_02/data/{i:010d}.txt", [_obj()])
    with pytest.raises(FileNotFoundError, match=r"0000000002\.txt: missing"):
        RawDrive(drive)


def test_raw_drive_missing_calib(shared_dir: Path, tmp_path: Path) -> None:
    drive = _raw_drive(shared_dir, tmp_path, 2)
    (drive.parent / "calib_cam_to_cam.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"calib_cam_to_cam\.txt"):
        RawDrive(drive)
    rd = RawDrive(drive, calib=shared_dir / CAM_TO_CAM)
    assert rd.camera_info.P[0, 0] == pytest.approx(7.215377e02)


def test_package_exports_are_lazy_and_match_contract() -> None:
    import inspect
    import subprocess
    import sys

    import pruning_tools.data as kitti

    sig = inspect.signature(kitti.convert_kitti)
    assert list(sig.parameters)[:2] == ["kitti_root", "out"]
    assert sig.parameters["split"].default == (0.8, 0.1, 0.1) and sig.parameters["min_height_px"].default == 0
    sig = inspect.signature(kitti.raw_drive_to_bag)
    assert sig.parameters["storage"].default == "mcap" and sig.parameters["camera"].default == "02"
    assert kitti.TOPIC_IMAGE == "/kitti/camera_color_left/image_raw"
    with pytest.raises(AttributeError):
        kitti.no_such_name  # noqa: B018
    # reading labels pulls in neither rosbags nor ROS nor torch
    code = ("import sys, pruning_tools.data as k; k.read_labels; k.KittiObjectDataset; "
            "bad = [m for m in ('rosbags', 'rclpy', 'torch') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
