"""How every ROS process of this package runs rclpy: without rclpy's signal handlers, SIGINT and
SIGTERM setting a stop event that the process polls (the node, ``replay``, ``recorder``)."""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager


@contextmanager
def ros_session(args: Sequence[str] | None = None, second_signal_kills: bool = False) -> Iterator[threading.Event]:
    """``rclpy.init(args)`` without rclpy's signal handlers; yields the event SIGINT/SIGTERM set.

    rclpy's own handlers would invalidate the context under a running loop; the process polls the
    event instead and finishes its work (shut the node down, flush a bag, print a summary). With
    ``second_signal_kills`` a signal also restores the default action, so a second one ends the
    process at once. The previous handlers are restored afterwards.
    """
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()
        if second_signal_kills:
            signal.signal(signum, signal.SIG_DFL)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with rclpy.init(args=None if args is None else list(args), signal_handler_options=SignalHandlerOptions.NO):
            yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def parent_watch(enabled: bool = True) -> Callable[[], bool]:
    """A check that turns true once the process that started this one has ended.

    ``ros2 launch`` ends at once on SIGTERM and leaves its children running without a parent
    (upstream https://github.com/ros2/launch/issues/666); the node polls this check in its spin
    loop and shuts down as on SIGTERM. A parent that ends makes the kernel reparent the process
    (``getppid()`` changes to init or a subreaper). A process started by init or as PID 1 (a
    container's entry point, ``getppid()`` 0 or 1) has no parent to follow: the check stays false.
    """
    parent = os.getppid()
    if not enabled or parent <= 1:
        return lambda: False
    return lambda: os.getppid() != parent
