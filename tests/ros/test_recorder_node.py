"""recorder_node across processes: it discovers the test's topics, records them into an MCAP
rosbag2 bag with matching QoS (a latched message published before it started is in the bag),
closes the bag on Ctrl-C, and the bag reads back with the messages, types and metadata."""

from __future__ import annotations

import json
import pathlib
import textwrap
import threading
import time

import pytest
import yaml

pytestmark = pytest.mark.ros


def _manifest(tmp_path: pathlib.Path) -> pathlib.Path:
    (tmp_path / "recorder_node.yaml").write_text(textwrap.dedent("""
        recorder_node:
          ros__parameters:
            bag_path: ${run_dir}/bag
            discovery_period_s: 0.2
            exclude_topics: [/test_recorder/ignored]
    """))
    path = tmp_path / "recorder.yaml"
    path.write_text(textwrap.dedent(f"""
        name: recorder_test
        params_dir: {tmp_path}
        args:
          run_dir: {tmp_path / 'run'}
        nodes:
          - name: recorder_node
            executable: recorder_node
            params: recorder_node.yaml
    """))
    return path


def _wait_status(probe, predicate, timeout_s: float) -> dict:  # noqa: ANN001
    """Ask /recorder_node/status until ``predicate(status)`` holds (each call waits on its reply)."""
    from std_srvs.srv import Trigger

    client = probe.create_client(Trigger, "/recorder_node/status")
    assert client.wait_for_service(timeout_sec=20.0), "recorder_node/status never appeared"
    deadline = time.monotonic() + timeout_s
    status: dict = {}
    while time.monotonic() < deadline:
        reply = client.call(Trigger.Request(), timeout_sec=5.0)
        status = json.loads(reply.message)
        if predicate(status):
            return status
        threading.Event().wait(0.1)  # poll the recorder's own count: the condition we wait on
    raise AssertionError(f"recorder status never satisfied the condition: {status}")


def test_recorder_records_topics_with_matching_qos_and_closes_a_readable_bag(launch, ros_probe, tmp_path):
    from rclpy.event_handler import PublisherEventCallbacks
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    from aichemist_interfaces.msg import SafetyState
    from planner.records import read_bag

    latched_qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
    latched = ros_probe.create_publisher(SafetyState, "/test_recorder/safety", latched_qos)
    before = SafetyState(estop=True, source="test", reason="published before the recorder started")
    latched.publish(before)  # only a transient-local subscription can still get this one
    matched = threading.Event()
    chatter = ros_probe.create_publisher(
        String, "/test_recorder/chatter", 10,
        event_callbacks=PublisherEventCallbacks(matched=lambda info: info.current_count and matched.set()))
    ignored = ros_probe.create_publisher(String, "/test_recorder/ignored", 10)

    launcher = launch(_manifest(tmp_path))
    launcher.wait_for_line("recorder_node", r"recording /test_recorder/chatter", 30.0)
    line = launcher.wait_for_line("recorder_node", r"recording /test_recorder/safety", 30.0)
    assert "transient_local" in line

    # the publisher must also have seen the recorder's subscription before it publishes
    assert matched.wait(10.0) or chatter.get_subscription_count() >= 1
    sent = [f"message {i}" for i in range(5)]
    for text in sent:
        chatter.publish(String(data=text))
    ignored.publish(String(data="not recorded"))
    status = _wait_status(ros_probe, lambda s: s["topics"].get("/test_recorder/chatter", 0) >= len(sent)
                          and s["topics"].get("/test_recorder/safety", 0) >= 1, 20.0)
    assert "/test_recorder/ignored" not in status["topics"]
    bag_path = pathlib.Path(status["bag_path"])
    assert bag_path == tmp_path / "run" / "bag"

    launcher.stop()  # SIGINT: the node closes the bag
    assert any("bag closed" in line for line in launcher.output("recorder_node")), launcher.output("recorder_node")

    messages = read_bag(bag_path)
    by_topic: dict[str, list] = {}
    for topic, msgtype, stamp, msg in messages:
        by_topic.setdefault(topic, []).append((msgtype, stamp, msg))
    assert [m.data for _t, _s, m in by_topic["/test_recorder/chatter"]] == sent
    assert {t for t, _s, _m in by_topic["/test_recorder/chatter"]} == {"std_msgs/msg/String"}
    (safety_type, _stamp, safety), = by_topic["/test_recorder/safety"]
    assert safety_type == "aichemist_interfaces/msg/SafetyState"
    assert (safety.estop, safety.source, safety.reason) == (True, "test", before.reason)
    assert "/test_recorder/ignored" not in by_topic
    stamps = [s for _t, s, _m in by_topic["/test_recorder/chatter"]]
    assert stamps == sorted(stamps) and abs(stamps[0] / 1e9 - time.time()) < 300

    metadata = yaml.safe_load((bag_path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["storage_identifier"] == "mcap"
    assert metadata["message_count"] == len(messages)
    topics = {t["topic_metadata"]["name"]: t for t in metadata["topics_with_message_count"]}
    assert topics["/test_recorder/chatter"]["message_count"] == len(sent)
    assert topics["/test_recorder/safety"]["topic_metadata"]["type"] == "aichemist_interfaces/msg/SafetyState"
    assert all(f.endswith(".mcap") and (bag_path / f).is_file() for f in metadata["relative_file_paths"])


def test_recorder_never_overwrites_an_existing_bag(tmp_path):
    from aichemist_nodes.recorder_node import free_bag_path

    (tmp_path / "bag").mkdir()
    (tmp_path / "bag.1").mkdir()
    assert free_bag_path(tmp_path / "bag") == tmp_path / "bag.2"
    assert free_bag_path(tmp_path / "fresh") == tmp_path / "fresh"
