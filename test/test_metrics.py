"""COCO-style mAP against hand-computed cases."""
import numpy as np
import pytest

from sparse_perception.runtime.metrics import MapAccumulator, ap_from_pr

GT = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 80, 90]], float)


def test_perfect_is_one_and_wrong_is_zero() -> None:
    acc = MapAccumulator(2, ["a", "b"])
    acc.add(GT, [0.9, 0.8, 0.7], [0, 1, 0], GT, [0, 1, 0], condition="day_clear")
    r = acc.compute()
    assert r["map50_95"] == pytest.approx(1.0) and r["map50"] == pytest.approx(1.0)
    assert r["by_condition"]["day_clear"]["n_images"] == 1
    wrong = MapAccumulator(2)
    wrong.add(GT + 200, [0.9, 0.8, 0.7], [0, 1, 0], GT, [0, 1, 0])
    assert wrong.compute()["map50_95"] == 0.0


def test_known_pr_curve() -> None:
    # TP, FP, TP over 2 GT: precision envelope 1.0 up to recall .5, 2/3 up to recall 1
    ap = ap_from_pr(np.array([True, False, True]), np.array([0.9, 0.8, 0.7]), 2)
    assert ap == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101)


def test_ignore_and_missing_classes() -> None:
    acc = MapAccumulator(3)
    # prediction on an ignored box: no FP; ignored GT not a miss; class 2 has no GT -> excluded
    acc.add(GT[:2], [0.9, 0.8], [0, 0], GT[:2], [0, 0], gt_ignore=[False, True])
    r = acc.compute()
    assert r["map50_95"] == pytest.approx(1.0)
    assert np.isnan(r["per_class"]["2"]["ap50_95"]) and r["per_class"]["0"]["n_gt"] == 1


def test_rejects_bad_input() -> None:
    acc = MapAccumulator(2)
    with pytest.raises(ValueError):
        acc.add(GT, [0.9], [0, 0, 0], GT, [0, 0, 0])
    with pytest.raises(ValueError):
        acc.add(GT, [0.9, 0.8, 0.7], [0, 5, 0], GT, [0, 0, 0])


def test_matches_ultralytics_ap_per_class() -> None:
    metrics = pytest.importorskip("ultralytics.utils.metrics")
    rng = np.random.default_rng(0)
    acc = MapAccumulator(2)
    tps, confs, pcls, tcls = [], [], [], []
    for _ in range(20):
        g = rng.uniform(0, 200, (5, 2))
        gt = np.concatenate([g, g + rng.uniform(10, 60, (5, 2))], 1)
        gc = rng.integers(0, 2, 5)
        pred = gt + rng.normal(0, 4, gt.shape)
        pred = np.concatenate([pred, rng.uniform(0, 200, (2, 4)).clip(0)], 0)
        pred[:, 2:] = np.maximum(pred[:, 2:], pred[:, :2] + 1)
        pc = np.concatenate([gc, rng.integers(0, 2, 2)])
        ps = rng.uniform(0.1, 1, 7)
        acc.add(pred, ps, pc, gt, gc)
        tp = acc._records[-1][3]
        tps.append(tp), confs.append(ps), pcls.append(pc), tcls.append(gc)
    ours = acc.compute()
    res = metrics.ap_per_class(np.concatenate(tps), np.concatenate(confs), np.concatenate(pcls), np.concatenate(tcls))
    ap = res[5]  # (nc, 10)
    assert ours["map50_95"] == pytest.approx(float(ap.mean()), abs=0.02)
    assert ours["map50"] == pytest.approx(float(ap[:, 0].mean()), abs=0.02)


# ---------------------------------------------------------------- end to end against pycocotools
# Boxes in, mAP out: our matching *and* AP against COCO's own evaluator (pycocotools, pinned in
# requirements/lock.txt), which matches and integrates independently of this module.

