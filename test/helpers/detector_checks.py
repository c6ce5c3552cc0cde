"""Behaviour checks of a running ``detector`` node, shared by the launch tests and their twins.

Each check drives the node through a :class:`DetectorClient` and raises ``AssertionError``
with a message on failure. ``wait_log(text, timeout) -> bool`` waits for ``text`` in the
node's output (``ManagedProcess.wait_for_output`` in the twins, ``proc_output.waitFor`` in
launch tests).
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from sparse_perception.tools.node_client import DetectorClient, image_msg, stamp_ns
from sparse_perception.tools.testing import wait_for
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
    while frames keep flowing. Each frame's detections name the level that produced them: it
    must be one active while the frame was in flight (:func:`allowed_levels`), so every swap
    happened between two frames.
    """
    assert client.wait_ready(), "detector never answered a probe frame"
    assert wait_for(lambda: client.latest_status() is not None, 10), "no latched engine_status from the node"
    initial = client.latest_status().level
    every = frames // swaps
    pending: list[dict[str, Any]] = []
    sent, pub_t = [], {}
    for i in range(frames):
        if i % every == every // 2 and len(pending) < swaps:
            rec: dict[str, Any] = {"level": LEVELS[len(pending) % 3], "t_req": time.time_ns()}
            rec["future"] = client.swap_client.call_async(SetSparsity.Request(level=rec["level"]))
            rec["future"].add_done_callback(lambda _f, r=rec: r.__setitem__("t_resp", time.time_ns()))
            pending.append(rec)
        ns = t0_ns + i * 100_000_000
        pub_t[ns] = time.time_ns()
        client.publish(image_msg(frame(i % 7), ns))
        sent.append(ns)
        assert client.wait_for_stamp(ns, timeout=10) is not None, f"frame {i} (stamp {ns}) got no detections"
    assert wait_for(lambda: all(r["future"].done() and "t_resp" in r for r in pending), 10), "swap calls unanswered"
    responses = [r["future"].result() for r in pending]
    assert len(responses) == swaps, len(responses)
    assert all(r.success for r in responses), [r.message for r in responses if not r.success]
    got = [(stamp_ns(m.header), t, m) for t, m in list(client.detections) if t0_ns <= stamp_ns(m.header) <= sent[-1]]
    stamps = [g[0] for g in got]
    assert len(stamps) == len(set(stamps)), "a frame was processed twice"
    assert stamps == sent, f"{len(set(sent) - set(stamps))} frames lost or reordered"
    windows = [(r["t_req"], r["t_resp"], r["level"]) for r in pending]
    for ns, t_recv, msg in got:
        ok = allowed_levels(pub_t[ns], t_recv, windows, initial)
        assert msg.level in ok, f"frame {ns} answered by {msg.level!r}, but only {sorted(ok)} were active then"
    levels = [m.level for _, _, m in got]
    changes = sum(a != b for a, b in zip(levels, levels[1:]))
    assert changes >= swaps * 2 // 3, f"levels changed {changes} times over {swaps} swaps"
    return {"swaps": float(len(responses)), "level_changes": float(changes)}


def allowed_levels(t_pub: int, t_recv: int, swaps: list[tuple[int, int, str]], initial: str) -> set[str]:
    """Levels that may have answered a frame published at ``t_pub`` and answered at ``t_recv``.

    ``swaps`` are (request sent, response received, level) in the order sent; a swap takes effect
    somewhere inside its window. The frame ran on the level active when its inference started,
    some time in [t_pub, t_recv]: the level of the last swap surely applied by ``t_pub`` (answered
    before it) or of any later swap already requested by ``t_recv``.
    """
    seq = [(0, 0, initial), *swaps]
    lo = max(k for k, (_, t_resp, _) in enumerate(seq) if k == 0 or t_resp <= t_pub)
    hi = max(k for k, (t_req, _, _) in enumerate(seq) if k == 0 or t_req <= t_recv)
    return {seq[k][2] for k in range(lo, max(lo, hi) + 1)}


def node_counters(client: DetectorClient) -> Callable[[], dict[str, int]]:
    """Subscribe ``client`` to ``/diagnostics``; :return: a function giving the detector's frame counters from
    a fresh diagnostics period (``frames_received`` / ``_processed`` / ``_dropped`` / ``_bad``)."""
    from diagnostic_msgs.msg import DiagnosticArray

    diag: list[dict[str, str]] = []
    # /diagnostics is one topic for every node: keep the status of the client's own detector only (its name
    # starts with the node's fully qualified name; another detector may run at the same time)
    own = ("/" + client.prefix.strip("/") + "/detector").replace("//", "/") + ":"
    client.node.create_subscription(
        DiagnosticArray, "/diagnostics",
        lambda m: diag.extend({kv.key: kv.value for kv in st.values} for st in m.status if st.name.startswith(own)),
        10)

    def counters() -> dict[str, int]:
        n = len(diag)
        assert wait_for(lambda: len(diag) >= n + 2, 10), "no /diagnostics from the node"  # a fresh period
        return {k: int(diag[-1][k]) for k in ("frames_received", "frames_processed", "frames_dropped", "frames_bad")}

    return counters


