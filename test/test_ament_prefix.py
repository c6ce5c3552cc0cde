"""The venv as an ament prefix: ROS 2 tools find this package the way launch_ros and ros2cli do.

``launch_ros`` resolves ``LifecycleNode(package=..., executable=...)`` with
``ament_index_python.get_package_prefix(package)`` and then looks for the executable in
``<prefix>/lib/<package>`` (``ExecutableInPackage``); ``ros2 launch`` walks
``get_package_share_directory(package)`` for the launch file without following symlinked
folders. These tests do the same lookups with ``ament_index_python`` alone (no launch stack):
first in the environment the suite runs in (the venv after ``make setup``, or a colcon install),
then for ``tools/ament_prefix.py`` itself in a scratch venv.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "sparse_perception"
EXECUTABLES = ("detector_node", "replay", "recorder", "sparse-perception", "pruning-tools")

_spec = importlib.util.spec_from_file_location("ament_prefix_tool", REPO / "tools" / "ament_prefix.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

#: Run in a fresh interpreter so that only the AMENT_PREFIX_PATH it is given counts.
RESOLVE = r"""
import json, os, shutil, sys
from ament_index_python.packages import get_package_prefix, get_package_share_directory
pkg = sys.argv[1]
prefix = get_package_prefix(pkg)
libexec = os.path.join(prefix, "lib", pkg)
share = get_package_share_directory(pkg)
launch_files = sorted(f for _, _, files in os.walk(share) for f in files if f.endswith(".launch.py"))
print(json.dumps({
    "prefix": prefix, "share": share, "launch_files": launch_files,
    "executables": {e: shutil.which(e, path=libexec) for e in sys.argv[2:]},
}))
"""


def resolve(env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", RESOLVE, PACKAGE, *EXECUTABLES], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, f"ament_index_python could not resolve {PACKAGE}:\n{out.stderr[-2000:]}"
    return json.loads(out.stdout)


def check_prefix(found: dict) -> None:
    """Share folder, launch file, config and executables as launch_ros / ros2cli need them."""
    share = Path(found["share"])
    assert (share / "package.xml").is_file()
    for folder in ("launch", "config"):
        assert (share / folder).is_dir() and not (share / folder).is_symlink(), \
            f"{share / folder} must be a real folder (ros2 launch does not follow symlinked folders)"
    assert "detector.launch.py" in found["launch_files"]
    for name in ("detector.yaml", "detector_auto.yaml"):
        assert (share / "config" / name).is_file(), name
    missing = [e for e, path in found["executables"].items() if path is None]
    assert not missing, f"not executable in {found['prefix']}/lib/{PACKAGE}: {missing}"
    run = subprocess.run([found["executables"]["sparse-perception"], "--help"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "usage: sparse-perception" in run.stdout, run.stderr[-2000:]


def test_this_environment_resolves_the_package_like_launch_ros() -> None:
    """After `make setup` (or a colcon build) the suite's own AMENT_PREFIX_PATH finds everything."""
    assert os.environ.get("AMENT_PREFIX_PATH"), "AMENT_PREFIX_PATH is not set (make exports it; so does activation)"
    check_prefix(resolve(dict(os.environ)))


@pytest.fixture(scope="module")
def scratch_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prefix = tmp_path_factory.mktemp("ament_venv") / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(prefix)
    return prefix


def test_tool_completes_a_venv_as_ament_prefix(scratch_venv: Path) -> None:
    written = tool.install(scratch_venv, REPO)
    assert sorted(Path(p).name for p in written["lib"]) == sorted(EXECUTABLES)
    env = {**os.environ, "AMENT_PREFIX_PATH": str(scratch_venv)}  # this scratch prefix only
    found = resolve(env)
    assert Path(found["prefix"]) == scratch_venv.resolve()
    check_prefix(found)
    share = Path(found["share"])
    # data files are links to the checkout (edits show at once), inside real folders
    assert (share / "launch" / "detector.launch.py").resolve() == REPO / "launch" / "detector.launch.py"
    assert (scratch_venv / "share/ament_index/resource_index/packages" / PACKAGE).is_file()


