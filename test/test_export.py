"""`pruning-tools export`: a tiny prune-run-shaped folder -> zoo + manifest (validated, verified)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from helpers.quant_data import IMGSZ, tiny_dataset, tiny_model
from pruning_tools.quant.export import main
from sparse_perception.runtime.zoo import ManifestError, load_manifest


@pytest.fixture(scope="module")
def prune_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pruning_tools.quant.quantize import export_fp32
    from pruning_tools.ultralytics_adapter import save_checkpoint

    run = tmp_path_factory.mktemp("run")
    dense, _ = tiny_model(0.0)
    pruned, _ = tiny_model(0.75)  # real Torch-Pruning surgery
    save_checkpoint(dense, run / "baseline.pt", {"kind": "baseline"})
    save_checkpoint(pruned, run / "full" / "s75" / "model.pt", {"sparsity": 0.74})
    fp32 = export_fp32(dense, run / "ref.onnx", IMGSZ, ["Car", "Pedestrian", "Cyclist"])
    data = tiny_dataset(run / "data" / "yolo", fp32, n_train=8, n_test=6)
    (run / "config.yaml").write_text(f"data:\n  dataset: {data}\n")
    (run / "summary.json").write_text(json.dumps({
        "baseline": "baseline.pt", "imgsz": list(IMGSZ),
        "checkpoints": [{"method": "full", "level": 0.75, "trial": 0, "sparsity": 0.74, "path": "full/s75/model.pt"},
                        {"method": "uniform", "level": 0.75, "trial": 0, "sparsity": 0.75, "path": "nope.pt"}]}))
    return run


@pytest.fixture(scope="module")
def zoo(prune_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    import contextlib
    import io

    out = tmp_path_factory.mktemp("z") / "zoo"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["--run", str(prune_run), "--zoo", str(out), "--quick", "--calib-images", "8", "--delta", "1.0",
                   "--backends", "onnxruntime,tensorrt", "--max-fallback", "2", "--no-progress"])
    assert rc == 0, buf.getvalue()
    return out, buf.getvalue()


def test_manifest_describes_zoo(zoo: tuple[Path, str]) -> None:
    out, text = zoo
    m = load_manifest(out / "manifest.json", verify=True)  # schema + every sha256
    raw = json.loads((out / "manifest.json").read_text())
    ladder = raw["ladder"]
    kept = [r["level"] for r in ladder["levels"]]
    excluded = [r["level"] for r in ladder["excluded"]]
    # every level is on the ladder or reported as left out; the node sees the ladder only
    assert kept[0] == "dense" and sorted(kept + excluded) == ["dense", "s75"] and m.levels() == kept
    assert m.excluded() == ladder["excluded"] and all(f"excluded from the zoo: {lv}" in text for lv in excluded)
    # the bisection selects (and the policy's per-condition mAP come from) the val split, never test
    assert raw["data"]["split"] == "val"
    assert raw["data"]["latency_timing"]["interleaved"] and raw["data"]["latency_timing"]["runs"] >= 20
    assert ladder["timing"]["runs"] >= 20 and "round-robin" in ladder["timing"]["method"]
    records = raw["artifacts"] + [a for r in ladder["excluded"] for a in r["artifacts"]]
    for level in ("dense", "s75"):
        arts = [a for a in records if a["level"] == level]
        assert {a["precision"] for a in arts} == {"fp32", "fp16", "int8"}
        assert sum(a["selected"] for a in arts) == 1  # the bisection's choice per (level, backend)
        for a in arts:
            assert (out / a["path"]).is_file() and a["input_shape"] == [1, 3, *IMGSZ]
            assert a["class_names"] == ["Car", "Pedestrian", "Cyclist"] and a["map50_95"] is not None
            assert a["latency_ms"]["median"] > 0 and a["latency_ms"]["device"].startswith("cpu")
            assert a["latency_ms"]["interleaved"] is True and a["latency_ms"]["runs"] >= 20
            assert a["source_checkpoint"].endswith(".pt") and a["created"] and a["size_bytes"] > 0
            assert a["param_sparsity"] == pytest.approx(0.0 if level == "dense" else 0.74)
            assert "speedup_target" not in a  # a parameter-level run has none
        sel = next(a for a in arts if a["selected"])
        assert sel["accepted"] and sel["map_drop_points"] <= 1.0
    rows = {r["level"]: r for r in ladder["levels"] + ladder["excluded"]}
    dense_ms = rows["dense"]["latency_ms"]["median"]
    for lv, r in rows.items():  # speed-ups from the one interleaved timing, at the selected precisions
        assert r["speedup_vs_dense"] == pytest.approx(dense_ms / r["latency_ms"]["median"], rel=1e-3)
        assert r["latency_ms"]["models"] == 2 and r["latency_ms"]["interleaved"] is True
    assert rows["dense"]["speedup_vs_dense"] == 1.0 and m.select("dense", "onnxruntime").speedup_vs_dense == 1.0
    lat = [rows[lv]["latency_ms"]["median"] for lv in kept]
    assert all(a > b for a, b in zip(lat, lat[1:]))  # a monotone ladder
    for lv in kept:  # the kept levels' selected artifacts carry the ladder's figures
        sel = m.select(lv, "onnxruntime")
        assert sel.speedup_vs_dense == rows[lv]["speedup_vs_dense"] and sel.latency_ms == rows[lv]["latency_ms"]
    if "s75" in kept:
        assert m.select("s75", "onnxruntime").sparsity == pytest.approx(0.74)
    log = json.loads((out / "bisection_log.json").read_text())
    assert [s["level"] for s in log["searches"]] == ["dense", "s75"]
    for s in log["searches"]:
        assert s["path"][0]["precision"] == "fp32" and all("accepted" in c for c in s["path"])
    assert (out / "bisection.png").stat().st_size > 0
    assert not (out.parent / "zoo.partial").exists()


def test_tensorrt_absent_message(zoo: tuple[Path, str]) -> None:
    out, text = zoo
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt installed here")
    assert text.count("TensorRT engines skipped") == 1 and "ONNX Runtime artifacts are still produced" in text
    m = json.loads((out / "manifest.json").read_text())
    assert "tensorrt" in m["data"]["tensorrt_skipped"] and all(a["backend"] == "onnxruntime" for a in m["artifacts"])


def test_tamper_detected(zoo: tuple[Path, str], tmp_path: Path) -> None:
    import shutil

    out, _ = zoo
    copy = tmp_path / "zoo"
    shutil.copytree(out, copy)
    f = copy / "s75" / "model_int8.onnx"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="sha256"):
        load_manifest(copy / "manifest.json").select("s75", "onnxruntime", "int8").verify()


def test_bad_inputs(prune_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--run", str(tmp_path), "--zoo", str(tmp_path / "z")]) == 2
    assert "summary.json" in capsys.readouterr().err
    assert main(["--run", str(prune_run), "--zoo", str(tmp_path / "z"), "--levels", "s99"]) == 2
    assert "s99" in capsys.readouterr().err
    assert main(["--run", str(prune_run), "--zoo", str(tmp_path / "z"), "--method", "uniform"]) == 2
    assert "nope.pt" in capsys.readouterr().err
    assert main(["--run", str(prune_run), "--zoo", str(tmp_path / "z"), "--input-shape", "100x320"]) == 2
    assert "multiples of 32" in capsys.readouterr().err
    assert not (tmp_path / "z").exists()


def test_real_eval_adds_real_frame_ap_to_every_onnx_artifact(prune_run: Path, tmp_path: Path) -> None:
    from pruning_tools.data import generate_dataset

    real = generate_dataset(tmp_path / "real", frames=3, seed=9, progress=False) and tmp_path / "real"
    out = tmp_path / "zoo_real"
    assert main(["--run", str(prune_run), "--zoo", str(out), "--quick", "--calib-images", "4", "--levels", "dense",
                 "--precisions", "fp32,fp16", "--real-eval", str(real), "--no-progress"]) == 0
    m = load_manifest(out / "manifest.json")
    arts = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert arts and len(m.levels("onnxruntime")) == 1
    for a in arts:
        assert a["real"]["n_images"] == 3 and str(real) in a["real"]["data"]
        assert set(a["real"]["classes"]) == {"Car", "Pedestrian", "Cyclist"}
        assert 0.0 <= a["real"]["classes"]["Car"]["ap_kitti"] <= 1.0
    assert main(["--run", str(prune_run), "--zoo", str(tmp_path / "z2"), "--quick", "--levels", "dense",
                 "--real-eval", str(tmp_path / "missing"), "--no-progress"]) == 2
    assert not list(tmp_path.glob("z2*")), "a refused export leaves nothing behind"


def _latency_run(prune_run: Path, tmp: Path) -> Path:
    """A run whose pruned level is a speed-up target (the ``level_name`` / ``speedup_target`` keys of
    ``target_metric: latency`` runs), sharing the fixture's checkpoints and dataset."""
    run = tmp / "latency_run"
    run.mkdir()
    (run / "config.yaml").write_text((prune_run / "config.yaml").read_text())
    (run / "summary.json").write_text(json.dumps({
        "baseline": str(prune_run / "baseline.pt"), "imgsz": list(IMGSZ),
        "checkpoints": [{"method": "full", "level": 1.5, "level_name": "x1.5", "target_metric": "latency",
                         "speedup_target": 1.5, "trial": 0, "sparsity": 0.74,
                         "path": str(prune_run / "full" / "s75" / "model.pt")}]}))
    return run


