"""KITTI raw drive -> rosbag2 (mcap or sqlite3), written with ``rosbags`` (no ROS install needed).

Topics (camera ``"02"``, the left colour camera)::

    /kitti/camera_color_left/image_raw    sensor_msgs/msg/Image (bgr8)
    /kitti/camera_color_left/camera_info  sensor_msgs/msg/CameraInfo
    /kitti/ground_truth                   sparse_perception_msgs/msg/Detection2DArray  (label_02 present)
    /driving_condition                    sparse_perception_msgs/msg/DrivingCondition  (condition present)
    /tf_static                            tf2_msgs/msg/TFMessage, once, transient local

Every per-frame message has ``header.stamp`` = bag time = the frame's line of
``image_02/timestamps.txt`` (UTC, nanoseconds, exact). Offered QoS profiles are stored in the
metadata so ``ros2 bag play`` re-offers them (reliable; ``/tf_static`` transient local, depth 1).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pruning_tools.data.kitti_dataset import CameraInfoData, RawDrive
from pruning_tools.data.kitti_io import KittiObject
from sparse_perception.runtime.partials import make_partial_dir, remove_stale_partials

#: rosbag2 metadata version written (read by Jazzy and later).
BAG_VERSION = 8
#: camera -> (frame id, image encoding)
CAMERAS: dict[str, tuple[str, str]] = {
    "00": ("camera_gray_left", "mono8"),
    "01": ("camera_gray_right", "mono8"),
    "02": ("camera_color_left", "bgr8"),
    "03": ("camera_color_right", "bgr8"),
}
TOPIC_IMAGE = "/kitti/camera_color_left/image_raw"
TOPIC_CAMERA_INFO = "/kitti/camera_color_left/camera_info"
TOPIC_GROUND_TRUTH = "/kitti/ground_truth"
TOPIC_CONDITION = "/driving_condition"
TOPIC_TF_STATIC = "/tf_static"
BASE_FRAME = "base_link"
#: KITTI's camera height above the road (Geiger et al. 2013), used for base_link -> camera.
CAMERA_HEIGHT_M = 1.65
STORAGES: tuple[str, ...] = ("mcap", "sqlite3")


def camera_topics(camera: str) -> tuple[str, str]:
    """``(image topic, camera_info topic)`` of ``camera``."""
    frame = CAMERAS[camera][0]
    return f"/kitti/{frame}/image_raw", f"/kitti/{frame}/camera_info"


def qos_profile(*, transient_local: bool = False, depth: int = 10) -> Any:
    """A reliable keep-last rosbags ``Qos`` (volatile unless ``transient_local``)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(sec=0, nsec=0)  # "unspecified": rmw's default (infinite)
    return Qos(
        history=QosHistory.KEEP_LAST, depth=depth, reliability=QosReliability.RELIABLE,
        durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=zero, avoid_ros_namespace_conventions=False,
    )


