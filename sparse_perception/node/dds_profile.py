"""The FastDDS transport profile shipped with the package and where it is applied (no ROS imports).

``config/fastdds_profile.xml`` (installed to ``share/sparse_perception/config``) gives a process a
32 MB shared-memory transport, which full-size best-effort frames need (docs/node.md). The node's
start-up, the launch file and the venv's activation apply it through FastDDS's environment variables
only where neither is set: a profile the user chose (or an empty value, to opt out) is kept. Other RMW
implementations are left alone.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["PROFILE_FILE", "PROFILE_VARIABLES", "fastdds_major", "profile_env", "profile_path", "profile_variables"]

PROFILE_FILE = "fastdds_profile.xml"
#: FastDDS 3 reads the first, FastDDS 2 (rmw_fastrtps on Humble/Jazzy) the second
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
_FASTDDS_RMWS = ("", "rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")


def fastdds_major(prefixes: Iterable[str | Path]) -> int | None:
    """FastDDS's major version in the first of ``prefixes`` that holds it: 3 where ``lib/libfastdds.so*`` is
    (Kilted and later, these PyPI wheels), 2 where ``lib/libfastrtps.so*`` is (Humble, Jazzy); None if neither."""
    for prefix in prefixes:
        lib = Path(prefix) / "lib"
        if any(lib.glob("libfastdds.so*")):
            return 3
        if any(lib.glob("libfastrtps.so*")):
            return 2
    return None


def profile_variables(major: int | None) -> tuple[str, ...]:
    """The variables that point FastDDS ``major`` at a profile. Only the one it reads: FastDDS 3 also honours the
    deprecated ``FASTRTPS_DEFAULT_PROFILES_FILE`` and, given both, parses the file twice — every process then
    logs "XMLPARSER Error adding the transport ... same id" (the profile still applies). Both where unknown."""
    return {3: PROFILE_VARIABLES[:1], 2: PROFILE_VARIABLES[1:]}.get(major, PROFILE_VARIABLES)


def profile_path() -> Path | None:
    """The installed profile (``share/sparse_perception/config``), else the source checkout's; None if neither."""
    candidates = []
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        candidates.append(Path(prefix) / "share" / "sparse_perception" / "config" / PROFILE_FILE)
    candidates.append(Path(__file__).resolve().parents[2] / "config" / PROFILE_FILE)
    return next((p for p in candidates if p.is_file()), None)


def profile_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables to add so a FastDDS process uses the shipped profile; ``{}`` where one is set already
    (even empty), the RMW is not FastDDS, or the profile is not found."""
    env = os.environ if env is None else env
    if any(name in env for name in PROFILE_VARIABLES) or env.get("RMW_IMPLEMENTATION", "") not in _FASTDDS_RMWS:
        return {}
    path = profile_path()
    if path is None:
        return {}
    prefixes = [p for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return {name: str(path) for name in profile_variables(fastdds_major(prefixes))}
