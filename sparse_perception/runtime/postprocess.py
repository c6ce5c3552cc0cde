"""Pre- and post-processing for Ultralytics-style detection heads (numpy + OpenCV only).

* :func:`letterbox` resizes a BGR image keeping its aspect ratio, pads it to the network shape and
  returns a contiguous ``(1, 3, H, W)`` float32 RGB batch in ``[0, 1]`` plus :class:`LetterboxInfo`.
* :func:`decode` turns the raw head output ``(1, 4 + nc, N)`` (``cx, cy, w, h`` in network pixels
  followed by ``nc`` class scores, no objectness) into :class:`Detections` in original image pixels,
  vectorised, with class-aware NMS (per-class coordinate offset).
* :func:`nms` is a pure-numpy greedy non-maximum suppression.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Detections", "LetterboxInfo", "decode", "letterbox", "nms"]


@dataclass(frozen=True)
class LetterboxInfo:
    """Geometry of one letterbox transform.

    :ivar scale: resize factor applied to the original image.
    :ivar pad_x: left padding in network pixels.
    :ivar pad_y: top padding in network pixels.
    :ivar orig_shape: ``(height, width)`` of the original image.
    """

    scale: float
    pad_x: float
    pad_y: float
    orig_shape: tuple[int, int]


@dataclass(frozen=True)
class Detections:
    """Detections of one image: ``boxes`` (M, 4) xyxy float32, ``scores`` (M,) float32, ``class_ids`` (M,) int64."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty() -> "Detections":
        """No detections."""
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))


