"""Image QoS that connects to any camera (sparse_perception/node/adaptive_qos.py, dds_profile.py).

The decision and the profile rules run without ROS; the node test starts a real detector_node
with default parameters and a camera (best effort, then reliable) that starts *after* it.
"""
from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sparse_perception.node.adaptive_qos import follow
from sparse_perception.node.dds_profile import PROFILE_VARIABLES, profile_env, profile_path

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("setting, current, pubs, want", [
    ("auto", "reliable", [], "reliable"),
    ("auto", "reliable", ["best_effort"], "best_effort"),
    ("auto", "best_effort", ["reliable"], "reliable"),
    ("auto", "reliable", ["reliable", "best_effort"], "best_effort"),
    ("auto", "best_effort", [], "best_effort"),  # the camera went away: keep what matched it
    ("reliable", "reliable", ["best_effort"], "reliable"),  # forced settings stay
    ("best_effort", "best_effort", ["reliable"], "best_effort"),
])
def test_follow_matches_the_publishers(setting: str, current: str, pubs: list[str], want: str) -> None:
    assert follow(setting, current, pubs) == want


def test_shipped_profile_is_a_32mb_shm_default_profile() -> None:
    root = ET.parse(REPO / "config" / "fastdds_profile.xml").getroot()
    ns = {"p": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    desc = root.find("p:transport_descriptors/p:transport_descriptor", ns)
    assert desc.find("p:type", ns).text == "SHM" and int(desc.find("p:segment_size", ns).text) >= 32 * 2 ** 20
    part = root.find("p:participant", ns)
    assert part.get("is_default_profile") == "true"
    assert part.find("p:rtps/p:useBuiltinTransports", ns).text == "false"
    assert "config/*.xml" in (REPO / "setup.py").read_text()  # installed beside the parameters


def test_profile_env_respects_a_user_choice_and_other_rmws() -> None:
    base = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES and k != "RMW_IMPLEMENTATION"}
    env = profile_env(base)
    assert env and all(Path(v) == profile_path() for v in env.values())
    assert profile_env({**base, "FASTRTPS_DEFAULT_PROFILES_FILE": "/mine.xml"}) == {}
    assert profile_env({**base, "FASTDDS_DEFAULT_PROFILES_FILE": ""}) == {}  # empty: the user opted out
    assert profile_env({**base, "RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) == {}


@pytest.mark.ros
def test_default_node_follows_a_camera_that_starts_later(test_zoo: Path) -> None:
    """Default parameters: a best-effort camera started after the node is answered; then a reliable one."""
    pytest.importorskip("rclpy")
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import Image

    from helpers.detector_checks import frame
    from sparse_perception.tools.node_client import DetectorClient, image_msg
    from sparse_perception.tools.testing import managed_process, python_cmd, wait_for

    cmd = python_cmd("-m", "sparse_perception.node.detector_node", "--ros-args", "-r", "__ns:=/qos_follow",
                     "-p", f"engine_manifest:={test_zoo}", "-p", "autostart:=true", "-p", "diagnostics_period_s:=0.5")
    with managed_process(cmd) as node:
        assert node.wait_for_output("active: subscribed", 90), node.output()[-3000:]
        client = DetectorClient(namespace="qos_follow", name="qos_follow_camera", subscribe_status=False)
        try:
            for k, policy in enumerate((QoSReliabilityPolicy.BEST_EFFORT, QoSReliabilityPolicy.RELIABLE)):
                pub = client.node.create_publisher(Image, "/qos_follow/image_raw",
                                                   QoSProfile(depth=5, reliability=policy))
                stamp = 5_000_000_000 + k * 1000

                def answered(stamp: int = stamp, pub=pub) -> bool:
                    pub.publish(image_msg(frame(k, 32, 96), stamp))
                    return client.wait_for_stamp(stamp, 0.3) is not None

                assert wait_for(answered, 20, period=0.1), \
                    f"{policy.name} camera never answered:\n{node.output()[-3000:]}"
                client.node.destroy_publisher(pub)
        finally:
            client.close()
        assert "image QoS: reliable -> best_effort" in node.output()


def test_profile_env_sets_only_the_variable_this_fastdds_reads(tmp_path: Path) -> None:
    """FastDDS 3 given both variables parses the profile twice (an XMLPARSER error in every process's log):
    a FastDDS 3 prefix gets FASTDDS_DEFAULT_PROFILES_FILE only, a FastDDS 2 one FASTRTPS_..., unknown both."""
    from sparse_perception.node.dds_profile import fastdds_major

    v3, v2, none = tmp_path / "kilted", tmp_path / "jazzy", tmp_path / "bare"
    for prefix, lib in ((v3, "libfastdds.so.3.2"), (v2, "libfastrtps.so.2.14")):
        (prefix / "lib").mkdir(parents=True)
        (prefix / "lib" / lib).write_bytes(b"")
    none.mkdir()
    assert fastdds_major([none, v3]) == 3 and fastdds_major([v2, v3]) == 2 and fastdds_major([none]) is None
    base = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES and k != "RMW_IMPLEMENTATION"}
    assert set(profile_env({**base, "AMENT_PREFIX_PATH": str(v3)})) == {"FASTDDS_DEFAULT_PROFILES_FILE"}
    assert set(profile_env({**base, "AMENT_PREFIX_PATH": str(v2)})) == {"FASTRTPS_DEFAULT_PROFILES_FILE"}
    assert set(profile_env({**base, "AMENT_PREFIX_PATH": str(none)})) == set(PROFILE_VARIABLES)
    venv = Path(sys.prefix)
    if any((venv / "lib").glob("libfastdds.so*")):  # this venv's PyPI wheels are FastDDS 3
        assert set(profile_env({**base, "AMENT_PREFIX_PATH": str(venv)})) == {"FASTDDS_DEFAULT_PROFILES_FILE"}
