"""COCO-style mAP against hand-computed cases."""
import numpy as np
import pytest

from sparse_perception.metrics import MapAccumulator, ap_from_pr

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
