"""Process-level twins of the launch tests: the real ``detector_node`` process over real DDS.

Each test starts ``detector_node`` (the console script's module) as a subprocess with
``--ros-args`` parameters, and drives it from this process with rclpy
(``sparse_perception/tools/node_client.py``): lifecycle services, images, the swap service,
parameters, driving conditions. Twins of test/test_detector_launch.py (same behaviours).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
from helpers import detector_checks as checks  # noqa: E402
from helpers.detector_checks import frame  # noqa: E402
from sparse_perception.tools.node_client import DetectorClient, image_msg, stamp_ns  # noqa: E402

from sparse_perception.tools.testing import ManagedProcess, managed_process, python_cmd, wait_for  # noqa: E402

pytestmark = pytest.mark.ros


def node_cmd(*params: str, params_file: Path | None = None, namespace: str = "") -> list[str]:
    """``detector_node --ros-args -p k:=v ...`` for this interpreter (in ``namespace`` when given)."""
    args = ["--ros-args", "--log-level", "detector:=info"]
    if namespace:
        args += ["-r", f"__ns:={namespace}"]
    if params_file is not None:
        args += ["--params-file", str(params_file)]
    for p in params:
        args += ["-p", p]
    return python_cmd("-m", "sparse_perception.node.detector_node", *args)


@pytest.fixture
def client():
    c = DetectorClient()
    yield c
    c.close()


def _fail(proc: ManagedProcess, what: str) -> str:
    return f"{what}; node output:\n{proc.output()[-4000:]}"


@pytest.fixture(scope="module")
def active_node(test_zoo: Path):
    """One autostarted node on the test zoo, shared by the data-path tests of this module."""
    with managed_process(node_cmd(f"engine_manifest:={test_zoo}", "autostart:=true",
                                  "diagnostics_period_s:=0.5")) as proc:
        yield proc


def test_lifecycle_transitions_keep_engines_through_deactivate(test_zoo: Path, client: DetectorClient) -> None:
    with managed_process(node_cmd("engine_manifest:=/nonexistent/manifest.json")) as proc:
        assert client.state() == "unconfigured", _fail(proc, "not unconfigured at start")
        resp = client.set_sparsity("s50")
        assert not resp.success and "not configured" in resp.message
        # bad parameters -> configure FAILS with a logged reason, node stays unconfigured
        assert not client.change_state("configure")
        assert client.state() == "unconfigured"
        assert proc.wait_for_output("configure failed", 5), _fail(proc, "no configure error logged")
        assert "/nonexistent/manifest.json" in proc.output()
        assert client.set_parameter("engine_manifest", str(test_zoo))[0]
        assert client.change_state("configure"), _fail(proc, "configure failed")
        assert client.state() == "inactive"
        assert wait_for(lambda: client.latest_status() is not None, 10), "no latched engine_status"
        assert sorted(client.latest_status().available_levels) == ["dense", "s50", "s75"]
        assert client.change_state("activate") and client.state() == "active"
        assert client.wait_ready(), _fail(proc, "no detections while active")
        client.publish(image_msg(frame(1), 1_000))
        assert client.wait_for_stamp(1_000) is not None, _fail(proc, "no detections while active")
        assert client.change_state("deactivate") and client.state() == "inactive"
        # engines stay loaded: swapping works while inactive, and no frames are processed
        resp = client.set_sparsity("s75")
        assert resp.success and resp.active_level == "s75", resp.message
        client.publish(image_msg(frame(2), 2_000))
        assert client.wait_for_stamp(2_000, timeout=1.5) is None, "inactive node published detections"
        assert client.change_state("activate")
        assert client.wait_ready(), _fail(proc, "no detections after reactivation")
        client.publish(image_msg(frame(3), 3_000))
        assert client.wait_for_stamp(3_000) is not None
        assert wait_for(lambda: client.latest_status().level == "s75", 5)
        assert client.change_state("deactivate") and client.change_state("cleanup")
        assert client.state() == "unconfigured"
        assert "engines freed" in proc.output()
        assert not client.set_sparsity("dense").success
        assert client.change_state("shutdown")
        assert wait_for(lambda: not proc.alive(), 15), _fail(proc, "node did not exit after shutdown")
        assert proc.proc.returncode == 0, _fail(proc, f"exit code {proc.proc.returncode}")


def test_50_swaps_during_1000_frames_lose_and_duplicate_nothing(active_node: ManagedProcess) -> None:
    client = DetectorClient(name="swap_storm_client")
    try:
        checks.check_swaps_lossless(client, frames=1000, swaps=50)  # swap timing lives in bench/node_bench.py
    except AssertionError as exc:
        raise AssertionError(_fail(active_node, str(exc))) from exc
    finally:
        client.close()


def test_free_running_10hz_stream_with_a_swap_every_200ms_each_frame_names_its_level(
        active_node: ManagedProcess) -> None:
    client = DetectorClient(name="free_running_client")
    try:
        checks.check_free_running_swaps(client, seconds=6.0, frame_hz=10.0, swap_period_s=0.2)
    except AssertionError as exc:
        raise AssertionError(_fail(active_node, str(exc))) from exc
    finally:
        client.close()


def test_a_burst_of_frames_reaches_the_image_callback_whole(active_node: ManagedProcess) -> None:
    """Frames that arrive together all reach the image callback, where newest-wins is counted: the subscription
    keeps SensorData's depth 5 (REP 2003). With depth 1 the reader replaced all but the last one or two of
    such a burst before the callback took them (docs/node.md, "Frames lost before the callback")."""
    from rclpy.qos import QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import Image

    client = DetectorClient(name="burst_client")
    try:
        counters = checks.node_counters(client)
        assert client.wait_ready(), _fail(active_node, "no detections")
        # a camera-like writer that keeps its last 5 frames (SensorData's depth), reliable so nothing is lost on
        # the way: whatever the node misses is the node's
        pub = client.node.create_publisher(Image, client.image_pub.topic_name, QoSProfile(
            depth=5, history=QoSHistoryPolicy.KEEP_LAST, reliability=QoSReliabilityPolicy.RELIABLE))
        assert wait_for(lambda: pub.get_subscription_count() >= 1, 10), "the node's image subscription never matched"
        before = counters()
        stamps = [20_000_000_000 + k * 1_000_000 for k in range(5)]
        for k, ns in enumerate(stamps):  # back to back: all five are in flight before the first is answered
            pub.publish(image_msg(frame(500 + k), ns))
        client.wait_for_stamp(stamps[-1], timeout=10)
        answered = {stamp_ns(d.header) for d in client.received()} & set(stamps)
        delta = {k: v - before[k] for k, v in counters().items()}
        assert delta["frames_received"] == 5, _fail(active_node, f"the callback took {delta} of a 5-frame burst")
        checks.check_frame_accounting(delta, answered=len(answered), sent=5)
        assert stamps[-1] in answered, "the newest frame of the burst was not answered"
    finally:
        client.close()


def test_malformed_images_logged_node_keeps_running(active_node: ManagedProcess) -> None:
    client = DetectorClient(name="malformed_client")
    try:
        checks.check_malformed_images(client, active_node.wait_for_output, active_node.alive)
    except AssertionError as exc:
        raise AssertionError(_fail(active_node, str(exc))) from exc
    finally:
        client.close()


def test_unknown_level_rejected_and_parameter_swap(active_node: ManagedProcess) -> None:
    client = DetectorClient(name="swap_client")
    try:
        checks.check_unknown_level_and_parameter_swap(client)
    finally:
        client.close()


def test_engine_status_is_latched_for_late_subscribers(active_node: ManagedProcess) -> None:
    checks.check_latched_status(lambda name: DetectorClient(name=name))


def test_diagnostics_report_latency_fps_and_drops(active_node: ManagedProcess) -> None:
    from diagnostic_msgs.msg import DiagnosticArray

    client = DetectorClient(name="diag_client")
    got: list[DiagnosticArray] = []
    lock = threading.Lock()

    def on_diag(msg: DiagnosticArray) -> None:
        with lock:
            got.append(msg)

    try:
        client.node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
        assert client.wait_ready()
        for i in range(5):
            client.publish(image_msg(frame(i, 32, 96), 9_000_000_000 + i))
            client.wait_for_stamp(9_000_000_000 + i)
        assert wait_for(lambda: len(got) >= 2, 10)
        values = {kv.key: kv.value for kv in got[-1].status[0].values}
        for key in ("latency_p50_ms", "latency_p95_ms", "fps", "frames_dropped", "active_level", "callback_errors"):
            assert key in values, values
        # the engine actually running, not a fixed "cpu" (the test zoo is ONNX Runtime on the CPU)
        assert (values["backend"], values["device"]) == ("onnxruntime", "cpu"), values
        assert got[-1].status[0].hardware_id == "onnxruntime:cpu"
        assert float(values["latency_p95_ms"]) >= float(values["latency_p50_ms"]) > 0
    finally:
        client.close()


# ---------------------------------------------------------------------------------- ground truth
#: Floors for recall and precision at IoU 0.5 (Car/Pedestrian/Cyclist, conf 0.25) of the shipped baseline
#: (model_path, 384x1248) on the replayed generated sequence (seed 11, 40 frames). Measured 2026-11-30 with
#: the baseline trained on real KITTI + generated frames: 231 of 310 boxes found, 257 predictions -> recall
#: 0.745, precision 0.899 (deterministic for given weights; the node's output equals EnginePool's on the same
#: images). The floors leave ~0.15 of margin for other CPUs' arithmetic (docs/node.md, "Ground-truth test").
GT_RECALL_FLOOR = 0.60
GT_PRECISION_FLOOR = 0.75


def match_counts(pred: tuple, gt: tuple, iou_thres: float = 0.5) -> tuple[int, int, int]:
    """Greedy same-class matching by score: (true positives, predictions, ground-truth boxes)."""
    pb, ps, pn = pred
    gb, _, gn = gt
    if not len(gb) or not len(pb):
        return 0, len(pb), len(gb)
    from sparse_perception.runtime.metrics import box_iou

    iou = box_iou(pb, gb)
    used, tp = set(), 0
    for i in np.argsort(-ps):
        for j in np.argsort(-iou[i]):
            if iou[i, j] < iou_thres:
                break
            if j not in used and pn[i] == gn[j]:
                used.add(j)
                tp += 1
                break
    return tp, len(pb), len(gb)


@pytest.fixture(scope="session")
def gt_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped baseline exported to ONNX at the node's real input shape 384x1248."""
    from helpers.zoo_builder import BASELINE, load_weights

    if not BASELINE.is_file():
        pytest.skip(f"shipped baseline {BASELINE} absent")
    from pruning_tools import ultralytics_adapter as ua

    model, _ = load_weights()
    return ua.export_onnx(model.eval(), tmp_path_factory.mktemp("gt_model") / "baseline.onnx", imgsz=(384, 1248),
                          class_names=ua.class_names(model))


