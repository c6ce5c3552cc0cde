"""Package manifests: dependencies a full ROS 2 install resolves with rosdep."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _deps(path: Path) -> dict[str, set[str]]:
    root = ET.parse(path).getroot()
    assert root.get("format") == "3"
    out: dict[str, set[str]] = {}
    for el in root:
        out.setdefault(el.tag, set()).add((el.text or "").strip())
    return out


def test_sparse_perception_package_xml_declares_runtime_and_test_deps() -> None:
    deps = _deps(REPO / "package.xml")
    exec_deps = deps["exec_depend"] | deps.get("depend", set())
    for name in ("rclpy", "sensor_msgs", "std_msgs", "lifecycle_msgs", "diagnostic_msgs",
                 "sparse_perception_msgs", "launch", "launch_ros"):
        assert name in exec_deps, name
    for name in ("launch_testing", "launch_testing_ros", "python3-pytest"):
        assert name in deps["test_depend"], name
    assert deps["buildtool_depend"] == {"ament_python"}


def test_msgs_package_is_an_interface_package() -> None:
    deps = _deps(REPO / "sparse_perception_msgs" / "package.xml")
    assert {"ament_cmake", "rosidl_default_generators"} <= deps["buildtool_depend"]
    assert "rosidl_default_runtime" in deps["exec_depend"]
    assert deps["member_of_group"] == {"rosidl_interface_packages"}


def test_installed_interfaces_import() -> None:
    from sparse_perception_msgs.msg import Detection2DArray, DrivingCondition, EngineStatus  # noqa: F401
    from sparse_perception_msgs.srv import SetSparsity  # noqa: F401

    assert DrivingCondition.ILLUMINATION_NIGHT == 2 and DrivingCondition.WEATHER_FOG == 2


def _imported_modules(path: Path) -> set[str]:
    """Every module an ``import``/``from ... import`` in ``path`` names (also lazy, inside functions)."""
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names.add(node.module or "")
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_runtime_core_imports_no_ros() -> None:
    """sparse_perception/runtime is the plain-Python core: no rclpy, no ROS messages, no node or tools."""
    modules = sorted((REPO / "sparse_perception" / "runtime").rglob("*.py"))
    assert len(modules) >= 10
    for path in modules:
        for name in _imported_modules(path):
            top = name.split(".")[0]
            assert top != "rclpy" and not top.endswith(("_msgs", "_interfaces")), f"{path}: imports {name}"
            assert not name.startswith(("sparse_perception.node", "sparse_perception.tools")), f"{path}: imports {name}"
