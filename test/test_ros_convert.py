"""Converters and node configuration without a ROS graph (no DDS, no processes)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("sparse_perception_msgs")
from std_msgs.msg import Header  # noqa: E402

from sparse_perception.node import ros_convert as rc  # noqa: E402
from sparse_perception.runtime.conditions import Condition  # noqa: E402
from sparse_perception.node.node_config import NodeConfig, build_controller  # noqa: E402
from sparse_perception.runtime.frame_stats import FrameStats  # noqa: E402


def _result(boxes, scores, ids):
    return SimpleNamespace(boxes=np.asarray(boxes, np.float32).reshape(-1, 4), scores=np.asarray(scores, np.float32),
                           class_ids=np.asarray(ids, np.int64), class_names=("Car", "Pedestrian", "Cyclist"))


def test_detections_keep_header_class_names_and_boxes() -> None:
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    arr = rc.to_detections(_result([[10, 20, 30, 60], [0, 0, 4, 2]], [0.9, 0.5], [0, 2]), header)
    assert arr.header.frame_id == "cam" and arr.header.stamp.nanosec == 345
    assert [d.results[0].class_id for d in arr.detections] == ["Car", "Cyclist"]
    assert all(d.header.stamp.sec == 12 for d in arr.detections)
    d = arr.detections[0].bbox
    assert (d.center_x, d.center_y, d.size_x, d.size_y, d.theta) == (20.0, 40.0, 20.0, 40.0, 0.0)
    boxes, scores, names = rc.detections_from_msg(arr)
    np.testing.assert_allclose(boxes, [[10, 20, 30, 60], [0, 0, 4, 2]])
    np.testing.assert_allclose(scores, [0.9, 0.5], rtol=1e-6)
    assert names == ["Car", "Cyclist"]


def test_empty_result_still_gives_an_array() -> None:
    arr = rc.to_detections(_result(np.zeros((0, 4)), [], []), Header(frame_id="x"))
    assert arr.detections == [] and arr.header.frame_id == "x"
    assert (arr.level, arr.engine_time_ms) == ("", 0.0)  # a result without level/timing


def test_detections_carry_level_and_engine_time() -> None:
    res = _result([[1, 2, 3, 4]], [0.7], [1])
    res.level, res.timing = "s75", {"total_ms": 12.25, "inference_ms": 10.0}
    arr = rc.to_detections(res, Header(frame_id="cam"))
    assert arr.level == "s75" and arr.engine_time_ms == pytest.approx(12.25)


def test_condition_round_trip_and_bad_codes() -> None:
    cond = Condition("night", "fog", visibility_m=80.0, ambient_light=0.1, ego_speed_mps=12.0, scene_density=3.0)
    back = rc.condition_from_msg(rc.condition_to_msg(cond))
    assert back.key == "night_fog" and back.visibility_m == pytest.approx(80.0)
    msg = rc.condition_to_msg(cond)
    msg.weather = 7
    with pytest.raises(ValueError, match="weather"):
        rc.condition_from_msg(msg)


def test_engine_status_and_diagnostics_fields() -> None:
    st = rc.engine_status({"level": "s75", "sparsity": 0.75, "precision": "fp32", "backend": "onnxruntime",
                           "device": "cpu", "sha256": "a" * 64}, "auto", ["dense", "s75"], 1_500_000_000, 0.01)
    assert (st.level, st.mode, st.artifact_sha256, st.available_levels) == ("s75", "auto", "a" * 64, ["dense", "s75"])
    assert st.last_swap_time.sec == 1 and st.last_swap_time.nanosec == 500_000_000
    diag = rc.diagnostics("detector", "cpu", {"fps": 9.87654, "frames_dropped": 0})
    values = {kv.key: kv.value for kv in diag.status[0].values}
    assert values == {"fps": "9.877", "frames_dropped": "0"}


@pytest.mark.parametrize("params, match", [
    ({}, "exactly one"),
    ({"engine_manifest": "a", "model_path": "b"}, "exactly one"),
    ({"model_path": "m", "backend": "tflite"}, "backend"),
    ({"model_path": "m", "confidence_threshold": 1.5}, "confidence_threshold"),
    ({"model_path": "m", "policy_mode": "auto", "policy_path": "p"}, "engine zoo"),
    ({"engine_manifest": "z", "policy_mode": "auto"}, "policy_path"),
    ({"model_path": "m", "image_reliability": "sometimes"}, "image_reliability"),
    ({"model_path": "m", "hysteresis": -1.0}, "hysteresis"),
    ({"model_path": "m", "hysteresis": "3"}, "hysteresis"),
    ({"model_path": "m", "cooldown_s": -1.0}, "cooldown_s"),
    ({"model_path": "m", "unknown_key": 1}, "unknown detector parameters"),
])
def test_node_config_rejects_bad_parameters(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NodeConfig.from_params(params)


def test_node_config_declares_every_field() -> None:
    cfg = NodeConfig.from_params({"engine_manifest": "z", "allowed_levels": ["", "s50"]})
    assert cfg.allowed_levels == ("s50",)
    names = [n for n, _, _ in NodeConfig.parameters()]
    assert "sparsity_level" in names and len(names) == len(set(names))


def test_frame_stats_counts_sequence_gaps_as_drops() -> None:
    stats = FrameStats()
    for seq in (1, 2, 5, 6, 6, 10):  # 3,4 and 7,8,9 overwritten in the depth-1 queue; 6 repeated
        stats.on_received("pub", seq)
    stats.on_received("other", 1)
    stats.on_error()
    for ms in (10.0, 20.0, 30.0):
        stats.on_processed(ms, ms - 2)
    snap = stats.snapshot()
    assert (snap["frames_received"], snap["frames_dropped"], snap["frames_bad"]) == (7, 5, 1)
    assert snap["latency_p50_ms"] == pytest.approx(20.0) and snap["inference_p50_ms"] == pytest.approx(18.0)


def test_image_messages_decode_through_the_codec() -> None:
    """Raw (rgb8, padded rows) and compressed messages -> BGR; malformed ones name the problem."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    bgr = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    padded = np.zeros((4, 5 * 3 + 3), np.uint8)
    padded[:, :15] = rgb.reshape(4, 15)
    msg = rc.bgr_to_image(rgb, Header(), "rgb8")
    msg.step, msg.data = 18, padded.tobytes()
    np.testing.assert_array_equal(rc.image_to_bgr(msg), bgr)
    ok, png = cv2.imencode(".png", bgr)
    assert ok
    np.testing.assert_array_equal(rc.image_to_bgr(CompressedImage(format="png", data=png.tobytes())), bgr)
    with pytest.raises(ValueError, match="yuv_unknown"):
        rc.image_to_bgr(rc.bgr_to_image(bgr, Header(), "yuv_unknown"))
    short = rc.bgr_to_image(bgr, Header())
    short.data = bytes(short.data)[:10]
    with pytest.raises(ValueError, match="bytes"):
        rc.image_to_bgr(short)
    with pytest.raises(ValueError, match="jpeg"):
        rc.image_to_bgr(CompressedImage(format="jpeg", data=b"not an image"))


