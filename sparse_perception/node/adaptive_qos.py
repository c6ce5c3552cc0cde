"""Which reliability the image subscription takes in ``image_reliability: auto`` (no ROS imports).

REP 2003: camera drivers publish reliable or best effort, consumers should connect to either. A
reliable subscription refuses a best-effort publisher ("incompatible QoS", nothing is received); a
best-effort one matches both but, over FastDDS's built-in transports, loses most full-size frames
of a reliable camera. rclpy's ``BEST_AVAILABLE`` decides once, when the subscription is created, so a
camera started later is refused. The node therefore follows the publishers it meets: it asks
:func:`follow` on the incompatible-QoS event and on every status tick, and re-creates the
subscription when the answer changes (docs/node.md).
"""
from __future__ import annotations

from collections.abc import Iterable

__all__ = ["RELIABILITIES", "follow"]

RELIABILITIES = ("auto", "reliable", "best_effort")


def follow(setting: str, current: str, publishers: Iterable[str]) -> str:
    """The reliability the image subscription should have now.

    :param setting: the ``image_reliability`` parameter (``reliable`` / ``best_effort`` force it).
    :param current: the subscription's reliability now.
    :param publishers: the reliability (``reliable`` / ``best_effort``) of each publisher on the topic.
    :return: ``best_effort`` while any publisher is best effort (the only way to hear it), ``reliable``
        when every publisher is reliable (full-size frames arrive), ``current`` with no publisher.
    """
    if setting != "auto":
        return setting
    seen = set(publishers)
    if "best_effort" in seen:
        return "best_effort"
    return "reliable" if seen else current
