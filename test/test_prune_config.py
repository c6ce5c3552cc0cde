"""``prune`` configuration: YAML -> frozen dataclasses, clear errors naming the key."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pruning_tools.pipeline.config import ConfigError, config_from_dict, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "pruning_tools" / "configs"


@pytest.mark.parametrize("name", ["quick.yaml", "medium.yaml", "full.yaml"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    if name == "quick.yaml":  # the demo builds latency levels (issue 21)
        assert cfg.target_metric == "latency" and cfg.levels == (1.5, 2, 2.5) and cfg.rl.budget == "spread"
    else:
        assert cfg.levels == (0.5, 0.75, 0.9) and cfg.rl.lambda_flops > 0
    assert cfg.methods == ("uniform", "importance", "random", "global", "full")  # Table 1's rows, every profile
    assert cfg.rl.learning_rate == 3e-4 and cfg.rl.lambda_sparsity == 0.0
    if name == "medium.yaml":
        assert cfg.trials >= 3 and cfg.rl.episodes >= 300 and cfg.latency.runs >= 20
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.trials = 5  # type: ignore[misc]


def test_zoo_profile_builds_latency_levels_with_the_full_pipeline() -> None:
    cfg = load_config(CONFIGS / "zoo.yaml")
    assert cfg.target_metric == "latency" and cfg.levels == (1.5, 2, 2.5) and "full" in cfg.methods
    assert cfg.rl.budget == "spread" and cfg.finetune.distill_weight > 0
    assert cfg.finetune.prune_steps * cfg.finetune.steps_per_prune + cfg.finetune.final_steps >= 800  # real frames
    assert cfg.rl.episodes >= 96 and cfg.latency.runs >= 20


@pytest.mark.parametrize("raw, match", [
    ({"rl": {"episodez": 3}}, r"unknown key 'rl.episodez'"),
    ({"colour": 1}, r"unknown key 'colour'"),
    ({"levels": [0.5, 1.0]}, r"strictly between 0 and 1"),
    ({"levels": [0.0]}, r"strictly between 0 and 1"),
    ({"methods": ["uniform", "magic"]}, r"magic"),
    ({"finetune": {"lr0": "fast"}}, r"finetune.lr0: expected a number"),
    ({"trials": 0}, r"trials must be >= 1"),
    ({"data": {"imgsz": [384, 1000]}}, r"multiples of 32"),
    ({"data": "x"}, r"data: expected a mapping"),
    ({"rl": {"episodes": 7, "episodes_per_update": 2}}, r"multiple of rl.episodes_per_update"),
    ({"rl": {"workers": 0}}, r"workers must be >= 1"),
    ({"rl": {"proxy_imgsz": [100, 320]}}, r"proxy_imgsz"),
    ({"importance": {"channel_choice": "random"}}, r"channel_choice"),
    ({"rl": {"proxy_metric": "loss"}}, r"proxy_metric must be"),
])
def test_bad_values_are_named(raw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rl:\n  episodes: 3\n  lamda_map: 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'rl.lamda_map'"):
        load_config(bad)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_cli_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pruning_tools.pipeline.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("levels: [0.5]\nfinetune: {stepz: 1}\n")
    assert main(["--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    assert "unknown key 'finetune.stepz'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_empty_config_file_is_refused(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    from pruning_tools.pipeline.cli import main

    empty = tmp_path / "empty.yaml"
    empty.write_text(text)
    with pytest.raises(ConfigError, match=r"empty.yaml: the config file is empty"):
        load_config(empty)
    assert main(["--config", str(empty), "--out", str(tmp_path / "run")]) == 2
    assert "the config file is empty" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
