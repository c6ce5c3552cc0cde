"""The benches measure what they claim.

Decode runs on the node's real prediction count; an mAP drop is judged only where the model detects;
the zoo ladder times every selected engine, excluded levels included, in one interleaved run.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _bench(name: str):  # noqa: ANN202 - a bench script loaded as a module (bench/ is not a package)
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def test_runtime_bench_decodes_as_many_predictions_as_the_served_head_outputs(test_zoo: Path) -> None:
    import onnxruntime as ort

    from sparse_perception.runtime.zoo import load_manifest

    head_predictions = _bench("runtime_bench").head_predictions
    art = load_manifest(test_zoo).select("dense", "onnxruntime")
    out = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"]).get_outputs()[0].shape
    assert out[2] == head_predictions(tuple(art.input_shape[2:]))  # the real exported yolov5n head
    assert head_predictions((384, 1248)) == 9828


def test_quant_bench_does_not_judge_the_drop_of_a_model_that_detects_nothing() -> None:
    judge = _bench("quant").judge
    int8 = {"latency_ratio_vs_fp32": 0.5, "map_drop_points": 0.0}
    blind = judge({"map50_95": 0.0}, int8)
    assert blind["map_target_met"] is None and "detects nothing" in blind["map_not_judged"]
    assert blind["latency_target_met"] is True
    assert judge({"map50_95": 0.42}, int8)["map_target_met"] is True
    assert judge({"map50_95": 0.42}, {**int8, "map_drop_points": 1.5})["map_target_met"] is False


def test_every_bench_writes_its_json_through_the_shared_writer(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    benches = sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_"))
    assert len(benches) == 8
    for name in benches:
        assert _bench(name).write_result.__module__ == "_report", name
    report = _bench("_report")
    out = tmp_path / "new" / "x.json"
    assert report.write_result(out, {"quick": True}, summary="one line") == out
    assert capsys.readouterr().out == "one line\n"
    data = json.loads(out.read_text())
    assert list(data) == ["quick", "machine"] and {"cpu", "loadavg", "versions"} <= set(data["machine"])
    assert [p.name for p in out.parent.iterdir()] == ["x.json"]  # written through a temp file, none left
    report.write_result(out, {"machine": {"taken": "at the start"}})  # a block the bench took itself stays
    assert json.loads(out.read_text()) == {"machine": {"taken": "at the start"}}
    assert json.loads(capsys.readouterr().out) == {"machine": {"taken": "at the start"}}  # default summary: the JSON
    assert list(report.module_versions("numpy")) == ["python", "numpy"]


def test_zoo_ladder_times_every_selected_engine_and_scores_real_frames(test_zoo: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    import shutil

    from pruning_tools.data import generate_dataset
    from sparse_perception.runtime.zoo import write_manifest

    zoo = tmp_path / "zoo"
    shutil.copytree(test_zoo.parent, zoo)
    data = json.loads((zoo / "manifest.json").read_text())
    s50 = [a for a in data["artifacts"] if a["level"] == "s50"]
    data["artifacts"] = [a for a in data["artifacts"] if a["level"] != "s50"]
    row = {"backend": "onnxruntime", "precision": "fp32", "reason": "r"}
    data["ladder"] = {"rule": "r", "levels": [{**row, "level": "dense"}, {**row, "level": "s75"}],
                      "excluded": [{**row, "level": "s50", "speedup_vs_dense": 0.9, "artifacts": s50}]}
    write_manifest(zoo / "manifest.json", data)
    real = tmp_path / "real"
    generate_dataset(real, frames=2, seed=3, progress=False)
    split = tmp_path / "split.json"  # the zoo names no run: its frames are judged against the shipped baseline's
    split.write_text(json.dumps({"train": [], "val": [], "test": ["000000", "000001"]}))
    mod = _bench("zoo_ladder")
    out = tmp_path / "ladder.json"
    assert mod.main(["--zoo", str(zoo), "--json", str(out), "--runs", "20", "--warmup", "1",
                     "--real-eval", str(real), "--real-split-file", str(split)]) == 0
    res = json.loads(out.read_text())
    rows = {r["level"]: r for r in res["levels"]}
    assert [r["level"] for r in res["levels"]] == ["dense", "s75", "s50"] and res["excluded"] == ["s50"]
    assert rows["s50"]["in_zoo"] is False and rows["s50"]["excluded_reason"] == "r"
    assert rows["dense"]["speedup_vs_dense"] == 1.0 and rows["dense"]["speedup_vs_dense_int8"] is None  # no int8 here
    for r in res["levels"]:
        assert r["latency_ms"]["runs"] == 20 and r["latency_ms"]["median_ms"] > 0
        assert r["speedup_vs_dense"] == pytest.approx(rows["dense"]["latency_ms"]["median_ms"]
                                                      / r["latency_ms"]["median_ms"], rel=1e-3)
        assert r["real"]["n_images"] == 2 and 0.0 <= r["real_car_ap"] <= 1.0
    assert res["config"]["runs"] == 20 and {"cpu", "loadavg"} <= set(res["machine"])
    assert "onnxruntime" in res["versions"] and "x dense" in capsys.readouterr().out
    assert mod.main(["--zoo", str(zoo), "--json", str(out), "--runs", "5"]) == 2  # medians of >= 20 rounds
    (zoo / "s50" / s50[0]["path"].split("/")[-1]).write_bytes(b"tampered")
    assert mod.main(["--zoo", str(zoo), "--json", str(tmp_path / "t.json")]) == 2
    assert "sha256" in capsys.readouterr().err and not (tmp_path / "t.json").exists()