def _score_table(path, levels, scores):
    import json

    path.write_text(json.dumps({"kind": "score_table", "levels": list(levels), "scores": scores}))
    return str(path)


def test_build_controller_loads_the_policy_and_checks_its_levels(tmp_path) -> None:
    from sparse_perception.runtime.policy import PolicyController

    scores = {"day_clear": {"dense": 0.1, "s75": 0.9}, "night_fog": {"dense": 0.9, "s75": 0.1}}
    path = _score_table(tmp_path / "p.json", ["dense", "s75"], scores)
    assert build_controller(NodeConfig(engine_manifest="z"), ["dense", "s75"], "dense") is None
    cfg = NodeConfig.from_params({"engine_manifest": "z", "policy_mode": "auto", "policy_path": path,
                                  "hysteresis": 2, "cooldown_s": 0.0})
    assert cfg.hysteresis == 2.0 and isinstance(cfg.hysteresis, float)
    ctl = build_controller(cfg, ["dense", "s50", "s75"], "dense")
    assert isinstance(ctl, PolicyController) and ctl.mode == "auto" and ctl.current == "dense"
    day = Condition.from_key("day_clear")
    assert [ctl.update(day, t) for t in (0.0, 1.0)] == [None, "s75"]  # hysteresis 2
    manual = build_controller(NodeConfig(engine_manifest="z", policy_path=path), ["dense", "s75"], "dense")
    assert manual.mode == "manual" and manual.update(day, 0.0) is None
    with pytest.raises(ValueError, match=r"policy levels \['s75'\] are not preloaded"):
        build_controller(cfg, ["dense", "s50"], "dense")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="bad.json"):
        build_controller(NodeConfig(engine_manifest="z", policy_path=str(bad)), ["dense"], "dense")
