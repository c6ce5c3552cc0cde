"""Bring your own YOLO (issue 23): Ultralytics' own trainer makes an 80-class ``best.pt`` of YOLOv8 and
YOLO11; it goes through ``evaluate`` (80 classes and the KITTI class map), ``import-model``, ``prune``
and ``export`` into a zoo whose runtime serves the model's own 80 classes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.tiny_data import make_yolo_dataset
from sparse_perception.runtime.zoo import sha256_file

IMGSZ = [64, 192]
REPO = Path(__file__).resolve().parents[1]


def _coco_names() -> list[str]:
    """COCO's 80 names from the data file Ultralytics ships (read as text; nothing downloaded)."""
    import importlib.util

    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.origin
    cfg = yaml.safe_load((Path(spec.origin).parent / "cfg" / "datasets" / "coco8.yaml").read_text())
    return [cfg["names"][i] for i in sorted(cfg["names"])]


def _coco_dataset(root: Path) -> Path:
    """A tiny generated dataset labelled with COCO's 80 names (boxes use classes 0-2: person, bicycle, car)
    and, like coco8 and many users' datasets, no test split."""
    data = make_yolo_dataset(root, n_train=6, n_val=2, n_test=0, size=tuple(IMGSZ))
    for kind in ("images", "labels"):
        (data / kind / "test").rmdir()
    (data / "data.yaml").write_text(yaml.safe_dump({"path": str(data), "train": "images/train", "val": "images/val",
                                                    "names": dict(enumerate(_coco_names()))}))
    return data


def _train_with_ultralytics(cfg: str, data: Path, out: Path) -> Path:
    """``yolo train`` — Ultralytics' own trainer and CLI, as a user runs it — for one tiny epoch."""
    yolo = shutil.which("yolo", path=str(Path(sys.executable).parent)) or shutil.which("yolo")
    if yolo is None:
        pytest.skip("Ultralytics' `yolo` command is not installed")
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_CONFIG_DIR": str(out / "cfgdir")}
    cmd = [yolo, "train", f"model={cfg}", f"data={data / 'data.yaml'}", "epochs=1", "imgsz=64", "batch=2",
           "workers=0", "device=cpu", f"project={out}", "name=run", "exist_ok=True", "plots=False", "amp=False",
           "pretrained=False", "val=False", "seed=0"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    weights = out / "run" / "weights"
    best = weights / "best.pt" if (weights / "best.pt").is_file() else weights / "last.pt"
    assert best.is_file(), sorted(p.name for p in weights.iterdir())
    return best


def _cli(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "pruning_tools.cli", *argv], env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module", params=[("yolov8n.yaml", "yolov8n"), ("yolo11n.yaml", "yolo11n")],
                ids=["yolov8n", "yolo11n"])
