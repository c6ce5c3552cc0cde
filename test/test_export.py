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
    out, _ = zoo
    m = load_manifest(out / "manifest.json", verify=True)  # schema + every sha256
    assert m.levels() == ["dense", "s75"]
    # the bisection selects (and the policy's per-condition mAP come from) the val split, never test
    assert json.loads((out / "manifest.json").read_text())["data"]["split"] == "val"
    for level in ("dense", "s75"):
        arts = [a for a in m.artifacts if a.level == level]
        assert {a.precision for a in arts} == {"fp32", "fp16", "int8"}
        assert sum(a.selected for a in arts) == 1  # the bisection's choice per (level, backend)
        for a in arts:
            assert a.path.is_file() and a.input_shape == (1, 3, *IMGSZ)
            assert a.class_names == ("Car", "Pedestrian", "Cyclist") and a.map50_95 is not None
            assert a.latency_ms["median"] > 0 and a.latency_ms["device"].startswith("cpu")
            assert a.raw["source_checkpoint"].endswith(".pt") and a.raw["created"] and a.raw["size_bytes"] > 0
        sel = m.select(level, "onnxruntime")
        assert sel.raw["accepted"] and sel.raw["map_drop_points"] <= 1.0
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
