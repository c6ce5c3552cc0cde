"""KITTI raw drive -> rosbag2 (mcap and sqlite3), read back with rosbags."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pruning_tools.data.bag import (
    TOPIC_CAMERA_INFO,
    TOPIC_CONDITION,
    TOPIC_GROUND_TRUTH,
    TOPIC_IMAGE,
    TOPIC_TF_STATIC,
    raw_drive_to_bag,
)
from pruning_tools.data.cli import main as kitti_main
from pruning_tools.data.kitti_io import KittiObject, read_cam_to_cam, read_timestamps, write_labels
from sparse_perception.tools.bag_types import typestore
from sparse_perception.runtime.conditions import Condition

RAW_DRIVE = "data/kitti_raw/2011_09_26_drive_0001_sync/2011_09_26/2011_09_26_drive_0001_sync"
CAM_TO_CAM = "data/kitti_raw/2011_09_26_calib/2011_09_26/calib_cam_to_cam.txt"
N = 6
CONDS = ["day_clear", "day_clear", "night_fog", "night_fog", "dusk_rain", "dusk_rain"]


def _objs(i: int) -> list[KittiObject]:
    def o(t: str, bbox: tuple[float, float, float, float]) -> KittiObject:
        return KittiObject(type=t, truncated=0.0, occluded=0, alpha=0.0, bbox=bbox, dimensions=(1.5, 1.6, 4.0),
                           location=(0.0, 1.6, 20.0), rotation_y=0.0)
    out = [o("Car", (100.0 + i, 150.0, 300.0 + i, 250.0)), o("DontCare", (0.0, 0.0, 20.0, 20.0))]
    if i % 2:
        out.append(o("Pedestrian", (600.0, 120.0, 640.0, 230.0)))
    return out


@pytest.fixture()
def drive(shared_dir: Path, tmp_path: Path) -> Path:
    """Real KITTI timestamps/calibration + small drawn PNGs + label/condition extensions."""
    date = tmp_path / "raw" / "2011_09_26"
    d = date / "2011_09_26_drive_0001_sync"
    (d / "image_02/data").mkdir(parents=True)
    (d / "label_02/data").mkdir(parents=True)
    (d / "condition/data").mkdir(parents=True)
    shutil.copy(shared_dir / CAM_TO_CAM, date / "calib_cam_to_cam.txt")
    lines = (shared_dir / RAW_DRIVE / "image_02/timestamps.txt").read_text().splitlines()[:N]
    (d / "image_02/timestamps.txt").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    for i in range(N):
        img = rng.integers(0, 255, (375, 1242, 3), dtype=np.uint8)
        cv2.rectangle(img, (100 + i, 150), (300 + i, 250), (0, 0, 255), -1)
        cv2.imwrite(str(d / f"image_02/data/{i:010d}.png"), img)
        write_labels(d / f"label_02/data/{i:010d}.txt", _objs(i))
        c = Condition.from_key(CONDS[i], visibility_m=100.0 * (i + 1), ambient_light=0.5, ego_speed_mps=10.0 + i,
                               scene_density=float(i))
        (d / f"condition/data/{i:010d}.json").write_text(json.dumps(c.to_dict()))
    return d


def _read(bag: Path) -> tuple[dict[str, list[tuple[int, object]]], dict]:
    from rosbags.rosbag2 import Reader

    ts = typestore()
    msgs: dict[str, list[tuple[int, object]]] = {}
    with Reader(bag) as r:
        qos = {c.topic: c.ext.offered_qos_profiles for c in r.connections}
        for c, t, raw in r.messages():
            msgs.setdefault(c.topic, []).append((t, ts.deserialize_cdr(raw, c.msgtype)))
    return msgs, qos


def _ns(stamp: object) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec  # type: ignore[attr-defined]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_raw_drive_to_bag_round_trip(drive: Path, tmp_path: Path, shared_dir: Path, storage: str) -> None:
    from rosbags.interfaces import QosDurability, QosReliability

    out = raw_drive_to_bag(drive, tmp_path / f"bag_{storage}", storage=storage, progress=False)
    meta = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == storage
    stamps = read_timestamps(drive / "image_02/timestamps.txt")
    assert stamps[0] == 1_317_042_145_961_661_696
    msgs, qos = _read(out)
    assert set(msgs) == {TOPIC_IMAGE, TOPIC_CAMERA_INFO, TOPIC_GROUND_TRUTH, TOPIC_CONDITION, TOPIC_TF_STATIC}

    images = msgs[TOPIC_IMAGE]
    assert len(images) == N
    for i, (t, img) in enumerate(images):
        assert t == stamps[i] and _ns(img.header.stamp) == stamps[i]
        assert img.header.frame_id == "camera_color_left" and img.encoding == "bgr8"
        assert (img.width, img.height, img.step) == (1242, 375, 1242 * 3)
        png = cv2.imread(str(drive / f"image_02/data/{i:010d}.png"), cv2.IMREAD_COLOR)
        assert np.array_equal(np.asarray(img.data).reshape(375, 1242, 3), png)

    cc = read_cam_to_cam(shared_dir / CAM_TO_CAM).camera("02")
    assert len(msgs[TOPIC_CAMERA_INFO]) == N
    for i, (t, info) in enumerate(msgs[TOPIC_CAMERA_INFO]):
        assert t == stamps[i] and _ns(info.header.stamp) == stamps[i]
        assert info.header.frame_id == "camera_color_left"
        assert (info.width, info.height, info.distortion_model) == (1242, 375, "plumb_bob")
        np.testing.assert_array_equal(info.k, cc.K.ravel())
        np.testing.assert_array_equal(info.d, cc.D)
        np.testing.assert_array_equal(info.r, cc.R_rect.ravel())
        np.testing.assert_array_equal(info.p, cc.P_rect.ravel())

    gts = msgs[TOPIC_GROUND_TRUTH]
    assert len(gts) == N
    for i, (t, arr) in enumerate(gts):
        assert t == stamps[i] and _ns(arr.header.stamp) == stamps[i]
        expected = [o for o in _objs(i) if o.type != "DontCare"]
        assert [d.results[0].class_id for d in arr.detections] == [o.type for o in expected]
        assert all(d.results[0].score == 1.0 for d in arr.detections)
        car = arr.detections[0].bbox
        assert (car.center_x, car.center_y, car.size_x, car.size_y) == pytest.approx((200.0 + i, 200.0, 200.0, 100.0))
        assert arr.detections[0].id == f"{i:010d}:0"

    conds = msgs[TOPIC_CONDITION]
    assert len(conds) == N
    for i, (t, c) in enumerate(conds):
        assert t == stamps[i] and _ns(c.header.stamp) == stamps[i]
        key = Condition.from_codes(c.illumination, c.weather).key
        assert key == CONDS[i]
        assert c.visibility_m == pytest.approx(100.0 * (i + 1)) and c.scene_density == pytest.approx(i)

    (tf,) = msgs[TOPIC_TF_STATIC]
    assert tf[0] == stamps[0]
    (tr,) = tf[1].transforms
    assert (tr.header.frame_id, tr.child_frame_id) == ("base_link", "camera_color_left")
    q = tr.transform.rotation
    assert (q.x, q.y, q.z, q.w) == (-0.5, 0.5, -0.5, 0.5)

    for topic, profiles in qos.items():
        assert len(profiles) == 1, topic
        assert profiles[0].reliability == QosReliability.RELIABLE
        want = QosDurability.TRANSIENT_LOCAL if topic == TOPIC_TF_STATIC else QosDurability.VOLATILE
        assert profiles[0].durability == want, topic
    # the YAML in metadata.yaml is what ros2 bag play reads
    tfm = [t for t in meta["topics_with_message_count"] if t["topic_metadata"]["name"] == TOPIC_TF_STATIC][0]
    assert yaml.safe_load(tfm["topic_metadata"]["offered_qos_profiles"])[0]["durability"] == 1  # transient local
    assert meta["message_count"] == 4 * N + 1


def test_bag_without_extensions_and_errors(drive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(drive / "label_02")
    shutil.rmtree(drive / "condition")
    assert kitti_main(["to-bag", "--raw-drive", str(drive), "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    msgs, _ = _read(tmp_path / "b")
    assert set(msgs) == {TOPIC_IMAGE, TOPIC_CAMERA_INFO, TOPIC_TF_STATIC}
    capsys.readouterr()
    assert kitti_main(["to-bag", "--raw-drive", str(drive), "--out", str(tmp_path / "b")]) == 2
    assert "output exists" in capsys.readouterr().err

    # count mismatch: clear error, nothing written
    (drive / "image_02/data/0000000005.png").unlink()
    assert kitti_main(["to-bag", "--raw-drive", str(drive), "--out", str(tmp_path / "c"), "--storage", "sqlite3"]) == 2
    err = capsys.readouterr().err
    assert "timestamps.txt: 6 timestamps but 5 images" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()

    # a corrupt PNG half-way: no bag, no temp folder
    lines = (drive / "image_02/timestamps.txt").read_text().splitlines()[:5]
    (drive / "image_02/timestamps.txt").write_text("\n".join(lines) + "\n")
    (drive / "image_02/data/0000000003.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"0000000003\.png: cannot decode"):
        raw_drive_to_bag(drive, tmp_path / "d", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "raw"]
    with pytest.raises(ValueError, match="storage"):
        raw_drive_to_bag(drive, tmp_path / "e", storage="rosbag1")


RAW_FRAMES = "data/kitti_raw_frames/2011_09_26"
CALIB_DAY = "data/kitti_raw/2011_09_26_calib/2011_09_26"


def test_real_frames_without_timestamps_become_a_bag(shared_dir: Path, tmp_path: Path, drive: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """78 consecutive real KITTI raw frames (no timestamps.txt) + the day's calibration folder -> bag at 10 Hz."""
    frames = shared_dir / RAW_FRAMES
    n = len(list((frames / "image_02/data").glob("*.png")))
    out = tmp_path / "real_bag"
    assert kitti_main(["to-bag", "--raw-drive", str(frames), "--rate", "10", "--calib", str(shared_dir / CALIB_DAY),
                       "--out", str(out), "--no-progress"]) == 0
    msgs, _ = _read(out)
    images, infos = msgs[TOPIC_IMAGE], msgs[TOPIC_CAMERA_INFO]
    assert len(images) == len(infos) == n == 78
    start = 1_316_995_200 * 1_000_000_000  # 2011-09-26 00:00:00 UTC, from the day folder's name
    assert [t for t, _ in images] == [start + i * 100_000_000 for i in range(n)]
    assert TOPIC_GROUND_TRUTH not in msgs and TOPIC_CONDITION not in msgs
    cc = read_cam_to_cam(shared_dir / CALIB_DAY / "calib_cam_to_cam.txt").camera("02")
    np.testing.assert_array_equal(infos[0][1].p, cc.P_rect.ravel())
    first = cv2.imread(str(frames / "image_02/data/0000000000.png"), cv2.IMREAD_COLOR)
    assert np.array_equal(np.asarray(images[0][1].data).reshape(first.shape), first)
    # an explicit start, the bare PNG folder, and the errors
    out2 = tmp_path / "real_bag2"
    assert kitti_main(["to-bag", "--raw-drive", str(frames / "image_02/data"), "--rate", "5", "--start",
                       "2011-09-26 13:02:25.5", "--calib", str(shared_dir / CALIB_DAY / "calib_cam_to_cam.txt"),
                       "--out", str(out2), "--no-progress"]) == 0
    stamps = [t for t, _ in _read(out2)[0][TOPIC_IMAGE]]
    assert stamps[0] == 1_317_042_145_500_000_000 and stamps[1] - stamps[0] == 200_000_000
    capsys.readouterr()
    assert kitti_main(["to-bag", "--raw-drive", str(frames), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "--rate" in capsys.readouterr().err
    assert kitti_main(["to-bag", "--raw-drive", str(frames), "--rate", "0", "--calib", str(shared_dir / CALIB_DAY),
                       "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "rate must be" in capsys.readouterr().err
    assert kitti_main(["to-bag", "--raw-drive", str(drive), "--rate", "10", "--out", str(tmp_path / "x"),
                       "--no-progress"]) == 2
    assert "its own timestamps" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
