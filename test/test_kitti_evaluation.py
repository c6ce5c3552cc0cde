"""KITTI-aware AP (pruning_tools.train.kitti_ap): hand-computed cases and pycocotools as reference."""
from __future__ import annotations

import numpy as np
import pytest

from pruning_tools.train.kitti_ap import R40, FrameTruth, KittiEvaluator, truth_from_kitti
from pruning_tools.data.kitti_io import parse_label_line


def truth(boxes, types, occluded=None, truncated=None, dontcare=()) -> FrameTruth:
    n = len(types)
    return FrameTruth(np.asarray(boxes, float).reshape(-1, 4), list(types),
                      np.zeros(n, int) if occluded is None else occluded,
                      np.zeros(n) if truncated is None else truncated,
                      dontcare=np.asarray(dontcare, float).reshape(-1, 4))


CAR_A = [100, 100, 200, 160]  # 60 px high
CAR_B = [300, 100, 400, 170]


def shifted(box, dx):
    return [box[0] + dx, box[1], box[2] + dx, box[3]]


def test_tp_fp_tp_gives_the_hand_computed_r40_and_r101_values() -> None:
    ev = KittiEvaluator()
    ev.add(truth([CAR_A, CAR_B], ["Car", "Car"]), [CAR_A, [600, 100, 700, 160], CAR_B], [0.9, 0.8, 0.7],
           ["Car"] * 3)
    car = ev.compute()["classes"]["Car"]
    # precision envelope: 1 up to recall 0.5, 2/3 up to recall 1
    assert car["ap_kitti"] == pytest.approx((20 * 1.0 + 20 * 2 / 3) / 40)
    assert car["ap50"] == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101)
    assert car["n_gt"] == 2 and car["iou"] == 0.7
    assert R40[0] == pytest.approx(1 / 40) and R40[-1] == 1.0


def test_car_needs_iou_07_but_pedestrian_05() -> None:
    # a 100 px wide box shifted by 20 px: IoU = 80 / 120 = 0.667
    ev = KittiEvaluator()
    ped = [500, 100, 600, 200]
    ev.add(truth([CAR_A, ped], ["Car", "Pedestrian"]), [shifted(CAR_A, 20), shifted(ped, 20)], [0.9, 0.9],
           ["Car", "Pedestrian"])
    res = ev.compute()["classes"]
    assert res["Car"]["ap_kitti"] == 0.0 and res["Car"]["ap50"] == pytest.approx(1.0)
    assert res["Pedestrian"]["ap_kitti"] == pytest.approx(1.0)
    assert np.isnan(res["Cyclist"]["ap_kitti"]) and res["Cyclist"]["n_gt"] == 0


def test_moderate_cut_neighbours_dontcare_and_low_detections_are_neither_tp_nor_fp() -> None:
    ev = KittiEvaluator()
    occluded = [700, 100, 800, 160]     # occlusion 2: fails moderate -> ignored
    truncated = [850, 100, 950, 160]    # truncation 0.5 -> ignored
    small = [1000, 100, 1040, 120]      # 20 px high -> ignored
    van = [1100, 100, 1200, 170]        # neighbouring class of Car
    dc = [0, 300, 200, 370]             # DontCare region
    t = truth([CAR_A, occluded, truncated, small, van], ["Car", "Car", "Car", "Car", "Van"],
              occluded=np.array([0, 2, 0, 0, 0]), truncated=np.array([0, 0, 0.5, 0, 0]), dontcare=[dc])
    dets = [CAR_A, occluded, truncated, small, van, [10, 310, 150, 360], [1300, 10, 1340, 30]]
    # every extra detection scores above the true positive: any counted as FP would lower AP below 1
    ev.add(t, dets, [0.1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9], ["Car"] * 7)
    car = ev.compute()["classes"]["Car"]
    assert car["n_gt"] == 1
    assert car["ap_kitti"] == pytest.approx(1.0) and car["ap50_95"] == pytest.approx(1.0)
    # the same detections without the ignore rules are false positives
    plain = KittiEvaluator(min_height=0, max_occlusion=3, max_truncation=1.0)
    plain.add(truth([CAR_A], ["Car"]), dets[:1] + [[1300, 200, 1400, 260]], [0.1, 0.9], ["Car", "Car"])
    assert plain.compute()["classes"]["Car"]["ap_kitti"] < 0.6