#: Ground-truth classes scored (the shipped baseline's classes; Van, Truck, ... are not targets).
GT_CLASSES = ("Car", "Pedestrian", "Cyclist")
GT_IMAGE_TOPIC = "/kitti/camera_color_left/image_raw"
#: Replay speed of the GT test: the bag's 10 Hz slowed down so that a loaded 2-core machine answers
#: every frame (the node keeps only the newest frame; throughput is bench/node_bench.py's job).
GT_REPLAY_RATE = 0.25


def read_bag(bag: Path) -> tuple[dict[int, np.ndarray], dict[int, tuple[np.ndarray, np.ndarray, list[str]]]]:
    """Images (BGR, via image_codec) and ``/kitti/ground_truth`` (boxes xyxy, scores, names in
    :data:`GT_CLASSES`) of a bag, read with rosbags, keyed by header stamp (ns)."""
    from sparse_perception.tools.bag_types import typestore
    from sparse_perception.node.image_codec import image_to_bgr
    from sparse_perception.tools.replay import open_bag
    from sparse_perception.node.ros_convert import detections_from_msg

    store, reader = typestore(), open_bag(bag)
    images, gts = {}, {}
    try:
        conns = [c for c in reader.connections if c.topic in ("/kitti/ground_truth", GT_IMAGE_TOPIC)]
        for conn, _, raw in reader.messages(connections=conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            if conn.topic == GT_IMAGE_TOPIC:
                images[ns] = image_to_bgr(msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian)
                continue
            boxes, scores, names = detections_from_msg(msg)
            keep = [i for i, n in enumerate(names) if n in GT_CLASSES]
            gts[ns] = (boxes[keep], scores[keep], [names[i] for i in keep])
    finally:
        reader.close()
    return images, gts


def replay_into_node(model: Path, bag: Path, namespace: str, stamps: set[int], timeout: float) -> dict[int, tuple]:
    """Start the node on ``model`` (``image_reliability: reliable``), replay ``bag`` into it at
    :data:`GT_REPLAY_RATE` and return its detections by stamp; at least 90 % of ``stamps`` must be answered."""
    from sparse_perception.node.ros_convert import detections_from_msg

    with managed_process(node_cmd(f"model_path:={model}", "autostart:=true", "image_reliability:=reliable",
                                  f"image_topic:={GT_IMAGE_TOPIC}", namespace=namespace)) as node:
        client = DetectorClient(namespace=namespace, name=f"{namespace.strip('/')}_client", image_topic=GT_IMAGE_TOPIC)
        try:
            assert client.wait_ready(60, shape=(375, 1242)), _fail(node, "detector not ready")
            with managed_process(python_cmd("-m", "sparse_perception.cli", "replay", str(bag),
                                            "--rate", str(GT_REPLAY_RATE))) as replay:
                assert wait_for(lambda: not replay.alive(), timeout), "replay did not finish"
                assert replay.proc.returncode == 0, replay.output()
            time.sleep(2.0)
            dets = {stamp_ns(m.header): detections_from_msg(m) for m in client.received()}
        finally:
            client.close()
    dets = {ns: d for ns, d in dets.items() if ns in stamps}
    assert len(dets) >= 0.9 * len(stamps), _fail(node, f"{len(dets)} of {len(stamps)} frames answered")
    return dets


def recall_at_05(preds: dict[int, tuple], gts: dict[int, tuple]) -> tuple[float, int, int, int]:
    """:return: (recall at IoU 0.5, true positives, predictions, ground-truth boxes) over the stamps of ``preds``."""
    tp = n_pred = n_gt = 0
    for ns, pred in preds.items():
        t, p, g = match_counts(pred, gts[ns])
        tp, n_pred, n_gt = tp + t, n_pred + p, n_gt + g
    return tp / max(n_gt, 1), tp, n_pred, n_gt


@pytest.mark.slow
def test_detections_match_ground_truth_on_replayed_sequence(tmp_path: Path, gt_model: Path) -> None:
    """Generated 40-frame sequence -> bag -> ``sparse-perception replay`` -> node: every frame is answered,
    the node's detections equal the runtime's on the bag's own images, and recall@0.5 is above the floor."""
    kitti = pytest.importorskip("pruning_tools.data", reason="KITTI generator (data helper) not installed")
    pytest.importorskip("sparse_perception.tools.replay", reason="replay tool not installed")
    from sparse_perception.runtime.engine_pool import EnginePool, RuntimeConfig

    drive = kitti.generate_dataset(tmp_path / "seq", frames=40, seed=11, sequence=True, segment_frames=10,
                                   progress=False)
    bag = kitti.raw_drive_to_bag(drive, tmp_path / "bag", progress=False)
    images, gts = read_bag(bag)
    assert len(gts) == len(images) == 40, f"{len(images)} images, {len(gts)} ground-truth messages in {bag}"
    dets = replay_into_node(gt_model, bag, "/gt", set(gts), timeout=120)
    # the node adds nothing and loses nothing: same boxes as the runtime on the same images
    pool = EnginePool.from_model(gt_model, RuntimeConfig(conf_thres=0.25, iou_thres=0.45, max_det=300))
    try:
        offline = {ns: pool.detect(images[ns]) for ns in dets}
    finally:
        pool.close()
    for ns, (boxes, scores, names) in dets.items():
        ref = offline[ns]
        assert names == [ref.class_names[c] for c in ref.class_ids], f"stamp {ns}: classes differ from the runtime"
        np.testing.assert_allclose(boxes, ref.boxes, atol=1e-2, err_msg=f"stamp {ns}: boxes differ")
        np.testing.assert_allclose(scores, ref.scores, atol=1e-5, err_msg=f"stamp {ns}: scores differ")
    recall, tp, n_pred, n_gt = recall_at_05(dets, gts)
    print(f"GT: frames {len(dets)}, gt boxes {n_gt}, predictions {n_pred}, tp {tp}, recall@0.5 {recall:.3f}, "
          f"precision {tp / max(n_pred, 1):.3f}")
    assert n_gt > 0, "generated sequence has no ground-truth boxes"
    assert recall >= GT_RECALL_FLOOR, f"recall@0.5 {recall:.3f} < floor {GT_RECALL_FLOOR}"
    precision = tp / max(n_pred, 1)
    assert precision >= GT_PRECISION_FLOOR, f"precision@0.5 {precision:.3f} < floor {GT_PRECISION_FLOOR}"


# ---------------------------------------------------------------------------------- a real drive
REAL_FRAMES = "data/kitti_raw_frames/2011_09_26"
REAL_CALIB_DAY = "data/kitti_raw/2011_09_26_calib/2011_09_26"
#: Floors for the real KITTI raw drive (78 consecutive frames of dense city traffic, no labels) through the
#: node with the shipped baseline at 384x1248, conf 0.25: the fraction of frames with at least one Car and
#: the mean number of Car detections per frame. Measured 2026-11-30 (EnginePool on the 78 frames, which the
#: node equals): every frame has a Car, 4-7 per frame, mean 5.35; the baseline trained on generated scenes
#: only found almost none (real Car AP 0.04).
REAL_CAR_FRAMES_FLOOR = 0.95
REAL_CARS_PER_FRAME_FLOOR = 4.0


@pytest.mark.slow
def test_real_kitti_drive_replayed_through_node_detects_cars(tmp_path: Path, gt_model: Path, shared_dir: Path) -> None:
    """78 real KITTI raw frames -> ``kitti to-bag --rate 10`` -> ``replay`` -> node: every frame is answered and
    cars are found in the frames (floors measured with the shipped baseline)."""
    pytest.importorskip("sparse_perception.tools.replay", reason="replay tool not installed")
    from pruning_tools.data.cli import main as kitti_main

    bag = tmp_path / "real_drive"
    assert kitti_main(["to-bag", "--raw-drive", str(shared_dir / REAL_FRAMES), "--rate", "10", "--calib",
                       str(shared_dir / REAL_CALIB_DAY), "--out", str(bag), "--no-progress"]) == 0
    images, _ = read_bag(bag)
    assert len(images) == 78
    dets = replay_into_node(gt_model, bag, "/real", set(images), timeout=180)
    cars = [sum(1 for n in names if n == "Car") for _, _, names in dets.values()]
    with_car = sum(1 for c in cars if c) / len(cars)
    per_frame = sum(cars) / len(cars)
    print(f"real drive: {len(dets)} frames answered, {with_car:.3f} with a Car, {per_frame:.2f} Car detections/frame")
    assert with_car >= REAL_CAR_FRAMES_FLOOR, f"only {with_car:.2f} of the frames have a Car detection"
    assert per_frame >= REAL_CARS_PER_FRAME_FLOOR, f"{per_frame:.2f} Car detections per frame"


# ---------------------------------------------------------------------------------- auto mode
#: Score-table policy of the auto-mode test: s75 on clear days, dense at night in fog, s50 at dusk in rain.
AUTO_SCORES = {"day_clear": {"dense": 0.5, "s50": 0.6, "s75": 0.9},
               "night_fog": {"dense": 0.9, "s50": 0.5, "s75": 0.2},
               "dusk_rain": {"dense": 0.55, "s50": 0.6, "s75": 0.3}}


def write_score_table(path: Path, levels: tuple[str, ...], scores: dict[str, dict[str, float]]) -> Path:
    """Write a ``score_table`` policy and check that :meth:`SparsityPolicy.load` reads it back as written."""
    import json

    from sparse_perception.runtime.conditions import Condition
    from sparse_perception.runtime.policy import SparsityPolicy

    path.write_text(json.dumps({"kind": "score_table", "levels": list(levels), "scores": scores}))
    policy = SparsityPolicy.load(path)
    assert policy.kind == "score_table" and policy.levels == list(levels)
    for key, row in scores.items():
        assert policy.decide(Condition.from_key(key), levels[0]) == max(row, key=row.get), key
    return path


def test_auto_mode_follows_driving_condition_until_a_manual_call(test_zoo: Path, tmp_path: Path) -> None:
    """Policy (``sparse_perception.runtime.policy`` score table, hysteresis 2): day_clear -> s75, night_fog ->
    dense, dusk_rain -> s50; one disagreeing decision does not switch; a manual call pins the level
    until ``level: "auto"``."""
    from sparse_perception.runtime.conditions import Condition
    from sparse_perception.node.ros_convert import condition_to_msg

    policy = write_score_table(tmp_path / "policy.json", checks.LEVELS, AUTO_SCORES)
    with managed_process(node_cmd(f"engine_manifest:={test_zoo}", "autostart:=true", "policy_mode:=auto",
                                  f"policy_path:={policy}", "cooldown_s:=0.0", "hysteresis:=2",
                                  "initial_level:=s50", namespace="/auto")) as node:
        client = DetectorClient(namespace="/auto", name="auto_client")
        try:
            assert wait_for(lambda: client.latest_status() is not None, 20), _fail(node, "no engine_status")
            assert client.latest_status().mode == "auto" and client.latest_status().level == "s50"

            def send(key: str) -> None:
                client.condition_pub.publish(condition_to_msg(Condition.from_key(key)))

            def drive(key: str, expect: str) -> None:
                assert wait_for(lambda: (send(key), client.latest_status().level)[1] == expect, 10, period=0.2), \
                    _fail(node, f"{key}: level stayed {client.latest_status().level}")
                assert client.latest_status().mode == "auto"

            drive("day_clear", "s75")
            # hysteresis 2: one night_fog decision is not enough, the second one switches
            time.sleep(0.5)  # let any day_clear still in flight arrive first
            send("night_fog")
            assert not node.wait_for_output("policy (night_fog)", 1.5), _fail(node, "switched on one decision")
            assert client.latest_status().level == "s75"
            send("night_fog")
            assert wait_for(lambda: client.latest_status().level == "dense", 5), _fail(node, "no switch on the 2nd")
            assert client.set_sparsity("s50").success  # manual call: policy no longer in charge
            assert client.latest_status().mode == "manual"
            for _ in range(5):
                send("day_clear")
                time.sleep(0.1)
            time.sleep(0.5)
            assert client.latest_status().level == "s50", "policy overrode a manual choice"
            resp = client.set_sparsity("auto")
            assert resp.success, resp.message
            assert wait_for(lambda: client.latest_status().mode == "auto", 5), "mode not back to auto"
            drive("day_clear", "s75")
            drive("dusk_rain", "s50")
        finally:
            client.close()
        # what launch does on shutdown: SIGINT to the active node -> clean exit with 0 (twin of assertExitCodes)
        code = node.stop()
        assert code == 0, f"exit code {code} after SIGINT; output:\n{node.log_path.read_text()[-3000:]}"


def test_configure_fails_when_the_policy_names_levels_not_preloaded(test_zoo: Path, tmp_path: Path) -> None:
    policy = write_score_table(tmp_path / "policy.json", checks.LEVELS, AUTO_SCORES)
    with managed_process(node_cmd(f"engine_manifest:={test_zoo}", "allowed_levels:=[dense, s50]",
                                  "policy_mode:=auto", f"policy_path:={policy}", namespace="/polcfg")) as proc:
        client = DetectorClient(namespace="/polcfg", name="policy_cfg_client")
        try:
            assert not client.change_state("configure")
            assert proc.wait_for_output("configure failed", 10), _fail(proc, "no configure error logged")
            assert "policy levels ['s75'] are not preloaded" in proc.output(), _fail(proc, "reason not logged")
            assert client.state() == "unconfigured"
        finally:
            client.close()


def test_latched_status_carries_live_inference_mean_and_every_swap_is_logged(active_node: ManagedProcess) -> None:
    """Honest status (issue 24 item 4): mean_inference_ms moves while frames flow; a parameter swap is logged."""
    client = DetectorClient(name="honest_status_client")
    try:
        assert client.wait_ready(), _fail(active_node, "node answered no frame")
        for i in range(5):
            client.publish(image_msg(frame(i, 32, 96), 11_000_000_000 + i))
            client.wait_for_stamp(11_000_000_000 + i)
        assert wait_for(lambda: client.latest_status() is not None and client.latest_status().mean_inference_ms > 0,
                        10), _fail(active_node, f"latched status kept {client.latest_status()}")
        late = DetectorClient(name="honest_status_late")  # a late subscriber gets the live mean too
        try:
            assert wait_for(lambda: late.latest_status() is not None, 10)
            assert late.latest_status().mean_inference_ms > 0
        finally:
            late.close()
        for level in ("s50", "dense"):
            ok, reason = client.set_parameter("sparsity_level", level)
            assert ok, reason
            assert active_node.wait_for_output(f"sparsity_level parameter: active level {level!r}", 10), \
                _fail(active_node, f"no log line for the parameter swap to {level}")
    finally:
        client.close()


#: Score table covering every condition: s75 by day, s50 at dusk, dense at night (any weather).
LIGHT_SCORES = {f"{light}_{w}": {"dense": d, "s50": 0.6, "s75": s}
                for light, d, s in (("day", 0.5, 0.9), ("dusk", 0.55, 0.3), ("night", 0.9, 0.2))
                for w in ("clear", "rain", "fog")}


def test_auto_mode_with_the_condition_estimator_and_no_condition_topic(test_zoo: Path, tmp_path: Path) -> None:
    """``condition_source: estimator``: nothing publishes driving_condition; the node estimates the condition
    from generated day and night frames, publishes it on ``~/estimated_condition`` and the policy follows it."""
    import cv2

    from pruning_tools.data.generator import generate_dataset
    from sparse_perception_msgs.msg import DrivingCondition

    imgs = {}
    for light in ("day", "night"):
        generate_dataset(tmp_path / light, 1, seed=7, conditions=[f"{light}_clear"], progress=False)
        imgs[light] = cv2.imread(str(next((tmp_path / light / "training" / "image_2").glob("*.png"))))
    policy = write_score_table(tmp_path / "policy.json", checks.LEVELS, LIGHT_SCORES)
    with managed_process(node_cmd(f"engine_manifest:={test_zoo}", "autostart:=true", "policy_mode:=auto",
                                  f"policy_path:={policy}", "cooldown_s:=0.0", "hysteresis:=1",
                                  "initial_level:=s50", "condition_source:=estimator", namespace="/est")) as node:
        client = DetectorClient(namespace="/est", name="est_client")
        got: list[DrivingCondition] = []
        client.node.create_subscription(DrivingCondition, "/est/detector/estimated_condition", got.append, 10)
        try:
            assert wait_for(lambda: client.latest_status() is not None, 20), _fail(node, "no engine_status")
            assert client.latest_status().level == "s50"
            assert client.condition_pub.get_subscription_count() == 0, "estimator mode still subscribes"
            ns = [1_000]

            def drive(light: str, level: str, code: int) -> None:
                def step() -> bool:
                    ns[0] += 1_000
                    client.publish(image_msg(imgs[light], ns[0]))
                    return bool(got) and got[-1].illumination == code and client.latest_status().level == level
                assert wait_for(step, 30, period=0.2), \
                    _fail(node, f"{light}: estimates {[m.illumination for m in got[-5:]]}, "
                                f"level {client.latest_status().level}")

            drive("day", "s75", DrivingCondition.ILLUMINATION_DAY)
            drive("night", "dense", DrivingCondition.ILLUMINATION_NIGHT)
            assert got[-1].header.stamp.sec == 0 and got[-1].header.stamp.nanosec > 1_000  # the image's stamp
            assert 0.0 <= got[-1].ambient_light < 0.5 and client.latest_status().mode == "auto"
        finally:
            client.close()


def test_unknown_condition_source_fails_configure(test_zoo: Path) -> None:
    with managed_process(node_cmd(f"engine_manifest:={test_zoo}", "condition_source:=camera",
                                  namespace="/badsrc")) as proc:
        client = DetectorClient(namespace="/badsrc", name="badsrc_client")
        try:
            assert not client.change_state("configure")
            assert proc.wait_for_output("configure failed", 10), _fail(proc, "no configure error logged")
            assert "parameter 'condition_source' must be one of ('topic', 'estimator'), got 'camera'" in proc.output()
        finally:
            client.close()


@pytest.mark.slow
def test_a_full_size_camera_at_10_hz_is_answered_while_inference_takes_tens_of_ms(tmp_path: Path) -> None:
    """The image path (docs/node.md): a 1242x375 camera at 10 Hz into a dense 384x1248 FP32 engine (tens of
    ms per frame on 2 cores). Inference inside the executor's image callback answered about half of such
    frames, in bursts; with the hand-off to the inference thread every frame the node keeps up with is
    answered, and an overwritten frame is counted as dropped.

    Checked: by the node's own counters every frame is answered or counted as dropped. No count bound: on a
    quiet machine the hand-off answered 60 of 60 where the callback-bound path answered 46 and 42, but one
    fresh-clone run lost 16 of 60 before the callback with inference inside the period: under load this client's
    keep-last-1 writer replaces frames not yet delivered (docs/node.md, "Frames lost before the callback")."""
    from helpers.zoo_builder import build_zoo

    zoo = build_zoo(tmp_path / "zoo", imgsz=(384, 1248), levels=(("dense", 0.0),))
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (375, 1242, 3), dtype=np.uint8)
    with managed_process(node_cmd(f"engine_manifest:={zoo}", "autostart:=true", "image_reliability:=reliable",
                                  "threads:=2", "diagnostics_period_s:=0.5", namespace="/fullsize")) as node:
        client = DetectorClient(namespace="/fullsize", name="fullsize_client")
        try:
            counters = checks.node_counters(client)
            assert client.wait_ready(shape=(375, 1242)), _fail(node, "no detections")
            before = counters()
            t0 = time.monotonic()
            stamps = [10_000_000_000 + k * 100_000_000 for k in range(60)]
            for k, ns in enumerate(stamps):  # 6 s of camera at 10 Hz, on time
                while time.monotonic() < t0 + 0.1 * k:
                    time.sleep(0.001)
                client.publish(image_msg(img, ns))
            client.wait_for_stamp(stamps[-1], timeout=5)
            answered = {stamp_ns(d.header) for d in client.received()} & set(stamps)
            after = counters()
            delta = {k: after[k] - before[k] for k in after}
            checks.check_frame_accounting(delta, answered=len(answered), sent=60)
            # No count bound: in a fresh-clone `make test` (2026-12-03) the callback took only 44 of 60 frames
            # (16 publication gaps before it) with inference inside the period — under load the client's keep-last-1
            # writer replaces undelivered frames (docs/node.md, "Frames lost before the callback"), so only the
            # accounting is checked here.
            assert len(answered) > 0, _fail(node, f"nothing answered: {delta}")
        finally:
            client.close()
