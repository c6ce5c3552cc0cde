"""Readers and writers for the KITTI object and raw-drive text formats.

Everything here is plain numpy/OpenCV: labels (``label_2/*.txt``), object calibration
(``calib/*.txt``), the raw drives' ``calib_cam_to_cam.txt`` and ``timestamps.txt``, and PNG
images. Bad input raises :class:`ValueError` (or :class:`FileNotFoundError`) naming the file
and, for text formats, the line. Writers write a temporary sibling file and rename it, so a
failure never leaves a half-written file behind.
"""
from __future__ import annotations

import calendar
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from pruning_tools.data.files import atomic_write_text

#: Every object type the KITTI object benchmark uses (``DontCare`` marks ignored regions).
KITTI_TYPES: tuple[str, ...] = (
    "Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare",
)

#: KITTI difficulty levels: (name, min bbox height px, max occlusion level, max truncation).
DIFFICULTY_LEVELS: tuple[tuple[str, float, int, float], ...] = (
    ("easy", 40.0, 0, 0.15),
    ("moderate", 25.0, 1, 0.30),
    ("hard", 25.0, 2, 0.50),
)


def check_new_output(out: Path) -> None:
    """Refuse an output folder that exists and is not an empty directory (data is never overwritten).

    :raises FileExistsError: naming ``out``.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: output exists and is not an empty directory (choose a new path)")


def publish_dir(tmp: Path, out: Path) -> None:
    """Move a finished temporary folder onto ``out`` (which must be absent or an empty folder).

    Writers build their output in a temporary sibling of ``out`` and call this last, so a failure
    never leaves a half-written dataset or bag at ``out``.
    """
    if out.exists():
        out.rmdir()  # raises OSError when it is not empty: never clobber data
    os.replace(tmp, out)


def _read_lines(path: Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file ({e})") from None


# --------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class KittiObject:
    """One line of a KITTI object label file.

    :param type: object type, e.g. ``"Car"`` or ``"DontCare"``.
    :param truncated: fraction of the object outside the image, in [0, 1].
    :param occluded: 0 fully visible, 1 partly occluded, 2 largely occluded, 3 unknown.
    :param alpha: observation angle in radians, [-pi, pi].
    :param bbox: 2D box in pixels ``(x1, y1, x2, y2)``.
    :param dimensions: 3D size in metres ``(h, w, l)``.
    :param location: 3D position in camera coordinates, metres ``(x, y, z)``.
    :param rotation_y: yaw around the camera's y axis in radians.
    :param score: detection confidence (16th column, results files only) or ``None``.
    """

    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: tuple[float, float, float, float]
    dimensions: tuple[float, float, float]
    location: tuple[float, float, float]
    rotation_y: float
    score: float | None = None

    @property
    def height_px(self) -> float:
        """Height of the 2D box in pixels."""
        return self.bbox[3] - self.bbox[1]

    @property
    def difficulty(self) -> str | None:
        """Easiest KITTI difficulty this object qualifies for, or ``None`` (ignored in evaluation).

        Easy: box height >= 40 px, occlusion 0, truncation <= 0.15; moderate: >= 25 px,
        occlusion <= 1, truncation <= 0.30; hard: >= 25 px, occlusion <= 2, truncation <= 0.50.
        """
        for name, min_h, max_occ, max_trunc in DIFFICULTY_LEVELS:
            if self.height_px >= min_h and 0 <= self.occluded <= max_occ and self.truncated <= max_trunc:
                return name
        return None


def parse_label_line(line: str, *, where: str = "<string>") -> KittiObject:
    """Parse one label line (15 columns, optional 16th score).

    :param line: the text of the line.
    :param where: ``"file:line"`` used in error messages.
    :raises ValueError: wrong column count or a non-numeric value.
    """
    cols = line.split()
    if len(cols) not in (15, 16):
        raise ValueError(f"{where}: expected 15 or 16 columns (type truncated occluded alpha "
                         f"bbox[4] dimensions[3] location[3] rotation_y [score]), got {len(cols)}")
    try:
        nums = [float(c) for c in cols[1:]]
    except ValueError as e:
        raise ValueError(f"{where}: non-numeric value ({e})") from None
    if not all(np.isfinite(nums)):
        raise ValueError(f"{where}: non-finite value")
    occ = nums[1]
    if occ != int(occ):
        raise ValueError(f"{where}: occluded must be an integer, got {cols[2]!r}")
    return KittiObject(
        type=cols[0], truncated=nums[0], occluded=int(occ), alpha=nums[2],
        bbox=(nums[3], nums[4], nums[5], nums[6]), dimensions=(nums[7], nums[8], nums[9]),
        location=(nums[10], nums[11], nums[12]), rotation_y=nums[13],
        score=nums[14] if len(nums) == 15 else None,
    )


def read_labels(path: Path) -> list[KittiObject]:
    """Read a KITTI object label file; blank lines are skipped.

    :param path: ``label_2/<id>.txt``.
    :return: objects in file order.
    :raises FileNotFoundError: the file is missing.
    :raises ValueError: a malformed line, naming the file and the 1-based line number.
    """
    return [obj for _, obj in iter_labels(path)]


def iter_labels(path: Path) -> list[tuple[int, KittiObject]]:
    """Like :func:`read_labels`, with each object's 1-based line number (for error messages).

    :param path: ``label_2/<id>.txt``.
    :return: ``(line number, object)`` pairs in file order.
    """
    return [(i, parse_label_line(line, where=f"{path}:{i}"))
            for i, line in enumerate(_read_lines(path), 1) if line.strip()]


def format_label_line(obj: KittiObject) -> str:
    """One label line in the devkit's format (two decimals; score with four when present)."""
    nums = [obj.alpha, *obj.bbox, *obj.dimensions, *obj.location, obj.rotation_y]
    line = f"{obj.type} {obj.truncated:.2f} {int(obj.occluded)} " + " ".join(f"{v:.2f}" for v in nums)
    if obj.score is not None:
        line += f" {obj.score:.4f}"
    return line


