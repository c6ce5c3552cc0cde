"""Tests of pruning_tools.data.generator (procedural KITTI scenes): determinism, layout, label
geometry against the calibration, truncation/occlusion, sequence coherence, timestamps, conditions,
real KITTI timestamps/calibration pairing and bad input."""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from pruning_tools.data.generator import generate_dataset  # noqa: E402
from pruning_tools.data.kitti_io import (  # noqa: E402
    read_cam_to_cam,
    read_labels,
    read_object_calib,
    read_timestamps,
)
from sparse_perception.runtime.conditions import CONDITION_KEYS, read_condition  # noqa: E402

RAW_DRIVE = "data/kitti_raw/2011_09_26_drive_0001_sync/2011_09_26/2011_09_26_drive_0001_sync"
RAW_CALIB = "data/kitti_raw/2011_09_26_calib/2011_09_26/calib_cam_to_cam.txt"


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _corners(dims, loc, ry) -> np.ndarray:
    """Independent KITTI box corner computation (devkit convention)."""
    h, w, length = dims
    x = [length / 2, length / 2, -length / 2, -length / 2] * 2
    y = [0, 0, 0, 0, -h, -h, -h, -h]
    z = [w / 2, -w / 2, -w / 2, w / 2] * 2
    R = np.array([[math.cos(ry), 0, math.sin(ry)], [0, 1, 0], [-math.sin(ry), 0, math.cos(ry)]])
    return (R @ np.array([x, y, z])).T + np.array(loc)


@pytest.fixture(scope="module")
def frames_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "frames"
    generate_dataset(out, 27, seed=5, progress=False)
    return out


@pytest.fixture(scope="module")
def seq_ds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("gen") / "seq"
    drive = generate_dataset(out, 24, seed=2, sequence=True, segment_frames=8,
                             conditions=["day_clear", "night_rain", "dusk_fog"], progress=False)
    return out, drive