def test_tool_is_idempotent_and_drops_stale_files(scratch_venv: Path) -> None:
    tool.install(scratch_venv, REPO)
    stale = scratch_venv / "share" / PACKAGE / "launch" / "old.launch.py"
    stale.write_text("")
    (scratch_venv / "lib" / PACKAGE / "old_exe").write_text("")
    tool.install(scratch_venv, REPO)
    assert not stale.exists() and not (scratch_venv / "lib" / PACKAGE / "old_exe").exists()
    text = (scratch_venv / "bin" / "activate").read_text()
    assert text.count(tool.HOOK_BEGIN) == 1 and text.count(tool.DEACTIVATE_BEGIN) == 1


def test_tool_replaces_a_symlinked_share_folder(scratch_venv: Path, tmp_path: Path) -> None:
    launch = scratch_venv / "share" / PACKAGE / "launch"
    tool.install(scratch_venv, REPO)
    shutil.rmtree(launch)
    launch.symlink_to(REPO / "launch", target_is_directory=True)  # what ros2 launch cannot walk
    tool.install(scratch_venv, REPO)
    assert launch.is_dir() and not launch.is_symlink()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_activation_sets_and_deactivation_restores_ament_prefix_path(scratch_venv: Path) -> None:
    tool.install(scratch_venv, REPO)
    script = (f'. "{scratch_venv}/bin/activate"; echo "$AMENT_PREFIX_PATH"; deactivate; '
              'echo "${AMENT_PREFIX_PATH-<unset>}"')
    for before, restored in (("/opt/ros/kilted", "/opt/ros/kilted"), (None, "<unset>")):
        env = {k: v for k, v in os.environ.items() if k != "AMENT_PREFIX_PATH"}
        if before:
            env["AMENT_PREFIX_PATH"] = before
        out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
        active, after = out.stdout.splitlines()
        assert active.split(":")[0] == str(scratch_venv.resolve()) and (before is None or active.endswith(before))
        assert after == restored


def test_tool_rejects_a_prefix_that_is_not_a_venv(tmp_path: Path) -> None:
    code = tool.main(["--prefix", str(tmp_path)])
    assert code == 1
    assert sorted(tmp_path.iterdir()) == []  # nothing written


def test_activation_applies_the_shipped_dds_profile_unless_one_is_set(scratch_venv: Path) -> None:
    tool.install(scratch_venv, REPO)
    script = (f'. "{scratch_venv}/bin/activate"; echo "$FASTRTPS_DEFAULT_PROFILES_FILE|$FASTDDS_DEFAULT_PROFILES_FILE"; '
              'deactivate; echo "${FASTRTPS_DEFAULT_PROFILES_FILE-<unset>}|${FASTDDS_DEFAULT_PROFILES_FILE-<unset>}"')
    base = {k: v for k, v in os.environ.items() if not k.endswith("_DEFAULT_PROFILES_FILE")}
    out = subprocess.run(["bash", "-c", script], env=base, capture_output=True, text=True, timeout=30)
    active, after = out.stdout.splitlines()
    shipped = scratch_venv / "share/sparse_perception/config/fastdds_profile.xml"
    assert active == f"{shipped}|{shipped}" and shipped.resolve().is_file(), out
    assert after == "<unset>|<unset>"
    out = subprocess.run(["bash", "-c", script], env={**base, "FASTRTPS_DEFAULT_PROFILES_FILE": "/mine.xml"},
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.splitlines() == ["/mine.xml|", "/mine.xml|<unset>"]  # the user's choice stays
    (scratch_venv / "lib" / "libfastdds.so.3.2").write_bytes(b"")  # a FastDDS 3 prefix: its one variable only
    tool.install(scratch_venv, REPO)
    out = subprocess.run(["bash", "-c", script], env=base, capture_output=True, text=True, timeout=30)
    assert out.stdout.splitlines() == [f"|{shipped}", "<unset>|<unset>"], out
