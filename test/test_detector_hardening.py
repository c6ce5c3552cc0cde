"""Hostile input against a real ``detector_node`` process over real DDS.

* a seeded fuzz run of >= 500 Image and CompressedImage messages (encodings, sizes, steps, payload
  lengths, corrupt and hostile PNG/JPEG headers): every message is answered with detections or a
  logged bad-frame error, the node stays up and answers the next good frame;
* 100 concurrent ``~/set_sparsity`` calls from two clients while frames stream: every call is
  answered and no frame is lost.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

pytest.importorskip("rclpy")
cv2 = pytest.importorskip("cv2")
from helpers.detector_checks import frame  # noqa: E402
from sparse_perception.tools.node_client import FRAME_QOS, DetectorClient, image_msg, stamp_ns  # noqa: E402
from sparse_perception.tools.testing import ManagedProcess, managed_process, python_cmd, wait_for  # noqa: E402

pytestmark = pytest.mark.ros

FUZZ_SEED = 14
RAW_CASES, COMPRESSED_CASES = 300, 250


def node_cmd(*params: str) -> list[str]:
    args = ["--ros-args", "--log-level", "detector:=info"]
    for p in params:
        args += ["-p", p]
    return python_cmd("-m", "sparse_perception.node.detector_node", *args)


class LogTail:
    """Reads a process log incrementally (the fuzz loop polls it hundreds of times)."""

    def __init__(self, proc: ManagedProcess) -> None:
        self.proc, self.text, self._pos = proc, "", 0

    def poll(self) -> str:
        with open(self.proc.log_path, "rb") as fh:
            fh.seek(self._pos)
            chunk = fh.read()
        self._pos += len(chunk)
        self.text += chunk.decode(errors="replace")
        return self.text


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def hostile_png(rng: np.random.Generator) -> bytes:
    w, h = (int(v) for v in rng.choice([0, 1, 70_000, 100_000, 2**31 - 1, 2**32 - 1], 2))
    ihdr = struct.pack(">IIBBBBB", w, h, int(rng.choice([1, 8, 16, 3])), int(rng.choice([0, 2, 3, 6, 7])), 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(rng.bytes(16)))
            + _png_chunk(b"IEND", b""))


def hostile_jpeg(rng: np.random.Generator) -> bytes:
    w, h = (int(v) for v in rng.choice([0, 1, 30_000, 65_535], 2))
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, h, w, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + sof + rng.bytes(int(rng.integers(0, 64))) + b"\xff\xd9"


def fuzz_raw(rng: np.random.Generator):  # noqa: ANN201 - sensor_msgs/Image
    from sensor_msgs.msg import Image

    enc = str(rng.choice(["bgr8", "rgb8", "bgra8", "rgba8", "mono8", "mono16", "yuv422", "", "8UC3", "bgr16",
                          "BGR8", "x" * 300]))
    ch = {"bgr8": 3, "rgb8": 3, "bgra8": 4, "rgba8": 4, "mono8": 1, "mono16": 2}.get(enc.lower(), 3)
    odd_h = int(rng.choice([0, 1, 2, 31, 32, 97, 2**31 - 1, 2**32 - 1]))
    h = odd_h if rng.random() < 0.3 else int(rng.integers(1, 130))
    w = int(rng.choice([0, 1, 3, 2**31 - 1, 2**32 - 1])) if rng.random() < 0.3 else int(rng.integers(1, 200))
    row = w * ch
    step = int(rng.choice([row, row, row + int(rng.integers(1, 9)), max(row - 1, 0), 0, 2**32 - 1])) % 2**32
    exact = min(step * h, 300_000)
    n = int(rng.choice([exact, exact, 0, max(exact - 1, 0), exact + 1, int(rng.integers(0, 5000))]))
    msg = Image(height=h % 2**32, width=w % 2**32, encoding=enc, step=step, is_bigendian=int(rng.integers(0, 2)))
    msg.data = rng.bytes(n)
    return msg


def fuzz_compressed(rng: np.random.Generator):  # noqa: ANN201 - sensor_msgs/CompressedImage
    from sensor_msgs.msg import CompressedImage

    kind = str(rng.choice(["png", "jpeg", "png_trunc", "jpeg_trunc", "png_flip", "jpeg_flip", "hostile_png",
                           "hostile_jpeg", "random", "empty", "sig_garbage"]))
    img = rng.integers(0, 255, (int(rng.integers(1, 90)), int(rng.integers(1, 150)), 3), dtype=np.uint8)
    ext = ".png" if kind.startswith("png") else ".jpg"
    enc = cv2.imencode(ext, img)[1].tobytes()
    if kind.endswith("_trunc"):
        enc = enc[: int(rng.integers(0, len(enc)))]
    elif kind.endswith("_flip"):
        arr = bytearray(enc)
        for i in rng.integers(0, len(arr), int(rng.integers(1, 20))):
            arr[int(i)] ^= int(rng.integers(1, 256))
        enc = bytes(arr)
    elif kind == "hostile_png":
        enc = hostile_png(rng)
    elif kind == "hostile_jpeg":
        enc = hostile_jpeg(rng)
    elif kind == "random":
        enc = rng.bytes(int(rng.integers(1, 4000)))
    elif kind == "empty":
        enc = b""
    elif kind == "sig_garbage":
        enc = (b"\x89PNG\r\n\x1a\n" if rng.random() < 0.5 else b"\xff\xd8\xff") + rng.bytes(int(rng.integers(0, 200)))
    msg = CompressedImage(format=str(rng.choice(["png", "jpeg", "", "rgb8; jpeg compressed bgr8", "bmp", "\x01"])))
    msg.data = enc
    return msg


def _fuzz(client: DetectorClient, proc: ManagedProcess, make: Callable[[np.random.Generator], Any], n: int,
          pub: Any, first_sec: int) -> dict[str, int]:
    """Send ``n`` fuzz messages one at a time; each must be answered (detections) or logged as bad."""
    assert wait_for(lambda: pub.get_subscription_count() > 0, 30), "node never subscribed"
    rng = np.random.default_rng(FUZZ_SEED + first_sec)
    log = LogTail(proc)
    outcome = {"answered": 0, "bad": 0}
    for k in range(n):
        msg = make(rng)
        sec = first_sec + k
        msg.header.stamp.sec = sec
        pub.publish(msg)

        def settled() -> bool:
            if f"bad image (stamp {sec}.000000000" in log.poll():
                outcome["bad"] += 1
                return True
            if any(stamp_ns(m.header) == sec * 1_000_000_000 for m in client.received()[-3:]):
                outcome["answered"] += 1
                return True
            return not proc.alive()

        assert wait_for(settled, 20, period=0.002), (
            f"fuzz message {k} ({type(msg).__name__}) neither answered nor logged as bad; "
            f"node output:\n{log.poll()[-3000:]}")
        assert proc.alive(), f"node died on fuzz message {k}:\n{log.poll()[-3000:]}"
    assert "failed, node keeps running" not in log.poll(), log.text[-3000:]  # nothing reached the last resort
    return outcome


@pytest.mark.parametrize("compressed", [False, True], ids=["Image", "CompressedImage"])
def test_fuzzed_frames_never_stop_the_node(test_zoo: Path, compressed: bool) -> None:
    from sensor_msgs.msg import CompressedImage, Image

    ns = "/fuzz_c" if compressed else "/fuzz_r"
    topic = "image_compressed" if compressed else "image_raw"
    cmd = node_cmd(f"engine_manifest:={test_zoo}", "autostart:=true", "image_reliability:=reliable",
                   f"compressed:={'true' if compressed else 'false'}", f"image_topic:={topic}")
    cmd += ["-r", f"__ns:={ns}"]
    with managed_process(cmd) as proc:
        client = DetectorClient(namespace=ns, name="fuzz_client")
        try:
            pub = client.node.create_publisher(CompressedImage if compressed else Image, f"{ns}/{topic}", FRAME_QOS)
            assert wait_for(lambda: pub.get_subscription_count() > 0, 30), proc.output()[-3000:]
            if compressed:
                out = _fuzz(client, proc, fuzz_compressed, COMPRESSED_CASES, pub, 30_000)
            else:
                assert client.wait_ready(), proc.output()[-3000:]
                out = _fuzz(client, proc, fuzz_raw, RAW_CASES, pub, 20_000)
            assert out["bad"] > 0.5 * sum(out.values()) and out["answered"] > 0, out  # both paths exercised
            good = CompressedImage(format="png") if compressed else image_msg(frame(1), 0)
            if compressed:
                good.data = cv2.imencode(".png", frame(1))[1].tobytes()
            good.header.stamp.sec = 99_999
            pub.publish(good)
            assert client.wait_for_stamp(99_999 * 1_000_000_000, 20) is not None, proc.output()[-3000:]
            assert proc.alive()
        finally:
            client.close()


def test_100_concurrent_set_sparsity_calls_from_two_clients_all_answered_while_frames_stream(test_zoo: Path) -> None:
    """A burst deeper than rclpy's default service queue (10): every call answered, every frame answered."""
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    from sparse_perception_msgs.srv import SetSparsity

    ns = "/burst"
    deep = QoSProfile(depth=200, reliability=QoSReliabilityPolicy.RELIABLE)  # the callers' side holds 50 replies
    with managed_process([*node_cmd(f"engine_manifest:={test_zoo}", "autostart:=true"), "-r", f"__ns:={ns}"]) as proc:
        a = DetectorClient(namespace=ns, name="burst_a")
        b = DetectorClient(namespace=ns, name="burst_b", subscribe_status=False)
        try:
            callers = [c.node.create_client(SetSparsity, f"{ns}/detector/set_sparsity", qos_profile=deep)
                       for c in (a, b)]
            assert all(c.wait_for_service(timeout_sec=30) for c in callers)
            assert a.wait_ready(), proc.output()[-3000:]
            levels = ("dense", "s50", "s75")
            sent, pending = [], []
            for i in range(150):
                if i == 10:  # the burst: 2 x 50 requests at once, then frames keep flowing
                    for k in range(50):
                        for j, caller in enumerate(callers):
                            pending.append(caller.call_async(SetSparsity.Request(level=levels[(k + j) % 3])))
                ns_ = 2_000_000_000_000_000_000 + i * 100_000_000
                a.publish(image_msg(frame(i % 7), ns_))
                sent.append(ns_)
                assert a.wait_for_stamp(ns_, timeout=10) is not None, f"frame {i} got no detections"
            assert wait_for(lambda: all(f.done() for f in pending), 30), (
                f"{sum(not f.done() for f in pending)} of {len(pending)} calls never answered")
            responses = [f.result() for f in pending]
            assert len(responses) == 100 and all(r.success for r in responses), \
                [r.message for r in responses if not r.success]
            got = [stamp_ns(m.header) for m in a.received() if sent[0] <= stamp_ns(m.header) <= sent[-1]]
            assert got == sent, f"{len(set(sent) - set(got))} frames lost or reordered"
            assert proc.alive()
        finally:
            a.close()
            b.close()


