"""Procedural KITTI-format driving scenes: :func:`generate_dataset`.

Scenes are drawn by :mod:`pruning_tools.data.render` from a :class:`~pruning_tools.data.scene.World`
seen through KITTI's camera 2 (``P_rect_02`` of the 2011-09-26 calibration unless a real
``calib_cam_to_cam.txt`` is given), 1.65 m above a flat road. Labels are exact: the 3D box of every
road user is known, its 2D box is that box projected with ``P2`` and clipped to the image, the
truncation is the part of that projection outside the image, and the occlusion level comes from
the pixels the object still owns after painter's-order drawing. The same seed gives byte-identical
files.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from pruning_tools.data.files import atomic_write_text
from pruning_tools.data.kitti_io import (
    CameraCalib,
    CamToCam,
    KittiObject,
    ObjectCalib,
    check_new_output,
    publish_dir,
    read_cam_to_cam,
    read_timestamps,
    write_cam_to_cam,
    write_labels,
    write_object_calib,
    write_timestamps,
)
from pruning_tools.data.render import CAM_HEIGHT, Camera, Look, Renderer, box_corners, make_look, project_box
from pruning_tools.data.scene import World, random_road
from sparse_perception.runtime.conditions import CONDITION_KEYS, Condition
from sparse_perception.runtime.partials import make_partial_dir, remove_stale_partials

#: Bumped whenever the same seed would give different images or labels.
GENERATOR_VERSION = 1
#: Nominal frame period of the generated drive (KITTI's cameras run at about 10 Hz).
FRAME_PERIOD_NS = 100_000_000
#: 2D boxes lower than this (pixels) become ``DontCare``.
MIN_HEIGHT_PX = 16.0
#: Road users farther than this (metres) become ``DontCare``.
MAX_DISTANCE_M = 80.0
#: Objects with less than this fraction of their pixels visible become ``DontCare``.
MIN_VISIBLE = 0.1
#: Objects whose fog/haze transmission is below this (contrast nearly gone) become ``DontCare``.
MIN_TRANSMISSION = 0.08


def png_params() -> list[int]:
    """PNG encoder settings: zlib level 1, Huffman-only, "up" filter (about 3x faster than OpenCV's
    defaults on these noisy images, for ~10 % larger files)."""
    import cv2

    return [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
            cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]

# KITTI raw 2011-09-26 calibration (calib_cam_to_cam.txt, calib_velo_to_cam.txt, calib_imu_to_velo.txt).
_KITTI_CAM_TO_CAM = {
    "00": ("1.392e3 5.12e2", "9.842439e+02 0 6.9e+02 0 9.808141e+02 2.331966e+02 0 0 1",
           "-3.728755e-01 2.037299e-01 2.219027e-03 1.383707e-03 -7.233722e-02", "1 0 0 0 1 0 0 0 1",
           "2.573699e-16 -1.059758e-16 1.614870e-16",
           "9.999239e-01 9.837760e-03 -7.445048e-03 -9.869795e-03 9.999421e-01 -4.278459e-03 7.402527e-03 4.351614e-03 9.999631e-01",
           "7.215377e+02 0 6.095593e+02 0 0 7.215377e+02 1.728540e+02 0 0 0 1 0"),
    "01": ("1.392e3 5.12e2", "9.895267e+02 0 7.02e+02 0 9.878386e+02 2.455590e+02 0 0 1",
           "-3.644661e-01 1.790019e-01 1.148107e-03 -6.298563e-04 -5.314062e-02",
           "9.993513e-01 1.860866e-02 -3.083487e-02 -1.887662e-02 9.997863e-01 -8.421873e-03 3.067156e-02 8.998467e-03 9.994890e-01",
           "-5.370000e-01 4.822061e-03 -1.252488e-02",
           "9.996878e-01 -8.976826e-03 2.331651e-02 8.876121e-03 9.999508e-01 4.418952e-03 -2.335503e-02 -4.210612e-03 9.997184e-01",
           "7.215377e+02 0 6.095593e+02 -3.875744e+02 0 7.215377e+02 1.728540e+02 0 0 0 1 0"),
    "02": ("1.392e3 5.12e2", "9.597910e+02 0 6.960217e+02 0 9.569251e+02 2.241806e+02 0 0 1",
           "-3.691481e-01 1.968681e-01 1.353473e-03 5.677587e-04 -6.770705e-02",
           "9.999758e-01 -5.267463e-03 -4.552439e-03 5.251945e-03 9.999804e-01 -3.413835e-03 4.570332e-03 3.389843e-03 9.999838e-01",
           "5.956621e-02 2.900141e-04 2.577209e-03",
           "9.998817e-01 1.511453e-02 -2.841595e-03 -1.511724e-02 9.998853e-01 -9.338510e-04 2.827154e-03 9.766976e-04 9.999955e-01",
           "7.215377e+02 0 6.095593e+02 4.485728e+01 0 7.215377e+02 1.728540e+02 2.163791e-01 0 0 1 2.745884e-03"),
    "03": ("1.392e3 5.12e2", "9.037596e+02 0 6.957519e+02 0 9.019653e+02 2.242509e+02 0 0 1",
           "-3.639558e-01 1.788651e-01 6.029694e-04 -3.922424e-04 -5.382460e-02",
           "9.995599e-01 1.699522e-02 -2.431313e-02 -1.704422e-02 9.998531e-01 -1.809756e-03 2.427880e-02 2.223358e-03 9.997028e-01",
           "-4.731050e-01 5.551470e-03 -5.250882e-03",
           "9.998321e-01 -7.193136e-03 1.685599e-02 7.232804e-03 9.999712e-01 -2.293585e-03 -1.683901e-02 2.415116e-03 9.998553e-01",
           "7.215377e+02 0 6.095593e+02 -3.395242e+02 0 7.215377e+02 1.728540e+02 2.199936e+00 0 0 1 2.729905e-03"),
}
_VELO_TO_CAM = ("7.533745e-03 -9.999714e-01 -6.166020e-04 1.480249e-02 7.280733e-04 -9.998902e-01 "
                "9.998621e-01 7.523790e-03 1.480755e-02", "-4.069766e-03 -7.631618e-02 -2.717806e-01")
_IMU_TO_VELO = ("9.999976e-01 7.553071e-04 -2.035826e-03 -7.854027e-04 9.998898e-01 -1.482298e-02 "
                "2.024406e-03 1.482454e-02 9.998881e-01", "-8.086759e-01 3.195559e-01 -7.997231e-01")


def _arr(text: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.array([float(v) for v in text.split()], dtype=np.float64).reshape(shape)


def kitti_cam_to_cam() -> CamToCam:
    """KITTI's 2011-09-26 ``calib_cam_to_cam.txt`` (the default camera of generated drives)."""
    cams = {}
    for c, (S, K, D, R, T, R_rect, P_rect) in _KITTI_CAM_TO_CAM.items():
        cams[c] = CameraCalib(S=_arr(S, (2,)), K=_arr(K, (3, 3)), D=_arr(D, (5,)), R=_arr(R, (3, 3)),
                              T=_arr(T, (3,)), S_rect=np.array([1242.0, 375.0]), R_rect=_arr(R_rect, (3, 3)),
                              P_rect=_arr(P_rect, (3, 4)))
    return CamToCam(calib_time="09-Jan-2012 13:57:47", corner_dist=9.95e-2, cameras=cams)


