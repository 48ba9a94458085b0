"""node_base.DeviceActionClient: the planner's device-call client, against rclpy's ActionServer."""

from __future__ import annotations

import threading

import pytest

pytestmark = pytest.mark.ros


def test_feedback_typed_errors_and_timeout_cancels_the_goal(ros_probe):
    from aichemist.errors import InterlockTripped, StepTimeout
    from aichemist_interfaces.action import Ping
    from aichemist_nodes.node_base import DeviceActionClient, action_server, call_action, set_error
    from rclpy.action import CancelResponse

    cancelled = threading.Event()

    def execute(goal_handle):  # noqa: ANN001
        payload = goal_handle.request.payload
        for phase in ("a", "b"):
            goal_handle.publish_feedback(Ping.Feedback(phase=phase))
        result = Ping.Result()
        if payload == "fail":
            goal_handle.abort()
            return set_error(result, InterlockTripped("over_pressure", "21 bar > 20 bar"))
        if payload == "slow":
            while not goal_handle.is_cancel_requested:
                threading.Event().wait(0.01)
            cancelled.set()
            goal_handle.canceled()
            return result
        goal_handle.succeed()
        result.payload = payload
        return result

    action_server(ros_probe, Ping, "/test_dac/ping", execute, cancel_callback=lambda _g: CancelResponse.ACCEPT)
    client = DeviceActionClient(ros_probe, Ping, "/test_dac/ping")
    assert client.wait_for_server(10.0)

    result = call_action(client, Ping.Goal(payload="hello"), timeout_s=10.0)
    assert result.payload == "hello" and result.code == 0

    with pytest.raises(InterlockTripped) as info:
        call_action(client, Ping.Goal(payload="fail"), timeout_s=10.0)
    assert info.value.interlock == "over_pressure"

    feedback: list[str] = []
    with pytest.raises(StepTimeout):
        call_action(client, Ping.Goal(payload="slow"), timeout_s=2.0, feedback_cb=lambda fb: feedback.append(fb.phase))
    assert cancelled.wait(10.0), "the timed-out goal was not cancelled on the server"
    assert feedback == ["a", "b"]  # in order, while the goal ran


def test_missing_server_is_a_communication_timeout(ros_probe):
    from aichemist.errors import CommunicationTimeout
    from aichemist_interfaces.action import Ping
    from aichemist_nodes.node_base import DeviceActionClient, call_action

    client = DeviceActionClient(ros_probe, Ping, "/nobody/ping")
    with pytest.raises(CommunicationTimeout, match="/nobody/ping"):
        call_action(client, Ping.Goal(payload="x"), timeout_s=1.0, server_timeout_s=0.5)
