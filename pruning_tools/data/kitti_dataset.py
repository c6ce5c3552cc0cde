"""Readers for the two KITTI layouts: the 2D object benchmark and a raw (synced) drive.

Object layout (``training/`` of the object benchmark, or :func:`generate_dataset`'s output)::

    <root>/training/image_2/<id>.png
    <root>/training/label_2/<id>.txt        15-column labels
    <root>/training/calib/<id>.txt          optional
    <root>/training/condition/<id>.json     optional, our extension (Condition.to_dict())

Raw drive (``<date>/<date>_drive_XXXX_sync``)::

    <date>/calib_cam_to_cam.txt
    <drive>/image_02/data/0000000000.png
    <drive>/image_02/timestamps.txt         one "YYYY-MM-DD HH:MM:SS.nnnnnnnnn" line per image
    <drive>/label_02/data/0000000000.txt    optional, our extension (2D ground truth)
    <drive>/condition/data/0000000000.json  optional, our extension
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from pruning_tools.data.kitti_io import (
    CamToCam,
    KittiObject,
    ObjectCalib,
    read_cam_to_cam,
    read_image,
    read_labels,
    read_object_calib,
    read_timestamps,
)
from sparse_perception.runtime.conditions import Condition, read_condition

IMAGE_SUFFIXES: tuple[str, ...] = (".png",)


@dataclass(frozen=True)
class KittiFrame:
    """One frame of the object layout.

    :param id: frame id, the file stem (``"000042"``).
    :param image_path: ``image_2/<id>.png``.
    :param label_path: ``label_2/<id>.txt``.
    :param labels: parsed labels (all types, ``DontCare`` included).
    :param calib: parsed ``calib/<id>.txt`` or ``None`` when absent.
    :param condition: parsed ``condition/<id>.json`` or ``None`` when absent.
    """

    id: str
    image_path: Path
    label_path: Path
    labels: list[KittiObject]
    calib: ObjectCalib | None = None
    condition: Condition | None = None

    def image(self) -> np.ndarray:
        """The image as BGR uint8 (H, W, 3)."""
        return read_image(self.image_path)


class KittiObjectDataset:
    """Frames of a KITTI object ``training`` folder, sorted by id.

    :param root: a folder containing ``training/``, or the ``training`` folder itself.
    :raises FileNotFoundError: no ``image_2``/``label_2`` folder, or an image without a label file.
    :raises ValueError: no images.
    """

    def __init__(self, root: Path) -> None:
        root = Path(root)
        training = root / "training" if (root / "training").is_dir() else root
        self.root = training
        self.image_dir = training / "image_2"
        self.label_dir = training / "label_2"
        self.calib_dir = training / "calib"
        self.condition_dir = training / "condition"
        for d in (self.image_dir, self.label_dir):
            if not d.is_dir():
                raise FileNotFoundError(f"{d}: not found (expected a KITTI object layout "
                                        f"<root>/training/{{image_2,label_2}} under {root})")
        images = sorted(p for p in self.image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ValueError(f"{self.image_dir}: no PNG images")
        for p in images:
            lab = self.label_dir / f"{p.stem}.txt"
            if not lab.is_file():
                raise FileNotFoundError(f"{lab}: label file missing for image {p}")
        self.image_paths: list[Path] = images
        self.ids: list[str] = [p.stem for p in images]

    @property
    def has_conditions(self) -> bool:
        """Whether any frame has a condition sidecar."""
        return self.condition_dir.is_dir() and any(self.condition_dir.glob("*.json"))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> KittiFrame:
        fid = self.ids[index]
        label_path = self.label_dir / f"{fid}.txt"
        calib_path = self.calib_dir / f"{fid}.txt"
        cond_path = self.condition_dir / f"{fid}.json"
        return KittiFrame(
            id=fid,
            image_path=self.image_paths[index],
            label_path=label_path,
            labels=read_labels(label_path),
            calib=read_object_calib(calib_path) if calib_path.is_file() else None,
            condition=read_condition(cond_path) if cond_path.is_file() else None,
        )

    def __iter__(self) -> Iterator[KittiFrame]:
        for i in range(len(self)):
            yield self[i]


@dataclass(frozen=True, eq=False)
class CameraInfoData:
    """What a ``sensor_msgs/CameraInfo`` carries for one raw-drive camera.

    Following kitti2bag: K and D are the unrectified intrinsics/distortion (``K_xx``, ``D_xx``),
    R is the rectifying rotation ``R_rect_xx``, P the rectified projection ``P_rect_xx`` and the
    size is ``S_rect_xx`` (the synced drives' images are rectified).

    :param width: image width in pixels.
    :param height: image height in pixels.
    :param K: 3x3 intrinsics.
    :param D: 5 plumb-bob distortion coefficients.
    :param R: 3x3 rectification rotation.
    :param P: 3x4 projection.
    :param distortion_model: ``"plumb_bob"``.
    """

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray
    R: np.ndarray
    P: np.ndarray
    distortion_model: str = "plumb_bob"

    @classmethod
    def from_calib(cls, calib: CamToCam, camera: str = "02") -> "CameraInfoData":
        """Camera info of ``camera`` from a :class:`CamToCam`."""
        c = calib.camera(camera)
        w, h = c.rect_size
        return cls(width=w, height=h, K=c.K.copy(), D=c.D.copy(), R=c.R_rect.copy(), P=c.P_rect.copy())


def _date_from_path(path: Path) -> int:
    """Midnight UTC (ns) of the first ``YYYY_MM_DD`` folder name in ``path`` (KITTI's day folders).

    :raises ValueError: no such name: the caller must give the start time.
    """
    import calendar
    import re

    for part in reversed(Path(path).resolve().parts):
        m = re.match(r"(\d{4})_(\d{2})_(\d{2})", part)
        if m:
            y, mo, d = (int(g) for g in m.groups())
            return calendar.timegm((y, mo, d, 0, 0, 0)) * 1_000_000_000
    raise ValueError(f"{path}: no YYYY_MM_DD folder to date the frames by; give the start time (--start)")


class RawDrive:
    """A KITTI raw synced drive, one camera.

    :param path: the drive folder (``.../<date>/<date>_drive_XXXX_sync``).
    :param camera: ``"00"``..``"03"``; ``"02"`` is the left colour camera.
    :param calib: ``calib_cam_to_cam.txt`` or a day's calibration folder holding it; default: the
        date folder above ``path``.
    :param rate: frame rate in Hz for frames without ``timestamps.txt`` (``path`` may then also be a
        bare folder of consecutive PNGs); frame ``i`` is stamped ``start_ns + i / rate``.
    :param start_ns: first stamp with ``rate``; default: midnight UTC of the ``YYYY_MM_DD`` folder
        in ``path`` (KITTI's day folders).
    :raises FileNotFoundError: missing image folder, timestamps, calibration, or an extension
        file (label/condition) for some frame when that extension folder exists.
    :raises ValueError: no images, or the number of timestamps differs from the number of images.
    """

    def __init__(self, path: Path, camera: str = "02", calib: Path | None = None, rate: float | None = None,
                 start_ns: int | None = None) -> None:
        self.path = Path(path)
        self.camera = camera
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path}: raw drive folder not found")
        cam_dir = self.path / f"image_{camera}"
        data_dir = cam_dir / "data"
        if not data_dir.is_dir() and rate is not None and any(
                p.suffix.lower() in IMAGE_SUFFIXES for p in self.path.iterdir()):
            data_dir = cam_dir = self.path  # a bare folder of consecutive frames
        if not data_dir.is_dir():
            raise FileNotFoundError(f"{data_dir}: not found (expected a KITTI raw drive with image_{camera}/data"
                                    + ("" if rate is not None else ", or a folder of frames with --rate") + ")")
        self.image_paths: list[Path] = sorted(p for p in data_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.image_paths:
            raise ValueError(f"{data_dir}: no PNG images")
        self.timestamps_path = cam_dir / "timestamps.txt"
        if rate is not None:
            if self.timestamps_path.is_file():
                raise ValueError(f"{self.timestamps_path}: the drive has its own timestamps; --rate is for frames "
                                 "without them")
            if not 0 < rate <= 1000:
                raise ValueError(f"rate must be in (0, 1000] Hz, got {rate}")
            start = start_ns if start_ns is not None else _date_from_path(self.path)
            self.timestamps: list[int] = [start + round(i * 1e9 / rate) for i in range(len(self.image_paths))]
        else:
            if not self.timestamps_path.is_file():
                raise FileNotFoundError(f"{self.timestamps_path}: not found (frames without timestamps need a "
                                        "frame rate: --rate HZ)")
            self.timestamps = read_timestamps(self.timestamps_path)
        if len(self.timestamps) != len(self.image_paths):
            raise ValueError(f"{self.timestamps_path}: {len(self.timestamps)} timestamps but "
                             f"{len(self.image_paths)} images in {data_dir}")
        if calib is not None and Path(calib).is_dir():
            calib = Path(calib) / "calib_cam_to_cam.txt"  # a day's calibration folder
        self.calib_path = Path(calib) if calib is not None else self.path.parent / "calib_cam_to_cam.txt"
        self.calib: CamToCam = read_cam_to_cam(self.calib_path)
        try:
            self.camera_info = CameraInfoData.from_calib(self.calib, camera)
        except KeyError as e:
            raise ValueError(f"{self.calib_path}: {e.args[0]}") from None
        self.label_paths = self._extension("label_02", ".txt")
        self.condition_paths = self._extension("condition", ".json")

    def _extension(self, folder: str, suffix: str) -> list[Path] | None:
        d = self.path / folder / "data"
        if not d.is_dir():
            return None
        paths = [d / f"{p.stem}{suffix}" for p in self.image_paths]
        for p in paths:
            if not p.is_file():
                raise FileNotFoundError(f"{p}: missing ({folder}/data exists, so every frame needs one)")
        return paths

    @property
    def name(self) -> str:
        """The drive folder's name, e.g. ``"2011_09_26_drive_0001_sync"``."""
        return self.path.name

    def __len__(self) -> int:
        return len(self.image_paths)

    def image(self, index: int) -> np.ndarray:
        """Frame ``index`` as BGR uint8 (H, W, 3)."""
        return read_image(self.image_paths[index])

    def labels(self, index: int) -> list[KittiObject] | None:
        """Ground truth of frame ``index`` (``label_02`` extension), ``None`` without it."""
        return read_labels(self.label_paths[index]) if self.label_paths is not None else None

    def condition(self, index: int) -> Condition | None:
        """Condition of frame ``index`` (``condition`` extension), ``None`` without it."""
        return read_condition(self.condition_paths[index]) if self.condition_paths is not None else None