def _export_fp32(run: Path, out: Path) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["--run", str(run), "--zoo", str(out), "--quick", "--precisions", "fp32", "--no-progress"])
    assert rc == 0, buf.getvalue()
    return buf.getvalue()


def test_latency_levels_keep_their_names_and_targets(prune_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "zoo"
    _export_fp32(_latency_run(prune_run, tmp_path), out)
    raw = json.loads((out / "manifest.json").read_text())
    rows = {r["level"]: r for r in raw["ladder"]["levels"] + raw["ladder"]["excluded"]}
    assert set(rows) == {"dense", "x1.5"} and rows["x1.5"]["speedup_target"] == 1.5
    assert (out / "x1.5" / "model_fp32.onnx").is_file()
    records = raw["artifacts"] + [a for r in raw["ladder"]["excluded"] for a in r["artifacts"]]
    x = next(a for a in records if a["level"] == "x1.5")
    assert x["speedup_target"] == 1.5 and x["param_sparsity"] == pytest.approx(0.74) and x["path"].startswith("x1.5/")
    m = load_manifest(out / "manifest.json", verify=True)
    if "x1.5" in m.levels():
        assert m.select("x1.5", "onnxruntime").speedup_target == 1.5


def test_a_level_slower_than_a_more_accurate_one_is_left_out(prune_run: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from pruning_tools.quant import bisection

    real = bisection.measure_latencies

    def slow_pruned(measurer, paths):  # the ladder's timing (engines of several levels): x1.5 made slow
        out = real(measurer, paths)
        if len({Path(p).parent.name for p in paths}) > 1:
            dense = next(o for p, o in zip(paths, out) if Path(p).parent.name == "dense")
            for p, o in zip(paths, out):
                if Path(p).parent.name == "x1.5":
                    o["median"] = round(dense["median"] * 1.25, 3)
        return out

    monkeypatch.setattr(bisection, "measure_latencies", slow_pruned)
    out = tmp_path / "zoo"
    text = _export_fp32(_latency_run(prune_run, tmp_path), out)
    raw = json.loads((out / "manifest.json").read_text())
    assert [r["level"] for r in raw["ladder"]["levels"]] == ["dense"]
    (ex,) = raw["ladder"]["excluded"]
    assert ex["level"] == "x1.5" and ex["beaten_by"] == "dense" and ex["speedup_vs_dense"] == pytest.approx(0.8, abs=1e-3)  # the patched median is rounded to 3 decimals
    assert ex["speedup_target"] == 1.5 and [a["precision"] for a in ex["artifacts"]] == ["fp32"]
    assert "excluded from the zoo: x1.5" in text and "EXCLUDED" in text
    m = load_manifest(out / "manifest.json", verify=True)
    assert m.levels() == ["dense"] and all(a.level == "dense" for a in m.artifacts)  # the node never loads it
    assert (out / ex["artifacts"][0]["path"]).is_file()  # left on disk for inspection, listed with its sha256


def _tailored_run(prune_run: Path, tmp: Path) -> Path:
    """A federated-run-shaped folder: a global level and two condition-group levels plus a ``conditions`` map
    (issue 25 item 3), sharing the fixture's checkpoint and dataset."""
    run = tmp / "tailored_run"
    run.mkdir()
    (run / "config.yaml").write_text((prune_run / "config.yaml").read_text())
    ck = str(prune_run / "full" / "s75" / "model.pt")
    (run / "summary.json").write_text(json.dumps({
        "baseline": str(prune_run / "baseline.pt"), "imgsz": list(IMGSZ),
        "checkpoints": [{"method": "federated", "level": 0.75, "level_name": name, "trial": 0, "sparsity": 0.74,
                         "path": ck} for name in ("fed_global", "fed_night", "fed_fog")],
        "conditions": {"default": "fed_global",
                       "levels": {"night_clear": "fed_night", "night_fog": "fed_night", "day_fog": "fed_fog"},
                       "groups": [{"name": "night", "level": "fed_night", "mix": {"night_clear": 1.0}},
                                  {"name": "fog", "level": "fed_fog", "mix": {"day_fog": 1.0}}]}}))
    return run


def test_condition_tailored_levels_reach_the_manifest_off_the_ladder(prune_run: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's conditions map lands in the manifest; its levels are never ladder-excluded, even when slower than
    dense (here made so); ``--levels`` leaving one out drops its map entries."""
    from pruning_tools.quant import bisection
    from sparse_perception.runtime.manifest_policy import ManifestPolicy
    from sparse_perception.runtime.conditions import Condition

    real = bisection.measure_latencies

    def slow_tailored(measurer, paths):
        out = real(measurer, paths)
        if len({Path(p).parent.name for p in paths}) > 1:
            dense = next(o for p, o in zip(paths, out) if Path(p).parent.name == "dense")
            for p, o in zip(paths, out):
                if Path(p).parent.name.startswith("fed_"):
                    o["median"] = round(dense["median"] * 1.25, 3)
        return out

    monkeypatch.setattr(bisection, "measure_latencies", slow_tailored)
    run, out = _tailored_run(prune_run, tmp_path), tmp_path / "zoo"
    text = _export_fp32(run, out)
    m = load_manifest(out / "manifest.json", verify=True)
    assert m.levels() == ["dense", "fed_fog", "fed_global", "fed_night"] and m.excluded() == []
    assert m.level_for("night_fog") == "fed_night" and m.level_for("day_rain") == "fed_global"
    assert [r["level"] for r in m.ladder["levels"]] == ["dense"]  # tailored levels are not rungs
    assert m.select("fed_night", "onnxruntime").speedup_vs_dense == pytest.approx(0.8, abs=2e-3)
    assert "off the speed ladder" in text
    assert ManifestPolicy.from_manifest(m).decide(Condition("day", "fog")) == "fed_fog"
    out2 = tmp_path / "zoo2"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["--run", str(run), "--zoo", str(out2), "--quick", "--precisions", "fp32", "--no-progress",
                   "--levels", "dense,fed_global,fed_fog"])
    assert rc == 0, buf.getvalue()
    m2 = load_manifest(out2 / "manifest.json", verify=True)
    assert m2.condition_levels == {"day_fog": "fed_fog"} and m2.condition_default == "fed_global"
    assert "night_fog -> fed_night dropped" in buf.getvalue()
