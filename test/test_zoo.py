"""Manifest schema: errors name the field path; JSON and YAML manifests; sha256 tamper detection."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from sparse_perception.runtime import zoo as zoo_module
from sparse_perception.runtime.zoo import ManifestError, load_manifest, sha256_file, write_manifest


def _manifest(tmp: Path) -> dict:
    arts = []
    for i, (level, prec) in enumerate([("dense", "fp32"), ("s75", "int8")]):
        f = tmp / level / f"model_{prec}.onnx"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(bytes([i]) * 100)
        arts.append({"level": level, "sparsity": 0.75 * i, "precision": prec, "backend": "onnxruntime",
                     "path": f"{level}/{f.name}", "sha256": sha256_file(f), "size_bytes": 100,
                     "input_shape": [1, 3, 384, 1248], "class_names": ["Car", "Pedestrian", "Cyclist"],
                     "selected": True, "accepted": True, "map_drop_points": 0.3, "map50_95": 0.4, "map50": 0.7,
                     "map_by_condition": {"night_fog": {"map50_95": 0.2, "map50": None}},
                     "latency_ms": {"median": 12.0, "p95": 13.0, "backend": "onnxruntime", "device": "cpu: x",
                                    "threads": 2},
                     "fallback_layers": ["model.24.cv3.0.2"] if prec == "int8" else []})
    return {"schema_version": 1, "class_names": ["Car", "Pedestrian", "Cyclist"], "artifacts": arts}


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_json_and_yaml_load(tmp_path: Path, suffix: str) -> None:
    data = _manifest(tmp_path)
    path = tmp_path / f"manifest{suffix}"
    if suffix == ".json":
        write_manifest(path, data)
    else:
        path.write_text(yaml.safe_dump(data))
    m = load_manifest(path, verify=True)
    assert m.levels() == ["dense", "s75"]
    a = m.select("s75", "onnxruntime")
    assert a.precision == "int8" and a.fallback_layers == ("model.24.cv3.0.2",) and a.raw["accepted"] is True


@pytest.mark.parametrize("mutate,field", [
    (lambda d: d["artifacts"][1].update(precision="int4"), "artifacts[1].precision"),
    (lambda d: d["artifacts"][0].update(sha256="abc"), "artifacts[0].sha256"),
    (lambda d: d["artifacts"][1]["latency_ms"].update(median=-1), "artifacts[1].latency_ms.median"),
    (lambda d: d["artifacts"][0].update(input_shape=[1, 3, 384]), "artifacts[0].input_shape"),
    (lambda d: d["artifacts"][1].update(accepted="yes"), "artifacts[1].accepted"),
    (lambda d: d["artifacts"][1].update(backend="tensorrt"), "artifacts[1].tensorrt"),
    (lambda d: d["artifacts"][1].update(level="dense", precision="fp32"), "artifacts[1]"),
    (lambda d: d.pop("class_names"), "<root>"),
    (lambda d: d["artifacts"][1].update(level="auto"), "artifacts[1].level"),  # reserved: policy mode
    (lambda d: d["artifacts"].append({**d["artifacts"][1], "precision": "fp32"}), "artifacts[2].selected"),
])
def test_bad_field_named(tmp_path: Path, mutate, field: str) -> None:
    data = copy.deepcopy(_manifest(tmp_path))
    mutate(data)
    path = tmp_path / "manifest.json"
    with pytest.raises(ManifestError, match="invalid field") as err:
        write_manifest(path, data)
    assert field in str(err.value)
    assert not path.exists()  # nothing half-written
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError) as err2:
        load_manifest(path)
    assert str(path) in str(err2.value) and field in str(err2.value)


def test_tampered_artifact(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "manifest.json", _manifest(tmp_path))
    (tmp_path / "s75" / "model_int8.onnx").write_bytes(b"\x01" * 99 + b"\x02")
    m = load_manifest(path)
    m.select("dense", "onnxruntime").verify()
    with pytest.raises(ManifestError, match="sha256"):
        m.select("s75", "onnxruntime").verify()
    with pytest.raises(ManifestError, match="model_int8.onnx"):
        load_manifest(path, verify=True)


def test_unreadable(tmp_path: Path) -> None:
    bad = tmp_path / "manifest.yaml"
    bad.write_text("artifacts: [\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_manifest(bad)
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path / "nope.json")


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "etc"])
def test_artifact_path_outside_the_zoo_is_refused_before_opening(tmp_path: Path, kind: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``..``, absolute paths and symlinks leaving the manifest's folder are refused, even with a matching sha256."""
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    data = _manifest(zoo)
    evil = tmp_path / "outside" / "evil.onnx"
    evil.parent.mkdir()
    evil.write_bytes(b"\x07" * 100)
    rel = {"dotdot": "../outside/evil.onnx", "absolute": str(evil), "symlink": "dense/link.onnx",
           "etc": "../" * 40 + "etc/passwd"}[kind]
    if kind == "symlink":
        (zoo / "dense" / "link.onnx").symlink_to(evil)
    data["artifacts"][0].update(path=rel, sha256=sha256_file(evil) if kind != "etc" else "0" * 64)
    path = zoo / "manifest.json"
    path.write_text(json.dumps(data))
    opened: list[str] = []
    monkeypatch.setattr(zoo_module, "sha256_file", lambda p, *a: opened.append(str(p)) or sha256_file(p, *a))
    with pytest.raises(ManifestError, match=r"artifacts\[0\]\.path.*outside the manifest's folder"):
        load_manifest(path, verify=True)
    assert opened == []  # refused before anything was opened or hashed