def test_deterministic(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", 4, seed=11, progress=False)
    b = generate_dataset(tmp_path / "b", 4, seed=11, progress=False)
    assert a.relative_to(tmp_path / "a") == b.relative_to(tmp_path / "b")
    da, db = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
    assert da == db and len(da) == 4 * 7 + 3
    generate_dataset(tmp_path / "c", 4, seed=12, progress=False)
    dc = _tree_digest(tmp_path / "c")
    assert da["training/image_2/000000.png"] != dc["training/image_2/000000.png"]


def test_sequence_deterministic(tmp_path: Path) -> None:
    kw = dict(sequence=True, segment_frames=3, conditions=["night_fog", "day_rain"], progress=False)
    generate_dataset(tmp_path / "a", 6, seed=4, **kw)
    generate_dataset(tmp_path / "b", 6, seed=4, **kw)
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")


def test_layout_and_counts(frames_ds: Path) -> None:
    n = 27
    tr = frames_ds / "training"
    for sub, ext in (("image_2", "png"), ("label_2", "txt"), ("calib", "txt"), ("condition", "json")):
        files = sorted((tr / sub).iterdir())
        assert [f.name for f in files] == [f"{i:06d}.{ext}" for i in range(n)], sub
    meta = json.loads((frames_ds / "generation.json").read_text())
    assert meta["frames"] == n and meta["seed"] == 5 and meta["sequence"] is False
    assert len(meta["conditions"]) == n and set(meta["conditions"]) == set(CONDITION_KEYS)
    drive = frames_ds / meta["raw_drive"]
    date = drive.parent.name
    assert drive.name == f"{date}_drive_0001_sync"
    assert (drive.parent / "calib_cam_to_cam.txt").is_file()
    for i in range(n):
        img = tr / "image_2" / f"{i:06d}.png"
        raw = drive / "image_02" / "data" / f"{i:010d}.png"
        assert os.stat(img).st_ino == os.stat(raw).st_ino  # hard link
        assert (drive / "label_02" / "data" / f"{i:010d}.txt").read_text() == (tr / "label_2" / f"{i:06d}.txt").read_text()
        assert (drive / "condition" / "data" / f"{i:010d}.json").is_file()
    im = cv2.imread(str(tr / "image_2" / "000000.png"))
    assert im.shape == (375, 1242, 3)
    assert len(read_timestamps(drive / "image_02" / "timestamps.txt")) == n
    assert not [p for p in frames_ds.parent.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_labels_agree_with_calibration(frames_ds: Path) -> None:
    checked = 0
    classes = set()
    for i in range(27):
        calib = read_object_calib(frames_ds / "training" / "calib" / f"{i:06d}.txt")
        assert calib.P2[0, 0] == pytest.approx(721.5377) and calib.P2[1, 2] == pytest.approx(172.854)
        for o in read_labels(frames_ds / "training" / "label_2" / f"{i:06d}.txt"):
            if o.type == "DontCare":
                assert o.location == (-1000.0, -1000.0, -1000.0)
                continue
            classes.add(o.type)
            assert o.location[1] == pytest.approx(1.65, abs=0.01)  # on the ground, camera 1.65 m up
            assert o.alpha == pytest.approx(math.remainder(o.rotation_y - math.atan2(o.location[0], o.location[2]),
                                                           2 * math.pi), abs=0.015)
            x1, y1, x2, y2 = o.bbox
            assert 0 <= x1 < x2 <= 1241 and 0 <= y1 < y2 <= 374
            if o.truncated == 0:
                pts = _corners(o.dimensions, o.location, o.rotation_y)
                uvw = np.hstack([pts, np.ones((8, 1))]) @ calib.P2.T
                uv = uvw[:, :2] / uvw[:, 2:3]
                proj = (*uv.min(0), *uv.max(0))
                assert np.allclose(o.bbox, proj, atol=2.0), (i, o, proj)  # labels are rounded to 0.01
                checked += 1
            if o.type == "Car":
                h, w, length = o.dimensions
                assert 1.3 < h < 1.9 and 1.5 < w < 2.0 and 3.4 < length < 5.0
            elif o.type == "Pedestrian":
                assert 1.45 < o.dimensions[0] < 2.0
            elif o.type == "Cyclist":
                assert 1.5 < o.dimensions[0] < 1.95 and 1.6 < o.dimensions[2] < 2.0
    assert checked > 50
    assert {"Car", "Pedestrian"} <= classes


def test_truncation_and_occlusion(frames_ds: Path) -> None:
    occ = []
    trunc_border = 0
    dontcare = 0
    for i in range(27):
        for o in read_labels(frames_ds / "training" / "label_2" / f"{i:06d}.txt"):
            if o.type == "DontCare":
                dontcare += 1
                continue
            assert 0.0 <= o.truncated <= 1.0 and o.occluded in (0, 1, 2)
            occ.append(o.occluded)
            x1, y1, x2, y2 = o.bbox
            on_border = x1 <= 0.01 or y1 <= 0.01 or x2 >= 1240.99 or y2 >= 373.99
            if o.truncated > 0.05:
                assert on_border, o  # truncated boxes touch the image border
                trunc_border += 1
    assert trunc_border >= 3
    assert occ.count(0) > 0 and (occ.count(1) + occ.count(2)) > 0
    assert dontcare > 0


def test_sequence_coherence_and_timestamps(seq_ds: tuple[Path, Path]) -> None:
    out, drive = seq_ds
    meta = json.loads((out / "generation.json").read_text())
    assert meta["sequence"] is True
    assert meta["conditions"][:8] == [meta["conditions"][0]] * 8  # constant within a segment
    assert len({meta["conditions"][k] for k in (0, 8, 16)}) == 3  # all three requested keys used
    stamps = read_timestamps(drive / "image_02" / "timestamps.txt")
    dt = np.diff(stamps) / 1e9
    assert np.all(dt > 0) and np.all(np.abs(dt - 0.1) < 0.005)
    assert [f["timestamp_ns"] for f in meta["frames_info"]] == stamps
    prev: dict[int, tuple[float, float]] = {}
    moves = []
    matched = 0
    for i, info in enumerate(meta["frames_info"]):
        labels = read_labels(out / "training" / "label_2" / f"{i:06d}.txt")
        assert len(labels) == len(info["tracks"])
        cur = {}
        for o, tid in zip(labels, info["tracks"]):
            if tid is None:
                assert o.type == "DontCare"
                continue
            cur[tid] = (o.location[0], o.location[2])
        for tid, (x, z) in cur.items():
            if tid in prev:
                d = math.hypot(x - prev[tid][0], z - prev[tid][1])
                assert d < 3.5, (i, tid, d)  # <= ~30 m/s closing speed at 10 Hz
                moves.append(d)
                matched += 1
        prev = cur
    assert matched > 40
    assert np.median(moves) > 0.05  # things do move (ego speed >= 6 m/s)


def test_condition_sidecars(seq_ds: tuple[Path, Path]) -> None:
    out, drive = seq_ds
    meta = json.loads((out / "generation.json").read_text())
    for i, key in enumerate(meta["conditions"]):
        c = read_condition(out / "training" / "condition" / f"{i:06d}.json")
        assert c.key == key
        assert c.visibility_m > 0 and 0 <= c.ambient_light <= 1 and c.ego_speed_mps >= 0 and c.scene_density >= 0
        if c.weather == "fog":
            assert c.visibility_m < 300
        if c.illumination == "night":
            assert c.ambient_light < 0.2
        assert read_condition(drive / "condition" / "data" / f"{i:010d}.json") == c


def _gray_stats(out: Path, n: int) -> tuple[float, float]:
    g = [cv2.cvtColor(cv2.imread(str(out / "training" / "image_2" / f"{i:06d}.png")), cv2.COLOR_BGR2GRAY).astype(float)
         for i in range(n)]
    return float(np.mean([x.mean() for x in g])), float(np.mean([x.std() for x in g]))


def test_night_darker_fog_lower_contrast(tmp_path: Path) -> None:
    stats = {}
    for key in ("day_clear", "night_clear", "day_fog"):
        generate_dataset(tmp_path / key, 4, seed=9, conditions=[key], progress=False)
        stats[key] = _gray_stats(tmp_path / key, 4)
    assert stats["night_clear"][0] < 0.6 * stats["day_clear"][0]
    rms = {k: std / mean for k, (mean, std) in stats.items()}  # RMS contrast
    assert rms["day_fog"] < 0.7 * rms["day_clear"], rms


def test_real_timestamps_and_calib(shared_dir: Path, tmp_path: Path) -> None:
    ts = shared_dir / RAW_DRIVE / "image_02" / "timestamps.txt"
    calib = shared_dir / RAW_CALIB
    drive = generate_dataset(tmp_path / "out", 6, seed=1, sequence=True, timestamps=ts, calib=calib, progress=False)
    assert drive.name == "2011_09_26_drive_0001_sync"
    assert read_timestamps(drive / "image_02" / "timestamps.txt") == read_timestamps(ts)[:6]
    real = read_cam_to_cam(calib)
    ours = read_cam_to_cam(drive.parent / "calib_cam_to_cam.txt")
    assert np.allclose(ours.camera("02").P_rect, real.camera("02").P_rect)
    oc = read_object_calib(tmp_path / "out" / "training" / "calib" / "000000.txt")
    assert np.allclose(oc.P2, real.camera("02").P_rect)
    n_ts = len(read_timestamps(ts))
    with pytest.raises(ValueError, match="timestamps.txt"):
        generate_dataset(tmp_path / "too_many", n_ts + 1, timestamps=ts, progress=False)
    assert not (tmp_path / "too_many").exists()


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="frames"):
        generate_dataset(tmp_path / "a", 0, progress=False)
    with pytest.raises(ValueError, match="unknown condition"):
        generate_dataset(tmp_path / "a", 2, conditions=["day_clear", "noon_snow"], progress=False)
    with pytest.raises(ValueError, match="segment_frames"):
        generate_dataset(tmp_path / "a", 2, sequence=True, segment_frames=0, progress=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="busy"):
        generate_dataset(busy, 2, progress=False)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    bad_ts = tmp_path / "timestamps.txt"
    bad_ts.write_text("2011-09-26 13:02:25.961661696\nnot a time\n")
    with pytest.raises(ValueError, match=r"timestamps.txt:2"):
        generate_dataset(tmp_path / "b", 2, timestamps=bad_ts, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "timestamps.txt"]
    # an existing empty folder is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    generate_dataset(empty, 1, progress=False)
    assert (empty / "generation.json").is_file()


def test_sequence_conditions_follow_the_given_route(tmp_path: Path) -> None:
    route = ["night_fog", "day_clear", "night_fog"]
    generate_dataset(tmp_path / "seq", frames=14, seed=2, sequence=True, conditions=route, segment_frames=4,
                     progress=False)
    got = json.loads((tmp_path / "seq" / "generation.json").read_text())["conditions"]
    assert got == [route[(i // 4) % 3] for i in range(14)]
