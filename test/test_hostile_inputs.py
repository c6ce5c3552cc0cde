"""Issue 24 item 6: the hostile-input probe's cases against the plain-Python cores (no ROS).

Node config validation (types, NaN, bounds, topic names, unknown levels), atomic parameter
updates and non-finite driving conditions, each against a real tiny engine zoo (ONNX Runtime).
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from runtime_models import tiny_zoo  # noqa: E402

from sparse_perception.node.node_config import NodeConfig, build_pool  # noqa: E402
from sparse_perception.runtime.conditions import Condition  # noqa: E402
from sparse_perception.runtime.detector_core import DetectorCore  # noqa: E402
from sparse_perception.runtime.engine_pool import EnginePool  # noqa: E402
from sparse_perception.runtime.policy import PolicyController, SparsityPolicy, observation  # noqa: E402

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_zoo(tmp_path_factory.mktemp("zoo"), {"dense": (0.0, 4), "s50": (0.5, 2)})


def test_int_for_double_and_number_for_level_are_accepted_other_types_named() -> None:
    """`-p cooldown_s:=0` / `-p sparsity_level:=50` arrive as ints: accepted (double / level name "50")."""
    cfg = NodeConfig.from_params({"model_path": "m.onnx", "cooldown_s": 0, "diagnostics_period_s": 2,
                                  "confidence_threshold": 0.5, "sparsity_level": 50})
    assert cfg.cooldown_s == 0.0 and isinstance(cfg.cooldown_s, float) and cfg.sparsity_level == "50"
    with pytest.raises(ValueError, match="'cooldown_s' must be a number.*'soon'"):
        NodeConfig.from_params({"model_path": "m.onnx", "cooldown_s": "soon"})
    with pytest.raises(ValueError, match="'sparsity_level' must be a level name"):
        NodeConfig.from_params({"model_path": "m.onnx", "sparsity_level": [1, 2]})


@pytest.mark.parametrize("params,match", [
    ({"cooldown_s": NAN}, "cooldown_s"), ({"cooldown_s": INF}, "cooldown_s"),
    ({"diagnostics_period_s": NAN}, "diagnostics_period_s"), ({"diagnostics_period_s": 1e-6}, "diagnostics_period_s"),
    ({"diagnostics_period_s": 1e300}, "diagnostics_period_s"),
    ({"image_topic": "bad topic!!"}, "image_topic"), ({"image_topic": "cam//image"}, "image_topic"),
    ({"image_topic": "9cam"}, "image_topic"), ({"image_topic": "cam/"}, "image_topic"),
    ({"sparsity_level": "auto"}, "policy_path"),
])
def test_values_that_made_activation_raise_are_refused_at_configure(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NodeConfig.from_params({"engine_manifest": "z.json", **params})


def test_valid_topic_names_still_accepted() -> None:
    for topic in ("image_raw", "/camera/image_raw", "~/image", "~", "cam_0/{node}/img"):
        assert NodeConfig(model_path="m.onnx", image_topic=topic).image_topic == topic


def test_unknown_sparsity_level_at_start_fails_configure(zoo: Path) -> None:
    with pytest.raises(ValueError, match="'sparsity_level': unknown level 's90'"):
        build_pool(NodeConfig(engine_manifest=str(zoo), initial_level="dense", sparsity_level="s90"))
    pool = build_pool(NodeConfig(engine_manifest=str(zoo), sparsity_level="s50"))
    try:
        assert pool.active_level == "s50"
    finally:
        pool.close()


def _core(zoo: Path, policy: PolicyController | None = None) -> DetectorCore:
    core = DetectorCore(logging.getLogger("test_hostile_inputs"))
    pool = EnginePool.from_manifest(zoo)
    pool.swap("dense")
    core.load(pool, policy, "manual")
    return core


def test_a_rejected_atomic_parameter_set_changes_nothing(zoo: Path) -> None:
    """SetParametersAtomically [sparsity_level=s50, threads=1] is refused (threads) and must not swap."""
    core = _core(zoo)
    try:
        assert "'threads' applies on configure" in core.apply_parameters([("sparsity_level", "s50"), ("threads", 1)])
        assert core.active_level() == "dense"
        assert "unknown level 's90'" in core.apply_parameters([("sparsity_level", "s90")])
        assert "needs a policy" in core.apply_parameters([("sparsity_level", "auto")])
        assert core.apply_parameters([("sparsity_level", "s50")]) is None and core.active_level() == "s50"
    finally:
        core.release()


def test_non_finite_condition_values_are_unknown() -> None:
    cond = Condition.from_codes(2, 2, visibility_m=NAN, ambient_light=INF, ego_speed_mps=-INF, scene_density=NAN)
    assert (cond.visibility_m, cond.ambient_light, cond.ego_speed_mps, cond.scene_density) == (-1.0,) * 4
    obs = observation(cond, 0, 2)
    assert obs.tolist()[9:13] == [0.5] * 4


def test_set_auto_answer_agrees_with_the_mode_and_a_policy_error_keeps_the_level(zoo: Path, tmp_path: Path) -> None:
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"kind": "score_table", "levels": ["dense", "s50"],
                                 "scores": {"night_fog": {"dense": 0.1, "s50": 0.9}}}))
    ctl = PolicyController(SparsityPolicy.load(table), hysteresis=1, cooldown_s=0.0, current="dense")
    ctl.manual()
    core = _core(zoo, ctl)
    try:
        core.on_condition(Condition.from_key("night_fog", visibility_m=NAN))

        def broken(*args: object) -> None:
            raise RuntimeError("policy exploded")

        ctl.update = broken  # type: ignore[method-assign]  # a policy that raises (e.g. invalid logits)
        ok, message, _ = core.set_sparsity("auto", -1.0)
        assert ok and core.mode == "auto" and core.active_level() == "dense", message
    finally:
        core.release()


# ----------------------------------------------------------------------------- zoo consistency
def _edit(zoo_root: Path, fn: object) -> Path:
    """A copy of the tiny zoo's manifest with ``fn(data)`` applied (written as JSON, NaN allowed)."""
    src = zoo_root / "manifest.json"
    data = json.loads(src.read_text())
    fn(data)  # type: ignore[operator]
    out = zoo_root / "edited.json"
    out.write_text(json.dumps(data))
    return out