def _rt(pair: tuple[str, str]) -> np.ndarray:
    return np.hstack([_arr(pair[0], (3, 3)), _arr(pair[1], (3, 1))])


def object_calib(c2c: CamToCam) -> ObjectCalib:
    """Object-benchmark calibration (``calib/<id>.txt``) of a drive's cameras.

    ``P0``..``P3`` are the rectified projections, ``R0_rect`` camera 0's rectifying rotation; the
    velodyne and IMU transforms are KITTI's 2011-09-26 values (the generator has no lidar).
    """
    P = [c2c.camera(c).P_rect if c in c2c.cameras else c2c.camera("02").P_rect for c in ("00", "01", "02", "03")]
    r0 = c2c.camera("00").R_rect if "00" in c2c.cameras else np.eye(3)
    return ObjectCalib(P0=P[0], P1=P[1], P2=P[2], P3=P[3], R0_rect=r0,
                       Tr_velo_to_cam=_rt(_VELO_TO_CAM), Tr_imu_to_velo=_rt(_IMU_TO_VELO))


def condition_schedule(n_units: int, keys: Sequence[str], seed: int) -> list[str]:
    """Condition key per unit (segment or frame): seeded shuffles of ``keys`` back to back, so every
    key appears once before any repeats."""
    rng = np.random.default_rng([seed, 2])
    out: list[str] = []
    while len(out) < n_units:
        out += [keys[i] for i in rng.permutation(len(keys))]
    return out[:n_units]