def write_labels(path: Path, objs: Iterable[KittiObject]) -> None:
    """Write a label file (atomically; an empty list writes an empty file).

    :param path: destination ``.txt``.
    :param objs: objects to write.
    """
    lines = [format_label_line(o) for o in objs]
    atomic_write_text(Path(path), "".join(f"{ln}\n" for ln in lines))


# --------------------------------------------------------------------------- calibration


def _parse_key_values(path: Path) -> dict[str, tuple[int, str]]:
    """``key: value`` lines -> {key: (line number, value text)}."""
    out: dict[str, tuple[int, str]] = {}
    for i, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise ValueError(f"{path}:{i}: expected 'KEY: values', got {line.strip()[:60]!r}")
        key, value = line.split(":", 1)
        out[key.strip()] = (i, value.strip())
    return out


def _matrix(path: Path, kv: dict[str, tuple[int, str]], key: str, shape: tuple[int, ...]) -> np.ndarray:
    if key not in kv:
        raise ValueError(f"{path}: missing entry {key!r}")
    lineno, text = kv[key]
    try:
        vals = np.array([float(v) for v in text.split()], dtype=np.float64)
    except ValueError as e:
        raise ValueError(f"{path}:{lineno}: {key}: non-numeric value ({e})") from None
    n = int(np.prod(shape))
    if vals.size != n:
        raise ValueError(f"{path}:{lineno}: {key}: expected {n} values, got {vals.size}")
    return vals.reshape(shape)


def _fmt_matrix(m: np.ndarray, fmt: str) -> str:
    return " ".join(format(float(v), fmt) for v in np.asarray(m, dtype=np.float64).ravel())


