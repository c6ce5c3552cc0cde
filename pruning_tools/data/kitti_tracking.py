"""Reader for the KITTI tracking layout (Geiger et al. 2012, the tracking benchmark's training set).

Layout::

    <root>/training/image_02/SSSS/NNNNNN.png    consecutive frames of sequence SSSS
    <root>/training/label_02/SSSS.txt           one object per line (below)
    <root>/training/calib/SSSS.txt              optional (P0..P3, R_rect, Tr_velo_cam, Tr_imu_velo)
    <root>/raw/<date>_drive_XXXX_sync/image_02/timestamps.txt   optional: the raw drive's camera times
    <root>/raw/<date>_drive_XXXX_sync/calib_cam_to_cam.txt      optional: its calibration

Label line: ``frame track_id type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y [score]``
(17 or 18 columns). ``DontCare`` rows have track id -1. Truncation is a *level* here (0 not,
1 partly, 2 largely truncated) where the object benchmark has a fraction; :func:`truncation_fraction`
maps it for KITTI's moderate cut (<= 0.30): level 0 -> 0.0, 1 -> 0.3 (counts), 2 -> 1.0 (does not).

Timing: a tracking sequence is a cut of one raw drive (sequence 0000 is 2011_09_26_drive_0005), so
its real camera times are the raw drive's ``image_02/timestamps.txt``; give it, or a frame rate
for evenly spaced stamps, or let :class:`TrackingSequence` find the one ``raw/*/image_02/timestamps.txt``
of the root holding exactly as many lines as the sequence has frames.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pruning_tools.data.kitti_dataset import IMAGE_SUFFIXES, CameraInfoData
from pruning_tools.data.kitti_io import (KittiObject, _parse_key_values, _read_lines, parse_label_line,
                                         read_cam_to_cam, read_image, read_timestamps)

__all__ = ["format_gt_id", "parse_gt_id", "TrackedObject", "TrackingSequence", "parse_tracking_line", "read_tracking_labels",
           "truncation_fraction"]

#: truncation level -> fraction for the moderate cut (see the module docstring)
_TRUNCATION = {0: 0.0, 1: 0.3, 2: 1.0}


_ID_RE = re.compile(r"(\w+)=(-?[0-9.eE+-]+)")


def format_gt_id(key: str, track_id: int | None, occluded: int, truncated: float) -> str:
    """Ground-truth ``Detection2D.id`` of a KITTI tracking bag: ``"<key> track=T occluded=O truncated=X"``.

    The message has no occlusion/truncation fields; carrying them in ``id`` keeps KITTI's moderate
    cut exact when the bag is scored (:func:`parse_gt_id`).
    """
    track = "" if track_id is None else f" track={int(track_id)}"
    return f"{key}{track} occluded={int(occluded)} truncated={float(truncated):.2f}"


def parse_gt_id(text: str) -> dict[str, float]:
    """``{"track", "occluded", "truncated"}`` present in a ground-truth id (empty for plain ids)."""
    return {k: float(v) for k, v in _ID_RE.findall(text or "")}


def truncation_fraction(level: float) -> float:
    """A tracking truncation level (0, 1, 2; -1 for DontCare) as a fraction for :class:`FrameTruth`."""
    return _TRUNCATION.get(int(level), 0.0 if level < 0 else 1.0)


@dataclass(frozen=True)
class TrackedObject:
    """One label line: frame index, track id (-1 for DontCare) and the object (truncation as its level)."""

    frame: int
    track_id: int
    obj: KittiObject


def parse_tracking_line(line: str, *, where: str = "<string>") -> TrackedObject:
    """Parse one tracking label line.

    :raises ValueError: wrong column count, a non-integer frame or track id, or a bad object field
        (the message names ``where``).
    """
    cols = line.split()
    if len(cols) not in (17, 18):
        raise ValueError(f"{where}: expected 17 or 18 columns (frame track_id type truncated occluded alpha "
                         f"bbox[4] dimensions[3] location[3] rotation_y [score]), got {len(cols)}")
    try:
        frame, track = int(cols[0]), int(cols[1])
    except ValueError:
        raise ValueError(f"{where}: frame and track id must be integers, got {cols[0]!r} {cols[1]!r}") from None
    if frame < 0 or track < -1:
        raise ValueError(f"{where}: frame must be >= 0 and track id >= -1, got {frame} {track}")
    obj = parse_label_line(" ".join(cols[2:]), where=where)
    if (obj.type == "DontCare") != (track == -1):
        raise ValueError(f"{where}: track id -1 is for DontCare rows only (got {obj.type} with track {track})")
    return TrackedObject(frame, track, obj)


def read_tracking_labels(path: Path) -> dict[int, list[TrackedObject]]:
    """``label_02/SSSS.txt`` -> frame index -> objects in file order (blank lines skipped).

    :raises FileNotFoundError: missing file. :raises ValueError: a malformed line (file and line named).
    """
    out: dict[int, list[TrackedObject]] = {}
    for i, line in enumerate(_read_lines(Path(path)), 1):
        if line.strip():
            t = parse_tracking_line(line, where=f"{path}:{i}")
            out.setdefault(t.frame, []).append(t)
    return out


def _camera_info_from_tracking_calib(path: Path, width: int, height: int) -> CameraInfoData:
    """Camera info of image_02 from a tracking ``calib/SSSS.txt`` (rectified: P2, no distortion)."""
    kv = _parse_key_values(path)
    if "P2" not in kv:
        raise ValueError(f"{path}: missing entry 'P2'")
    lineno, text = kv["P2"]
    try:
        p = np.array([float(v) for v in text.split()], np.float64)
    except ValueError as e:
        raise ValueError(f"{path}:{lineno}: P2: non-numeric value ({e})") from None
    if p.size != 12:
        raise ValueError(f"{path}:{lineno}: P2: expected 12 values, got {p.size}")
    P = p.reshape(3, 4)
    return CameraInfoData(width=width, height=height, K=P[:, :3].copy(), D=np.zeros(5), R=np.eye(3), P=P)


class TrackingSequence:
    """One sequence of a KITTI tracking root, camera image_02.

    :param root: folder holding ``training/`` (or ``training`` itself).
    :param sequence: e.g. ``"0000"`` (an int is zero-padded).
    :param timestamps: a ``timestamps.txt`` (one line per frame); default: see the module docstring.
    :param rate: frame rate (Hz) for evenly spaced stamps from ``start_ns`` instead of real times.
    :param start_ns: first stamp with ``rate`` (default 0).
    :param calib: ``calib_cam_to_cam.txt``; default: beside the timestamps' drive, else ``training/calib/SSSS.txt``.
    :param timing: ``False``: no stamps needed (conversion to a dataset); ``timestamps`` is then empty.
    :raises FileNotFoundError: missing images, labels or timestamps.
    :raises ValueError: malformed labels, a label for a frame that has no image, a timestamps count that
        differs from the frame count, or both ``timestamps`` and ``rate``.
    """

    def __init__(self, root: Path, sequence: str | int, *, timestamps: Path | None = None, rate: float | None = None,
                 start_ns: int = 0, calib: Path | None = None, timing: bool = True) -> None:
        root = Path(root)
        self.root = root.parent if root.name == "training" else root
        train = self.root / "training"
        self.sequence = f"{int(sequence):04d}" if str(sequence).isdigit() else str(sequence)
        img_dir = train / "image_02" / self.sequence
        if not img_dir.is_dir():
            raise FileNotFoundError(f"{img_dir}: not found (expected a KITTI tracking root with "
                                    f"training/image_02/{self.sequence}/)")
        self.image_paths = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.image_paths:
            raise ValueError(f"{img_dir}: no PNG images")
        try:
            self.frame_numbers = [int(p.stem) for p in self.image_paths]
        except ValueError:
            raise ValueError(f"{img_dir}: image names must be frame numbers (NNNNNN.png)") from None
        self.label_path = train / "label_02" / f"{self.sequence}.txt"
        self.labels_by_frame = read_tracking_labels(self.label_path)
        unknown = sorted(set(self.labels_by_frame) - set(self.frame_numbers))
        if unknown:
            raise ValueError(f"{self.label_path}: labels for frames without an image: {unknown[:5]}")
        if timestamps is not None and rate is not None:
            raise ValueError("give timestamps or a rate, not both")
        drive_dir: Path | None = None
        if not timing:
            self.timestamps_path, self.timestamps = None, []
        elif rate is not None:
            if not 0 < rate <= 1000:
                raise ValueError(f"rate must be in (0, 1000] Hz, got {rate}")
            self.timestamps_path: Path | None = None
            self.timestamps = [int(start_ns) + round(i * 1e9 / rate) for i in range(len(self.image_paths))]
        else:
            if timestamps is None:
                timestamps = self._find_timestamps()
            self.timestamps_path = Path(timestamps)
            self.timestamps = read_timestamps(self.timestamps_path)
            drive_dir = self.timestamps_path.parent.parent
            if len(self.timestamps) != len(self.image_paths):
                raise ValueError(f"{self.timestamps_path}: {len(self.timestamps)} timestamps but "
                                 f"{len(self.image_paths)} frames in {img_dir}")
            if any(b <= a for a, b in zip(self.timestamps, self.timestamps[1:])):
                raise ValueError(f"{self.timestamps_path}: timestamps must increase")
        self.camera_info = self._camera_info(calib, drive_dir)

    def _find_timestamps(self) -> Path:
        n = len(self.image_paths)
        cands = sorted((self.root / "raw").glob("*/image_02/timestamps.txt"))
        fits = [c for c in cands if sum(1 for ln in _read_lines(c) if ln.strip()) == n]
        if len(fits) != 1:
            raise FileNotFoundError(
                f"{self.root}: no single raw/*/image_02/timestamps.txt with {n} lines for sequence {self.sequence} "
                f"(found {len(fits)}); give the drive's timestamps (--timestamps FILE) or a frame rate (--rate HZ)")
        return fits[0]

    def _camera_info(self, calib: Path | None, drive_dir: Path | None) -> CameraInfoData | None:
        if calib is None and drive_dir is not None:
            for c in (drive_dir / "calib_cam_to_cam.txt", drive_dir.parent / "calib_cam_to_cam.txt"):
                if c.is_file():
                    calib = c
                    break
        if calib is not None:
            try:
                return CameraInfoData.from_calib(read_cam_to_cam(Path(calib)), "02")
            except KeyError as e:
                raise ValueError(f"{calib}: {e.args[0]}") from None
        seq_calib = self.root / "training" / "calib" / f"{self.sequence}.txt"
        if seq_calib.is_file():
            h, w = read_image(self.image_paths[0]).shape[:2]
            return _camera_info_from_tracking_calib(seq_calib, w, h)
        return None

    @property
    def name(self) -> str:
        """``"tracking_SSSS"``."""
        return f"tracking_{self.sequence}"

    def __len__(self) -> int:
        return len(self.image_paths)

    def image(self, index: int) -> np.ndarray:
        """Frame ``index`` (position in the sequence) as BGR uint8."""
        return read_image(self.image_paths[index])

    def tracked(self, index: int) -> list[TrackedObject]:
        """Labels of frame ``index`` (DontCare included), file order."""
        return self.labels_by_frame.get(self.frame_numbers[index], [])

    def labels(self, index: int) -> list[KittiObject]:
        """Labels of frame ``index`` as object-benchmark objects (truncation as a fraction, see
        :func:`truncation_fraction`), for :func:`pruning_tools.train.kitti_ap.truth_from_kitti` and conversion."""
        from dataclasses import replace

        return [replace(t.obj, truncated=truncation_fraction(t.obj.truncated)) for t in self.tracked(index)]

    def frame_id(self, index: int) -> str:
        """``"SSSS_NNNNNN"``: a file stem unique across sequences and object frames."""
        return f"{self.sequence}_{self.frame_numbers[index]:06d}"
