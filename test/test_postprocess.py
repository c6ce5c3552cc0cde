"""Letterbox geometry, decode/NMS correctness and input validation."""
import numpy as np
import pytest

from sparse_perception.runtime.postprocess import decode, letterbox, nms


def test_letterbox_shape_and_geometry() -> None:
    img = np.zeros((375, 1242, 3), np.uint8)
    img[:, :, 2] = 255  # red in BGR
    batch, info = letterbox(img)
    assert batch.shape == (1, 3, 384, 1248) and batch.dtype == np.float32 and batch.flags.c_contiguous
    assert info.orig_shape == (375, 1242)
    mid = batch[0, :, 192, 600]
    assert mid[0] == pytest.approx(1.0) and mid[2] == pytest.approx(0.0)  # RGB order
    assert batch[0, 0, 0, 600] == pytest.approx(114 / 255)  # padded row


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8),
                                 np.zeros((10, 10, 3), np.float32), np.zeros((0, 10, 3), np.uint8)])
def test_letterbox_rejects_bad_images(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        letterbox(bad)


def test_nms_suppresses_overlap() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    keep = nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.5)
    assert keep.tolist() == [0, 2]


def test_decode_maps_back_and_class_aware() -> None:
    img = np.zeros((375, 1242, 3), np.uint8)
    _, info = letterbox(img)
    raw = np.zeros((1, 4 + 2, 5), np.float32)
    # two identical boxes of different classes survive class-aware NMS, a duplicate of class 0 does not
    raw[0, :4, 0] = [100, 100, 20, 40]
    raw[0, 4, 0] = 0.9
    raw[0, :4, 1] = [100, 100, 20, 40]
    raw[0, 5, 1] = 0.8
    raw[0, :4, 2] = [101, 100, 20, 40]
    raw[0, 4, 2] = 0.7
    raw[0, :4, 3] = [1240, 380, 40, 40]  # clipped to the image
    raw[0, 4, 3] = 0.6
    raw[0, 4, 4] = 0.1  # below threshold
    det = decode(raw, 0.25, 0.45, 100, info)
    assert det.class_ids.tolist() == [0, 1, 0]
    np.testing.assert_allclose(det.boxes[0], [(90 - info.pad_x) / info.scale, (80 - info.pad_y) / info.scale,
                                              (110 - info.pad_x) / info.scale, (120 - info.pad_y) / info.scale], rtol=1e-5)
    assert det.boxes[:, 2].max() <= 1242 and det.boxes[:, 3].max() <= 375
    assert len(decode(raw, 0.25, 0.45, 100, info, agnostic=True)) == 2
    assert len(decode(raw, 0.25, 0.45, 1, info)) == 1
    assert len(decode(np.zeros((1, 7, 10), np.float32), 0.25, 0.45, 10)) == 0


def test_decode_rejects_bad_shape() -> None:
    with pytest.raises(ValueError):
        decode(np.zeros((2, 7, 10), np.float32))
    with pytest.raises(ValueError):
        decode(np.zeros((1, 4, 10), np.float32))
