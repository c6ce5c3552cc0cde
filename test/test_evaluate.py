"""EvalSet / evaluate_detector on a tiny generated YOLO-format dataset."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pruning_tools.train.evaluate import EvalSet, evaluate_detector


def _dataset(root: Path) -> list[tuple[float, float, float, float]]:
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [Car, Pedestrian]\n")
    boxes = []
    conds = {}
    for i in range(3):
        cv2.imwrite(str(root / "images" / "val" / f"{i:06d}.png"), np.full((375, 1242, 3), 40 * i, np.uint8))
        b = (0.3 + 0.1 * i, 0.5, 0.1, 0.2)
        boxes.append(b)
        (root / "labels" / "val" / f"{i:06d}.txt").write_text(f"{i % 2} {b[0]} {b[1]} {b[2]} {b[3]}\n")
        conds[f"{i:06d}"] = "day_clear" if i < 2 else "night_fog"
    (root / "conditions.json").write_text(json.dumps(conds))
    return boxes


def test_oracle_detector_scores_one(tmp_path: Path) -> None:
    boxes = _dataset(tmp_path)
    es = EvalSet(tmp_path, "val", progress=False)
    assert len(es) == 3 and es.class_names == ["Car", "Pedestrian"]
    by_batch = {}
    for i, it in enumerate(es.items):
        cx, cy, w, h = boxes[i]
        s, px, py = it.info.scale, it.info.pad_x, it.info.pad_y
        raw = np.zeros((1, 6, 4), np.float32)
        raw[0, :4, 0] = [cx * 1242 * s + px, cy * 375 * s + py, w * 1242 * s, h * 375 * s]
        raw[0, 4 + i % 2, 0] = 0.9
        by_batch[id(it.batch)] = raw
    r = es.evaluate(lambda b: by_batch[id(b)])
    assert r["map50_95"] == pytest.approx(1.0, abs=1e-6)
    assert set(r["by_condition"]) == {"day_clear", "night_fog"}
    empty = evaluate_detector(lambda b: np.zeros((1, 6, 4), np.float32), tmp_path, "val", progress=False, limit=2)
    assert empty["map50_95"] == 0.0 and empty["n_images"] == 2


def test_bad_label_names_line(tmp_path: Path) -> None:
    _dataset(tmp_path)
    (tmp_path / "labels" / "val" / "000001.txt").write_text("0 0.5 0.5\n")
    with pytest.raises(ValueError, match="000001.txt:1"):
        EvalSet(tmp_path, "val", progress=False)


def test_wrong_output_shape(tmp_path: Path) -> None:
    _dataset(tmp_path)
    with pytest.raises(ValueError, match="output shape"):
        evaluate_detector(lambda b: np.zeros((1, 9, 4), np.float32), tmp_path, progress=False)


# ------------------------------------------------------------------------ pruning-tools evaluate
@pytest.fixture(scope="module")
def kitti_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small KITTI object root (generated scenes: real layout, occlusion, truncation, DontCare)."""
    from pruning_tools.data import generate_dataset

    root = tmp_path_factory.mktemp("kitti") / "kitti"
    generate_dataset(root, frames=4, seed=21, progress=False)
    return root


def _coco_onnx(path: Path) -> Path:
    """An Ultralytics-layout ONNX with COCO-style class names (untrained: plumbing only)."""
    from pruning_tools import ultralytics_adapter as ua

    names = ["person", "bicycle", "car", "motorcycle", "truck"]
    model = ua.build_model("yolov5n.yaml", nc=len(names), class_names=names)
    return ua.export_onnx(model.eval(), path, imgsz=(96, 320), class_names=names)


def test_evaluate_cli_writes_the_documented_json(kitti_root: Path, tmp_path: Path) -> None:
    from pruning_tools.train.evaluate import main

    out = tmp_path / "res.json"
    assert main(["--kitti-root", str(kitti_root), "--json", str(out), "--no-progress"]) == 0  # shipped baseline
    res = json.loads(out.read_text())
    assert set(res["classes"]) == {"Car", "Pedestrian", "Cyclist"}
    for name, v in res["classes"].items():
        assert {"ap_kitti", "ap50", "ap50_95", "n_gt"} <= set(v)
        assert v["iou"] == (0.7 if name == "Car" else 0.5)
    assert res["n_images"] == 4 and "baseline_yolov5n.pt" in res["model"] and str(kitti_root) in res["data"]
    assert res["classes"]["Car"]["n_gt"] > 0
    assert 0.0 <= res["map50_95"] <= res["map50"] <= 1.0


def test_evaluate_cli_split_file_selects_frames(kitti_root: Path, tmp_path: Path) -> None:
    from pruning_tools.train.evaluate import main

    split = tmp_path / "split.json"
    split.write_text(json.dumps({"_about": "test", "train": ["000000", "000001"], "test": ["000002", "000003"]}))
    out = tmp_path / "res.json"
    assert main(["--kitti-root", str(kitti_root), "--split-file", str(split), "--split", "test",
                 "--json", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["n_images"] == 2


def test_evaluate_coco_onnx_through_the_class_map(kitti_root: Path, tmp_path: Path) -> None:
    from pruning_tools.train.evaluate import RealFrames, load_detector, main

    onnx = _coco_onnx(tmp_path / "coco.onnx")
    det = load_detector(onnx)
    assert det.input_hw == (96, 320) and det.class_names[:3] == ("person", "bicycle", "car")
    res = RealFrames.from_kitti_root(kitti_root).evaluate(det, {"truck": "Car"})
    assert res["class_map"] == {"person": "Pedestrian", "bicycle": "Cyclist", "car": "Car", "truck": "Car"}
    det.close()
    assert main(["--kitti-root", str(kitti_root), "--model", str(onnx), "--class-map", "bus=Car", "--no-progress"]) == 2
    assert main(["--kitti-root", str(kitti_root), "--model", str(onnx), "--class-map", "car=Vehicle",
                 "--no-progress"]) == 2


def test_evaluate_zoo_level_and_yolo_split(test_zoo: Path, kitti_root: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from pruning_tools.train.evaluate import main
    from pruning_tools.data import convert_kitti

    out = tmp_path / "zoo.json"
    assert main(["--kitti-root", str(kitti_root), "--model", str(test_zoo), "--level", "s50", "--json", str(out),
                 "--no-progress"]) == 0
    assert json.loads(out.read_text())["model"].endswith(":s50")
    assert main(["--kitti-root", str(kitti_root), "--model", str(test_zoo), "--no-progress"]) == 2
    assert "needs --level" in capsys.readouterr().err
    assert main(["--kitti-root", str(kitti_root), "--model", str(test_zoo), "--level", "s99", "--no-progress"]) == 2
    yolo = convert_kitti(kitti_root, tmp_path / "yolo", split=(0.5, 0.25, 0.25), progress=False)
    assert main(["--data", str(yolo), "--split", "train", "--json", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["n_images"] == 2


def test_evaluate_cli_bad_inputs(tmp_path: Path, kitti_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pruning_tools.train.evaluate import main

    assert main(["--kitti-root", str(tmp_path / "nope"), "--no-progress"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["--kitti-root", str(kitti_root), "--model", str(tmp_path / "x.pt"), "--no-progress"]) == 2
    (tmp_path / "m.txt").write_text("x")
    assert main(["--kitti-root", str(kitti_root), "--model", str(tmp_path / "m.txt"), "--no-progress"]) == 2
    assert "expected a checkpoint" in capsys.readouterr().err
    assert main(["--data", str(tmp_path), "--no-progress"]) == 2
    assert "needs --split" in capsys.readouterr().err
