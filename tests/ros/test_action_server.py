"""node_base.DeviceActionServer (what ``action_server()`` returns): the action protocol on plain
services and topics, checked with rclpy's own ActionClient and with raw protocol requests."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from ros_helpers import wait_for

pytestmark = pytest.mark.ros


def _call(client: Any, request: Any, timeout_s: float = 10.0) -> Any:
    done = threading.Event()
    future = client.call_async(request)
    future.add_done_callback(lambda _f: done.set())
    assert done.wait(timeout_s), f"no answer from {client.srv_name}"
    return future.result()


def _wait_future(future: Any, timeout_s: float = 10.0) -> Any:
    done = threading.Event()
    future.add_done_callback(lambda _f: done.set())
    assert done.wait(timeout_s), "future not done"
    return future.result()


class _Gate:
    """Lets a test hold a goal in its execute callback until it says so."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()


def _server(node: Any, name: str, gate: _Gate, **kwargs: Any) -> Any:
    from aichemist.errors import InterlockTripped
    from aichemist_interfaces.action import Ping
    from aichemist_nodes.node_base import action_server, set_error

    def execute(goal_handle: Any) -> Any:
        payload = goal_handle.request.payload
        result = Ping.Result()
        if payload == "raise":
            raise RuntimeError("device fell over")
        if payload == "fail":
            goal_handle.abort()
            return set_error(result, InterlockTripped("over_pressure", "21 bar > 20 bar"))
        goal_handle.publish_feedback(Ping.Feedback(phase="started"))
        if payload == "hold":
            gate.started.set()
            while not goal_handle.is_cancel_requested and not gate.release.is_set():
                gate.release.wait(0.01)
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
                result.payload = "stopped"
                return result
        goal_handle.publish_feedback(Ping.Feedback(phase="done"))
        goal_handle.succeed()
        result.payload = payload
        return result

    return action_server(node, Ping, name, execute, **kwargs)


def test_rclpy_action_client_gets_feedback_result_status_and_typed_errors(ros_probe):
    from action_msgs.msg import GoalStatus, GoalStatusArray
    from aichemist_interfaces.action import Ping
    from aichemist_nodes.node_base import DeviceActionServer
    from rclpy.action import ActionClient
    from rclpy.qos import qos_profile_action_status_default

    server = _server(ros_probe, "/test_as/ping", _Gate())
    assert isinstance(server, DeviceActionServer)
    client = ActionClient(ros_probe, Ping, "/test_as/ping")
    assert client.wait_for_server(timeout_sec=10.0)

    feedback: list[str] = []
    send = client.send_goal_async(Ping.Goal(payload="hello"),
                                  feedback_callback=lambda m: feedback.append(m.feedback.phase))
    handle = _wait_future(send)
    assert handle.accepted
    response = _wait_future(handle.get_result_async())
    assert response.status == GoalStatus.STATUS_SUCCEEDED and response.result.payload == "hello"
    assert wait_for(lambda: feedback == ["started", "done"], 5.0), feedback

    # a late subscriber to the (transient-local) status topic still sees the goal's end state
    statuses: list[Any] = []
    ros_probe.create_subscription(GoalStatusArray, "/test_as/ping/_action/status", statuses.append,
                                  qos_profile_action_status_default)
    goal_id = bytes(handle.goal_id.uuid)
    assert wait_for(lambda: any(bytes(s.goal_info.goal_id.uuid) == goal_id
                                and s.status == GoalStatus.STATUS_SUCCEEDED
                                for msg in statuses for s in msg.status_list), 10.0)
    # rclpy's client read the goal's status from the status topic
    assert wait_for(lambda: handle.status == GoalStatus.STATUS_SUCCEEDED, 5.0)

    # a failed goal: ABORTED with the typed error's fields; an execute callback that raises:
    # ABORTED, and the server keeps serving
    failed = _wait_future(_wait_future(client.send_goal_async(Ping.Goal(payload="fail"))).get_result_async())
    assert failed.status == GoalStatus.STATUS_ABORTED and failed.result.error_type == "InterlockTripped"
    raised = _wait_future(_wait_future(client.send_goal_async(Ping.Goal(payload="raise"))).get_result_async())
    assert raised.status == GoalStatus.STATUS_ABORTED
    again = _wait_future(_wait_future(client.send_goal_async(Ping.Goal(payload="again"))).get_result_async())
    assert again.status == GoalStatus.STATUS_SUCCEEDED and again.result.payload == "again"


