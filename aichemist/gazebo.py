"""Gazebo for labs that have it: the ros_gz_bridge configuration and the world, as plain Python.

launch/gazebo.launch.py (full ROS 2 installs with ros_gz) calls these, so what it does can be
checked here without ROS or Gazebo:

- ``load_bridge_config(path)`` reads a ros_gz_bridge ``parameter_bridge`` YAML (the list of
  ``{ros_topic_name, gz_topic_name, ros_type_name, gz_type_name, direction, lazy,
  subscriber_queue, publisher_queue}`` entries), refusing unknown keys, unknown directions, a ROS
  topic bridged twice and a ROS/Gazebo type pair ros_gz_bridge does not convert;
- ``render_bridge_config(entries, path, drop_topics=...)`` writes the file the bridge is started
  with (the launch drops /clock when the node graph already has a clock: twin_node);
- ``write_world(run_dir)`` writes the Gazebo SDF world generated from the one lab description
  (sim/world/sdf.py) into the run folder, with its fiducial textures beside it.
"""

from __future__ import annotations

import pathlib
from typing import Literal, Optional, Sequence

import yaml
from pydantic import Field

from aichemist.errors import ConfigurationError
from aichemist.params import Params, validate

REPO = pathlib.Path(__file__).resolve().parents[1]
BRIDGE_CONFIG = REPO / "launch" / "gazebo" / "bridge.yaml"
WORLD_NAME = "aichemist_lab"
ROBOT_MODEL_NAME = "aichemist_mobile_manipulator"

#: ROS type -> the Gazebo Transport type ros_gz_bridge converts it to (its README's table, the
#: types this project bridges). A pair outside the table would make parameter_bridge refuse the entry.
GZ_TYPE_OF_ROS = {
    "rosgraph_msgs/msg/Clock": "gz.msgs.Clock",
    "sensor_msgs/msg/JointState": "gz.msgs.Model",
    "nav_msgs/msg/Odometry": "gz.msgs.Odometry",
    "geometry_msgs/msg/Twist": "gz.msgs.Twist",
    "sensor_msgs/msg/Image": "gz.msgs.Image",
    "sensor_msgs/msg/CameraInfo": "gz.msgs.CameraInfo",
    "sensor_msgs/msg/PointCloud2": "gz.msgs.PointCloudPacked",
    "geometry_msgs/msg/PoseStamped": "gz.msgs.Pose",
    "tf2_msgs/msg/TFMessage": "gz.msgs.Pose_V",
}


class BridgeEntry(Params):
    """One bridged topic, as ros_gz_bridge's parameter_bridge reads it."""

    ros_topic_name: str = Field(pattern=r"^/[A-Za-z0-9_/]+$")
    gz_topic_name: str = Field(pattern=r"^/[A-Za-z0-9_/]+$")
    ros_type_name: str = Field(pattern=r"^[a-z0-9_]+/msg/[A-Za-z0-9]+$")
    gz_type_name: str = Field(pattern=r"^gz\.msgs\.[A-Za-z0-9_]+$")
    direction: Literal["BIDIRECTIONAL", "GZ_TO_ROS", "ROS_TO_GZ"] = "BIDIRECTIONAL"
    lazy: bool = False
    subscriber_queue: int = Field(default=10, ge=1, le=1000)
    publisher_queue: int = Field(default=10, ge=1, le=1000)


def load_bridge_config(path: str | pathlib.Path = BRIDGE_CONFIG) -> list[BridgeEntry]:
    path = pathlib.Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"bridge configuration {path}: {exc}") from None
    if not isinstance(data, list) or not data:
        raise ConfigurationError(f"bridge configuration {path}: expected a non-empty list of topic entries")
    entries = [validate(BridgeEntry, item, what=f"bridge configuration {path}, entry {i}",
                        error=ConfigurationError) for i, item in enumerate(data)]
    seen: set[str] = set()
    for e in entries:
        if e.ros_topic_name in seen:
            raise ConfigurationError(f"bridge configuration {path}: ROS topic {e.ros_topic_name} is bridged twice")
        seen.add(e.ros_topic_name)
        expected = GZ_TYPE_OF_ROS.get(e.ros_type_name)
        if expected != e.gz_type_name:
            raise ConfigurationError(
                f"bridge configuration {path}: {e.ros_topic_name}: ros_gz_bridge converts {e.ros_type_name} to "
                f"{expected or 'no known Gazebo type'}, not {e.gz_type_name}",
                problems=[{"field": "gz_type_name", "value": e.gz_type_name, "limit": expected,
                           "message": "type pair not converted by ros_gz_bridge"}])
    return entries


def render_bridge_config(entries: Sequence[BridgeEntry], path: str | pathlib.Path,
                         *, drop_topics: Sequence[str] = ()) -> pathlib.Path:
    """Write the bridge YAML (without the ROS topics in ``drop_topics``) and return its path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = [e.model_dump() for e in entries if e.ros_topic_name not in set(drop_topics)]
    path.write_text(yaml.safe_dump(kept, sort_keys=False))
    return path


def graph_has_clock(node_executables: Sequence[str]) -> bool:
    """Whether the node graph publishes /clock itself (the twin does), so Gazebo's must not be bridged."""
    return "twin_node" in node_executables


def write_world(run_dir: str | pathlib.Path, layout_path: Optional[str] = None) -> pathlib.Path:
    """Generate the SDF world from the lab description into ``run_dir/gazebo/lab.sdf``."""
    from manipulation.layout import load_layout
    from sim.world.sdf import write_sdf

    layout = load_layout(layout_path) if layout_path else None
    return write_sdf(pathlib.Path(run_dir) / "gazebo" / "lab.sdf", layout)
