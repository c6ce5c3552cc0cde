"""A keep-newest, one-slot mailbox served by one worker thread (no ``rclpy``).

Why the detector node hands frames to a thread of its own instead of running inference in its image
callback: under rclpy's ``MultiThreadedExecutor`` a subscription callback that runs for tens of
milliseconds (ONNX Runtime inference) lost about half of a 10 Hz camera's frames on this 2-core machine,
in bursts of up to three seconds, while the same callback under a ``SingleThreadedExecutor``, or a
callback that only stores the message, received every frame (measured: the real KITTI tracking drive,
154 frames of 1242x375 ``bgr8`` replayed reliably, the zoo's dense INT8 level: 79 / 154 received in the
callback, 154 / 154 with this mailbox; docs/node.md, "The image path"). With the mailbox, the executor's
callback returns at once, and newest-wins is applied here, where it can be counted: a frame still waiting
when the next one arrives is replaced (and counted as dropped by the caller).

    worker = LatestFrameWorker(handle, name="detector-inference")
    worker.start()
    replaced = worker.put(item)        # True: an unprocessed item was overwritten
    worker.offer(item)                 # the same, or None (no error) once the worker is stopped
    worker.stop()                      # waits for the item in flight; a waiting one is discarded
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["LatestFrameWorker"]

_EMPTY = object()


class LatestFrameWorker:
    """Run ``handle(item)`` on a worker thread for the newest item put, one at a time.

    :param handle: called with each item taken; an exception it raises is passed to ``on_error`` (the
        worker keeps running; without ``on_error`` it is re-raised nowhere and the item is lost).
    :param name: the thread's name.
    :param on_error: ``on_error(exc)`` for an exception of ``handle``.
    """

    def __init__(self, handle: Callable[[Any], None], name: str = "latest-frame-worker",
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self._handle = handle
        self._name = name
        self._on_error = on_error
        self._cv = threading.Condition()
        self._item: Any = _EMPTY
        self._running = False
        self._busy = False
        self._thread: threading.Thread | None = None
        self.handled = 0
        self.replaced = 0

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Start the worker thread (no-op when running)."""
        with self._cv:
            if self._running:
                return
            self._running = True
            self._item = _EMPTY
            self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
            self._thread.start()

    def put(self, item: Any) -> bool:
        """Hand ``item`` to the worker; :return: True when it replaced an item not taken yet.

        :raises RuntimeError: the worker is not running.
        """
        with self._cv:
            if not self._running:
                raise RuntimeError(f"{self._name}: not running (start() it first)")
            replaced = self._item is not _EMPTY
            self._item = item
            self.replaced += int(replaced)
            self._cv.notify()
            return replaced

    def offer(self, item: Any) -> bool | None:
        """:meth:`put` for a caller that may race :meth:`stop` (an executor callback during deactivate):
        :return: None when the worker is not running (the item is discarded), else what :meth:`put` returns."""
        with self._cv:
            if not self._running:
                return None
            return self.put(item)  # the Condition's lock is re-entrant

    def idle(self) -> bool:
        """True when nothing waits and nothing is in flight."""
        with self._cv:
            return self._item is _EMPTY and not self._busy

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Stop: a waiting item is discarded, the one in flight finishes; :return: False if the thread is
        still running after ``timeout`` seconds (a handler that hangs)."""
        with self._cv:
            if not self._running:
                return True
            self._running = False
            self._item = _EMPTY
            self._cv.notify_all()
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._running and self._item is _EMPTY:
                    self._cv.wait()
                if not self._running:
                    return
                item, self._item = self._item, _EMPTY
                self._busy = True
            try:
                self._handle(item)
            except BaseException as exc:  # noqa: BLE001 - one failing item must not end the worker
                if self._on_error is not None:
                    self._on_error(exc)
            finally:
                with self._cv:
                    self._busy = False
                    self.handled += 1
                    self._cv.notify_all()
