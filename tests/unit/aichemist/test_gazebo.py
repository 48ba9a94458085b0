"""Gazebo configuration: the ros_gz_bridge YAML is valid for parameter_bridge, bridges the topics
the project's nodes publish and read (names taken from the node modules and the generated world,
not typed twice), and the launch pieces (world, rendered bridge file, launch file) work without ROS."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pathlib
import re
import xml.etree.ElementTree as ET

import pytest
import yaml

from aichemist.errors import ConfigurationError
from aichemist.gazebo import (BRIDGE_CONFIG, ROBOT_MODEL_NAME, WORLD_NAME, graph_has_clock, load_bridge_config,
                              render_bridge_config, write_world)

REPO = pathlib.Path(__file__).resolve().parents[3]
NODES = REPO / "ros2_ws" / "src" / "aichemist_nodes" / "aichemist_nodes"


def _node_topics() -> list[re.Pattern[str]]:
    """Topic names (as patterns: f-string parts match one name token) passed to create_publisher /
    create_subscription anywhere in the aichemist_nodes package, read from the syntax trees."""
    calls = [c for path in sorted(NODES.glob("*.py")) for c in ast.walk(ast.parse(path.read_text()))]
    out = []
    for call in calls:
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and call.func.attr in ("create_publisher", "create_subscription") and len(call.args) >= 2):
            continue
        arg = call.args[1]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            out.append(re.compile(re.escape(arg.value) + "$"))
        elif isinstance(arg, ast.JoinedStr):
            parts = [re.escape(v.value) if isinstance(v, ast.Constant) else "[A-Za-z0-9_]+" for v in arg.values]
            out.append(re.compile("".join(parts) + "$"))
    return out


@pytest.fixture(scope="module")
def entries():
    return {e.ros_topic_name: e for e in load_bridge_config(BRIDGE_CONFIG)}


def test_bridge_yaml_is_valid_for_parameter_bridge(entries):
    raw = yaml.safe_load(BRIDGE_CONFIG.read_text())
    assert len(raw) == len(entries)
    for e in entries.values():
        pkg, kind, name = e.ros_type_name.split("/")
        assert getattr(importlib.import_module(f"{pkg}.{kind}"), name), e.ros_type_name  # a real ROS type
        assert e.direction in ("GZ_TO_ROS", "ROS_TO_GZ")


def test_bridge_names_the_topics_the_nodes_use(entries, tmp_path):
    from rclpy.time_source import CLOCK_TOPIC

    from sim.world.mjcf import build_mjcf, station_camera_names
    from sim.world.sdf import build_sdf

    assert entries[CLOCK_TOPIC].direction == "GZ_TO_ROS"  # what use_sim_time nodes subscribe to
    used = _node_topics()
    for topic in ("/manipulator/joint_states", "/manipulator/odom"):
        assert any(p.match(topic) for p in used), topic
        assert entries[topic].direction == "GZ_TO_ROS"
    # the one bridged topic no node publishes yet: velocity commands for a Gazebo-driven base
    assert entries["/manipulator/cmd_vel"].direction == "ROS_TO_GZ"

    # cameras: every station camera of the generated world and the robot's wrist camera, under the
    # names the twin's camera publisher uses (so perception_node reads Gazebo the same way)
    cameras = {t.split("/")[1] for t in entries if t.endswith("/image_raw")}
    assert 'camera name="wrist_camera"' in build_mjcf()
    assert cameras == set(station_camera_names()) | {"wrist_camera"}
    for cam in cameras:
        for suffix in ("image_raw", "camera_info"):
            assert any(p.match(f"/{cam}/{suffix}") for p in used), (cam, suffix)
            assert f"/{cam}/{suffix}" in entries

    # the Gazebo side of the station cameras: the sensors' default scoped topics in the SDF world
    world = ET.fromstring(build_sdf(asset_dir=tmp_path)).find("world")
    assert world.get("name") == WORLD_NAME
    sensors = 0
    for model in world.findall("model"):
        for link in model.findall("link"):
            for sensor in link.findall("sensor"):
                if sensor.get("type") != "camera":
                    continue
                sensors += 1
                scoped = f"/world/{WORLD_NAME}/model/{model.get('name')}/link/{link.get('name')}/sensor/{sensor.get('name')}"
                assert entries[f"/{sensor.get('name')}/image_raw"].gz_topic_name == scoped + "/image"
                assert entries[f"/{sensor.get('name')}/camera_info"].gz_topic_name == scoped + "/camera_info"
    assert sensors == len(station_camera_names())
    for topic in ("/manipulator/joint_states", "/manipulator/odom", "/manipulator/cmd_vel"):
        assert ROBOT_MODEL_NAME in entries[topic].gz_topic_name


def test_bad_bridge_entries_are_refused(tmp_path):
    good = {"ros_topic_name": "/clock", "gz_topic_name": "/clock", "ros_type_name": "rosgraph_msgs/msg/Clock",
            "gz_type_name": "gz.msgs.Clock", "direction": "GZ_TO_ROS"}
    cases = {
        "unknown key": [{**good, "qos_depth": 3}],
        "direction": [{**good, "direction": "SIDEWAYS"}],
        "type pair": [{**good, "gz_type_name": "gz.msgs.Time"}],
        "twice": [good, good],
        "empty": [],
    }
    for name, data in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigurationError):
            load_bridge_config(path)


def test_rendered_bridge_drops_clock_when_the_graph_has_its_own(tmp_path, entries):
    from aichemist.launcher import load_manifest

    twin, _ = load_manifest(REPO / "launch" / "twin.yaml")
    hardware, _ = load_manifest(REPO / "launch" / "hardware.yaml")
    assert graph_has_clock([n.executable or "" for n in twin.nodes])
    assert not graph_has_clock([n.executable or "" for n in hardware.nodes])
    path = render_bridge_config(list(entries.values()), tmp_path / "bridge.yaml", drop_topics=["/clock"])
    rendered = load_bridge_config(path)
    assert {e.ros_topic_name for e in rendered} == set(entries) - {"/clock"}


def test_world_is_written_into_the_run_dir(tmp_path):
    path = write_world(tmp_path)
    assert path == tmp_path / "gazebo" / "lab.sdf"
    root = ET.parse(path).getroot()
    assert root.tag == "sdf" and root.find("world").get("name") == WORLD_NAME
    assert list((tmp_path / "gazebo" / "textures").glob("*.png"))


def test_gazebo_launch_file_parses_without_ros():
    spec = importlib.util.spec_from_file_location("gazebo_launch", REPO / "launch" / "gazebo.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.generate_launch_description)
