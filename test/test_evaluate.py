"""EvalSet / evaluate_detector on a tiny generated YOLO-format dataset."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pruning_tools.evaluate import EvalSet, evaluate_detector


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
