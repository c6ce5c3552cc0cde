"""Raw/compressed image payload conversion and its validation."""
import cv2
import numpy as np
import pytest

from sparse_perception.image_codec import compressed_to_bgr, image_to_bgr

BGR = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)


def test_encodings() -> None:
    np.testing.assert_array_equal(image_to_bgr("bgr8", 2, 3, 9, BGR.tobytes(), 0), BGR)
    np.testing.assert_array_equal(image_to_bgr("rgb8", 2, 3, 9, BGR[:, :, ::-1].tobytes(), 0), BGR)
    rgba = np.concatenate([BGR[:, :, ::-1], np.full((2, 3, 1), 255, np.uint8)], 2)
    np.testing.assert_array_equal(image_to_bgr("rgba8", 2, 3, 12, memoryview(rgba.tobytes()), 0), BGR)
    padded = np.zeros((2, 12), np.uint8)
    padded[:, :9] = BGR.reshape(2, 9)
    np.testing.assert_array_equal(image_to_bgr("bgr8", 2, 3, 12, padded.reshape(-1), 0), BGR)
    mono = image_to_bgr("mono8", 2, 3, 3, bytes([1, 2, 3, 4, 5, 6]), 0)
    assert mono.shape == (2, 3, 3) and mono[1, 2, 0] == 6
    m16 = image_to_bgr("mono16", 1, 2, 4, np.array([256, 512], ">u2").tobytes(), 1)
    assert m16[0, :, 0].tolist() == [1, 2]


@pytest.mark.parametrize("args,match", [
    (("yuv422", 2, 3, 9, BGR.tobytes()), "unsupported"),
    (("bgr8", 0, 3, 9, b""), "zero size"),
    (("bgr8", 2, 3, 8, BGR.tobytes()[:16]), "step"),
    (("bgr8", 2, 3, 9, BGR.tobytes()[:-1]), "expected step"),
])
def test_rejects(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        image_to_bgr(*args, 0)


def test_compressed() -> None:
    ok, png = cv2.imencode(".png", BGR)
    np.testing.assert_array_equal(compressed_to_bgr("png", png.tobytes()), BGR)
    with pytest.raises(ValueError, match="decode"):
        compressed_to_bgr("jpeg", b"not an image")
    with pytest.raises(ValueError, match="no data"):
        compressed_to_bgr("jpeg", b"")