@pytest.mark.parametrize("group", ["reentrant", "mutually_exclusive"])
def test_cancel_with_rclpy_client_and_cancel_protocol_codes(ros_probe, group):
    from action_msgs.msg import GoalInfo, GoalStatus
    from action_msgs.srv import CancelGoal
    from aichemist_interfaces.action import Ping
    from rclpy.action import ActionClient, CancelResponse
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
    from unique_identifier_msgs.msg import UUID

    name = f"/test_as_cancel_{group}/ping"
    gate = _Gate()
    cb_group = ReentrantCallbackGroup() if group == "reentrant" else MutuallyExclusiveCallbackGroup()
    _server(ros_probe, name, gate, callback_group=cb_group, cancel_callback=lambda _g: CancelResponse.ACCEPT)
    client = ActionClient(ros_probe, Ping, name)
    assert client.wait_for_server(timeout_sec=10.0)
    cancel = ros_probe.create_client(CancelGoal, f"{name}/_action/cancel_goal")

    # unknown goal id
    unknown = CancelGoal.Request(goal_info=GoalInfo(goal_id=UUID(uuid=list(uuid.uuid4().bytes))))
    assert _call(cancel, unknown).return_code == CancelGoal.Response.ERROR_UNKNOWN_GOAL_ID

    # a running goal, cancelled through rclpy's client: CANCELING, then CANCELED with the callback's result
    handle = _wait_future(client.send_goal_async(Ping.Goal(payload="hold")))
    assert handle.accepted and gate.started.wait(10.0)
    answer = _wait_future(handle.cancel_goal_async())
    assert answer.return_code == CancelGoal.Response.ERROR_NONE
    assert [bytes(g.goal_id.uuid) for g in answer.goals_canceling] == [bytes(handle.goal_id.uuid)]
    response = _wait_future(handle.get_result_async())
    assert response.status == GoalStatus.STATUS_CANCELED and response.result.payload == "stopped"

    # the same goal again: it has ended
    again = CancelGoal.Request(goal_info=GoalInfo(goal_id=handle.goal_id))
    assert _call(cancel, again).return_code == CancelGoal.Response.ERROR_GOAL_TERMINATED


def test_cancel_refused_without_cancel_callback_and_cancel_all(ros_probe):
    from action_msgs.msg import GoalInfo, GoalStatus
    from action_msgs.srv import CancelGoal
    from aichemist_interfaces.action import Ping
    from rclpy.action import ActionClient

    gate = _Gate()
    _server(ros_probe, "/test_as_refuse/ping", gate)  # no cancel_callback: cancels are refused
    client = ActionClient(ros_probe, Ping, "/test_as_refuse/ping")
    assert client.wait_for_server(timeout_sec=10.0)
    handle = _wait_future(client.send_goal_async(Ping.Goal(payload="hold")))
    assert gate.started.wait(10.0)
    cancel = ros_probe.create_client(CancelGoal, "/test_as_refuse/ping/_action/cancel_goal")
    everything = CancelGoal.Request(goal_info=GoalInfo())  # zero id and stamp: all goals
    answer = _call(cancel, everything)
    assert answer.return_code == CancelGoal.Response.ERROR_REJECTED and not answer.goals_canceling
    gate.release.set()
    response = _wait_future(handle.get_result_async())
    assert response.status == GoalStatus.STATUS_SUCCEEDED and response.result.payload == "hold"


def test_result_kept_for_result_timeout_then_unknown_and_goal_ids_unique(ros_probe):
    from action_msgs.msg import GoalStatus
    from aichemist_interfaces.action import Ping
    from unique_identifier_msgs.msg import UUID

    _server(ros_probe, "/test_as_expiry/ping", _Gate(), result_timeout=1)
    base = "/test_as_expiry/ping/_action"
    send = ros_probe.create_client(Ping.Impl.SendGoalService, f"{base}/send_goal")
    get_result = ros_probe.create_client(Ping.Impl.GetResultService, f"{base}/get_result")
    assert send.wait_for_service(timeout_sec=10.0) and get_result.wait_for_service(timeout_sec=10.0)

    goal_id = UUID(uuid=list(uuid.uuid4().bytes))
    request = Ping.Impl.SendGoalService.Request(goal_id=goal_id, goal=Ping.Goal(payload="one"))
    sent = time.monotonic()   # before the goal ends: the result is kept at least 1 s after this
    assert _call(send, request).accepted
    first = _call(get_result, Ping.Impl.GetResultService.Request(goal_id=goal_id))
    assert first.status == GoalStatus.STATUS_SUCCEEDED and first.result.payload == "one"
    # a second goal with an id still in use is rejected
    assert not _call(send, request).accepted

    # the result stays available, then the goal is forgotten: UNKNOWN, and its id may be used again
    def status_of(some_id: Any) -> int:
        return _call(get_result, Ping.Impl.GetResultService.Request(goal_id=some_id)).status

    def expired() -> bool:
        return status_of(goal_id) == GoalStatus.STATUS_UNKNOWN

    assert wait_for(expired, 10.0), "the result was kept past result_timeout"
    assert time.monotonic() - sent >= 1.0, "the result was dropped before result_timeout"
    assert status_of(UUID(uuid=list(uuid.uuid4().bytes))) == GoalStatus.STATUS_UNKNOWN
    assert _call(send, request).accepted