@pytest.mark.parametrize("edit,match", [
    (lambda d: d["artifacts"][1].update(sparsity=float("nan")), r"artifacts\[1\]\.sparsity: nan is not a finite"),
    (lambda d: d["artifacts"][1].update(class_names=["Pedestrian", "Car", "Cyclist"]), r"artifacts\[1\]\.class_names"),
    (lambda d: d.update(class_names=["Car", "Van", "Truck"]), r"artifacts\[0\]\.class_names"),
    (lambda d: d["artifacts"][1].update(input_shape=[1, 3, 640, 640]), r"artifacts\[1\]\.input_shape"),
])
def test_inconsistent_manifests_are_refused(zoo: Path, edit: object, match: str) -> None:
    from sparse_perception.runtime.zoo import ManifestError, load_manifest

    with pytest.raises(ManifestError, match=match):
        load_manifest(_edit(zoo.parent, edit))


def _swap_in(zoo: Path, onnx_path: Path, level: str = "s50") -> Path:
    """The zoo's manifest with ``level``'s artifact replaced by ``onnx_path`` (digest updated, fields kept)."""
    from sparse_perception.runtime.zoo import artifact_sha256

    rel = onnx_path.relative_to(zoo.parent).as_posix()

    def edit(d: dict) -> None:
        for a in d["artifacts"]:
            if a["level"] == level:
                a.update(path=rel, sha256=artifact_sha256(onnx_path))
    return _edit(zoo.parent, edit)


def test_onnx_class_order_and_input_shape_must_match_the_manifest(zoo: Path) -> None:
    """A reordered label map, or a foreign 640x640 model, listed as a level is refused when loaded."""
    from runtime_models import NAMES, export_tiny

    bad = zoo.parent / "bad"
    bad.mkdir(exist_ok=True)
    reordered = export_tiny(bad / "reordered.onnx", 2, names=tuple(reversed(NAMES)))
    with pytest.raises(ValueError, match="class names .* differ from the manifest's"):
        EnginePool.from_manifest(_swap_in(zoo, reordered))
    foreign = export_tiny(bad / "foreign.onnx", 2, imgsz=(640, 640))
    with pytest.raises(ValueError, match=r"input is \[1, 3, 640, 640\], the manifest says"):
        EnginePool.from_manifest(_swap_in(zoo, foreign))