def test_symlink_inside_the_zoo_is_allowed(tmp_path: Path) -> None:
    data = _manifest(tmp_path)
    (tmp_path / "dense" / "alias.onnx").symlink_to(tmp_path / "dense" / "model_fp32.onnx")
    data["artifacts"][0]["path"] = "dense/alias.onnx"
    m = load_manifest(write_manifest(tmp_path / "manifest.json", data), verify=True)
    assert m.select("dense", "onnxruntime").path == (tmp_path / "dense" / "model_fp32.onnx").resolve()


def _ladder_manifest(tmp: Path) -> dict:
    """A manifest as ``pruning-tools export`` writes it since the speed ladder: a dotted latency level
    (``x1.5``), per-level speed-ups, and one excluded level."""
    data = _manifest(tmp)
    data["artifacts"][1].update(level="x1.5", param_sparsity=0.42, speedup_target=1.5, speedup_vs_dense=1.61)
    (tmp / "x1.5").mkdir(exist_ok=True)
    (tmp / "s75" / "model_int8.onnx").rename(tmp / "x1.5" / "model_int8.onnx")
    data["artifacts"][1]["path"] = "x1.5/model_int8.onnx"
    data["artifacts"][0].update(param_sparsity=0.0, speedup_vs_dense=1.0)
    row = {"backend": "onnxruntime", "precision": "int8", "map50_95": 0.4, "latency_ms": {"median": 10.0}}
    data["ladder"] = {"rule": "...", "timing": {"runs": 20},
                      "levels": [{**row, "level": "dense", "speedup_vs_dense": 1.0, "reason": "reference (dense)"},
                                 {**row, "level": "x1.5", "speedup_vs_dense": 1.61, "speedup_target": 1.5,
                                  "reason": "faster"}],
                      "excluded": [{**row, "level": "s50", "speedup_vs_dense": 0.97, "beaten_by": "dense",
                                    "reason": "not faster than dense", "artifacts": []}]}
    return data


def test_ladder_manifest_loads_with_dotted_levels(tmp_path: Path) -> None:
    m = load_manifest(write_manifest(tmp_path / "manifest.json", _ladder_manifest(tmp_path)), verify=True)
    assert m.levels() == ["dense", "x1.5"]
    a = m.select("x1.5", "onnxruntime")
    assert (a.param_sparsity, a.speedup_target, a.speedup_vs_dense) == (0.42, 1.5, 1.61)
    assert [r["level"] for r in m.ladder["levels"]] == ["dense", "x1.5"]
    assert [r["level"] for r in m.excluded("onnxruntime")] == ["s50"] and m.excluded("tensorrt") == []


def test_old_manifest_has_no_ladder_keys(tmp_path: Path) -> None:
    m = load_manifest(write_manifest(tmp_path / "manifest.json", _manifest(tmp_path)))
    a = m.select("s75", "onnxruntime")
    assert (a.param_sparsity, a.speedup_target, a.speedup_vs_dense) == (None, None, None)
    assert m.ladder == {} and m.excluded() == []


@pytest.mark.parametrize("mutate,field", [
    (lambda d: d["artifacts"][1].update(level="x1."), "artifacts[1].level"),
    (lambda d: d["artifacts"][1].update(level=".."), "artifacts[1].level"),
    (lambda d: d["artifacts"][1].update(level="x1..5"), "artifacts[1].level"),
    (lambda d: d["artifacts"][1].update(speedup_vs_dense=0), "artifacts[1].speedup_vs_dense"),
    (lambda d: d["artifacts"][1].update(param_sparsity=1.0), "artifacts[1].param_sparsity"),
    (lambda d: d["ladder"]["excluded"][0].pop("reason"), "ladder.excluded[0]"),
    (lambda d: d["ladder"]["excluded"][0].update(level="x1.5"), "ladder.excluded[0]"),  # excluded yet listed
    (lambda d: d["ladder"]["levels"][1].update(level="x3"), "ladder.levels[1]"),  # kept, no artifact
    (lambda d: d["ladder"].pop("excluded"), "ladder"),
])
def test_bad_ladder_field_named(tmp_path: Path, mutate, field: str) -> None:
    data = copy.deepcopy(_ladder_manifest(tmp_path))
    mutate(data)
    with pytest.raises(ManifestError, match="invalid field") as err:
        write_manifest(tmp_path / "manifest.json", data)
    assert field in str(err.value)
