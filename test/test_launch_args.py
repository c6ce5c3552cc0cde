"""Launch arguments of ``detector.launch.py`` → node parameters (``sparse_perception/node/launch_args.py``).

Runs without the ROS 2 launch stack; the launch file itself is exercised by the launch tests.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sparse_perception.node.launch_args import ARGUMENTS, BAG_IMAGE_TOPIC, node_overrides, remappings, undeclared
from sparse_perception.node.node_config import NodeConfig

REPO = Path(__file__).resolve().parent.parent


def _args(**given: str) -> dict[str, str]:
    return {name: given.get(name, default) for name, default, _ in ARGUMENTS}


def test_empty_arguments_keep_the_params_file() -> None:
    assert node_overrides(_args()) == ({}, "")


def test_user_facing_arguments_are_declared() -> None:
    names = {name for name, _, _ in ARGUMENTS}
    assert {"image_reliability", "image_topic", "namespace", "params_file"} <= names


@pytest.mark.parametrize("value", ["auto", "reliable", "best_effort"])
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


def test_default_image_reliability_is_auto_everywhere() -> None:
    """The default follows the camera (docs/node.md, bench/node_bench.py --phases qos): code and config agree."""
    import yaml

    assert NodeConfig.image_reliability == "auto"
    params = yaml.safe_load((REPO / "config" / "detector.yaml").read_text())["/**"]["ros__parameters"]
    assert params["image_reliability"] == "auto"


def test_launch_file_declares_launch_args_arguments() -> None:
    """The launch file takes its arguments and their mapping from launch_args (no copy of its own)."""
    tree = ast.parse((REPO / "launch" / "detector.launch.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "sparse_perception.node.launch_args"
                for a in n.names}
    assert {"ARGUMENTS", "node_overrides"} <= imported


#: a value for every start parameter's argument, and the typed value the node gets
START_VALUES = {
    "initial_level": ("s50", "s50"), "allowed_levels": ("s0,s50", ["s0", "s50"]), "policy_mode": ("auto", "auto"),
    "policy_path": ("/p/policy.zip", "/p/policy.zip"), "backend": ("onnxruntime", "onnxruntime"),
    "precision": ("fp16", "fp16"), "confidence_threshold": ("0.4", 0.4), "iou_threshold": ("0.5", 0.5),
    "max_detections": ("50", 50), "compressed": ("true", True), "hysteresis": ("2", 2.0),
    "cooldown_s": ("0.5", 0.5), "publish_debug_image": ("true", True), "threads": ("1", 1),
    "diagnostics_period_s": ("2.0", 2.0), "condition_source": ("estimator", "estimator"),
    "exit_with_parent": ("false", False),
}


def test_every_start_parameter_has_a_launch_argument() -> None:
    names = {name for name, _, _ in ARGUMENTS}
    start = {name for name, _, _ in NodeConfig.parameters()} - {"sparsity_level"}
    assert start <= names, f"start parameters without a launch argument: {sorted(start - names)}"
    assert {"initial_level", "allowed_levels", "policy_mode", "policy_path"} <= names


@pytest.mark.parametrize("name", sorted(n for n, _, _ in NodeConfig.parameters()
                                        if n not in ("sparsity_level", "engine_manifest", "model_path",
                                                     "image_topic", "image_reliability", "autostart")))
def test_start_parameter_argument_is_passed_typed(name: str) -> None:
    text, value = START_VALUES[name]
    overrides, _ = node_overrides(_args(**{name: text}))
    assert overrides == {name: value}
    assert node_overrides(_args())[0].get(name) is None  # empty keeps the params file's value


def test_allowed_levels_takes_a_yaml_like_list_and_bad_numbers_are_named() -> None:
    assert node_overrides(_args(allowed_levels="[s0, 's50']"))[0] == {"allowed_levels": ["s0", "s50"]}
    with pytest.raises(ValueError, match="threads"):
        node_overrides(_args(threads="two"))
    with pytest.raises(ValueError, match="compressed"):
        node_overrides(_args(compressed="perhaps"))


def test_start_arguments_build_a_valid_node_config() -> None:
    overrides, _ = node_overrides(_args(engine_manifest="/z/manifest.json", initial_level="s50",
                                        allowed_levels="s0,s50", policy_mode="auto", policy_path="/p.zip"))
    cfg = NodeConfig.from_params(overrides)
    assert (cfg.initial_level, cfg.allowed_levels, cfg.policy_mode) == ("s50", ("s0", "s50"), "auto")


def test_output_topic_arguments_remap_the_outputs() -> None:
    arg = _args(detections_topic="/out/dets", debug_image_topic="dbg", engine_status_topic="/status")
    assert remappings(arg, "/cond") == [("driving_condition", "/cond"), ("detections", "/out/dets"),
                                        ("debug_image", "dbg"), ("engine_status", "/status")]
    assert remappings(_args(), "") == []


def test_undeclared_argument_is_reported_with_the_likely_name() -> None:
    declared = [name for name, _, _ in ARGUMENTS]
    assert undeclared(declared) == []
    (message,) = undeclared([*declared, "initial_leve"])
    assert "'initial_leve'" in message and "did you mean 'initial_level'" in message


def test_launch_file_passes_overrides_remappings_and_reports_undeclared() -> None:
    """The launch file hands every resolved argument to node_overrides / remappings and logs undeclared ones."""
    src = (REPO / "launch" / "detector.launch.py").read_text()
    tree = ast.parse(src)
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert {"node_overrides", "remappings", "undeclared", "LogInfo", "DeclareLaunchArgument"} <= calls
    assert "undeclared(context.launch_configurations)" in src
    assert "for name, _, _ in ARGUMENTS" in src  # every declared argument is resolved and passed


def test_condition_source_argument_sets_the_parameter() -> None:
    assert node_overrides(_args(condition_source="estimator"))[0] == {"condition_source": "estimator"}
    with pytest.raises(ValueError, match="condition_source"):
        node_overrides(_args(condition_source="camera"))