def default_timestamps(frames: int, seed: int) -> list[int]:
    """Strictly increasing UTC nanosecond stamps at ~10 Hz (100 ms +- 0.5 ms jitter)."""
    rng = np.random.default_rng([seed, 3])
    start = datetime(2025, 6, 2, 9, 0, 0, tzinfo=timezone.utc).timestamp()
    t0 = int(start) * 1_000_000_000 + int(seed % 1000) * 86_400 * 1_000_000_000 + int(rng.integers(0, 3600 * 10**9))
    steps = FRAME_PERIOD_NS + rng.integers(-500_000, 500_001, size=max(frames - 1, 0))
    return [t0] + [t0 + int(v) for v in np.cumsum(steps)]


@dataclass(frozen=True)
class FrameResult:
    """What :func:`render_frame` produced for one frame.

    :param image: BGR ``uint8`` image.
    :param labels: KITTI label lines.
    :param tracks: track id per label line (``None`` for ``DontCare``).
    :param condition: the frame's condition (sidecar).
    """

    image: np.ndarray
    labels: list[KittiObject]
    tracks: list[int | None]
    condition: Condition


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def render_frame(renderer: Renderer, world: World, look: Look) -> FrameResult:
    """Render ``world`` under ``look`` and label it (boxes from the calibration, occlusion from pixels)."""
    cam = renderer.cam
    image, vis, trans = renderer.render(world, look)
    labels: list[KittiObject] = []
    tracks: list[int | None] = []
    density = 0
    for a in sorted(world.actors, key=lambda a: a.tid):
        if not a.labelled or a.tid not in vis:
            continue
        total, visible = vis[a.tid]
        if visible <= 0 or total <= 0:
            continue
        x, z = a.X - world.ego_x, a.Z - world.ego_z
        loc = (x, CAM_HEIGHT, z)
        pb = project_box(cam, box_corners(a.dims, loc, a.heading))
        if pb is None:
            continue
        bbox, trunc = pb
        frac = visible / total
        dist = math.hypot(x, z)
        if (bbox[3] - bbox[1] < MIN_HEIGHT_PX or dist > MAX_DISTANCE_M or frac < MIN_VISIBLE
                or trans.get(a.tid, 1.0) < MIN_TRANSMISSION):
            labels.append(KittiObject("DontCare", -1.0, -1, -10.0, tuple(float(v) for v in bbox),  # type: ignore[arg-type]
                                      (-1.0, -1.0, -1.0), (-1000.0, -1000.0, -1000.0), -10.0))
            tracks.append(None)
            continue
        occ = 0 if frac >= 0.8 else (1 if frac >= 0.4 else 2)
        ry = _wrap(a.heading)
        labels.append(KittiObject(a.kind, round(trunc, 2), occ, _wrap(ry - math.atan2(x, z)),
                                  tuple(float(v) for v in bbox), tuple(float(v) for v in a.dims),  # type: ignore[arg-type]
                                  loc, ry))
        tracks.append(a.tid)
        if a.kind != "Misc":
            density += 1
    cond = Condition(look.illumination, look.weather, visibility_m=round(look.visibility_m, 1),
                     ambient_light=round(float(np.clip(look.ambient, 0, 1)), 3),
                     ego_speed_mps=round(world.ego_speed, 2), scene_density=float(density))
    return FrameResult(image, labels, tracks, cond)


