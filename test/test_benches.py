"""The benches measure what they claim.

Decode runs on the node's real prediction count; an mAP drop is judged only where the model detects.
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


def test_finetune_curve_flattening_point() -> None:
    flattening = _bench("finetune_curve").flattening
    assert flattening([(0, 0.1), (16, 0.3), (32, 0.38), (64, 0.4), (128, 0.395)]) == 32  # 90 % of +0.3 at 32
    assert flattening([(0, 0.4), (16, 0.3)]) == 0  # fine-tuning never beat step 0
    assert flattening([(0, 0.1)]) is None


def test_finetune_curve_resumes_and_skips_finished_step_counts(tmp_path: Path) -> None:
    main = _bench("finetune_curve").main
    args = ["--quick", "--json", str(tmp_path / "fc.json"), "--work", str(tmp_path / "w"), "--frames", "20",
            "--imgsz", "64", "192", "--real-root", str(tmp_path / "no_real"), "--no-progress", "--steps", "0", "2"]
    assert main(args) == 0
    first = json.loads((tmp_path / "fc.json").read_text())
    assert [r["step"] for r in first["curves"]["kd"]] == [0, 2] and first["data"]["mix"] == []
    assert first["curves"]["kd"][1]["kd_loss"] > 0 and first["curves"]["plain"][1]["kd_loss"] is None
    # both arms start from the same pruned model
    assert first["curves"]["kd"][0]["val"] == first["curves"]["plain"][0]["val"]
    done = {p: p.stat().st_mtime_ns for p in (tmp_path / "w").glob("*/s*.json")}
    assert main(args[:-2] + ["0", "2", "3"]) == 0  # a rerun with one more step count continues from step 2
    again = json.loads((tmp_path / "fc.json").read_text())
    assert [r["step"] for r in again["curves"]["plain"]] == [0, 2, 3]
    assert again["curves"]["plain"][1] == first["curves"]["plain"][1]
    assert {p: p.stat().st_mtime_ns for p in done} == done  # finished step counts were not redone
    assert (tmp_path / "fc.png").stat().st_size > 0