class _Msgs:
    """Builds rosbags message objects from KITTI data."""

    def __init__(self, ts: Any, frame_id: str, encoding: str) -> None:
        self.ts = ts
        self.t = ts.types
        self.frame_id = frame_id
        self.encoding = encoding

    def header(self, ns: int, frame_id: str | None = None) -> Any:
        sec, nsec = divmod(int(ns), 1_000_000_000)
        return self.t["std_msgs/msg/Header"](stamp=self.t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                             frame_id=self.frame_id if frame_id is None else frame_id)

    def image(self, img: np.ndarray, ns: int) -> Any:
        if self.encoding == "mono8" and img.ndim == 3:
            import cv2

            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        h, w = img.shape[:2]
        ch = 1 if img.ndim == 2 else img.shape[2]
        return self.t["sensor_msgs/msg/Image"](
            header=self.header(ns), height=h, width=w, encoding=self.encoding, is_bigendian=0,
            step=w * ch, data=np.ascontiguousarray(img, dtype=np.uint8).reshape(-1))

    def camera_info(self, info: CameraInfoData, ns: int) -> Any:
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.t["sensor_msgs/msg/CameraInfo"](
            header=self.header(ns), height=info.height, width=info.width,
            distortion_model=info.distortion_model, d=info.D.astype(np.float64).ravel(),
            k=info.K.astype(np.float64).ravel(), r=info.R.astype(np.float64).ravel(),
            p=info.P.astype(np.float64).ravel(), binning_x=0, binning_y=0, roi=roi)

    def _gt_array(self, rows: list[tuple[str, tuple[float, float, float, float], str]], ns: int) -> Any:
        """``Detection2DArray`` of ``(class, xyxy box, id)`` rows, score 1.0."""
        Hyp = self.t["sparse_perception_msgs/msg/ObjectHypothesis"]
        Box = self.t["sparse_perception_msgs/msg/BoundingBox2D"]
        Det = self.t["sparse_perception_msgs/msg/Detection2D"]
        h = self.header(ns)
        dets = [Det(header=h, results=[Hyp(class_id=name, score=1.0)],
                    bbox=Box(center_x=(x1 + x2) / 2, center_y=(y1 + y2) / 2, theta=0.0, size_x=x2 - x1, size_y=y2 - y1),
                    id=key) for name, (x1, y1, x2, y2), key in rows]
        return self.t["sparse_perception_msgs/msg/Detection2DArray"](header=h, detections=dets, level="",
                                                                     engine_time_ms=0.0)

    def detections(self, objs: list[KittiObject], ns: int, frame_name: str) -> Any:
        return self._gt_array([(o.type, o.bbox, f"{frame_name}:{i}") for i, o in enumerate(objs)
                               if o.type != "DontCare"], ns)

    def tracking_detections(self, tracked: list[Any], ns: int, key: str) -> Any:
        """Ground truth of a tracking frame: every row, DontCare regions included (class ``DontCare``), each
        ``id`` = :func:`pruning_tools.data.kitti_tracking.format_gt_id` (track id, occlusion, truncation fraction)."""
        from pruning_tools.data.kitti_tracking import format_gt_id, truncation_fraction

        rows = []
        for i, tr in enumerate(tracked):
            o, care = tr.obj, tr.obj.type != "DontCare"
            rows.append((o.type, o.bbox, format_gt_id(f"{key}:{i}", tr.track_id if care else None,
                                                      o.occluded if care else -1,
                                                      truncation_fraction(o.truncated) if care else 0.0)))
        return self._gt_array(rows, ns)

    def condition(self, cond: Any, ns: int) -> Any:
        return self.t["sparse_perception_msgs/msg/DrivingCondition"](
            header=self.header(ns, frame_id=""), illumination=cond.illumination_code, weather=cond.weather_code,
            visibility_m=float(cond.visibility_m), ambient_light=float(cond.ambient_light),
            ego_speed_mps=float(cond.ego_speed_mps), scene_density=float(cond.scene_density))

    def tf_static(self, info: CameraInfoData, ns: int) -> Any:
        t = self.t
        # Camera optical frame (x right, y down, z forward) in base_link (x forward, y left, z up);
        # base_link is on the road below camera 0, camera xx sits -P[0,3]/P[0,0] to camera 0's right.
        x_right = -float(info.P[0, 3]) / float(info.P[0, 0]) if info.P[0, 0] else 0.0
        tr = t["geometry_msgs/msg/Transform"](
            translation=t["geometry_msgs/msg/Vector3"](x=0.0, y=-x_right, z=CAMERA_HEIGHT_M),
            rotation=t["geometry_msgs/msg/Quaternion"](x=-0.5, y=0.5, z=-0.5, w=0.5))
        stamped = t["geometry_msgs/msg/TransformStamped"](header=self.header(ns, frame_id=BASE_FRAME),
                                                          child_frame_id=self.frame_id, transform=tr)
        return t["tf2_msgs/msg/TFMessage"](transforms=[stamped])


def raw_drive_to_bag(drive: Path, out: Path, *, storage: str = "mcap", camera: str = "02",
                     progress: bool = True, calib: Path | None = None, rate: float | None = None,
                     start_ns: int | None = None) -> Path:
    """Write a KITTI raw drive (real or generated) as a rosbag2 folder.

    :param drive: the drive folder (``<date>/<date>_drive_XXXX_sync``).
    :param out: bag folder to create; must not exist.
    :param storage: ``"mcap"`` or ``"sqlite3"``.
    :param camera: ``"00"``..``"03"`` (``"02"``: left colour).
    :param progress: show a progress bar.
    :param calib: ``calib_cam_to_cam.txt`` or a day's calibration folder; default: the date folder above ``drive``.
    :param rate: frame rate (Hz) of a drive or frame folder without ``timestamps.txt`` (see :class:`RawDrive`).
    :param start_ns: first stamp with ``rate`` (default: midnight UTC of the drive's date folder).
    :return: ``out``.
    :raises FileExistsError: ``out`` exists.
    :raises ValueError: unknown storage/camera, or a bad drive (see :class:`RawDrive`).
    """
    out = Path(out)
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    if camera not in CAMERAS:
        raise ValueError(f"camera must be one of {sorted(CAMERAS)}, got {camera!r}")
    if out.exists():
        raise FileExistsError(f"{out}: output exists; choose a new bag folder")
    rd = RawDrive(drive, camera=camera, calib=calib, rate=rate, start_ns=start_ns)
    gt = None if rd.label_paths is None else (lambda m, i, ns: m.detections(rd.labels(i) or [], ns,
                                                                            rd.image_paths[i].stem))
    cond = None if rd.condition_paths is None else rd.condition
    return _write_bag(out, storage, camera, rd.name, rd.timestamps, rd.camera_info, rd.image, gt, cond, progress)


