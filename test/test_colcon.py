"""colcon discovers and builds both packages with the documented command.

colcon stops crawling at the first package.xml, so the interface package nested in
the repo needs an explicit base path; README documents
``colcon build --base-paths src/sparse_perception src/sparse_perception/sparse_perception_msgs``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COLCON = Path(sys.executable).parent / "colcon"

pytestmark = pytest.mark.skipif(not COLCON.exists(), reason="colcon not installed in this environment")


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _env() -> dict[str, str]:
    prefix = str(Path(sys.executable).parent.parent)
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "CMAKE_PREFIX_PATH": prefix, "AMENT_PREFIX_PATH": prefix}


def test_plain_crawl_finds_only_root_package_and_base_paths_find_both() -> None:
    env = _env()
    plain = _run([str(COLCON), "list", "--names-only"], REPO, env)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.split() == ["sparse_perception"]
    both = _run([str(COLCON), "list", "--names-only", "--base-paths", ".", "sparse_perception_msgs"], REPO, env)
    assert both.returncode == 0, both.stderr
    assert sorted(both.stdout.split()) == ["sparse_perception", "sparse_perception_msgs"]


@pytest.mark.slow
def test_colcon_build_of_a_workspace_clone(tmp_path: Path) -> None:
    src = tmp_path / "src" / "sparse_perception"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    res = _run([str(COLCON), "build", "--base-paths", "src/sparse_perception",
                "src/sparse_perception/sparse_perception_msgs",
                "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"], tmp_path, _env())
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    install = tmp_path / "install"
    assert (install / "sparse_perception_msgs/share/sparse_perception_msgs/msg/Detection2DArray.msg").is_file()
    share = install / "sparse_perception/share"
    assert (share / "ament_index/resource_index/packages/sparse_perception").is_file()
    assert (share / "sparse_perception/package.xml").is_file()
    for exe in ("detector_node", "pruning-tools", "replay"):
        assert (install / "sparse_perception/lib/sparse_perception" / exe).is_file(), exe


def _setup_keywords() -> dict:
    """The keyword arguments setup.py passes to setup(), read without running it."""
    import ast

    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    return {k.arg: k.value for k in call.keywords}


def test_pytest_is_a_declared_test_dependency() -> None:
    """colcon test runs pytest only where setup.py declares it (extras_require 'test'); package.xml for rosdep."""
    import ast
    import xml.etree.ElementTree as ET

    extras = ast.literal_eval(_setup_keywords()["extras_require"])
    assert any(d.split("<")[0].split(">")[0].split("=")[0].strip() == "pytest" for d in extras.get("test", [])), extras
    assert all("<9" in d for d in extras["test"] if d.startswith("pytest")), "pytest pinned below 9 (house rule)"
    root = ET.parse(REPO / "package.xml").getroot()
    assert "python3-pytest" in {e.text for e in root.findall("test_depend")}


def test_colcon_core_selects_pytest_for_the_package() -> None:
    """What colcon-core itself decides from the declaration (skips where colcon-core is not importable)."""
    augmentation = pytest.importorskip("colcon_core.package_augmentation.python")
    import ast

    extras = ast.literal_eval(_setup_keywords()["extras_require"])
    deps = augmentation.extract_dependencies({"extras_require": extras})
    assert "pytest" in {d.name for d in deps["test"]}