def byo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A user's route, checked step by step: ``yolo train`` -> evaluate -> import-model -> prune -> export."""
    from pruning_tools import ultralytics_adapter as ua

    cfg, family = request.param
    tmp_path = tmp_path_factory.mktemp(family)
    data = _coco_dataset(tmp_path / "ds")
    best = _train_with_ultralytics(cfg, data, tmp_path / "ul")
    # without --trust-pickle: one line naming the flag, exit 2
    res = _cli("evaluate", "--model", str(best), "--data", str(data), "--split", "val", "--imgsz", *map(str, IMGSZ),
               "--no-progress")
    assert res.returncode == 2 and "--trust-pickle" in res.stderr and len(res.stderr.strip().splitlines()) == 1, \
        res.stderr
    # with it: the model's own 80 classes; the KITTI columns through the COCO class map
    out = tmp_path / "eval.json"
    res = _cli("evaluate", "--model", str(best), "--data", str(data), "--split", "val", "--imgsz", *map(str, IMGSZ),
               "--no-progress", "--trust-pickle", "--json", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    ev = json.loads(out.read_text())
    assert "NaN" not in out.read_text()
    assert ev["n_images"] == 2
    # convert once; the result loads without unpickling and records where it came from
    dst = tmp_path / "imported.pt"
    res = _cli("import-model", str(best), "--out", str(dst), "--trust-pickle")
    assert res.returncode == 0, res.stderr[-2000:]
    model, meta = ua.load_checkpoint(dst)
    assert meta["family"] == ua.model_family(model) == family
    assert meta["class_names"] == ua.class_names(model) == _coco_names() and meta["nc"] == 80
    assert meta["source"] == best.name and meta["source_sha256"] == sha256_file(best)
    assert tuple(ua.raw_forward(model, ua.example_input(tuple(IMGSZ))).shape[:2]) == (1, 84)
    # prune (tiny config, one method) straight from the Ultralytics file
    run = tmp_path / "run"
    pcfg = {"name": "byo", "levels": [0.5], "round_to": 8, "trials": 1, "methods": ["importance"],
            "data": {"dataset": str(data), "imgsz": IMGSZ, "val_images": 2, "test_images": 2},
            "importance": {"batches": 1, "batch": 2, "channel_choice": "gradient"},
            "finetune": {"prune_steps": 1, "steps_per_prune": 1, "final_steps": 1, "batch": 2, "crop_width": None,
                         "checkpoint_every": 1, "bn_batches": 1},
            "latency": {"runs": 1, "warmup": 0}}
    (tmp_path / "prune.yaml").write_text(yaml.safe_dump(pcfg))
    res = _cli("prune", "--config", str(tmp_path / "prune.yaml"), "--out", str(run), "--baseline", str(best),
               "--no-progress")
    assert res.returncode == 2 and "--trust-pickle" in res.stderr, res.stderr[-2000:]
    res = _cli("prune", "--config", str(tmp_path / "prune.yaml"), "--out", str(run), "--baseline", str(best),
               "--trust-pickle", "--no-progress")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    table = (run / "table.md").read_text()
    assert "val split (the dataset has no test split" in table
    assert json.loads((run / "results.json").read_text())["report_split"] == "val"
    assert "PPO" not in table and "reward evaluations" not in table  # no search ran: none claimed
    pruned = [c for c in json.loads((run / "summary.json").read_text())["checkpoints"] if c["method"] == "importance"]
    pm, _ = ua.load_checkpoint(run / pruned[0]["path"])
    assert ua.class_names(pm) == _coco_names() and ua.model_family(pm) == family
    # export: the method defaults to the best the run has; the manifest names the family and 80 classes
    zoo = tmp_path / "zoo"
    res = _cli("export", "--run", str(run), "--zoo", str(zoo), "--quick", "--no-progress", "--backends", "onnxruntime")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "it/s]" not in res.stderr and "%|" not in res.stderr  # --no-progress: no bars at all
    manifest = json.loads((zoo / "manifest.json").read_text())
    assert manifest["model_family"] == family and manifest["class_names"] == _coco_names()
    assert manifest["data"]["method"] == "importance"
    return {"family": family, "data": data, "zoo": zoo, "manifest": manifest}


@pytest.mark.slow
def test_ultralytics_best_pt_zoo_evaluates_with_the_kitti_class_map(byo: dict) -> None:
    """A zoo level (ONNX Runtime) evaluated KITTI-style: the COCO names mapped by the class map."""
    level = byo["manifest"]["artifacts"][-1]["level"]  # the ladder may drop a level not faster than dense
    out = byo["zoo"].parent / f"eval_{level}.json"
    res = _cli("evaluate", "--model", str(byo["zoo"] / "manifest.json"), "--level", level, "--data",
               str(byo["data"]), "--split", "val", "--no-progress", "--json", str(out),
               "--class-map", "car=Car,person=Pedestrian,bicycle=Cyclist")
    assert res.returncode == 0, res.stderr[-2000:]
    ev = json.loads(out.read_text())
    assert set(ev["classes"]) >= {"Car", "Pedestrian", "Cyclist"} and ev["n_images"] == 2


@pytest.mark.slow
@pytest.mark.ros
def test_node_serves_the_byo_zoo_with_its_80_classes(byo: dict) -> None:
    """Real node process over real DDS on the exported zoo: a frame in, detections named by COCO's classes out."""
    pytest.importorskip("rclpy")
    import numpy as np

    from sparse_perception.node.ros_convert import detections_from_msg
    from sparse_perception.tools.node_client import DetectorClient, image_msg
    from sparse_perception.tools.testing import managed_process, python_cmd

    cmd = python_cmd("-m", "sparse_perception.node.detector_node", "--ros-args", "-p",
                     f"engine_manifest:={byo['zoo'] / 'manifest.json'}", "-p", "autostart:=true",
                     "-p", "confidence_threshold:=0.000001", "-p", "image_reliability:=reliable")
    img = np.random.default_rng(1).integers(0, 255, (IMGSZ[0], IMGSZ[1], 3), dtype=np.uint8)
    with managed_process(cmd) as node:
        client = DetectorClient(image_topic="image_raw")
        try:
            assert client.wait_ready(90, shape=tuple(IMGSZ)), node.output()[-3000:]
            client.publish(image_msg(img, 5_000_000_000))
            msg = client.wait_for_stamp(5_000_000_000, 30)
        finally:
            client.close()
    assert msg is not None, node.output()[-3000:]
    boxes, scores, names = detections_from_msg(msg)
    assert len(names) > 0 and set(names) <= set(_coco_names()), names[:10]


def _pickled_ultralytics(path: Path, cfg: str, nc: int) -> Path:
    """An Ultralytics-style checkpoint (a pickled ``DetectionModel`` under ``model``, as ``best.pt`` holds it)."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=nc, verbose=False)
    model.names = {i: f"class{i}" for i in range(nc)}
    torch.save({"model": model, "epoch": -1}, path)
    return path


def test_import_model_needs_trust_pickle_and_records_the_source(tmp_path: Path) -> None:
    from pruning_tools import ultralytics_adapter as ua
    from pruning_tools.train.import_model import main

    src = _pickled_ultralytics(tmp_path / "best.pt", "yolo11n.yaml", 5)
    assert main([str(src), "--out", str(tmp_path / "m.pt")]) == 2 and not (tmp_path / "m.pt").exists()
    assert main([str(src), "--out", str(tmp_path / "m.pt"), "--trust-pickle"]) == 0
    model, meta = ua.load_checkpoint(tmp_path / "m.pt")  # weights_only from now on
    assert meta["family"] == "yolo11n" and meta["nc"] == 5 and meta["class_names"] == [f"class{i}" for i in range(5)]
    assert meta["source"] == "best.pt" and meta["source_sha256"] == sha256_file(src)
    assert ua.model_family(ua.build_model("yolov5n.yaml")) == "yolov5nu"
    assert ua.model_family(ua.build_model("yolov8n.yaml")) == "yolov8n"


def test_train_baseline_init_from_takes_the_family_and_refuses_a_poor_fit(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    from pruning_tools import ultralytics_adapter as ua
    from pruning_tools.train.baseline import main

    data = make_yolo_dataset(tmp_path / "ds", n_train=2, n_val=1, n_test=1, size=tuple(IMGSZ))
    src = _pickled_ultralytics(tmp_path / "best.pt", "yolov8n.yaml", 80)
    base = ["--data", str(data), "--steps", "1", "--batch", "1", "--imgsz", *map(str, IMGSZ), "--eval-split", "",
            "--no-progress", "--save-every", "0"]
    assert main(base + ["--out", str(tmp_path / "a.pt"), "--init-from", str(src)]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    # the wrong family: most tensors would be dropped -> refused, saying how many
    assert main(base + ["--out", str(tmp_path / "b.pt"), "--init-from", str(src), "--trust-pickle",
                        "--cfg", "yolov5n.yaml"]) == 2
    err = capsys.readouterr().err
    assert "dropped" in err and "yolov8n.yaml" in err and not (tmp_path / "b.pt").exists()
    # no --cfg: the checkpoint's own family; only the classification branch (its width follows nc: 36 of 403
    # tensors) does not fit
    assert main(base + ["--out", str(tmp_path / "c.pt"), "--init-from", str(src), "--trust-pickle"]) == 0
    model, meta = ua.load_checkpoint(tmp_path / "c.pt")
    assert ua.model_family(model) == "yolov8n" and meta["cfg"] == "yolov8n.yaml"
    assert meta["init"]["skipped"] == 36 and ua.class_names(model) == ["Car", "Pedestrian", "Cyclist"]
    side = (tmp_path / "c.json").read_text()
    assert "NaN" not in side and "Infinity" not in side


def test_strict_json_writes_null_for_nan_and_inf(tmp_path: Path) -> None:
    import numpy as np

    from pruning_tools.data.files import strict_dumps, write_json

    obj = {"a": float("nan"), "b": [np.float32("inf"), 1.5], "c": np.array([np.nan, 2.0]), "d": Path("x")}
    assert json.loads(strict_dumps(obj)) == {"a": None, "b": [None, 1.5], "c": [None, 2.0], "d": "x"}
    write_json(tmp_path / "r.json", obj)
    assert "NaN" not in (tmp_path / "r.json").read_text() and "Infinity" not in (tmp_path / "r.json").read_text()


def test_export_method_defaults_to_the_best_present(tmp_path: Path) -> None:
    from pruning_tools.quant.export import ExportError, default_method

    (tmp_path / "summary.json").write_text(json.dumps({"checkpoints": [{"method": "uniform"}, {"method": "importance"}]}))
    assert default_method(tmp_path) == "importance"
    (tmp_path / "summary.json").write_text(json.dumps({"checkpoints": []}))
    with pytest.raises(ExportError, match="methods present: none"):
        default_method(tmp_path)


def test_report_split_falls_back_to_val_without_a_test_split(tmp_path: Path) -> None:
    from pruning_tools.data.yolo import report_split

    assert report_split(make_yolo_dataset(tmp_path / "a", n_train=1, n_val=1, n_test=1, size=(32, 96))) == "test"
    assert report_split(make_yolo_dataset(tmp_path / "b", n_train=1, n_val=1, n_test=0, size=(32, 96))) == "val"