def test_an_exception_inside_any_callback_is_logged_counted_and_answered() -> None:
    """The last resort: whatever slips through a callback stays in it (spin_once would end the process)."""
    import rclpy
    from sparse_perception_msgs.srv import SetSparsity

    from sparse_perception.node.detector_node import DetectorNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = DetectorNode(context=ctx)
        resp = node._on_set_sparsity(None, SetSparsity.Response())  # not a request at all
        assert not resp.success and "set_sparsity failed, node keeps running: AttributeError" in resp.message
        assert node._on_condition(None) is None  # not a DrivingCondition
        res = node._on_set_parameters(None)  # not a parameter list
        assert not res.successful and "TypeError" in res.reason
        assert node.stats.callback_errors == 3
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_hostile_parameters_in_one_node_process(test_zoo: Path) -> None:
    """Issue 24 item 6, the parameter cases in one real node: int for double / string at start (exited 1 with
    InvalidParameterTypeException), an unknown start level and a NaN period (refused at configure, naming them,
    nothing stays loaded), and a refused SetParametersAtomically that must not swap."""
    from rcl_interfaces.srv import SetParametersAtomically
    from rclpy.parameter import Parameter

    ns = "/hostile_params"
    cmd = [*node_cmd(f"engine_manifest:={test_zoo}", "cooldown_s:=0", "sparsity_level:=50"), "-r", f"__ns:={ns}"]
    with managed_process(cmd) as proc:
        client = DetectorClient(namespace=ns, name="hostile_params_client")
        try:
            assert client.state() == "unconfigured" and proc.alive(), proc.output()[-3000:]
            assert not client.change_state("configure")
            assert proc.wait_for_output("'sparsity_level': unknown level '50'", 10), proc.output()[-3000:]
            assert client.state() == "unconfigured"
            assert client.set_parameter("sparsity_level", "") == (True, "")
            assert client.set_parameter("diagnostics_period_s", float("nan"))[0]  # unconfigured: checked on configure
            assert not client.change_state("configure")
            assert proc.wait_for_output("parameter 'diagnostics_period_s' must be in", 10), proc.output()[-3000:]
            assert client.set_parameter("diagnostics_period_s", 0.5)[0]
            assert client.change_state("configure") and client.change_state("activate"), proc.output()[-3000:]
            assert wait_for(lambda: client.latest_status() is not None, 20)
            before = client.latest_status().level
            atomic = client.node.create_client(SetParametersAtomically, f"{ns}/detector/set_parameters_atomically")
            req = SetParametersAtomically.Request(parameters=[
                Parameter("sparsity_level", value="s50" if before != "s50" else "s75").to_parameter_msg(),
                Parameter("threads", value=1).to_parameter_msg()])
            res = client._call(atomic, req, 10).result
            assert not res.successful and "'threads' applies on configure" in res.reason
            assert client.set_sparsity("").active_level == before  # unchanged: nothing was applied
            assert proc.alive() and "Traceback" not in proc.output(), proc.output()[-3000:]
        finally:
            client.close()