def check_frame_accounting(delta: dict[str, int], answered: int, sent: int) -> None:
    """Every frame is accounted for by the node's counters over a stream of ``sent`` frames: each one its
    image callback took was answered or replaced by a newer one while inference was busy (keep-newest:
    counted as dropped), and each one that never reached the callback is a publication-sequence gap (also
    dropped). On a loaded machine a 10 Hz stream outruns inference: that is load, not a lost frame."""
    assert delta["frames_bad"] == 0 and delta["frames_processed"] == answered, (
        f"the node answered {delta['frames_processed']} frames by its count, {answered} arrived: {delta}")
    assert delta["frames_received"] >= answered, f"answered frames the callback never took: {delta}"
    assert answered + delta["frames_dropped"] == sent, (
        f"{sent - answered} frames unanswered but only {delta['frames_dropped']} counted as dropped: {delta}")


def check_free_running_swaps(client: DetectorClient, seconds: float = 6.0, frame_hz: float = 10.0,
                             swap_period_s: float = 0.2, t0_ns: int = 1_800_000_000_000_000_000) -> dict[str, Any]:
    """A free-running ``frame_hz`` stream with a swap every ``swap_period_s``: frame by frame, the level that answered.

    Frames go out on their own clock (not lock-step); swap requests go out on theirs and are answered
    while frames flow. The ``level`` field of every frame's detections must be a level that was
    active while it was in flight (:func:`allowed_levels`): a swap takes effect between frames,
    never inside one. No frame is lost to a swap: by the node's own counters (``/diagnostics``),
    every frame its callback took was answered, and every frame it did not answer was one its
    keep-last-1 queue replaced while it was busy (``frames_dropped``; on a loaded machine a
    10 Hz stream outruns inference — that is load, not the swap).
    """
    counters = node_counters(client)
    assert client.wait_ready(), "detector never answered a probe frame"
    assert wait_for(lambda: client.latest_status() is not None, 10), "no latched engine_status from the node"
    initial = client.latest_status().level
    before = counters()
    order = [lv for lv in LEVELS if lv != initial] + [initial]
    frames = int(seconds * frame_hz)
    pub_t: dict[int, int] = {}
    swaps: list[dict[str, Any]] = []
    start = time.monotonic()
    i = k = 0
    while i < frames:
        now = time.monotonic() - start
        if k * swap_period_s <= now and k < int(seconds / swap_period_s):
            rec: dict[str, Any] = {"level": order[k % len(order)], "t_req": time.time_ns()}
            fut = client.swap_client.call_async(SetSparsity.Request(level=rec["level"]))
            fut.add_done_callback(lambda _f, r=rec: r.__setitem__("t_resp", time.time_ns()))
            rec["future"] = fut
            swaps.append(rec)
            k += 1
        if i / frame_hz <= now:
            ns = t0_ns + i * 100_000_000
            pub_t[ns] = time.time_ns()
            client.publish(image_msg(frame(i % 7), ns))
            i += 1
        time.sleep(0.001)
    assert wait_for(lambda: all(r["future"].done() and "t_resp" in r for r in swaps), 10), "swap calls unanswered"
    last = t0_ns + (frames - 1) * 100_000_000
    assert client.wait_for_stamp(last, timeout=10) is not None, "the last frame got no detections"
    assert all(r["future"].result().success for r in swaps), [r["future"].result().message for r in swaps]
    after = counters()
    delta = {k: after[k] - before[k] for k in after}
    got = [(stamp_ns(m.header), t, m) for t, m in list(client.detections) if t0_ns <= stamp_ns(m.header) <= last]
    stamps = [g[0] for g in got]
    assert len(stamps) == len(set(stamps)), "a frame was answered twice"
    assert stamps == sorted(stamps) and set(stamps) <= set(pub_t), "frames answered out of order"
    check_frame_accounting(delta, answered=len(stamps), sent=frames)
    windows = [(r["t_req"], r["t_resp"], r["level"]) for r in swaps]
    seen = []
    for ns, t_recv, msg in got:
        ok = allowed_levels(pub_t[ns], t_recv, windows, initial)
        assert msg.level in ok, f"frame {ns} answered by {msg.level!r}, but only {sorted(ok)} were active then"
        assert msg.engine_time_ms > 0, "no engine time in the detections"
        seen.append(msg.level)
    changes = sum(a != b for a, b in zip(seen, seen[1:]))
    assert set(seen) == set(LEVELS) and changes >= 3, f"levels changed {changes} times over {len(swaps)} swaps: {seen}"
    return {"frames": frames, "answered": len(stamps), "queue_dropped": delta["frames_dropped"],
            "swaps": len(swaps), "level_changes": changes}


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
    assert wait_for(lambda: client.latest_status() is not None and client.latest_status().level == "dense", 5), \
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
        assert wait_for(lambda: late.latest_status() is not None, 10), "late subscriber got no engine_status"
        st = late.latest_status()
        assert st.level == "s75" and st.backend == "onnxruntime" and len(st.artifact_sha256) == 64, st
        assert sorted(st.available_levels) == sorted(LEVELS)
        assert len(late.statuses) == 1, "more than the current status delivered"
    finally:
        late.close()
