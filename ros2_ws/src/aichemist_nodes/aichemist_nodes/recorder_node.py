"""recorder_node: records every topic of the graph into a rosbag2 bag with MCAP storage.

Thin adapter over ``planner.records.BagRecorder``: topics are discovered every
``discovery_period_s`` with ``get_topic_names_and_types``; each new topic that has a publisher is
subscribed with a raw subscription (serialized CDR straight into the bag, no deserialisation)
whose QoS matches its publishers: transient local when a publisher is latched (/safety/estop, so
the state current when recording started is in the bag), best effort when any publisher is best
effort, reliable otherwise. Hidden topics (actions' internals, service events) are left out
unless ``include_hidden_topics``. Messages are stamped with the node's clock at reception (wall
time unless ``use_sim_time``), like ``ros2 bag record``.

``~/status`` (std_srvs/Trigger) answers a JSON text ``{"bag_path", "messages", "topics": {topic:
count}, "skipped": {topic: reason}}``. On Ctrl-C/SIGTERM (``spin_node``) the bag is closed, so
its metadata.yaml is written; a bag path that already exists (a respawned recorder) gets a
numbered suffix instead of being overwritten.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import threading
from typing import Any

from pydantic import Field
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import Trigger

from aichemist.errors import AIChemistError
from aichemist.params import Params
from aichemist_nodes.node_base import declare_params, load_params, spin_node
from planner.records import BagRecorder


class RecorderNodeParams(Params):
    bag_path: str = Field(description="folder of the rosbag2 bag (MCAP); a numbered suffix is added if it exists")
    discovery_period_s: float = Field(default=0.5, gt=0, le=60, description="how often new topics are looked for")
    include_hidden_topics: bool = Field(default=False, description="also record hidden topics (names with a '_' token)")
    exclude_topics: list[str] = Field(default_factory=list, description="topic names never recorded")
    queue_depth: int = Field(default=100, ge=1, le=10000, description="history depth of each subscription")


def message_class(msgtype: str) -> Any:
    """The Python class of a ROS type name ``pkg/msg/Name``."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def matching_qos(publishers: list[Any], depth: int) -> QoSProfile:
    """A subscription QoS that matches every publisher of a topic and keeps what they offer:
    transient local if any publisher is latched, best effort if any is best effort."""
    latched = any(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers)
    best_effort = any(p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers)
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def is_hidden(topic: str) -> bool:
    return any(token.startswith("_") for token in topic.split("/") if token)


def free_bag_path(path: pathlib.Path) -> pathlib.Path:
    """``path`` if it does not exist, else ``path.1``, ``path.2``, ... (never overwrite a bag)."""
    if not path.exists():
        return path
    n = 1
    while path.with_name(f"{path.name}.{n}").exists():
        n += 1
    return path.with_name(f"{path.name}.{n}")


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("recorder_node")
        declare_params(self, RecorderNodeParams)
        self.params: RecorderNodeParams = load_params(self, RecorderNodeParams)
        path = free_bag_path(pathlib.Path(self.params.bag_path).expanduser())
        path.parent.mkdir(parents=True, exist_ok=True)
        self.bag = BagRecorder(path).open()
        self.bag_path = path
        self._lock = threading.Lock()
        self._recorded_subs: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.skipped: dict[str, str] = {}
        self._write_group = ReentrantCallbackGroup()
        self._discovery_group = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "~/status", self._on_status, callback_group=self._write_group)
        self.get_logger().info(f"recording to {path}")
        self.discover()
        self.create_timer(self.params.discovery_period_s, self.discover, callback_group=self._discovery_group)

    def discover(self) -> None:
        """Subscribe to every topic not yet recorded that has a publisher."""
        for topic, types in self.get_topic_names_and_types():
            if topic in self._recorded_subs or topic in self.skipped or topic in self.params.exclude_topics:
                continue
            if is_hidden(topic) and not self.params.include_hidden_topics:
                continue
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue  # only subscribers so far: the QoS to match is not known yet
            msgtype = types[0]
            try:
                cls = message_class(msgtype)
                self.bag.add_topic(topic, msgtype)
            except (AIChemistError, ImportError, AttributeError, ValueError) as exc:
                self.skipped[topic] = f"{msgtype}: {exc}"
                self.get_logger().warning(f"not recording {topic} ({msgtype}): {exc}")
                continue
            qos = matching_qos(publishers, self.params.queue_depth)
            self.counts[topic] = 0
            self._recorded_subs[topic] = self.create_subscription(
                cls, topic, lambda data, t=topic: self._on_message(t, data), qos, raw=True,
                callback_group=self._write_group)
            self.get_logger().info(f"recording {topic} ({msgtype}, {qos.reliability.name.lower()}, "
                                   f"{qos.durability.name.lower()})")

    def _on_message(self, topic: str, data: bytes) -> None:
        try:
            self.bag.write(topic, self.get_clock().now().nanoseconds, data)
        except AIChemistError:
            return  # the bag was closed during shutdown: nothing more is recorded
        with self._lock:
            self.counts[topic] += 1

    def _on_status(self, _request: Any, response: Any) -> Any:
        with self._lock:
            counts = dict(self.counts)
        response.success = True
        response.message = json.dumps({"bag_path": str(self.bag_path), "messages": sum(counts.values()),
                                       "topics": counts, "skipped": dict(self.skipped)})
        return response

    def on_process_exit(self) -> None:
        """Close the bag (writes metadata.yaml): called by spin_node on Ctrl-C/SIGTERM."""
        self.bag.close()
        with self._lock:
            total = sum(self.counts.values())
        print(f"bag closed: {total} messages on {len(self.counts)} topics in {self.bag_path}", flush=True)


def main(args=None) -> int:  # noqa: ANN001
    return spin_node(RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