def _set_lights(world: World, on: bool) -> None:
    world.lights = on
    for a in world.actors:
        if a.kind in ("Car", "Cyclist") and a.role != "parked":
            if bool(a.look.get("lights")) != on:
                a.look["lights"] = on
                a.look.pop("_model", None)


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def generate_dataset(out: Path, frames: int, seed: int = 0, sequence: bool = False, *,
                     conditions: Sequence[str] | None = None, segment_frames: int = 50,
                     timestamps: Path | None = None, calib: Path | None = None,
                     progress: bool = True) -> Path:
    """Generate a KITTI-format dataset of procedural driving scenes (object and raw-drive layouts).

    Layout under ``out``: ``training/{image_2,label_2,calib,condition}/<id>``, ``raw/<date>/calib_cam_to_cam.txt``,
    ``raw/<date>/<date>_drive_0001_sync/{image_02/data,image_02/timestamps.txt,label_02/data,condition/data}``
    (raw images, labels and sidecars are hard links of the object-layout files) and ``generation.json``.

    :param out: output folder; must not exist or be empty. Built in a temporary sibling, then renamed.
    :param frames: number of frames (>= 1).
    :param seed: the same seed (and arguments) gives byte-identical files.
    :param sequence: one coherent 10 Hz drive (objects move between frames, track ids in
        ``generation.json``); otherwise every frame is an independent scene.
    :param conditions: condition keys to use (see :data:`sparse_perception.runtime.conditions.CONDITION_KEYS`);
        ``None`` mixes all nine. They change per segment of ``segment_frames`` frames in sequence
        mode — a given list is the route, used in order and cycled; ``None`` cycles seeded shuffles
        of all nine — and per frame otherwise (seeded shuffles of the list, back to back).
    :param segment_frames: frames per condition segment in sequence mode (>= 1).
    :param timestamps: a real KITTI raw ``timestamps.txt`` to stamp the frames with (must have at
        least ``frames`` lines); the simulation steps by its intervals.
    :param calib: a real KITTI raw ``calib_cam_to_cam.txt``; the images are rendered with its
        ``P_rect_02`` at its ``S_rect_02`` size and it is copied into the drive.
    :param progress: show a tqdm progress bar.
    :return: the raw drive folder ``out/raw/<date>/<date>_drive_0001_sync``.
    :raises ValueError: ``frames < 1``, ``segment_frames < 1``, an unknown condition key, too few
        timestamps, or a bad calibration/timestamps file (naming the file).
    :raises FileExistsError: ``out`` exists and is not an empty directory.
    """
    import cv2
    from tqdm import tqdm

    out = Path(out)
    if int(frames) != frames or frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    frames = int(frames)
    if segment_frames < 1:
        raise ValueError(f"segment_frames must be >= 1, got {segment_frames!r}")
    keys = list(CONDITION_KEYS) if conditions is None else list(conditions)
    if not keys:
        raise ValueError("conditions must name at least one condition key (or be None for all)")
    bad = [k for k in keys if k not in CONDITION_KEYS]
    if bad:
        raise ValueError(f"unknown condition key(s) {bad}; known: {', '.join(CONDITION_KEYS)}")
    check_new_output(out)
    if timestamps is not None:
        stamps = read_timestamps(Path(timestamps))
        if len(stamps) < frames:
            raise ValueError(f"{timestamps}: has {len(stamps)} timestamps, fewer than the {frames} frames requested")
        stamps = stamps[:frames]
        for i in range(1, len(stamps)):
            if stamps[i] <= stamps[i - 1]:
                raise ValueError(f"{timestamps}:{i + 1}: timestamps must increase strictly")
    else:
        stamps = default_timestamps(frames, seed)
    if calib is not None:
        c2c = read_cam_to_cam(Path(calib))
        if "02" not in c2c.cameras:
            raise ValueError(f"{calib}: no camera 02 (P_rect_02, S_rect_02) to render with")
    else:
        c2c = kitti_cam_to_cam()
    cam02 = c2c.camera("02")
    width, height = cam02.rect_size
    if width < 64 or height < 32:
        raise ValueError(f"{calib}: S_rect_02 {width}x{height} is too small to render")
    cam = Camera(cam02.P_rect, width, height)
    ocalib = object_calib(c2c)

    first = datetime.fromtimestamp(stamps[0] // 1_000_000_000, tz=timezone.utc)
    date = f"{first:%Y_%m_%d}"
    drive_name = f"{date}_drive_0001_sync"
    n_units = math.ceil(frames / segment_frames) if sequence else frames
    if sequence and conditions is not None:  # a route: the given segments in order, cycled
        schedule = [keys[i % len(keys)] for i in range(n_units)]
    else:
        schedule = condition_schedule(n_units, keys, seed)

    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out)  # left by a killed earlier run (its process is gone)
    tmp = make_partial_dir(out)
    try:
        tr = tmp / "training"
        dirs = {k: tr / k for k in ("image_2", "label_2", "calib", "condition")}
        raw_date = tmp / "raw" / date
        drive = raw_date / drive_name
        rdirs = {"image": drive / "image_02" / "data", "label": drive / "label_02" / "data",
                 "condition": drive / "condition" / "data"}
        for d in [*dirs.values(), *rdirs.values()]:
            d.mkdir(parents=True)
        write_cam_to_cam(raw_date / "calib_cam_to_cam.txt", c2c)
        write_timestamps(drive / "image_02" / "timestamps.txt", stamps)
        write_object_calib(dirs["calib"] / "000000.txt", ocalib)

        renderer = Renderer(cam, seed)
        params = png_params()
        frame_info: list[dict] = []
        world: World | None = None
        cur_key: str | None = None
        look: Look | None = None
        for i in tqdm(range(frames), desc="kitti generate", unit="frame", disable=not progress):
            key = schedule[i // segment_frames] if sequence else schedule[i]
            illum, _, weather = key.partition("_")
            if sequence:
                if world is None:
                    wrng = np.random.default_rng([seed, 1])
                    world = World(wrng, random_road(wrng), float(wrng.uniform(6.0, 14.0)), float(wrng.uniform(0.7, 1.4)))
                else:
                    world.step((stamps[i] - stamps[i - 1]) / 1e9)
                if key != cur_key or look is None:
                    look = make_look(illum, weather, np.random.default_rng([seed, 4, i // segment_frames]))
                    _set_lights(world, look.lights_on)
                    cur_key = key
                else:
                    look.seed = int(np.random.default_rng([seed, 5, i]).integers(0, 2**31 - 1))
            else:
                frng = np.random.default_rng([seed, 1, i])
                look = make_look(illum, weather, frng)
                world = World(frng, random_road(frng), float(frng.uniform(0.0, 18.0)), float(frng.uniform(0.4, 1.6)),
                              lights=look.lights_on, z0=float(frng.uniform(0, 1e4)))
            res = render_frame(renderer, world, look)
            name = f"{i:06d}"
            raw_name = f"{i:010d}"
            img_path = dirs["image_2"] / f"{name}.png"
            if not cv2.imwrite(str(img_path), res.image, params):
                raise OSError(f"{img_path}: cv2.imwrite failed")
            write_labels(dirs["label_2"] / f"{name}.txt", res.labels)
            atomic_write_text(dirs["condition"] / f"{name}.json", json.dumps(res.condition.to_dict(), sort_keys=True) + "\n")
            if i:
                _link(dirs["calib"] / "000000.txt", dirs["calib"] / f"{name}.txt")
            _link(img_path, rdirs["image"] / f"{raw_name}.png")
            _link(dirs["label_2"] / f"{name}.txt", rdirs["label"] / f"{raw_name}.txt")
            _link(dirs["condition"] / f"{name}.json", rdirs["condition"] / f"{raw_name}.json")
            frame_info.append({"frame": name, "condition": key, "timestamp_ns": int(stamps[i]),
                               "segment": (i // segment_frames) if sequence else i, "tracks": res.tracks})
        meta = {
            "generator": "pruning_tools.data.generator", "generator_version": GENERATOR_VERSION,
            "seed": seed, "frames": frames, "sequence": bool(sequence), "segment_frames": segment_frames,
            "conditions_requested": None if conditions is None else list(conditions),
            "image_size": [width, height], "camera_height_m": CAM_HEIGHT,
            "timestamps_source": None if timestamps is None else str(timestamps),
            "calib_source": None if calib is None else str(calib),
            "raw_drive": f"raw/{date}/{drive_name}",
            "dontcare_rules": {"min_height_px": MIN_HEIGHT_PX, "max_distance_m": MAX_DISTANCE_M,
                               "min_visible_fraction": MIN_VISIBLE, "min_transmission": MIN_TRANSMISSION},
            "conditions": [f["condition"] for f in frame_info],
            "frames_info": frame_info,
        }
        atomic_write_text(tmp / "generation.json", json.dumps(meta, indent=1) + "\n")
        check_new_output(out)
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "raw" / date / drive_name
