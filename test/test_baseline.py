"""``pruning-tools train-baseline`` and the shipped baseline checkpoint."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from helpers.tiny_data import make_yolo_dataset
from pruning_tools.train import baseline
from pruning_tools import ultralytics_adapter as ua

ASSET = Path(__file__).resolve().parent.parent / "pruning_tools" / "assets" / "baseline_yolov5n.pt"


def test_train_baseline_tiny_run_writes_checkpoint_and_sidecar(tmp_path: Path) -> None:
    data = make_yolo_dataset(tmp_path / "ds", n_train=4, n_val=1, n_test=1, size=(64, 192))
    out = tmp_path / "b.pt"
    rc = baseline.main(["--data", str(data), "--out", str(out), "--steps", "2", "--batch", "2", "--imgsz", "64", "192",
                        "--crop-width", "0", "--eval-split", "", "--no-progress", "--data-command", "made by test"])
    assert rc == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["sha256"] == baseline.sha256_file(out)
    assert side["class_names"] == ["Car", "Pedestrian", "Cyclist"] and side["data_command"] == "made by test"
    assert "train-baseline" in side["training_command"]
    raw = torch.load(out, weights_only=True)
    assert raw["storage"] == "fp16"
    model, meta = ua.load_checkpoint(out)
    assert meta["train"]["steps"] == 2 and next(model.parameters()).dtype == torch.float32


def test_empty_dataset_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images" / "train").mkdir(parents=True)
    assert baseline.main(["--data", str(tmp_path), "--out", str(tmp_path / "x.pt"), "--no-progress"]) == 2
    assert "empty" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple:
            import os

            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        baseline.load_yolov5_repo_state(path)


def test_yolov5_repo_weights_map_onto_backbone(shared_dir: Path) -> None:
    model = ua.build_model("yolov5n.yaml")
    counts = baseline.init_from(model, shared_dir / "weights" / "yolov5n.pt")
    assert counts["copied"] >= 340  # model.0-23 match, only the detect head differs


def test_shipped_baseline_is_consistent() -> None:
    if not ASSET.is_file():
        pytest.skip("baseline asset not trained yet")
    side = json.loads(ASSET.with_suffix(".json").read_text())
    assert side["sha256"] == baseline.sha256_file(ASSET)
    assert ASSET.stat().st_size < 8_000_000
    model, meta = ua.load_checkpoint(ASSET)
    assert ua.class_names(model) == side["class_names"] == ["Car", "Pedestrian", "Cyclist"]
    assert 0.0 < side["metrics"]["map50_95"] <= side["metrics"]["map50"] <= 1.0
    y = ua.raw_forward(model, ua.example_input((384, 1248)))
    assert tuple(y.shape) == (1, 7, 9828)


#: Floors of the shipped baseline re-measured in the tests (values measured when it was trained: its JSON and
#: docs/pruning.md, "Baseline"). Real: KITTI AP|R40, moderate cut, on the 25 real test frames it never saw
#: (measured Car 0.702, Pedestrian 0.395).
REAL_TEST_CAR_AP_FLOOR = 0.60
REAL_TEST_PED_AP_FLOOR = 0.30
#: mAP50-95 on 12 generated frames (seed 5, test half) that no model was trained on: measured 0.383
#: (mAP50 0.549) on 2026-11-30.
GEN_MAP_FLOOR = 0.30


@pytest.mark.slow
def test_shipped_baseline_remeasured_on_real_test_frames(shared_dir: Path) -> None:
    """Re-measure (not read) the shipped baseline on the real KITTI test frames of its own split file."""
    if not ASSET.is_file():
        pytest.skip("baseline asset not trained yet")
    from pruning_tools.train.evaluate import load_detector, real_eval_frames

    split = ASSET.parent / "kitti_real_split.json"
    frames = real_eval_frames(shared_dir / "data" / "kitti_object", split_file=split, split="test")
    res = frames.evaluate(load_detector(ASSET))
    side = json.loads(ASSET.with_suffix(".json").read_text())
    assert side["real_splits"]["test"] == json.loads(split.read_text())["test"]
    assert not set(side["real_splits"]["test"]) & set(side["real_splits"]["train"])
    recorded = side["real_metrics"]["test"]["classes"]
    for name in ("Car", "Pedestrian"):
        assert res["classes"][name]["ap_kitti"] == pytest.approx(recorded[name]["ap_kitti"], abs=0.02), name
    assert res["classes"]["Car"]["ap_kitti"] >= REAL_TEST_CAR_AP_FLOOR
    assert res["classes"]["Pedestrian"]["ap_kitti"] >= REAL_TEST_PED_AP_FLOOR


@pytest.mark.slow
def test_shipped_baseline_remeasured_on_fresh_generated_frames(tmp_path: Path) -> None:
    """Generated scenes it never saw (seed 5): mAP above the floor."""
    if not ASSET.is_file():
        pytest.skip("baseline asset not trained yet")
    from pruning_tools.data import convert_kitti, generate_dataset
    from pruning_tools.train.evaluate import evaluate_model

    generate_dataset(tmp_path / "kitti", frames=24, seed=5, progress=False)
    yolo = convert_kitti(tmp_path / "kitti", tmp_path / "yolo", split=(0.5, 0.0, 0.5), progress=False)
    model, _ = ua.load_checkpoint(ASSET)
    res = evaluate_model(model, yolo, "test")
    assert res["map50_95"] >= GEN_MAP_FLOOR, res["map50_95"]


def test_init_from_ultralytics_pickle_needs_trust(tmp_path: Path) -> None:
    from ultralytics.nn.tasks import DetectionModel

    path = tmp_path / "u.pt"
    torch.save({"model": DetectionModel("yolov8n.yaml", nc=3, verbose=False)}, path)
    model = ua.build_model("yolov8n.yaml")
    with pytest.raises(ua.TrustPickleRequired, match="--trust-pickle"):
        baseline.init_from(model, path)
    assert baseline.init_from(model, path, trust_pickle=True)["copied"] > 300


TRACKING_SPLIT = ASSET.parent / "kitti_tracking_split.json"


def test_shipped_tracking_split_is_by_time_with_gaps() -> None:
    """The shipped tracking split: one unbroken run of frames per part, in time order, >= 5 frames apart."""
    seq_spans = {s: baseline.tracking_split_range(TRACKING_SPLIT, s) for s in ("train", "val", "test")}
    assert {seq for seq, _ in seq_spans.values()} == {"0000"}
    (_, tr), (_, va), (_, te) = seq_spans["train"], seq_spans["val"], seq_spans["test"]
    assert tr[0] == 0 and va[0] - tr[1] > 5 and te[0] - va[1] > 5 and te[1] == 153


def test_tracking_split_range_refuses_broken_runs(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"train": ["0000_000000", "0000_000002"], "val": [], "test": ["0001_000005"]}))
    with pytest.raises(ValueError, match="not consecutive"):
        baseline.tracking_split_range(path, "train")
    with pytest.raises(ValueError, match="empty"):
        baseline.tracking_split_range(path, "val")
    assert baseline.tracking_split_range(path, "test") == ("0001", (5, 5))
    path.write_text(json.dumps({"train": ["000000"]}))
    with pytest.raises(ValueError, match="SSSS_NNNNNN"):
        baseline.tracking_split_range(path, "train")


def test_eval_only_records_tracking_val_and_test(tmp_path: Path, shared_dir: Path) -> None:
    """--real-eval-tracking measures the real tracking frames of each split (a short split here) into the JSON."""
    root = shared_dir / "data" / "kitti_tracking"
    if not (root / "training" / "label_02" / "0000.txt").is_file():
        pytest.skip(f"{root}: tracking sequence 0000 not present")
    data = make_yolo_dataset(tmp_path / "ds", n_train=2, n_val=1, n_test=1, size=(64, 192))
    out = tmp_path / "b.pt"
    assert baseline.main(["--data", str(data), "--out", str(out), "--steps", "1", "--batch", "1", "--imgsz", "64", "192",
                          "--crop-width", "0", "--eval-split", "", "--no-progress"]) == 0
    split = tmp_path / "trk.json"
    split.write_text(json.dumps({"train": ["0000_000000"], "val": ["0000_000130", "0000_000131"],
                                 "test": ["0000_000150", "0000_000151", "0000_000152"]}))
    assert baseline.main(["--data", str(data), "--out", str(out), "--eval-only", "--eval-split", "", "--imgsz", "64", "192",
                          "--real-eval-tracking", str(root), "--tracking-splits", str(split), "--no-progress"]) == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["tracking_splits"]["test"] == ["0000_000150", "0000_000151", "0000_000152"]
    val, test = side["real_metrics_tracking"]["val"], side["real_metrics_tracking"]["test"]
    assert (val["n_images"], test["n_images"]) == (2, 3)
    assert "frames 130-131" in val["data"] and "frames 150-152" in test["data"]
    assert test["classes"]["Cyclist"]["n_gt"] >= 1  # the sequence's cyclist is in every frame
    before = (baseline.sha256_file(out), out.with_suffix(".json").read_text())
    assert baseline.main(["--data", str(data), "--out", str(out), "--eval-only", "--eval-split", "",
                          "--real-eval-tracking", str(root), "--no-progress"]) == 2  # no split: refused, before writing
    assert (baseline.sha256_file(out), out.with_suffix(".json").read_text()) == before
