"""rosbags type store with sparse_perception_msgs registered.

rosbags ships the standard ROS 2 types; our own message definitions are read from
the installed package (``share/sparse_perception_msgs/msg`` under an ament prefix,
found through ``AMENT_PREFIX_PATH`` or this interpreter's prefix) or, in a source
checkout, from ``sparse_perception_msgs/msg`` next to this package.
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

MSGS_PACKAGE = "sparse_perception_msgs"
#: Distribution whose standard types the bags use (Kilted, like the ROS wheels here).
STORE = Stores.ROS2_KILTED


def _candidate_dirs() -> list[Path]:
    dirs = []
    for prefix in [*os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep), sys.prefix]:
        if prefix:
            dirs.append(Path(prefix) / "share" / MSGS_PACKAGE / "msg")
    dirs.append(Path(__file__).resolve().parents[2] / MSGS_PACKAGE / "msg")  # source checkout
    return dirs


def find_msg_dir() -> Path:
    """Folder holding ``sparse_perception_msgs``' ``.msg`` files.

    :raises FileNotFoundError: listing where it looked.
    """
    cands = _candidate_dirs()
    for d in cands:
        if (d / "Detection2DArray.msg").is_file():
            return d
    raise FileNotFoundError(f"{MSGS_PACKAGE} .msg files not found; looked in: {', '.join(map(str, cands))}")


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """Kilted type store plus every ``sparse_perception_msgs/msg/*`` type (cached)."""
    store = get_typestore(STORE)
    types: dict = {}
    for msg in sorted(find_msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(msg.read_text(), f"{MSGS_PACKAGE}/msg/{msg.stem}"))
    store.register(types)
    return store
