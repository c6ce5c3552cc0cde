"""Frame accounting of the detector: received, processed, dropped, errors, latency and fps (no ``rclpy``)."""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np

__all__ = ["FrameStats"]


class FrameStats:
    """Thread-safe frame accounting: received, processed, dropped, errors, latency and fps.

    Drops are detected from gaps in each publisher's publication sequence numbers (a depth-1
    queue overwrites frames the node had no time for: those never reach a callback) and from
    frames that could not be processed (decode errors count as ``errors``, not drops).

    :param window: how many recent frames the latency percentiles and fps use.
    """

    def __init__(self, window: int = 200) -> None:
        self._lock = threading.Lock()
        self._last_seq: dict[Any, int] = {}
        self._latency: deque[float] = deque(maxlen=window)
        self._infer: deque[float] = deque(maxlen=window)
        self._done: deque[float] = deque(maxlen=window)
        self._gaps: deque[int] = deque(maxlen=window)  # per received frame: frames dropped before it
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.errors = 0
        self.callback_errors = 0
        self._gap_count = 0  # entries ever appended to _gaps
        self._mark = (0, 0)  # (processed, _gap_count) when the load window last started over (mark_level)

    def on_received(self, publisher: Any, sequence: int | None) -> None:
        """Count a frame taken from the queue; ``sequence`` gaps per ``publisher`` are drops."""
        with self._lock:
            self.received += 1
            if sequence is None or sequence <= 0:
                return
            last = self._last_seq.get(publisher)
            gap = sequence - last - 1 if last is not None and sequence > last + 1 else 0
            self._gaps.append(gap)
            self._gap_count += 1
            self.dropped += gap
            if last is None or sequence > last:
                self._last_seq[publisher] = sequence

    def on_overwritten(self) -> None:
        """Count a received frame replaced by a newer one before inference took it (the node's keep-newest
        hand-off): dropped before the frame received last."""
        with self._lock:
            self.dropped += 1
            if self._gaps:
                self._gaps[-1] += 1

    def on_processed(self, latency_ms: float, inference_ms: float) -> None:
        """Count a frame whose detections were published."""
        with self._lock:
            self.processed += 1
            self._latency.append(latency_ms)
            self._infer.append(inference_ms)
            self._done.append(time.monotonic())

    def on_error(self) -> None:
        """Count a frame that could not be decoded or processed."""
        with self._lock:
            self.errors += 1

    def on_callback_error(self) -> None:
        """Count an exception caught at a callback's edge (logged with its traceback; the node runs on)."""
        with self._lock:
            self.callback_errors += 1

    def mean_inference_ms(self) -> float:
        with self._lock:
            return float(np.mean(self._infer)) if self._infer else 0.0

    def mark_level(self) -> None:
        """Start the load window over: the active level changed, and frames of the old one no longer say
        what the load is at the new one (the policy's simulator measures each window at one level)."""
        with self._lock:
            self._mark = (self.processed, self._gap_count)

    def load(self, period_ms: float, recent: int = 10) -> dict[str, float]:
        """The load of the last ``recent`` frames since :meth:`mark_level` as the condition policy observes
        it (the fields of :class:`sparse_perception.runtime.policy.Load`: mean inference ms, share of frames
        dropped, share answered later than ``period_ms``) and ``frames``, how many processed frames that is
        (0: nothing measured at this level yet)."""
        with self._lock:
            n_done = min(recent, self.processed - self._mark[0], len(self._infer))
            n_gaps = min(recent, self._gap_count - self._mark[1], len(self._gaps))
            g = list(self._gaps)[len(self._gaps) - n_gaps:]
            gaps = sum(g)
            seen = len(g) + gaps
            lat = np.asarray(list(self._latency)[len(self._latency) - n_done:], dtype=np.float64)
            inf = list(self._infer)[len(self._infer) - n_done:]
            return {"inference_ms": float(np.mean(inf)) if inf else 0.0,
                    "drop_fraction": gaps / seen if seen else 0.0,
                    "late_fraction": float(np.mean(lat > period_ms)) if lat.size else 0.0,
                    "frames": n_done}

    def snapshot(self) -> dict[str, float | int]:
        """Current figures (latency = callback entry to publish, ms)."""
        with self._lock:
            lat = np.asarray(self._latency, dtype=np.float64)
            done = list(self._done)
            fps = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0.0
            return {
                "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else 0.0,
                "latency_p95_ms": float(np.percentile(lat, 95)) if lat.size else 0.0,
                "inference_mean_ms": float(np.mean(self._infer)) if self._infer else 0.0,
                "inference_p50_ms": float(np.median(self._infer)) if self._infer else 0.0,
                "fps": float(fps),
                "frames_received": self.received,
                "frames_processed": self.processed,
                "frames_dropped": self.dropped,
                "frames_bad": self.errors,
                "callback_errors": self.callback_errors,
            }
