"""Behaviour checks of a running ``detector`` node, shared by the launch tests and their twins.

Each check drives the node through a :class:`DetectorClient` and raises ``AssertionError``
with a message on failure. ``wait_log(text, timeout) -> bool`` waits for ``text`` in the
node's output (``ManagedProcess.wait_for_output`` in the twins, ``proc_output.waitFor`` in
launch tests).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from sparse_perception.node_client import DetectorClient, image_msg, stamp_ns, wait_until
from sparse_perception_msgs.srv import SetSparsity

WaitLog = Callable[[str, float], bool]
LEVELS = ("dense", "s50", "s75")


def frame(i: int, h: int = 32, w: int = 96) -> np.ndarray:
    """A deterministic noise frame."""
    return np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)


def check_swaps_lossless(client: DetectorClient, frames: int = 1000, swaps: int = 50,
                         t0_ns: int = 1_700_000_000_000_000_000) -> dict[str, float]:
    """``swaps`` set_sparsity calls spread over ``frames`` lock-step frames: nothing lost/duplicated.

    Frames are published one at a time and the next goes out once the previous one's
    detections arrived (the node keeps only the newest frame, so a faster publisher would
    measure the DDS queue, not the swap). Swap requests are sent asynchronously and answered
    while frames keep flowing.
    """
    assert client.wait_ready(), "detector never answered a probe frame"
    every = frames // swaps
    pending, sent = [], []
    for i in range(frames):
        if i % every == every // 2 and len(pending) < swaps:
            pending.append(client.swap_client.call_async(SetSparsity.Request(level=LEVELS[len(pending) % 3])))
        ns = t0_ns + i * 100_000_000
        client.publish(image_msg(frame(i % 7), ns))
        sent.append(ns)
        assert client.wait_for_stamp(ns, timeout=10) is not None, f"frame {i} (stamp {ns}) got no detections"
    assert wait_until(lambda: all(f.done() for f in pending), 10), "swap calls unanswered"
    responses = [f.result() for f in pending]
    assert len(responses) == swaps, len(responses)
    assert all(r.success for r in responses), [r.message for r in responses if not r.success]
    got = [stamp_ns(m.header) for m in client.received() if t0_ns <= stamp_ns(m.header) <= sent[-1]]
    assert len(got) == len(set(got)), "a frame was processed twice"
    assert got == sent, f"{len(set(sent) - set(got))} frames lost or reordered"
    assert all(b > a for a, b in zip(got, got[1:])), "stamps not monotonic"
    swap_ms = [r.swap_time_ms for r in responses if r.swap_time_ms > 0]
    return {"swaps": float(len(responses)), "swap_ms_max": max(swap_ms) if swap_ms else 0.0}


def malformed_images(good: np.ndarray) -> dict[str, object]:
    """Wrong encoding, step mismatch, zero size, truncated data."""
    h, w = good.shape[:2]
    bad = {
        "wrong encoding": image_msg(good, 0, encoding="yuv_unknown"),
        "step mismatch": image_msg(good, 0),
        "zero size": image_msg(np.zeros((0, w, 3), np.uint8), 0),
        "truncated data": image_msg(good, 0),
    }
    bad["step mismatch"].step = w * 3 - 5
    bad["truncated data"].data = bytes(bad["truncated data"].data)[: (h * w * 3) // 2]
    return bad


def check_malformed_images(client: DetectorClient, wait_log: WaitLog, is_alive: Callable[[], bool]) -> None:
    """Each malformed frame logs an error naming its stamp; the next good frame is processed."""
    assert client.wait_ready(), "detector never answered a probe frame"
    good = frame(5)
    for k, (what, msg) in enumerate(malformed_images(good).items()):
        msg.header.stamp.sec = 5000 + k
        client.publish(msg)
        assert wait_log(f"bad image (stamp {5000 + k}.000000000", 10), f"no error logged for {what}"
        ns = (6000 + k) * 1_000_000_000
        client.publish(image_msg(good, ns))
        assert client.wait_for_stamp(ns, timeout=10) is not None, f"node stopped processing after {what}"
        assert not any(stamp_ns(m.header) == (5000 + k) * 1_000_000_000 for m in client.received()), \
            f"detections published for the {what} frame"
    assert is_alive(), "node died"


def check_unknown_level_and_parameter_swap(client: DetectorClient) -> None:
    """Unknown levels rejected naming the available ones; fraction -> closest; parameter swaps."""
    ok = client.set_sparsity("s50")
    assert ok.success and ok.active_level == "s50", ok.message
    bad = client.set_sparsity("s99")
    assert not bad.success and bad.active_level == "s50", bad.message
    assert "s99" in bad.message and all(lv in bad.message for lv in LEVELS), bad.message
    closest = client.set_sparsity(sparsity=0.7)
    assert closest.success and closest.active_level == "s75", closest.message
    assert client.set_parameter("sparsity_level", "dense") == (True, "")
    assert wait_until(lambda: client.latest_status() is not None and client.latest_status().level == "dense", 5), \
        "engine_status not republished after the parameter swap"
    ok_, reason = client.set_parameter("sparsity_level", "s99")
    assert not ok_ and "s99" in reason, reason
    assert client.latest_status().mode == "manual"


def check_latched_status(make_client: Callable[[str], DetectorClient]) -> None:
    """A subscriber that joins after the last change still receives the current EngineStatus."""
    first = make_client("status_setter")
    try:
        assert first.set_sparsity("s75").success
    finally:
        first.close()
    late = make_client("late_subscriber")
    try:
        assert wait_until(lambda: late.latest_status() is not None, 10), "late subscriber got no engine_status"
        st = late.latest_status()
        assert st.level == "s75" and st.backend == "onnxruntime" and len(st.artifact_sha256) == 64, st
        assert sorted(st.available_levels) == sorted(LEVELS)
        assert len(late.statuses) == 1, "more than the current status delivered"
    finally:
        late.close()
