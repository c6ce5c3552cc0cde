"""The manifest's ``conditions`` -> level map (issue 25 item 3): schema, old manifests, the level chooser, the node's
``policy_path: manifest`` through :func:`build_runtime` and the core, on real tiny ONNX Runtime engines."""
from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from runtime_models import tiny_zoo
from sparse_perception.node.node_config import NodeConfig, build_runtime
from sparse_perception.runtime.conditions import Condition
from sparse_perception.runtime.detector_core import DetectorCore
from sparse_perception.runtime.manifest_policy import ManifestPolicy
from sparse_perception.runtime.zoo import ManifestError, load_manifest, write_manifest

LEVELS = {"dense": (0.0, 8), "fed_global": (0.5, 4), "fed_night": (0.5, 4), "fed_fog": (0.5, 4)}
CONDITIONS = {
    "default": "fed_global",
    "levels": {"night_clear": "fed_night", "night_rain": "fed_night", "night_fog": "fed_night",
               "day_fog": "fed_fog", "dusk_fog": "fed_fog"},
    "groups": [{"name": "night", "level": "fed_night", "mix": {"night_clear": 0.6, "night_rain": 0.4}},
               {"name": "fog", "level": "fed_fog", "mix": {"day_fog": 0.7, "dusk_fog": 0.3}}],
}


@pytest.fixture()
def zoo(tmp_path: Path) -> Path:
    path = tiny_zoo(tmp_path / "zoo", LEVELS)
    data = json.loads(path.read_text())
    data["conditions"] = copy.deepcopy(CONDITIONS)
    return write_manifest(path, data)


def test_conditions_map_loads_and_names_levels(zoo: Path) -> None:
    m = load_manifest(zoo, verify=True)
    assert m.level_for("night_rain") == "fed_night" and m.level_for("day_fog") == "fed_fog"
    assert m.level_for("day_clear") == "fed_global"  # not in the map: the default (the single global level)
    assert m.condition_default == "fed_global" and len(m.condition_levels) == 5


def test_old_manifest_without_conditions_still_loads(tmp_path: Path) -> None:
    m = load_manifest(tiny_zoo(tmp_path, LEVELS), verify=True)
    assert m.condition_levels == {} and m.condition_default is None and m.level_for("night_fog") is None
    with pytest.raises(ManifestError, match="no 'conditions' block"):
        ManifestPolicy.from_manifest(m)


@pytest.mark.parametrize("mutate,field", [
    (lambda c: c["levels"].update(night_snow="fed_night"), "conditions.levels"),  # not a condition key
    (lambda c: c["levels"].update(day_clear="fed_rain"), "conditions.levels.day_clear"),  # no artifact
    (lambda c: c.update(default="s90"), "conditions.default"),
    (lambda c: c.update(default="../x"), "conditions.default"),  # not a level name
    (lambda c: c["groups"][1].update(level="fed_snow"), "conditions.groups[1].level"),
    (lambda c: c["groups"][0]["mix"].update(night_clear=math.nan), "conditions.groups[0].mix.night_clear"),
    (lambda c: c["groups"][0]["mix"].update(night_clear=-0.1), "conditions.groups[0].mix.night_clear"),
    (lambda c: c.pop("levels"), "conditions"),
    (lambda c: c.update(levels={}), "conditions.levels"),
    (lambda c: c.update(level_map={}), "conditions"),  # unknown key (a typo must not pass silently)
])
def test_bad_conditions_field_named(zoo: Path, mutate, field: str) -> None:
    data = json.loads(zoo.read_text())
    mutate(data["conditions"])
    with pytest.raises(ManifestError, match="invalid field") as err:
        write_manifest(zoo.with_name("other.json"), data)
    assert field in str(err.value)
    zoo.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="invalid field") as err:
        load_manifest(zoo)
    assert str(zoo) in str(err.value) and field in str(err.value)


def test_manifest_policy_follows_the_map() -> None:
    policy = ManifestPolicy(CONDITIONS["levels"], "fed_global")
    assert policy.kind == "manifest" and policy.levels == ["fed_global", "fed_night", "fed_fog"]
    assert policy.decide(Condition("night", "rain"), "fed_global") == "fed_night"
    assert policy.decide(Condition("day", "clear"), "fed_night") == "fed_global"
    no_default = ManifestPolicy({"night_fog": "fed_night"})
    assert no_default.decide(Condition("day", "rain"), "fed_night") == "fed_night"  # unnamed: keep the level
    with pytest.raises(ValueError, match="needs a conditions"):
        ManifestPolicy({})


def test_node_config_manifest_policy_needs_a_zoo(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="policy_path 'manifest'.*engine_manifest"):
        NodeConfig(model_path=str(tmp_path / "m.onnx"), policy_path="manifest")


def test_node_runtime_follows_the_manifest_map(zoo: Path) -> None:
    """policy_path 'manifest' + policy_mode auto: the core swaps to each condition's tailored level on real engines."""
    cfg, pool, controller = build_runtime({"engine_manifest": str(zoo), "policy_path": "manifest",
                                           "policy_mode": "auto", "initial_level": "fed_global",
                                           "hysteresis": 1.0, "cooldown_s": 0.0, "threads": 1})
    assert controller is not None and controller.policy.kind == "manifest"
    core = DetectorCore(logging.getLogger("test_manifest_policy"))
    core.load(pool, controller, cfg.policy_mode)
    try:
        frame = np.zeros((60, 90, 3), np.uint8)
        for cond, want in [(Condition("night", "clear"), "fed_night"), (Condition("dusk", "fog"), "fed_fog"),
                           (Condition("day", "clear"), "fed_global"), (Condition("night", "fog"), "fed_night")]:
            core.on_condition(cond)
            assert core.active_level() == want, cond.key
            assert pool.detect(frame).level == want
        ok, _, _ = core.set_sparsity("dense", -1.0)  # a manual choice holds until 'auto'
        core.on_condition(Condition("day", "fog"))
        assert ok and core.active_level() == "dense" and core.mode == "manual"
        ok, _ = core.set_auto()
        assert ok and core.active_level() == "fed_fog"
    finally:
        core.release()


def test_manifest_policy_levels_must_be_preloaded(zoo: Path) -> None:
    with pytest.raises(ValueError, match=r"policy levels \['fed_fog'\] are not preloaded"):
        build_runtime({"engine_manifest": str(zoo), "policy_path": "manifest", "threads": 1,
                       "allowed_levels": ["dense", "fed_global", "fed_night"]})


def test_tampered_tailored_level_is_refused(zoo: Path) -> None:
    (zoo.parent / "fed_night" / "model.onnx").write_bytes(b"not the exported engine")
    with pytest.raises(ManifestError, match="fed_night.*sha256"):
        build_runtime({"engine_manifest": str(zoo), "policy_path": "manifest", "threads": 1})