def test_miss_counts_and_duplicates_are_false_positives() -> None:
    ev = KittiEvaluator()
    ev.add(truth([CAR_A, CAR_B], ["Car", "Car"]), [CAR_A, CAR_A], [0.9, 0.8], ["Car", "Car"])
    car = ev.compute()["classes"]["Car"]
    # recall reaches only 0.5; precision 1 there: R40 covers 20 of 40 points
    assert car["ap_kitti"] == pytest.approx(0.5)


def test_truth_from_kitti_lines_separates_dontcare() -> None:
    lines = ["Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59",
             "DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10"]
    t = truth_from_kitti([parse_label_line(s) for s in lines])
    assert t.types == ["Car"] and t.dontcare.shape == (1, 4) and t.boxes.shape == (1, 4)


def test_rejects_inconsistent_sizes() -> None:
    with pytest.raises(ValueError, match="sizes differ"):
        KittiEvaluator().add(truth([CAR_A], ["Car"]), [CAR_A], [0.9, 0.8], ["Car"])
    with pytest.raises(ValueError, match="sizes differ"):
        FrameTruth(np.zeros((2, 4)), ["Car"], np.zeros(2), np.zeros(2))


def _random_case(seed: int, n_images: int = 12):
    rng = np.random.default_rng(seed)
    classes = ["Car", "Pedestrian", "Cyclist"]
    images = []
    for _ in range(n_images):
        g = int(rng.integers(0, 6))
        xy = rng.uniform(0, 900, (g, 2))
        wh = rng.uniform(30, 200, (g, 2))
        gt = np.concatenate([xy, xy + wh], 1)
        gcls = [classes[i] for i in rng.integers(0, 3, g)]
        dets, dcls = [], []
        for b, c in zip(gt, gcls):  # jittered copies (various IoUs), sometimes with the wrong class
            for _ in range(int(rng.integers(0, 3))):
                dets.append(b + rng.normal(0, rng.uniform(1, 25), 4) * np.array([1, 1, 1, 1]))
                dcls.append(c if rng.random() < 0.85 else classes[int(rng.integers(0, 3))])
        for _ in range(int(rng.integers(0, 4))):  # background false positives
            p = rng.uniform(0, 900, 2)
            dets.append(np.concatenate([p, p + rng.uniform(30, 150, 2)]))
            dcls.append(classes[int(rng.integers(0, 3))])
        dets = np.asarray(dets, float).reshape(-1, 4)
        dets[:, 3] = np.maximum(dets[:, 3], dets[:, 1] + 26)  # every detection passes the height cut
        dets[:, 2] = np.maximum(dets[:, 2], dets[:, 0] + 5)
        images.append((gt, gcls, dets, rng.uniform(0.01, 1, len(dets)), dcls))
    return classes, images


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ap50_and_ap50_95_match_pycocotools(seed: int) -> None:
    """Without ignore rules our AP50/AP50-95 equal COCOeval's (independent implementation)."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    classes, images = _random_case(seed)
    ev = KittiEvaluator(classes)
    gt_json = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}
    dt_json = []
    for img_id, (gt, gcls, dets, scores, dcls) in enumerate(images, 1):
        ev.add(truth(gt, gcls), dets, scores, dcls)
        gt_json["images"].append({"id": img_id, "width": 1242, "height": 1242})
        for b, c in zip(gt, gcls):
            w, h = b[2] - b[0], b[3] - b[1]
            gt_json["annotations"].append({"id": len(gt_json["annotations"]) + 1, "image_id": img_id,
                                           "category_id": classes.index(c) + 1, "bbox": [b[0], b[1], w, h],
                                           "area": w * h, "iscrowd": 0})
        for b, s, c in zip(dets, scores, dcls):
            dt_json.append({"image_id": img_id, "category_id": classes.index(c) + 1,
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": float(s)})
    coco = COCO()
    coco.dataset = gt_json
    coco.createIndex()
    ce = COCOeval(coco, coco.loadRes(dt_json), "bbox")
    ce.evaluate()
    ce.accumulate()
    prec = ce.eval["precision"]  # T x R x K x A x M
    ours = ev.compute()["classes"]
    compared = 0
    for k, c in enumerate(classes):
        p = prec[:, :, k, 0, -1]
        if ours[c]["n_gt"] == 0:
            continue
        assert ours[c]["ap50"] == pytest.approx(float(p[0].mean()), abs=1e-9), c
        assert ours[c]["ap50_95"] == pytest.approx(float(p.mean()), abs=1e-9), c
        compared += 1
    assert compared >= 2