def _check_image(img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(img).__name__}")
    if img.ndim != 3:
        raise ValueError(f"image must have shape (H, W, 3), got {img.ndim} dims {img.shape}")
    if img.shape[2] != 3:
        raise ValueError(f"image must have 3 channels (BGR), got {img.shape[2]}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"image has zero size: {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"image dtype must be uint8, got {img.dtype}")


def letterbox(img_bgr: np.ndarray, new_shape: tuple[int, int] = (384, 1248), stride: int = 32,
              auto: bool = False, color: int = 114) -> tuple[np.ndarray, LetterboxInfo]:
    """Resize with unchanged aspect ratio and pad to ``new_shape``.

    :param img_bgr: uint8 image (H, W, 3) in BGR order.
    :param new_shape: network ``(height, width)``.
    :param stride: with ``auto`` pad only to a multiple of ``stride`` instead of the full shape.
    :param auto: minimal padding (stride multiple) instead of padding to ``new_shape``.
    :param color: padding grey value.
    :return: ``(batch, info)`` with batch (1, 3, H, W) float32 RGB in [0, 1], C-contiguous.
    :raises ValueError: wrong dims, channel count, dtype or zero size.
    """
    _check_image(img_bgr)
    nh, nw = int(new_shape[0]), int(new_shape[1])
    if nh <= 0 or nw <= 0:
        raise ValueError(f"new_shape must be positive, got {new_shape}")
    h, w = img_bgr.shape[:2]
    r = min(nh / h, nw / w)
    rw, rh = max(1, int(round(w * r))), max(1, int(round(h * r)))
    dw, dh = nw - rw, nh - rh
    if auto:
        dw, dh = dw % stride, dh % stride
    left, top = dw // 2, dh // 2
    if (rw, rh) != (w, h):
        img = cv2.resize(img_bgr, (rw, rh), interpolation=cv2.INTER_LINEAR)
    else:
        img = img_bgr
    out_h, out_w = rh + dh, rw + dw
    canvas = np.full((out_h, out_w, 3), color, np.uint8)
    canvas[top:top + rh, left:left + rw] = img
    # BGR -> RGB, HWC -> CHW, scale to [0, 1]
    batch = np.empty((1, 3, out_h, out_w), np.float32)
    rgb = canvas[:, :, ::-1].transpose(2, 0, 1)
    np.multiply(rgb, np.float32(1.0 / 255.0), out=batch[0], casting="unsafe")
    return batch, LetterboxInfo(scale=float(r), pad_x=float(left), pad_y=float(top), orig_shape=(int(h), int(w)))


def _iou_one(box: np.ndarray, boxes: np.ndarray, areas: np.ndarray, area: float) -> np.ndarray:
    xx1 = np.maximum(box[0], boxes[:, 0])
    yy1 = np.maximum(box[1], boxes[:, 1])
    xx2 = np.minimum(box[2], boxes[:, 2])
    yy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression.

    :param boxes: (N, 4) xyxy.
    :param scores: (N,).
    :param iou_thres: a box overlapping a kept higher-scoring box by IoU > ``iou_thres`` is dropped.
    :param max_keep: stop once this many boxes are kept (exact: kept boxes come in score order).
    :return: kept indices (int64) in descending score order.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {boxes.shape}")
    if scores.shape != (boxes.shape[0],):
        raise ValueError(f"scores must have shape ({boxes.shape[0]},), got {scores.shape}")
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1 or (max_keep is not None and len(keep) >= max_keep):
            break
        rest = order[1:]
        iou = _iou_one(boxes[i], boxes[rest], areas[rest], float(areas[i]))
        order = rest[iou <= iou_thres]
    return np.asarray(keep, dtype=np.int64)


def decode(raw: np.ndarray, conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 300,
           info: LetterboxInfo | None = None, agnostic: bool = False) -> Detections:
    """Decode an Ultralytics-style raw head output into detections.

    :param raw: (1, 4 + nc, N) (or (4 + nc, N)) float array: cx, cy, w, h in network pixels, then class scores.
    :param conf_thres: minimum best-class score.
    :param iou_thres: NMS IoU threshold.
    :param max_det: at most this many detections (highest scores).
    :param info: letterbox geometry; boxes are mapped back to and clipped to the original image.
        Without it boxes stay in network pixels (unclipped).
    :param agnostic: NMS across classes instead of per class.
    :raises ValueError: wrong shape of ``raw``.
    """
    raw = np.asarray(raw)
    if raw.ndim == 3:
        if raw.shape[0] != 1:
            raise ValueError(f"raw output must have batch size 1, got shape {raw.shape}")
        raw = raw[0]
    if raw.ndim != 2 or raw.shape[0] < 5:
        raise ValueError(f"raw output must have shape (1, 4+nc, N) with nc >= 1, got {raw.shape}")
    if not 0.0 <= conf_thres <= 1.0 or not 0.0 <= iou_thres <= 1.0:
        raise ValueError(f"thresholds must be in [0, 1], got conf={conf_thres}, iou={iou_thres}")
    if max_det < 1:
        raise ValueError(f"max_det must be >= 1, got {max_det}")
    cls = raw[4:]
    # best class per anchor, filtered early on the (nc, N) view (cheap)
    best = cls.max(axis=0)
    cand = np.flatnonzero(best > conf_thres)
    if cand.size == 0:
        return Detections.empty()
    sub_cls = cls[:, cand]
    class_ids = sub_cls.argmax(axis=0).astype(np.int64)
    scores = best[cand].astype(np.float32)
    xywh = raw[:4, cand].astype(np.float32)
    half_w, half_h = xywh[2] * 0.5, xywh[3] * 0.5
    boxes = np.stack([xywh[0] - half_w, xywh[1] - half_h, xywh[0] + half_w, xywh[1] + half_h], axis=1)
    # pre-NMS cap: keep the top candidates only
    max_nms = 10000
    if scores.size > max_nms:
        top = np.argpartition(-scores, max_nms)[:max_nms]
        boxes, scores, class_ids = boxes[top], scores[top], class_ids[top]
    if agnostic:
        keep = nms(boxes, scores, iou_thres, max_det)
    else:
        offset = float(np.abs(boxes).max()) + 1.0 if boxes.size else 0.0
        keep = nms(boxes + (class_ids.astype(np.float32) * offset)[:, None], scores, iou_thres, max_det)
    keep = keep[:max_det]
    boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
    if info is not None:
        boxes[:, [0, 2]] -= info.pad_x
        boxes[:, [1, 3]] -= info.pad_y
        boxes /= info.scale
        h, w = info.orig_shape
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return Detections(np.ascontiguousarray(boxes, np.float32), np.ascontiguousarray(scores, np.float32),
                      np.ascontiguousarray(class_ids, np.int64))
