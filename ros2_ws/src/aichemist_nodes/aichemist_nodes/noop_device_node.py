"""A device node that does nothing: /noop_device/ping (action) and /noop_device/trigger
(std_srvs/Trigger). Used to measure the device-call path and as a launch smoke test.

It spins one thread (its callbacks never block); ``NOOP_DEVICE_THREADS=4`` in its environment
spins it as the hardware nodes spin (a four-thread MultiThreadedExecutor), for benchmarks.
"""

from __future__ import annotations

import os

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from std_srvs.srv import Trigger

from aichemist_interfaces.action import Ping
from aichemist_nodes.node_base import action_server, spin_node


class NoopDeviceNode(Node):
    def __init__(self) -> None:
        super().__init__("noop_device")
        group = ReentrantCallbackGroup()
        self._server = action_server(self, Ping, "/noop_device/ping", self._execute, callback_group=group)
        self._trigger = self.create_service(Trigger, "/noop_device/trigger", self._on_trigger,
                                            callback_group=group)

    def _execute(self, goal_handle):  # noqa: ANN001 - rclpy types
        goal_handle.succeed()
        result = Ping.Result()
        result.payload = goal_handle.request.payload
        return result

    def _on_trigger(self, _request, response):  # noqa: ANN001
        response.success = True
        response.message = "ok"
        return response


def main(args=None) -> int:  # noqa: ANN001
    return spin_node(NoopDeviceNode, args, threads=int(os.environ.get("NOOP_DEVICE_THREADS", "1")))


if __name__ == "__main__":
    raise SystemExit(main())
