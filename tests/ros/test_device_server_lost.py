"""A device node that dies (kill -9) in the middle of a goal: the planner's call fails fast with a
retryable CommunicationTimeout instead of waiting out the step's whole timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.ros

HANGING_SERVER = """
import threading, rclpy
from rclpy.node import Node
from aichemist_interfaces.action import Ping
from aichemist_nodes.node_base import action_server, spin_node

class Hanging(Node):
    def __init__(self):
        super().__init__("hanging_device")
        from rclpy.callback_groups import ReentrantCallbackGroup
        action_server(self, Ping, "/hanging_device/ping", self.execute, callback_group=ReentrantCallbackGroup())
    def execute(self, goal_handle):
        print("GOAL", flush=True)
        threading.Event().wait(600)   # the device never finishes: only kill -9 ends this

spin_node(Hanging, None, threads=4)
"""


def test_a_server_killed_mid_goal_is_a_retryable_communication_timeout(ros_probe):
    from aichemist.errors import CommunicationTimeout
    from aichemist_interfaces.action import Ping
    from aichemist_nodes.node_base import DeviceActionClient, call_action

    server = subprocess.Popen([sys.executable, "-c", HANGING_SERVER], stdout=subprocess.PIPE, text=True,
                              env=os.environ.copy())
    try:
        client = DeviceActionClient(ros_probe, Ping, "/hanging_device/ping")
        assert client.wait_for_server(30.0)
        got_goal = threading.Event()
        threading.Thread(target=lambda: server.stdout.readline() == "GOAL\n" and got_goal.set(), daemon=True).start()
        outcome: dict = {}

        def call() -> None:
            try:
                call_action(client, Ping.Goal(payload="x"), timeout_s=300.0, server_timeout_s=10.0)
            except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
                outcome["error"] = exc
            outcome["at"] = time.monotonic()

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        assert got_goal.wait(30.0), "the server never got the goal"
        killed_at = time.monotonic()
        server.send_signal(signal.SIGKILL)
        caller.join(30.0)
        assert not caller.is_alive(), "the call still waits for a dead server"
        assert isinstance(outcome.get("error"), CommunicationTimeout) and outcome["error"].retryable
        assert "went away" in str(outcome["error"])
        assert outcome["at"] - killed_at < 8.0 + client.server_lost_s + 10.0  # DDS lease + grace
    finally:
        server.kill()
        server.wait(10)


def test_a_server_respawned_mid_goal_does_not_know_it_and_the_call_fails_retryably(ros_probe):
    from aichemist.errors import CommunicationTimeout
    from aichemist_interfaces.action import Ping
    from aichemist_nodes.node_base import DeviceActionClient, call_action

    first = subprocess.Popen([sys.executable, "-c", HANGING_SERVER], stdout=subprocess.PIPE, text=True)
    second = None
    try:
        client = DeviceActionClient(ros_probe, Ping, "/hanging_device/ping")
        assert client.wait_for_server(30.0)
        outcome: dict = {}

        def call() -> None:
            try:
                call_action(client, Ping.Goal(payload="x"), timeout_s=300.0, server_timeout_s=10.0)
            except Exception as exc:  # noqa: BLE001
                outcome["error"] = exc

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        assert first.stdout.readline() == "GOAL\n"
        # the launcher's respawn: a new server in its place at once (before DDS drops the old one)
        second = subprocess.Popen([sys.executable, "-c", HANGING_SERVER], stdout=subprocess.PIPE, text=True)
        first.send_signal(signal.SIGKILL)
        caller.join(60.0)
        assert not caller.is_alive(), "the call still waits for a goal nobody runs"
        assert isinstance(outcome.get("error"), CommunicationTimeout) and outcome["error"].retryable
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
                proc.wait(10)