def _coco_map(images: list[tuple], num_classes: int) -> tuple[float, float, dict[int, float]]:
    """(mAP50-95, mAP50, AP50-95 per class with ground truth) from pycocotools' COCOeval."""
    import contextlib
    import io

    coco_mod = pytest.importorskip("pycocotools.coco", reason="pycocotools is the independent reference")
    from pycocotools.cocoeval import COCOeval

    gts, dets = [], []
    for img_id, (pb, ps, pc, gb, gc) in enumerate(images, 1):
        for b, c in zip(gb, gc):
            w, h = b[2] - b[0], b[3] - b[1]
            gts.append({"id": len(gts) + 1, "image_id": img_id, "category_id": int(c) + 1,
                        "bbox": [float(b[0]), float(b[1]), float(w), float(h)], "area": float(w * h), "iscrowd": 0})
        for b, s, c in zip(pb, ps, pc):
            dets.append({"image_id": img_id, "category_id": int(c) + 1, "score": float(s),
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    gt = coco_mod.COCO()
    gt.dataset = {"images": [{"id": i} for i in range(1, len(images) + 1)], "annotations": gts,
                  "categories": [{"id": c + 1} for c in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(dets) if dets else coco_mod.COCO()
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [10_000]
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e12]], ["all"]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, 0]  # (T, R, K)
    per_class = {k: float(prec[:, :, k].mean()) for k in range(num_classes) if (prec[:, :, k] > -1).all()}
    ap50 = [float(prec[0, :, k].mean()) for k in per_class]
    return float(np.mean(list(per_class.values()))), float(np.mean(ap50)), per_class


def _ours(images: list[tuple], num_classes: int) -> dict:
    acc = MapAccumulator(num_classes)
    for pb, ps, pc, gb, gc in images:
        acc.add(np.asarray(pb, float).reshape(-1, 4), ps, pc, np.asarray(gb, float).reshape(-1, 4), gc)
    return acc.compute()


B = [[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 80, 90], [100, 0, 130, 20]]
HAND_CASES = {
    # one GT, one prediction at IoU 0.79: a TP at 0.50..0.75 (6 of 10 thresholds) -> 0.6 exactly
    "iou_0.79": ([([[0, 0, 10, 7.9]], [0.9], [0], [B[0]], [0])], 0.6),
    # a duplicate on the same GT is a false positive; it ranks below the TP, so AP stays 1
    "duplicate_below": ([([B[0], [0, 0, 10, 9.9]], [0.9, 0.5], [0, 0], [B[0]], [0])], 1.0),
    # the duplicate ranked above the better box takes the GT at low thresholds only
    "duplicate_above": ([([[0, 0, 10, 6], B[0]], [0.9, 0.5], [0, 0], [B[0]], [0])], None),
    # wrong class: FP for class 1, class 0 missed -> both 0
    "class_confusion": ([([B[0]], [0.9], [1], [B[0]], [0])], 0.0),
    # 2 GT, TP / FP / TP in score order -> hand-computed in test_known_pr_curve
    "tp_fp_tp": ([([B[0], [200, 200, 220, 220]], [0.9, 0.8], [0, 0], [B[0], B[1]], [0, 0]),
                  ([B[2]], [0.7], [0], [B[2]], [0])], None),
    # an image without GT contributes only false positives; one without predictions only misses
    "empty_images": ([([B[3]], [0.95], [0], [], []), ([], [], [], [B[1]], [1]),
                      ([B[1]], [0.6], [1], [B[1]], [1])], None),
    # greedy by score: the high-score box takes the GT it overlaps most, the second one the other GT
    "greedy_assignment": ([([[0, 0, 10, 10], [0, 0, 12, 10]], [0.9, 0.8], [0, 0], [[0, 0, 10, 10], [1, 0, 12, 10]],
                            [0, 0])], None),
}


@pytest.mark.parametrize("name", sorted(HAND_CASES))
def test_hand_made_cases_match_pycocotools_end_to_end(name: str) -> None:
    images, expected = HAND_CASES[name]
    ours = _ours(images, 2)
    ref, ref50, ref_cls = _coco_map(images, 2)
    assert ours["map50_95"] == pytest.approx(ref, abs=1e-9), (name, ours["per_class"], ref_cls)
    assert ours["map50"] == pytest.approx(ref50, abs=1e-9)
    for k, ap in ref_cls.items():
        assert ours["per_class"][str(k)]["ap50_95"] == pytest.approx(ap, abs=1e-9)
    if expected is not None:
        assert ours["map50_95"] == pytest.approx(expected, abs=1e-9)


def test_seeded_scenes_match_pycocotools_end_to_end() -> None:
    """30 images, 3 classes: jittered true boxes, duplicates, class swaps, background boxes and misses."""
    rng = np.random.default_rng(11)
    images = []
    for _ in range(30):
        n = int(rng.integers(0, 7))
        xy = rng.uniform(0, 300, (n, 2))
        gb = np.concatenate([xy, xy + rng.uniform(8, 80, (n, 2))], 1)
        gc = rng.integers(0, 3, n)
        keep = rng.random(n) < 0.8  # some GT missed
        pb = gb[keep] + rng.normal(0, 1.5, (int(keep.sum()), 4))
        pc = np.where(rng.random(int(keep.sum())) < 0.1, (gc[keep] + 1) % 3, gc[keep])
        dup = pb[: int(rng.integers(0, 2))] + 2.0
        bg_xy = rng.uniform(0, 300, (int(rng.integers(0, 3)), 2))
        bg = np.concatenate([bg_xy, bg_xy + 20], 1)
        pb = np.concatenate([pb, dup, bg]).reshape(-1, 4)
        pb[:, 2:] = np.maximum(pb[:, 2:], pb[:, :2] + 1)
        pc = np.concatenate([pc, pc[: len(dup)], rng.integers(0, 3, len(bg))]).astype(int)
        images.append((pb, rng.uniform(0.05, 1, len(pb)), pc, gb, gc))
    ours = _ours(images, 3)
    ref, ref50, _ = _coco_map(images, 3)
    assert 0.2 < ref < 0.95  # a scene that exercises both hits and misses
    assert ours["map50_95"] == pytest.approx(ref, abs=1e-9) and ours["map50"] == pytest.approx(ref50, abs=1e-9)
