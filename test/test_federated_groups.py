"""Condition groups -> levels of their own (issue 25 item 3): grouping, the conditions map, the export summary
that ``pruning-tools export`` reads. The Flower jobs themselves are tested in test_federated.py; the measured
run is bench/federated.py --groups (docs/federated.md)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pruning_tools.federated.config import FederatedConfig, FederatedConfigError
from pruning_tools.federated.tailored import (auto_groups, check_groups, condition_map, group_config, group_mix,
                                              load_groups_config, regime, write_export_summary)
from pruning_tools.quant.export import condition_block, discover_levels, tailored_levels
from sparse_perception.runtime.zoo import CONDITIONS_SCHEMA

REPO = Path(__file__).resolve().parent.parent
GROUPS_YAML = REPO / "pruning_tools" / "configs" / "federated_groups.yaml"


def _cfg(**kw) -> FederatedConfig:
    clients = [{"id": "n1", "conditions": ["night_clear", "night_rain", "day_clear"], "seed": 1},
               {"id": "n2", "conditions": ["night_fog", "dusk_clear"], "seed": 2},
               {"id": "f1", "conditions": ["day_fog", "dusk_fog", "day_clear"], "seed": 3},
               {"id": "f2", "conditions": ["day_fog", "day_clear", "day_clear", "day_fog"], "seed": 4},
               {"id": "d1", "conditions": ["day_clear", "day_rain", "night_clear"], "seed": 5},
               {"id": "d2", "conditions": ["dusk_clear"], "seed": 6}]
    return FederatedConfig.from_dict({"clients": clients, **kw})


def test_vehicles_grouped_by_the_regime_their_mix_is_heaviest_in() -> None:
    cfg = _cfg()
    assert [regime(c) for c in cfg.clients] == ["night", "night", "fog", "fog", "day", "day"]  # f2: tie -> fog
    assert auto_groups(cfg) == {"night": ["n1", "n2"], "fog": ["f1", "f2"], "day": ["d1", "d2"]}


@pytest.mark.parametrize("groups,match", [
    ({"night": ["n1", "n2"], "rest": ["f1", "f2", "d1"]}, r"clients \['d2'\] are in no group"),
    ({"night": ["n1"], "rest": ["n2", "f1", "f2", "d1", "d2"]}, "at least 2 clients"),
    ({"night": ["n1", "n2", "f1"], "rest": ["f1", "f2", "d1", "d2"]}, "already in group 'night'"),
    ({"night": ["n1", "x9"], "rest": ["n2", "f1", "f2", "d1", "d2"]}, "'x9' is not a client id"),
    ({"all": ["n1", "n2", "f1", "f2", "d1", "d2"]}, "at least 2 groups"),
    ({"global": ["n1", "n2"], "rest": ["f1", "f2", "d1", "d2"]}, "cannot name a level"),
    ({"a/b": ["n1", "n2"], "rest": ["f1", "f2", "d1", "d2"]}, "cannot name a level"),
])
def test_bad_groups_named(groups, match: str) -> None:
    with pytest.raises(FederatedConfigError, match=match):
        check_groups(_cfg(), groups)


def test_group_job_and_condition_map() -> None:
    cfg = _cfg(min_clients=3, central=True)
    g = group_config(cfg, "night", ["n1", "n2"])
    assert [c.id for c in g.clients] == ["n1", "n2"] and g.min_clients == 2 and g.central is False
    assert g.target == cfg.target and g.rounds == cfg.rounds
    # equal_total: the group's level gets the global job's total batches (2 of 6 vehicles: 3x each)
    assert (g.stage1_batches, g.local_steps) == (3 * cfg.stage1_batches, 3 * cfg.local_steps)
    pv = group_config(cfg, "night", ["n1", "n2"], "per_vehicle")
    assert (pv.stage1_batches, pv.local_steps) == (cfg.stage1_batches, cfg.local_steps)
    with pytest.raises(FederatedConfigError, match="group_budget"):
        group_config(cfg, "night", ["n1", "n2"], "more")
    mixes = {name: group_mix(cfg, m) for name, m in auto_groups(cfg).items()}
    assert sum(mixes["night"].values()) == pytest.approx(1.0, abs=1e-3)
    cmap = condition_map(mixes)
    assert cmap["night_fog"] == "fed_night" and cmap["day_fog"] == "fed_fog" and cmap["day_rain"] == "fed_day"
    assert cmap["day_clear"] == "fed_fog"  # f2 is half day_clear: the largest share of it
    assert "dusk_rain" not in cmap  # held by no group: the manifest's default (the global level) serves it


def test_shipped_groups_config_loads() -> None:
    cfg, groups, frames, budget = load_groups_config(GROUPS_YAML)
    assert check_groups(cfg, groups) == auto_groups(cfg)  # the written grouping is the automatic one
    assert frames >= 10 and len(cfg.clients) == 6 and budget == "equal_total"


def test_export_summary_is_what_export_reads(tmp_path: Path) -> None:
    """The run folder federated-groups leaves is a prune-run-shaped folder for ``export`` (checkpoint files are
    only checked by export itself, test_export.py exports one)."""
    import jsonschema

    cfg = _cfg()
    jobs = {name: {"model": str(tmp_path / name / "model.pt"), "stage1": {"param_sparsity": 0.31}}
            for name in ("global", "night", "fog", "day")}
    mixes = {name: group_mix(cfg, m) for name, m in auto_groups(cfg).items()}
    conditions = {"default": "fed_global", "levels": condition_map(mixes),
                  "groups": [{"name": n, "level": f"fed_{n}", "mix": mix} for n, mix in mixes.items()]}
    jsonschema.validate(conditions, CONDITIONS_SCHEMA)
    write_export_summary(tmp_path, cfg, jobs, conditions)
    levels, summary = discover_levels(tmp_path, None)  # method: the best present, here 'federated'
    assert [s.level for s in levels] == ["dense", "fed_day", "fed_fog", "fed_global", "fed_night"]
    assert {s.sparsity for s in levels if s.level != "dense"} == {0.31}
    block = condition_block(summary, {s.level for s in levels})
    assert block == conditions and tailored_levels(block) == {"fed_global", "fed_night", "fed_fog", "fed_day"}
    import yaml  # export's dataset: the global job's held-out server frames (val: precision search; train: calibration)

    ds = Path(yaml.safe_load((tmp_path / "config.yaml").read_text())["data"]["dataset"])
    assert ds == tmp_path / "global" / "server" / "data" / "yolo"
    assert json.loads((tmp_path / "summary.json").read_text())["conditions"]["default"] == "fed_global"


@pytest.mark.slow
def test_tailored_run_to_one_zoo_the_node_follows(tmp_path: Path) -> None:
    """Real Flower jobs (simulation engine, local Ray on 127.0.0.1): a global level, two group levels and the
    control, each group's held-out comparison, then ``export`` into one zoo whose manifest the node follows."""
    import logging

    from pruning_tools.federated.tailored import run_tailored
    from pruning_tools.quant.export import main as export_main
    from sparse_perception.node.node_config import build_runtime
    from sparse_perception.runtime.conditions import Condition
    from sparse_perception.runtime.detector_core import DetectorCore
    from sparse_perception.runtime.zoo import load_manifest

    clients = [{"id": "n1", "conditions": ["night_clear", "night_rain"], "frames": 12, "seed": 11},
               {"id": "n2", "conditions": ["night_fog", "night_clear"], "frames": 12, "seed": 12},
               {"id": "f1", "conditions": ["day_fog", "dusk_fog"], "frames": 12, "seed": 21},
               {"id": "f2", "conditions": ["dusk_fog", "day_clear", "day_fog"], "frames": 12, "seed": 22}]
    cfg = FederatedConfig.from_dict({
        "name": "t", "imgsz": [128, 416], "crop_width": 256, "target": 0.3, "stage1_batches": 1, "rounds": 1,
        "local_steps": 1, "batch": 2, "bn_batches": 1, "distill_weight": 0.0, "server_frames": 10,
        "server_seed": 900, "central": False, "kitti_root": None, "round_timeout_s": 300, "clients": clients})
    res = run_tailored(cfg, tmp_path / "run", None, progress=False, heldout_frames=12, control=True)
    assert [g["name"] for g in res["groups"]] == ["night", "fog"]  # automatic grouping by regime
    for g in res["groups"]:
        h = g["heldout"]
        assert h["gain_points"] == pytest.approx(100 * (h["own"]["map50_95"] - h["global"]["map50_95"]), abs=1e-3)
        assert g["batches"]["finetune_total"] == res["global"]["batches"]["finetune_total"] == 4  # equal_total
        assert "gain_vs_control_points" in h and set(h["other_levels"]) == {"fed_night", "fed_fog",
                                                                            "control_global"} - {g["level"]}
    assert res["control"]["batches"]["local_steps_per_round"] == 2
    assert res["conditions"]["levels"]["night_fog"] == "fed_night" and res["conditions"]["levels"]["day_fog"] == "fed_fog"
    zoo = tmp_path / "zoo"
    assert export_main(["--run", str(tmp_path / "run"), "--zoo", str(zoo), "--quick", "--precisions", "fp32",
                        "--no-progress", "--threads", "1"]) == 0
    m = load_manifest(zoo / "manifest.json", verify=True)
    assert set(m.levels()) == {"dense", "fed_fog", "fed_global", "fed_night"}  # the control level is not exported
    assert m.level_for("night_rain") == "fed_night" and m.condition_default == "fed_global"
    _, pool, controller = build_runtime({"engine_manifest": str(zoo / "manifest.json"), "policy_path": "manifest",
                                         "policy_mode": "auto", "hysteresis": 1.0, "cooldown_s": 0.0, "threads": 1})
    core = DetectorCore(logging.getLogger("test_federated_groups"))
    core.load(pool, controller, "auto")
    try:
        for key, want in (("night_rain", "fed_night"), ("dusk_fog", "fed_fog"), ("day_rain", "fed_global")):
            core.on_condition(Condition.from_key(key))
            assert core.active_level() == want, key
    finally:
        core.release()


def test_a_bad_ray_address_is_refused_before_any_level_is_trained(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    from pruning_tools.federated.tailored import main

    cfg = Path(__file__).resolve().parent.parent / "pruning_tools" / "configs" / "federated_groups.yaml"
    out = tmp_path / "run"
    assert main(["--config", str(cfg), "--out", str(out), "--ray", "bad address!", "--no-progress"]) == 2
    assert "--ray ADDRESS must be" in capsys.readouterr().err and not out.exists()