def tracking_to_bag(root: Path, sequence: str, out: Path, *, storage: str = "mcap", timestamps: Path | None = None,
                    rate: float | None = None, start_ns: int = 0, calib: Path | None = None,
                    progress: bool = True) -> Path:
    """Write a KITTI tracking sequence (:class:`pruning_tools.data.kitti_tracking.TrackingSequence`) as a rosbag2.

    Same topics as :func:`raw_drive_to_bag` (camera 02); ``/kitti/ground_truth`` holds every label row of the
    frame, DontCare regions included, each ``Detection2D.id`` = ``"SSSS:NNNNNN:k track=T occluded=O truncated=X"``
    (the message has no track, occlusion or truncation fields). Stamps are the drive's real camera times
    (``timestamps``, or the root's ``raw/*/image_02/timestamps.txt``), or ``start_ns + i / rate``.

    :raises FileExistsError: ``out`` exists. :raises ValueError: bad sequence, labels or timestamps.
    """
    from pruning_tools.data.kitti_tracking import TrackingSequence

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: output exists; choose a new bag folder")
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    seq = TrackingSequence(root, sequence, timestamps=timestamps, rate=rate, start_ns=start_ns, calib=calib)
    info = seq.camera_info
    if info is None:
        raise FileNotFoundError(f"{seq.root}: no calibration for sequence {seq.sequence} (give --calib "
                                "calib_cam_to_cam.txt, or put training/calib/SSSS.txt in place)")
    return _write_bag(out, storage, "02", seq.name, seq.timestamps, info, seq.image,
                      lambda m, i, ns: m.tracking_detections(seq.tracked(i), ns, f"{seq.sequence}:{seq.frame_id(i)[5:]}"),
                      None, progress)


def _write_bag(out: Path, storage: str, camera: str, name: str, stamps: list[int], camera_info: CameraInfoData,
               image: Any, gt: Any, condition: Any, progress: bool) -> Path:
    """Write the frames of a drive: ``image(i)``, ``gt(msgs, i, ns)`` and ``condition(i)`` (``None``: no topic)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from tqdm import tqdm

    from sparse_perception.tools.bag_integrity import seal_bag
    from sparse_perception.tools.bag_types import typestore

    ts = typestore()
    frame_id, encoding = CAMERAS[camera]
    m = _Msgs(ts, frame_id, encoding)
    img_topic, info_topic = camera_topics(camera)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3

    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out)  # left by a killed earlier run (its process is gone)
    tmp = make_partial_dir(out)
    try:
        with Writer(tmp / out.name, version=BAG_VERSION, storage_plugin=plugin) as w:
            def conn(topic: str, msgtype: str, transient_local: bool = False) -> Any:
                return w.add_connection(topic, msgtype, typestore=ts, offered_qos_profiles=[
                    qos_profile(transient_local=transient_local, depth=1 if transient_local else 10)])

            c_tf = conn(TOPIC_TF_STATIC, "tf2_msgs/msg/TFMessage", transient_local=True)
            c_img = conn(img_topic, "sensor_msgs/msg/Image")
            c_info = conn(info_topic, "sensor_msgs/msg/CameraInfo")
            c_gt = conn(TOPIC_GROUND_TRUTH, "sparse_perception_msgs/msg/Detection2DArray") if gt is not None else None
            c_cond = conn(TOPIC_CONDITION, "sparse_perception_msgs/msg/DrivingCondition") \
                if condition is not None else None

            def write(c: Any, ns: int, msg: Any) -> None:
                w.write(c, ns, ts.serialize_cdr(msg, msg.__msgtype__))

            write(c_tf, stamps[0], m.tf_static(camera_info, stamps[0]))
            for i in tqdm(range(len(stamps)), desc=f"to-bag {name}", unit="frame", disable=not progress, leave=False):
                ns = stamps[i]
                if c_cond is not None:
                    write(c_cond, ns, m.condition(condition(i), ns))
                write(c_info, ns, m.camera_info(camera_info, ns))
                write(c_img, ns, m.image(image(i), ns))
                if c_gt is not None:
                    write(c_gt, ns, gt(m, i, ns))
        seal_bag(tmp / out.name)  # chunk CRCs: replay can then tell a damaged chunk
        os.replace(tmp / out.name, out)
        tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