def test_the_digest_covers_external_weights(zoo: Path) -> None:
    import onnx

    from sparse_perception.runtime.zoo import ManifestError, load_manifest, sha256_file

    ext = zoo.parent / "ext"
    ext.mkdir(exist_ok=True)
    model = onnx.load(str(zoo.parent / "s50" / "model.onnx"))
    onnx.save(model, str(ext / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="model.onnx.data", size_threshold=0)
    manifest = _swap_in(zoo, ext / "model.onnx")
    art = load_manifest(manifest).select("s50", "onnxruntime")
    assert art.sha256 != sha256_file(ext / "model.onnx")
    art.verify()  # untouched: passes
    weights = bytearray((ext / "model.onnx.data").read_bytes())
    weights[len(weights) // 2] ^= 0xFF
    (ext / "model.onnx.data").write_bytes(bytes(weights))
    with pytest.raises(ManifestError, match="sha256 check"):
        art.verify()


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(5))
#: 9**6 strings behind 6 short lines (the probe's 1.6 kB had more levels: 70 MB in one log line)


def test_yaml_alias_bombs_are_refused_with_a_short_message(tmp_path: Path) -> None:
    """Manifest and `prune --config`: nested aliases are refused before expanding (a 70 MB log line before)."""
    from pruning_tools.pipeline.config import ConfigError, load_config
    from sparse_perception.runtime.zoo import ManifestError, load_manifest

    (tmp_path / "manifest.yaml").write_text(BOMB + "schema_version: 1\nclass_names: *f\nartifacts: []\n")
    with pytest.raises(ManifestError, match="aliases") as exc:
        load_manifest(tmp_path / "manifest.yaml")
    assert len(str(exc.value)) < 1000
    (tmp_path / "prune.yaml").write_text(BOMB + "levels: *f\n")
    with pytest.raises(ConfigError, match="aliases") as exc2:
        load_config(tmp_path / "prune.yaml")
    assert len(str(exc2.value)) < 1000


# ----------------------------------------------------------------------------- CLIs
def test_evaluate_on_a_garbage_onnx_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`evaluate --model garbage.onnx` exited 1 with an ONNX Runtime traceback; now exit 2, one line."""
    import cv2
    import numpy as np

    from pruning_tools.train.evaluate import main as evaluate_main
    from sparse_perception.runtime.backends import create_backend

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        create_backend(garbage)
    tr = tmp_path / "kitti" / "training"
    (tr / "image_2").mkdir(parents=True)
    (tr / "label_2").mkdir()
    cv2.imwrite(str(tr / "image_2" / "000000.png"), np.zeros((40, 60, 3), np.uint8))
    (tr / "label_2" / "000000.txt").write_text("Car 0 0 0 1 1 30 30 1.5 1.6 4 0 1.6 20 0\n")
    capsys.readouterr()
    assert evaluate_main(["--model", str(garbage), "--kitti-root", str(tmp_path / "kitti"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a loadable ONNX model" in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_prune_with_a_missing_dataset_leaves_no_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pruning_tools.pipeline.cli import main as prune_main

    config = Path(__file__).resolve().parents[1] / "pruning_tools" / "configs" / "quick.yaml"
    out = tmp_path / "run"
    assert prune_main(["--config", str(config), "--data", str(tmp_path / "nonexistent"), "--out", str(out),
                       "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err and not out.exists()


def test_a_precision_field_that_is_not_the_files_is_refused(zoo: Path) -> None:
    from sparse_perception.runtime.zoo import ManifestError, load_manifest

    manifest = _edit(zoo.parent, lambda d: d["artifacts"][1].update(precision="int8"))
    with pytest.raises(ManifestError, match="listed as precision 'int8' but the file is 'fp32'"):
        load_manifest(manifest, verify=True)


def test_export_refuses_duplicate_levels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pruning_tools.quant.export import main as export_main

    assert export_main(["--run", str(tmp_path / "run"), "--zoo", str(tmp_path / "zoo"), "--levels", "s50,s50"]) == 2
    assert "--levels: each value once, got s50,s50" in capsys.readouterr().err
    assert not (tmp_path / "zoo").exists()
