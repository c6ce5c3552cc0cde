"""The shared ``main`` of the ROS command-line tools (``replay``, ``recorder``).

:func:`run_tool` parses the arguments, checks them before DDS starts, then runs the tool inside
:func:`sparse_perception.node.ros_session.ros_session`: rclpy initialised without its own signal
handlers, SIGINT and SIGTERM setting a stop event (the tool ends cleanly, exit code 0). Bad input is ``PROG: error: MESSAGE``, exit 2.
"""
from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Sequence

from sparse_perception.node.ros_session import ros_session

#: Exceptions that mean bad input (printed without a traceback, exit code 2).
BAD_INPUT = (ValueError, FileExistsError)


def run_tool(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
             run: Callable[[argparse.Namespace, threading.Event], int],
             check: Callable[[argparse.Namespace], None] | None = None) -> int:
    """Entry point body of a ROS tool named ``parser.prog``.

    :param argv: arguments without the program name (``sys.argv[1:]`` when None).
    :param run: ``run(args, stop) -> exit code``, called inside :func:`ros_session`.
    :param check: validates ``args`` before rclpy starts; raises one of :data:`BAD_INPUT`.
    :return: ``run``'s exit code; argparse's for ``--help`` / usage errors; 2 on bad input.
    """
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if check is not None:
            check(args)
        with ros_session() as stop:
            return run(args, stop)
    except BAD_INPUT as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
