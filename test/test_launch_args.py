"""Launch arguments of ``detector.launch.py`` → node parameters (``sparse_perception/node/launch_args.py``).

Runs without the ROS 2 launch stack; the launch file itself is exercised by the launch tests.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sparse_perception.node.launch_args import ARGUMENTS, BAG_IMAGE_TOPIC, node_overrides
from sparse_perception.node.node_config import NodeConfig

REPO = Path(__file__).resolve().parent.parent


def _args(**given: str) -> dict[str, str]:
    return {name: given.get(name, default) for name, default, _ in ARGUMENTS}


def test_empty_arguments_keep_the_params_file() -> None:
    assert node_overrides(_args()) == ({}, "")


def test_user_facing_arguments_are_declared() -> None:
    names = {name for name, _, _ in ARGUMENTS}
    assert {"image_reliability", "image_topic", "namespace", "params_file"} <= names


@pytest.mark.parametrize("value", ["reliable", "best_effort"])
def test_image_reliability_argument_sets_the_parameter(value: str) -> None:
    overrides, _ = node_overrides(_args(image_reliability=value, image_topic="/cam/image_raw"))
    assert overrides == {"image_reliability": value, "image_topic": "/cam/image_raw"}
    NodeConfig.from_params({"model_path": "m.onnx", **overrides})  # the node accepts it


def test_bag_defaults_to_reliable_but_an_explicit_argument_wins() -> None:
    overrides, condition = node_overrides(_args(bag="/data/bag"))
    assert overrides == {"image_topic": BAG_IMAGE_TOPIC, "image_reliability": "reliable"}
    assert condition == "/driving_condition"
    overrides, _ = node_overrides(_args(bag="/data/bag", image_reliability="best_effort"))
    assert overrides["image_reliability"] == "best_effort"


@pytest.mark.parametrize("given, named", [
    ({"image_reliability": "sometimes"}, "image_reliability"),
    ({"autostart": "maybe"}, "autostart"),
    ({"bag": "/b", "bag_player": "vlc"}, "bag_player"),
])
def test_bad_values_are_named(given: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        node_overrides(_args(**given))


def test_default_image_reliability_is_reliable_everywhere() -> None:
    """Measured default (docs/node.md, bench/node_bench.py --phases qos): code and config agree."""
    import yaml

    assert NodeConfig.image_reliability == "reliable"
    params = yaml.safe_load((REPO / "config" / "detector.yaml").read_text())["/**"]["ros__parameters"]
    assert params["image_reliability"] == "reliable"


def test_launch_file_declares_launch_args_arguments() -> None:
    """The launch file takes its arguments and their mapping from launch_args (no copy of its own)."""
    tree = ast.parse((REPO / "launch" / "detector.launch.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "sparse_perception.node.launch_args"
                for a in n.names}
    assert {"ARGUMENTS", "node_overrides"} <= imported


def test_condition_source_argument_sets_the_parameter() -> None:
    assert node_overrides(_args(condition_source="estimator"))[0] == {"condition_source": "estimator"}
    with pytest.raises(ValueError, match="condition_source"):
        node_overrides(_args(condition_source="camera"))
