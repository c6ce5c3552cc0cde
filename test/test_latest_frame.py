"""The node's keep-newest hand-off to its inference thread (runtime/latest_frame.py) and its drop count."""
from __future__ import annotations

import threading
import time

import pytest

from sparse_perception.runtime.frame_stats import FrameStats
from sparse_perception.runtime.latest_frame import LatestFrameWorker


def test_the_newest_item_replaces_a_waiting_one_and_every_taken_item_is_handled_in_order() -> None:
    gate, started = threading.Event(), threading.Event()
    seen: list[int] = []

    def handle(item: int) -> None:
        if item == 0:
            started.set()
            gate.wait(5)  # the first item holds the worker while 1, 2, 3 arrive
        seen.append(item)

    w = LatestFrameWorker(handle)
    w.start()
    assert w.put(0) is False
    assert started.wait(5)  # 0 is in flight
    deadline = time.monotonic() + 5
    assert w.put(1) is False and w.put(2) is True and w.put(3) is True  # 1 and 2 replaced while 0 runs
    gate.set()
    while not w.idle() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert seen == [0, 3] and w.replaced == 2 and w.handled == 2
    assert w.stop() is True and not w.running


def test_stop_waits_for_the_item_in_flight_and_discards_the_waiting_one() -> None:
    started, seen = threading.Event(), []

    def handle(item: str) -> None:
        started.set()
        time.sleep(0.2)
        seen.append(item)

    w = LatestFrameWorker(handle)
    w.start()
    w.put("a")
    assert started.wait(5)
    w.put("b")  # waiting behind "a"
    t0 = time.monotonic()
    assert w.stop(timeout=5) is True
    assert seen == ["a"] and time.monotonic() - t0 >= 0.1  # "a" finished before stop returned, "b" never ran
    with pytest.raises(RuntimeError, match="not running"):
        w.put("c")
    assert w.offer("c") is None and w.replaced == 0  # the node's callback racing deactivate: let go, no error
    w.start()  # restartable (deactivate -> activate)
    assert w.offer("d") is False
    deadline = time.monotonic() + 5
    while seen[-1] != "d" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == ["a", "d"]
    w.stop()


def test_a_failing_item_is_reported_and_the_worker_goes_on() -> None:
    errors: list[BaseException] = []
    seen: list[int] = []

    def handle(item: int) -> None:
        if item == 1:
            raise ValueError("bad frame")
        seen.append(item)

    w = LatestFrameWorker(handle, on_error=errors.append)
    w.start()
    for i in range(3):
        w.put(i)
        deadline = time.monotonic() + 5
        while not w.idle() and time.monotonic() < deadline:
            time.sleep(0.001)
    w.stop()
    assert seen == [0, 2] and len(errors) == 1 and "bad frame" in str(errors[0])


def test_an_overwritten_frame_counts_as_dropped_before_the_newest_one() -> None:
    st = FrameStats()
    st.on_received("cam", 1)
    st.on_processed(30.0, 25.0)
    st.on_received("cam", 2)  # waiting ...
    st.on_received("cam", 3)  # ... replaced by 3 before inference took it
    st.on_overwritten()
    st.on_processed(30.0, 25.0)
    assert st.dropped == 1 and st.snapshot()["frames_dropped"] == 1
    load = st.load(100.0)
    assert load["drop_fraction"] == pytest.approx(1 / 4)  # 3 entries seen + 1 dropped before the last
