"""Raw/compressed image payload conversion and its validation."""
import cv2
import numpy as np
import pytest

from sparse_perception.node.image_codec import compressed_to_bgr, image_to_bgr

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


def hostile_png(width: int, height: int) -> bytes:
    """A few dozen bytes: PNG signature, valid IHDR declaring ``width`` x ``height``, a tiny IDAT and IEND."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 8)) + chunk(b"IEND", b""))


def hostile_jpeg(width: int, height: int) -> bytes:
    """SOI, a baseline SOF0 frame header declaring ``width`` x ``height`` and EOI: no scan data."""
    import struct

    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + sof + b"\xff\xd9"


@pytest.mark.parametrize("payload", [hostile_png(100_000, 100_000), hostile_png(0, 5), hostile_jpeg(65_000, 65_000),
                                     hostile_png(64, 48), hostile_jpeg(64, 48), b"\x89PNG\r\n\x1a\n" + b"\0" * 30,
                                     b"\xff\xd8\xff\xe0\x00\x10JFIF"])
def test_hostile_compressed_headers_are_value_errors(payload: bytes) -> None:
    """Every decode failure (OpenCV's cv2.error included) is a ValueError the node counts as a bad frame."""
    with pytest.raises(ValueError, match="compressed image"):
        compressed_to_bgr("png", payload)


def test_opencv_errors_become_value_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the size cap lifted, OpenCV itself raises cv2.error (its own pixel limit): still a ValueError."""
    from sparse_perception.node import image_codec

    monkeypatch.setattr(image_codec, "MAX_PIXELS", 1 << 62)
    with pytest.raises(ValueError, match="cannot decode compressed image.*CV_IO_MAX_IMAGE_PIXELS"):
        compressed_to_bgr("png", hostile_png(100_000, 100_000))


def test_declared_size_reads_real_headers() -> None:
    from sparse_perception.node.image_codec import declared_size

    img = np.zeros((37, 53, 3), np.uint8)
    for ext in (".png", ".jpg"):
        ok, enc = cv2.imencode(ext, img)
        assert ok and declared_size(enc) == (53, 37)
        np.testing.assert_array_equal(compressed_to_bgr(ext, enc).shape, (37, 53, 3))
    assert declared_size(np.frombuffer(hostile_png(100_000, 7), np.uint8)) == (100_000, 7)
    assert declared_size(np.frombuffer(b"GIF89a", np.uint8)) is None


def hostile_gif(width: int, height: int) -> bytes:
    """35 bytes: a GIF header whose logical screen and only frame declare ``width`` x ``height``."""
    import struct

    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
            + b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00;")


def hostile_webp_lossless(width: int, height: int) -> bytes:
    """A RIFF/WEBP container with a VP8L header declaring ``width`` x ``height`` and a few bytes of stream."""
    import struct

    bits = (width - 1) | ((height - 1) << 14)
    body = b"\x2f" + struct.pack("<I", bits) + b"\0" * 16
    chunk = b"VP8L" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def hostile_tiff(width: int, height: int) -> bytes:
    """A little-endian deflate TIFF whose one IFD declares ``width`` x ``height`` (8-bit grey, one strip)."""
    import struct
    import zlib

    strip = zlib.compress(b"\0" * 4096)
    tags = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 8), (262, 3, 1, 1),
            (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, len(strip))]
    ifd_size = 2 + 12 * len(tags) + 4
    data_off = 8 + ifd_size
    ifd = struct.pack("<H", len(tags))
    for tag, typ, count, val in tags:
        val = data_off if tag == 273 else val
        ifd += struct.pack("<HHI", tag, typ, count) + (struct.pack("<HH", val, 0) if typ == 3 else struct.pack("<I", val))
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + strip


@pytest.mark.parametrize("payload", [hostile_gif(9000, 9000), hostile_webp_lossless(12000, 12000),
                                     hostile_tiff(10000, 10000)], ids=["gif", "webp", "tiff"])
def test_decompression_bombs_of_every_format_are_refused_before_decoding(payload: bytes,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24 item 6: GIF, WebP and TIFF headers are bounded like PNG/JPEG (the decoder is never called)."""
    from sparse_perception.node import image_codec

    def no_decode(*args: object) -> None:
        raise AssertionError("decoder called on an oversized header")

    monkeypatch.setattr(image_codec.cv2, "imdecode", no_decode)
    with pytest.raises(ValueError, match="declares"):
        compressed_to_bgr("gif", payload)


def test_declared_size_of_every_bounded_format() -> None:
    """Real encodings of each format report their true size and decode; unbounded formats are refused."""
    from sparse_perception.node.image_codec import declared_size

    img = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    for ext, params in [(".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
                        (".tiff", []), (".bmp", []), (".ppm", []), (".gif", []), (".ras", []), (".pfm", [])]:
        ok, enc = cv2.imencode(ext, img, params)
        assert ok and declared_size(enc) == (53, 37), ext
        assert compressed_to_bgr(ext, enc).shape == (37, 53, 3)
    assert declared_size(np.frombuffer(hostile_gif(16384, 16384), np.uint8)) == (16384, 16384)
    assert declared_size(np.frombuffer(hostile_tiff(10000, 10000), np.uint8)) == (10000, 10000)
    ok, jp2 = cv2.imencode(".jp2", img)
    with pytest.raises(ValueError, match="size can be read before decoding"):
        compressed_to_bgr("jp2", jp2)