def _check_shape(name: str, m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(m, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    return a


@dataclass(frozen=True, eq=False)
class ObjectCalib:
    """Calibration of one KITTI object frame (``calib/<id>.txt``).

    :param P0: 3x4 projection of camera 0 (rectified).
    :param P1: 3x4 projection of camera 1.
    :param P2: 3x4 projection of camera 2 (left colour, the one ``image_2`` comes from).
    :param P3: 3x4 projection of camera 3.
    :param R0_rect: 3x3 rectifying rotation.
    :param Tr_velo_to_cam: 3x4 velodyne -> camera 0 transform.
    :param Tr_imu_to_velo: 3x4 IMU -> velodyne transform.
    """

    P0: np.ndarray
    P1: np.ndarray
    P2: np.ndarray
    P3: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray
    Tr_imu_to_velo: np.ndarray

    SHAPES = {"P0": (3, 4), "P1": (3, 4), "P2": (3, 4), "P3": (3, 4), "R0_rect": (3, 3),
              "Tr_velo_to_cam": (3, 4), "Tr_imu_to_velo": (3, 4)}

    def __post_init__(self) -> None:
        for name, shape in self.SHAPES.items():
            object.__setattr__(self, name, _check_shape(name, getattr(self, name), shape))


def read_object_calib(path: Path) -> ObjectCalib:
    """Read ``calib/<id>.txt`` (``P0``..``P3``, ``R0_rect``, ``Tr_velo_to_cam``, ``Tr_imu_to_velo``).

    :raises ValueError: a missing entry or a wrong value count, naming the file (and line).
    """
    path = Path(path)
    kv = _parse_key_values(path)
    return ObjectCalib(**{k: _matrix(path, kv, k, s) for k, s in ObjectCalib.SHAPES.items()})


def write_object_calib(path: Path, calib: ObjectCalib) -> None:
    """Write ``calib/<id>.txt`` in KITTI's format (``%.12e``), atomically."""
    text = "".join(f"{k}: {_fmt_matrix(getattr(calib, k), '.12e')}\n" for k in ObjectCalib.SHAPES)
    atomic_write_text(Path(path), text + "\n")


@dataclass(frozen=True, eq=False)
class CameraCalib:
    """One camera of ``calib_cam_to_cam.txt`` (entries ``*_xx``).

    :param S: unrectified image size ``(width, height)``.
    :param K: 3x3 intrinsics before rectification.
    :param D: 5 distortion coefficients (plumb bob: k1 k2 p1 p2 k3).
    :param R: 3x3 rotation from camera 0.
    :param T: translation from camera 0 (3,).
    :param S_rect: rectified image size ``(width, height)``.
    :param R_rect: 3x3 rectifying rotation.
    :param P_rect: 3x4 projection after rectification.
    """

    S: np.ndarray
    K: np.ndarray
    D: np.ndarray
    R: np.ndarray
    T: np.ndarray
    S_rect: np.ndarray
    R_rect: np.ndarray
    P_rect: np.ndarray

    SHAPES = {"S": (2,), "K": (3, 3), "D": (5,), "R": (3, 3), "T": (3,),
              "S_rect": (2,), "R_rect": (3, 3), "P_rect": (3, 4)}

    def __post_init__(self) -> None:
        for name, shape in self.SHAPES.items():
            object.__setattr__(self, name, _check_shape(name, getattr(self, name), shape))

    @property
    def rect_size(self) -> tuple[int, int]:
        """Rectified image size ``(width, height)`` in pixels."""
        return int(round(self.S_rect[0])), int(round(self.S_rect[1]))


@dataclass(frozen=True)
class CamToCam:
    """A raw drive's ``calib_cam_to_cam.txt``.

    :param calib_time: the ``calib_time`` line as written, e.g. ``"09-Jan-2012 13:57:47"``.
    :param corner_dist: checkerboard corner distance in metres.
    :param cameras: ``"00"``..``"03"`` -> :class:`CameraCalib`.
    """

    calib_time: str
    corner_dist: float
    cameras: dict[str, CameraCalib] = field(default_factory=dict)

    def camera(self, cam: str) -> CameraCalib:
        """The calibration of camera ``cam`` (``"02"`` is the left colour camera).

        :raises KeyError: naming the cameras present.
        """
        if cam not in self.cameras:
            raise KeyError(f"camera {cam!r} not in calibration (have {sorted(self.cameras)})")
        return self.cameras[cam]


def read_cam_to_cam(path: Path) -> CamToCam:
    """Read a KITTI raw ``calib_cam_to_cam.txt``.

    Cameras are those with an ``S_xx`` entry; each needs all of ``S K D R T S_rect R_rect P_rect``.

    :raises ValueError: a missing entry or a wrong value count, naming the file (and line).
    """
    path = Path(path)
    kv = _parse_key_values(path)
    if "calib_time" not in kv:
        raise ValueError(f"{path}: missing entry 'calib_time'")
    corner = _matrix(path, kv, "corner_dist", (1,))[0]
    cams = sorted(k[2:] for k in kv if re.fullmatch(r"S_\d\d", k))
    if not cams:
        raise ValueError(f"{path}: no camera entries (S_00, K_00, ...)")
    cameras = {
        c: CameraCalib(**{name: _matrix(path, kv, f"{name}_{c}", shape) for name, shape in CameraCalib.SHAPES.items()})
        for c in cams
    }
    return CamToCam(calib_time=kv["calib_time"][1], corner_dist=float(corner), cameras=cameras)


def write_cam_to_cam(path: Path, calib: CamToCam) -> None:
    """Write ``calib_cam_to_cam.txt`` in KITTI's format (``%e``), atomically."""
    lines = [f"calib_time: {calib.calib_time}", f"corner_dist: {calib.corner_dist:e}"]
    for c in sorted(calib.cameras):
        cam = calib.cameras[c]
        lines += [f"{name}_{c}: {_fmt_matrix(getattr(cam, name), 'e')}" for name in CameraCalib.SHAPES]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- timestamps

_TS_RE = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?")


def parse_timestamp(text: str, *, where: str = "<string>") -> int:
    """``"2011-09-26 13:02:25.964389445"`` (UTC) -> nanoseconds since the epoch, exactly.

    :param text: timestamp, up to 9 fractional digits.
    :param where: ``"file:line"`` used in error messages.
    :raises ValueError: not in that format.
    """
    m = _TS_RE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"{where}: expected 'YYYY-MM-DD HH:MM:SS.nnnnnnnnn', got {text.strip()[:40]!r}")
    try:
        dt = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    frac = (m.group(2) or "").ljust(9, "0")
    return calendar.timegm(dt.timetuple()) * 1_000_000_000 + int(frac or "0")


def format_timestamp(ns: int) -> str:
    """Nanoseconds since the epoch -> ``"YYYY-MM-DD HH:MM:SS.nnnnnnnnn"`` (UTC)."""
    sec, frac = divmod(int(ns), 1_000_000_000)
    dt = datetime.fromtimestamp(sec, tz=timezone.utc)
    return f"{dt:%Y-%m-%d %H:%M:%S}.{frac:09d}"


def read_timestamps(path: Path) -> list[int]:
    """Read a raw drive's ``timestamps.txt``; blank lines are skipped.

    :return: nanoseconds since the epoch (UTC), one per frame.
    :raises ValueError: a malformed line, naming the file and line.
    """
    return [parse_timestamp(ln, where=f"{path}:{i}") for i, ln in enumerate(_read_lines(path), 1) if ln.strip()]


def write_timestamps(path: Path, ns: Sequence[int]) -> None:
    """Write ``timestamps.txt`` (one :func:`format_timestamp` line per frame), atomically."""
    atomic_write_text(Path(path), "".join(f"{format_timestamp(t)}\n" for t in ns))


# --------------------------------------------------------------------------- images


def read_image(path: Path) -> np.ndarray:
    """Read an image as a BGR ``uint8`` array of shape (H, W, 3).

    :raises FileNotFoundError: the file is missing.
    :raises ValueError: the file cannot be decoded (corrupt or not an image).
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image")
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ValueError(f"{path}: cannot decode image (corrupt or not a PNG/JPEG)")
    return img
