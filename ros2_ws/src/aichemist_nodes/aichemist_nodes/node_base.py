"""What every aichemist node shares: parameters from a Params model, errors to result codes,
the e-stop subscription, a hardware lifecycle base, a blocking action call, and main().

Nodes stay thin: they convert messages to domain types, call the pure core, and convert
exceptions to result codes with ``set_error``. Everything here is ROS plumbing only.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import sys
import threading
import time
import traceback
import typing
from typing import Any, Callable, Iterator, Optional

import rclpy
from action_msgs.msg import GoalInfo, GoalStatus, GoalStatusArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.action import ActionClient, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                              ParameterUninitializedException)
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.executors import (ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor,
                             await_or_execute)
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_action_status_default, qos_profile_services_default)
from rclpy.waitable import NumberOfEntities, Waitable

from aichemist.errors import (AIChemistError, Cancelled, CommunicationTimeout, ConfigurationError,
                              ConflictError, DeviceNotReady, EmergencyStop, ResultCode, StepTimeout, error_from_result)
from aichemist.params import Params, flatten, leaf_defaults, numeric_bounds, validate_config

from pydantic_core import PydanticUndefined

ESTOP_TOPIC = "/safety/estop"

#: QoS of /safety/estop: a late joiner still gets the current state.
ESTOP_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)

#: Seconds a device action server keeps a finished goal's result. Our clients ask for it as soon as
#: the goal is accepted, but on a loaded host that request can arrive after a short goal ended:
#: 1 s lost results under a full test run (the goal table stays small: finished goals are cheap).
ACTION_RESULT_TIMEOUT_S = 10.0

#: QoS for state topics published at a rate (latest value matters, not every sample).
STATE_QOS = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


# --- parameters --------------------------------------------------------------------------
_SCALARS = {bool: Parameter.Type.BOOL, int: Parameter.Type.INTEGER, float: Parameter.Type.DOUBLE,
            str: Parameter.Type.STRING}
_ARRAYS = {bool: Parameter.Type.BOOL_ARRAY, int: Parameter.Type.INTEGER_ARRAY,
           float: Parameter.Type.DOUBLE_ARRAY, str: Parameter.Type.STRING_ARRAY}


def _ros_type(annotation: Any) -> tuple[Parameter.Type, bool]:
    """ROS parameter type for a field annotation, and whether the value travels as JSON text."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if annotation in _SCALARS:
        return _SCALARS[annotation], False
    if origin is typing.Literal:
        return _SCALARS.get(type(args[0]), Parameter.Type.STRING), False
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        return _ros_type(args[0])
    if origin in (list, tuple) and args and args[0] in _ARRAYS:
        return _ARRAYS[args[0]], False
    if isinstance(annotation, type) and issubclass(annotation, str):  # str enums, paths as str
        return Parameter.Type.STRING, False
    return Parameter.Type.STRING, True  # dicts, nested lists, models: JSON text


def declare_params(node: Node, model: type[Params]) -> None:
    """Declare every (flattened) field of ``model`` as a typed ROS parameter with its description
    and range. Required fields are declared without a value: the params file must give them."""
    defaults = leaf_defaults(model)
    for name, annotation, info in flatten(model):
        ptype, as_json = _ros_type(annotation)
        low, high = numeric_bounds(info)
        desc = ParameterDescriptor(description=(info.description or "") + (" (JSON)" if as_json else ""),
                                   type=int(ptype))
        if ptype == Parameter.Type.DOUBLE and low is not None and high is not None:
            desc.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
        elif ptype == Parameter.Type.INTEGER and low is not None and high is not None:
            desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
        default = defaults[name]
        try:
            # an empty list cannot carry its element type: declare by type, the model gives []
            if default is PydanticUndefined or default is None or (isinstance(default, (list, tuple)) and not default):
                node.declare_parameter(name, ptype, desc)
            else:
                if as_json:
                    default = json.dumps(default.model_dump() if hasattr(default, "model_dump") else default)
                elif ptype == Parameter.Type.DOUBLE:
                    default = float(default)
                elif isinstance(default, tuple):
                    default = list(default)
                elif hasattr(default, "value") and not isinstance(default, (int, float, str)):
                    default = default.value
                node.declare_parameter(name, default, desc)
        except (InvalidParameterValueException, InvalidParameterTypeException) as exc:
            rng = f" (allowed range [{low}, {high}])" if low is not None and high is not None else ""
            raise ConfigurationError(f"parameter '{name}' of {node.get_name()}: {exc}{rng}",
                                     problems=[{"field": name, "value": None, "limit": rng or None,
                                                "message": str(exc)}]) from None


def load_params(node: Node, model: type[Params]) -> Any:
    """Read the declared parameters and validate them with ``model`` (ConfigurationError names
    field, value and limit)."""
    values: dict[str, Any] = {}
    for name, annotation, _info in flatten(model):
        try:
            value = node.get_parameter(name).value
        except ParameterUninitializedException:
            continue
        if value is None:
            continue
        _ptype, as_json = _ros_type(annotation)
        if as_json and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigurationError(f"parameter '{name}' of {node.get_name()}: not valid JSON ({exc})",
                                         problems=[{"field": name, "value": value, "limit": "JSON",
                                                    "message": "not valid JSON"}]) from None
        values[name] = value
    return validate_config(model, values, what=f"parameters of {node.get_name()}")


# --- errors ------------------------------------------------------------------------------
def error_fields(exc: BaseException) -> tuple[int, str, str]:
    """(code, error_type, message) of an exception, for an action result."""
    if isinstance(exc, AIChemistError):
        return int(exc.code), exc.error_type, exc.message
    return int(ResultCode.INTERNAL), type(exc).__name__, f"internal error: {exc!r}"


def set_error(result: Any, exc: BaseException) -> Any:
    result.code, result.error_type, result.message = error_fields(exc)
    return result


def raise_for_result(result: Any) -> Any:
    """Turn a failed action result back into its typed error."""
    if result.code != ResultCode.SUCCESS:
        raise error_from_result(result.code, result.error_type, result.message)
    return result


# --- e-stop ------------------------------------------------------------------------------
def subscribe_estop(node: Node, on_change: Callable[[bool, str, str], None]) -> Any:
    from aichemist_interfaces.msg import SafetyState

    def _cb(msg: SafetyState) -> None:
        on_change(bool(msg.estop), msg.source, msg.reason)

    return node.create_subscription(SafetyState, ESTOP_TOPIC, _cb, ESTOP_QOS,
                                    callback_group=ReentrantCallbackGroup())


def publish_estop(node: Node, publisher: Any, estop: bool, source: str, reason: str) -> None:
    from aichemist_interfaces.msg import SafetyState

    msg = SafetyState()
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.estop, msg.source, msg.reason = estop, source, reason
    publisher.publish(msg)


# --- actions -----------------------------------------------------------------------------
def action_server(node: Node, action_type: Any, name: str, execute: Callable[[Any], Any], **kwargs: Any) -> Any:
    """A ``DeviceActionServer`` with the stack's defaults: reentrant callbacks (cancel is served
    while a goal runs) and a short result timeout (see ACTION_RESULT_TIMEOUT_S)."""
    kwargs.setdefault("callback_group", ReentrantCallbackGroup())
    kwargs.setdefault("result_timeout", ACTION_RESULT_TIMEOUT_S)
    return DeviceActionServer(node, action_type, name, execute, **kwargs)


#: Finished goals listed in each status message besides the active ones (see DeviceActionServer).
STATUS_FINISHED_LISTED = 16

_CANCELABLE = (GoalStatus.STATUS_ACCEPTED, GoalStatus.STATUS_EXECUTING)
_TERMINAL = (GoalStatus.STATUS_SUCCEEDED, GoalStatus.STATUS_ABORTED, GoalStatus.STATUS_CANCELED)
#: allowed goal state transitions of the action protocol: (from, to)
_TRANSITIONS = {(GoalStatus.STATUS_ACCEPTED, GoalStatus.STATUS_EXECUTING),
                (GoalStatus.STATUS_ACCEPTED, GoalStatus.STATUS_CANCELING),
                (GoalStatus.STATUS_EXECUTING, GoalStatus.STATUS_CANCELING),
                (GoalStatus.STATUS_EXECUTING, GoalStatus.STATUS_SUCCEEDED),
                (GoalStatus.STATUS_EXECUTING, GoalStatus.STATUS_ABORTED),
                (GoalStatus.STATUS_CANCELING, GoalStatus.STATUS_SUCCEEDED),
                (GoalStatus.STATUS_CANCELING, GoalStatus.STATUS_ABORTED),
                (GoalStatus.STATUS_CANCELING, GoalStatus.STATUS_CANCELED)}


def _nanoseconds(stamp: Any) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class DeviceGoalHandle:
    """One goal of a ``DeviceActionServer``; the interface of rclpy's ServerGoalHandle that the
    nodes use (``request``, ``goal_id``, ``status``, ``is_active``, ``is_cancel_requested``,
    ``publish_feedback``, ``succeed``, ``abort``, ``canceled``)."""

    def __init__(self, server: "DeviceActionServer", goal_info: GoalInfo, request: Any) -> None:
        self._server = server
        self._info = goal_info
        self._status_msg = GoalStatus(goal_info=goal_info, status=GoalStatus.STATUS_ACCEPTED)
        self.request = request
        self.key = bytes(goal_info.goal_id.uuid)
        self.result: Any = None  # the GetResult response once finished
        self.finished_at = 0.0
        self.waiting: list[Any] = []  # get_result request headers to answer when finished

    @property
    def goal_id(self) -> Any:
        return self._info.goal_id

    @property
    def status(self) -> int:
        return self._status_msg.status

    @property
    def is_active(self) -> bool:
        return self._status_msg.status not in _TERMINAL

    @property
    def is_cancel_requested(self) -> bool:
        return self._status_msg.status == GoalStatus.STATUS_CANCELING

    def publish_feedback(self, feedback: Any) -> None:
        self._server._publish_feedback(self, feedback)

    def succeed(self) -> None:
        self._server._transition(self, GoalStatus.STATUS_SUCCEEDED)

    def abort(self) -> None:
        self._server._transition(self, GoalStatus.STATUS_ABORTED)

    def canceled(self) -> None:
        self._server._transition(self, GoalStatus.STATUS_CANCELED)


class DeviceActionServer(Waitable):
    """A ROS 2 action server that implements the action protocol on plain services and topics.

    Standard action clients (rclpy's ActionClient, ``ros2 action send_goal``) and
    ``DeviceActionClient`` talk to it: the ``_action/send_goal``, ``_action/get_result`` and
    ``_action/cancel_goal`` services, the ``_action/feedback`` topic and the transient-local
    ``_action/status`` topic, with rclpy's default QoS for each. Same arguments and goal handle
    interface as rclpy's ActionServer (``goal_callback`` gets the goal, ``cancel_callback`` the goal
    handle; cancels are refused unless a ``cancel_callback`` accepts them).

    Why not rclpy's ActionServer: per goal it formats the goal's UUID (a numpy array) into five
    debug log lines whatever the log level, runs the goal as a separate executor task, and
    publishes the status of every goal kept (for ``result_timeout``) three times. Here a goal is
    accepted, answered and, with a reentrant callback group, executed in the same callback; its
    status is published when it starts executing and when it ends, listing the active goals and
    the STATUS_FINISHED_LISTED most recently finished ones; finished goals are dropped
    ``result_timeout`` seconds after they end (checked when a request arrives), after which
    ``get_result`` answers STATUS_UNKNOWN, as for a goal id it never saw. A goal id already
    tracked is rejected.
    """

    def __init__(self, node: Node, action_type: Any, action_name: str,
                 execute_callback: Callable[[Any], Any], *,
                 callback_group: Any = None, goal_callback: Optional[Callable[[Any], Any]] = None,
                 cancel_callback: Optional[Callable[[Any], Any]] = None, result_timeout: float = 10.0,
                 goal_service_qos_profile: QoSProfile = qos_profile_services_default,
                 result_service_qos_profile: QoSProfile = qos_profile_services_default,
                 cancel_service_qos_profile: QoSProfile = qos_profile_services_default,
                 feedback_pub_qos_profile: Optional[QoSProfile] = None,
                 status_pub_qos_profile: QoSProfile = qos_profile_action_status_default) -> None:
        from action_msgs.srv import CancelGoal

        group = callback_group if callback_group is not None else node.default_callback_group
        super().__init__(group)
        self._node = node
        self._action_type = action_type
        self._execute_callback = execute_callback
        self._goal_callback = goal_callback
        self._cancel_callback = cancel_callback
        self._result_timeout = float(result_timeout)
        self._inline = isinstance(group, ReentrantCallbackGroup)  # else: its own task (cancel stays served)
        self._logger = node.get_logger().get_child("action_server")
        self._lock = threading.Lock()
        self._goals: dict[bytes, DeviceGoalHandle] = {}
        self._finished: collections.deque[DeviceGoalHandle] = collections.deque()
        from rclpy.type_support import check_for_type_support

        impl = action_type.Impl
        self._types = (impl.SendGoalService, CancelGoal, impl.GetResultService)
        for srv_type in (action_type, *self._types):
            check_for_type_support(srv_type)
        base = f"{action_name}/_action"
        with node.handle:
            self._services = [
                _rclpy.Service(node.handle, impl.SendGoalService, f"{base}/send_goal",
                               goal_service_qos_profile.get_c_qos_profile()),
                _rclpy.Service(node.handle, CancelGoal, f"{base}/cancel_goal",
                               cancel_service_qos_profile.get_c_qos_profile()),
                _rclpy.Service(node.handle, impl.GetResultService, f"{base}/get_result",
                               result_service_qos_profile.get_c_qos_profile()),
            ]
        # without QoS event handlers (as rclpy's action server): four waitables less per executor wait
        quiet = PublisherEventCallbacks(use_default_callbacks=False)
        self._feedback_pub = node.create_publisher(impl.FeedbackMessage, f"{base}/feedback",
                                                   feedback_pub_qos_profile or QoSProfile(depth=10),
                                                   event_callbacks=quiet)
        self._status_pub = node.create_publisher(GoalStatusArray, f"{base}/status", status_pub_qos_profile,
                                                 event_callbacks=quiet)
        self._indices = [0, 0, 0]
        self._ready = [False, False, False]
        node.add_waitable(self)

    @property
    def action_type(self) -> Any:
        return self._action_type

    # --- Waitable ---------------------------------------------------------------------------
    def __enter__(self) -> None:
        for srv in self._services:
            srv.__enter__()

    def __exit__(self, *exc: Any) -> None:
        for srv in self._services:
            srv.__exit__(*exc)

    def get_num_entities(self) -> NumberOfEntities:
        return NumberOfEntities(num_services=3)

    def add_to_wait_set(self, wait_set: Any) -> None:
        self._indices = [wait_set.add_service(srv) for srv in self._services]

    def is_ready(self, wait_set: Any) -> bool:
        self._ready = [wait_set.is_ready("service", i) for i in self._indices]
        return any(self._ready)

    def take_data(self) -> list[tuple[int, Any, Any]]:
        taken = []
        for kind, ready in enumerate(self._ready):
            if ready:
                request, header = self._services[kind].service_take_request(self._types[kind].Request)
                if header is not None:
                    taken.append((kind, request, header))
        self._ready = [False, False, False]
        return taken

    async def execute(self, taken: list[tuple[int, Any, Any]]) -> None:
        accepted = None
        for kind, request, header in taken:  # goal, then cancel, then result: as rclpy orders them
            try:
                if kind == 0:
                    accepted = await self._on_goal(request, header)
                elif kind == 1:
                    await self._on_cancel(request, header)
                else:
                    self._on_result_request(request, header)
            except Exception as exc:  # noqa: BLE001 - one bad request must not stop the server
                self._logger.error(f"action request failed: {exc!r}\n{traceback.format_exc()}")
        if accepted is None:
            return
        if self._inline:  # one executor hand-off less per goal
            await self._run(accepted)
        else:
            self._node.executor.create_task(self._run, accepted)

    # --- protocol ---------------------------------------------------------------------------
    def _respond(self, kind: int, response: Any, header: Any) -> None:
        request_id = getattr(header, "request_id", header)
        try:
            with self._services[kind]:
                self._services[kind].service_send_response(response, request_id)
        except Exception as exc:  # noqa: BLE001 - the client may have gone away
            self._logger.warning(f"could not send an action response: {exc!r}")

    def _expire(self, now: float) -> None:
        cutoff = now - self._result_timeout
        while self._finished and self._finished[0].finished_at <= cutoff:
            self._goals.pop(self._finished.popleft().key, None)

    async def _on_goal(self, request: Any, header: Any) -> Optional[DeviceGoalHandle]:
        accepted = False
        handle = None
        stamp = self._node.get_clock().now().to_msg()
        key = bytes(request.goal_id.uuid)
        with self._lock:
            self._expire(time.monotonic())
            duplicate = key in self._goals
        if not duplicate:
            decision = GoalResponse.ACCEPT
            if self._goal_callback is not None:
                decision = await await_or_execute(self._goal_callback, request.goal)
            if decision == GoalResponse.ACCEPT:
                handle = DeviceGoalHandle(self, GoalInfo(goal_id=request.goal_id, stamp=stamp), request.goal)
                with self._lock:
                    accepted = key not in self._goals
                    if accepted:
                        self._goals[key] = handle
        else:
            self._logger.warning("goal rejected: its goal id is already in use")
        self._respond(0, self._types[0].Response(accepted=accepted, stamp=stamp), header)
        return handle if accepted else None

    async def _run(self, handle: DeviceGoalHandle) -> None:
        if handle.status == GoalStatus.STATUS_ACCEPTED:  # not cancelled meanwhile
            self._transition(handle, GoalStatus.STATUS_EXECUTING)
        try:
            result = await await_or_execute(self._execute_callback, handle)
        except Exception as exc:  # noqa: BLE001 - the client still gets a result
            self._logger.error(f"execute callback raised: {exc!r}\n{traceback.format_exc()}")
            result = None
        if handle.is_active:
            self._logger.warning("goal ended without a terminal state: aborted")
            self._transition(handle, GoalStatus.STATUS_ABORTED)
        if result is None:
            result = self._action_type.Result()
        response = self._types[2].Response(status=handle.status, result=result)
        with self._lock:
            handle.result, waiting, handle.waiting = response, handle.waiting, []
            handle.finished_at = time.monotonic()
            self._finished.append(handle)
        for header in waiting:
            self._respond(2, response, header)

    def _on_result_request(self, request: Any, header: Any) -> None:
        with self._lock:
            self._expire(time.monotonic())
            handle = self._goals.get(bytes(request.goal_id.uuid))
            response = None
            if handle is None:
                response = self._types[2].Response(status=GoalStatus.STATUS_UNKNOWN)
            elif handle.result is not None:
                response = handle.result
            else:
                handle.waiting.append(header)
        if response is not None:
            self._respond(2, response, header)

    async def _on_cancel(self, request: Any, header: Any) -> None:
        from action_msgs.srv import CancelGoal

        Resp = CancelGoal.Response
        goal_id = bytes(request.goal_info.goal_id.uuid)
        stamp = request.goal_info.stamp
        stamp_ns = _nanoseconds(stamp)
        by_id = any(goal_id)
        with self._lock:
            self._expire(time.monotonic())
            target = self._goals.get(goal_id) if by_id else None
            candidates = [h for h in self._goals.values()
                          if (by_id and h is target) or (not by_id and stamp_ns == 0)
                          or (stamp_ns and _nanoseconds(h._info.stamp) <= stamp_ns)]
        response = Resp(return_code=Resp.ERROR_NONE)
        if by_id and target is None and not stamp_ns:
            response.return_code = Resp.ERROR_UNKNOWN_GOAL_ID
        elif by_id and target is not None and target.status not in _CANCELABLE and not stamp_ns:
            response.return_code = Resp.ERROR_GOAL_TERMINATED
        else:
            canceling = []
            for handle in candidates:
                if handle.status not in _CANCELABLE:
                    continue
                decision = CancelResponse.REJECT
                if self._cancel_callback is not None:
                    decision = await await_or_execute(self._cancel_callback, handle)
                if decision == CancelResponse.ACCEPT and self._transition(handle, GoalStatus.STATUS_CANCELING,
                                                                           strict=False):
                    canceling.append(handle._info)
            response.goals_canceling = canceling
            if not canceling:
                response.return_code = Resp.ERROR_REJECTED
        self._respond(1, response, header)

    def _transition(self, handle: DeviceGoalHandle, status: int, strict: bool = True) -> bool:
        with self._lock:
            if (handle._status_msg.status, status) not in _TRANSITIONS:
                if strict:
                    raise _rclpy.RCLError(f"goal state transition {handle._status_msg.status} -> {status} "
                                          "is not allowed")
                return False
            handle._status_msg.status = status
            listed = [h._status_msg for h in self._goals.values() if h.is_active]
            recent = itertools.islice(reversed(self._finished), STATUS_FINISHED_LISTED)
            listed += [h._status_msg for h in recent]
            if not handle.is_active:
                listed.append(handle._status_msg)
        self._status_pub.publish(GoalStatusArray(status_list=listed))
        return True

    def _publish_feedback(self, handle: DeviceGoalHandle, feedback: Any) -> None:
        if not isinstance(feedback, self._action_type.Feedback):
            raise TypeError(f"feedback must be a {self._action_type.Feedback.__name__}")
        message = self._action_type.Impl.FeedbackMessage(goal_id=handle.goal_id, feedback=feedback)
        self._feedback_pub.publish(message)

    def destroy(self) -> None:
        """Destroy the services and publishers (the node's destroy_node does not)."""
        self._node.remove_waitable(self)
        for srv in self._services:
            srv.destroy_when_not_in_use()
        self._node.destroy_publisher(self._feedback_pub)
        self._node.destroy_publisher(self._status_pub)


class DeviceActionClient:
    """A client of a ROS 2 action built on the action's own services and feedback topic.

    rclpy's ActionClient also subscribes to the action's status topic and deserialises, in
    Python, the status of every goal the server still keeps, twice per goal: at device-call rates
    that is most of a call's cost. This client speaks the same protocol (the ``_action/send_goal``,
    ``_action/get_result`` and ``_action/cancel_goal`` services and the ``_action/feedback`` topic,
    with rclpy's default QoS for each), against any action server, without the status topic.
    Use it through ``call_action``.
    """

    def __init__(self, node: Node, action_type: Any, action_name: str, *, callback_group: Any = None) -> None:
        from action_msgs.srv import CancelGoal

        group = callback_group or ReentrantCallbackGroup()
        self._node = node
        self._action_name = node.resolve_service_name(action_name) if hasattr(node, "resolve_service_name") \
            else action_name
        base = f"{action_name}/_action"
        self._send = node.create_client(action_type.Impl.SendGoalService, f"{base}/send_goal", callback_group=group)
        self._result = node.create_client(action_type.Impl.GetResultService, f"{base}/get_result",
                                          callback_group=group)
        self._cancel = node.create_client(CancelGoal, f"{base}/cancel_goal", callback_group=group)
        self._feedback_cbs: dict[bytes, Callable[[Any], None]] = {}
        self._feedback_sub = node.create_subscription(action_type.Impl.FeedbackMessage, f"{base}/feedback",
                                                      self._on_feedback, QoSProfile(depth=10),
                                                      callback_group=group)
        self._action_type = action_type

    #: seconds without the server's services in the graph before a running call gives up
    server_lost_s: float = 3.0
    #: while waiting, ask the server this often whether it still knows the goal (a respawned
    #: server answers STATUS_UNKNOWN: the goal died with its predecessor)
    probe_s: float = 2.0

    def server_is_ready(self) -> bool:
        return self._send.service_is_ready() and self._result.service_is_ready()

    def wait_for_server(self, timeout_sec: float) -> bool:
        deadline = threading.Event()
        waited = 0.0
        while not self.server_is_ready():
            if waited >= timeout_sec:
                return False
            deadline.wait(0.02)
            waited += 0.02
        return True

    def _on_feedback(self, msg: Any) -> None:
        cb = self._feedback_cbs.get(bytes(msg.goal_id.uuid))
        if cb is not None:
            cb(msg.feedback)

    def call(self, goal: Any, *, timeout_s: float, server_timeout_s: float,
             feedback_cb: Optional[Callable[[Any], None]], cancel_event: Optional[threading.Event]) -> Any:
        import uuid as uuid_mod

        from action_msgs.msg import GoalInfo
        from unique_identifier_msgs.msg import UUID

        name = self._action_name
        if not self.server_is_ready() and not self.wait_for_server(server_timeout_s):
            raise CommunicationTimeout(f"action server '{name}' not available after {server_timeout_s:g} s")
        goal_id = UUID(uuid=list(uuid_mod.uuid4().bytes))
        key = bytes(goal_id.uuid)
        if feedback_cb is not None:
            self._feedback_cbs[key] = feedback_cb
        try:
            request = self._action_type.Impl.SendGoalService.Request(goal_id=goal_id, goal=goal)
            response = wait_future(self._send.call_async(request), server_timeout_s)
            if response is None:
                raise CommunicationTimeout(f"action server '{name}' did not answer the goal within "
                                           f"{server_timeout_s:g} s")
            if not response.accepted:
                raise ConflictError(f"action server '{name}' rejected the goal")
            result_future = self._result.call_async(self._action_type.Impl.GetResultService.Request(goal_id=goal_id))
            done = threading.Event()
            result_future.add_done_callback(lambda _f: done.set())
            waited = 0.0
            gone_for = 0.0
            probe: Any = None
            next_probe = self.probe_s
            context = self._node.context
            while not done.wait(0.05):
                waited += 0.05
                # a server whose process died never answers: its services leave the graph ...
                gone_for = 0.0 if self._result.service_is_ready() else gone_for + 0.05
                # ... and one respawned in its place does not know the goal: ask now and then
                if probe is not None and probe.done():
                    answer = probe.result()
                    if answer is not None and answer.status in _TERMINAL:
                        return raise_for_result(answer.result)  # the probe brought the result first
                    if answer is not None and answer.status == GoalStatus.STATUS_UNKNOWN:
                        # the result may be on its way already (a late answer, then expiry): give it time
                        if done.wait(self.probe_s):
                            break
                        raise CommunicationTimeout(f"action server '{name}' no longer knows the goal (its node "
                                                   f"restarted while running it)")
                    probe = None
                elif probe is not None and waited >= next_probe + self.probe_s:
                    probe = None  # asked a server that is gone (not yet out of the graph): ask again
                if probe is None and waited >= next_probe and self._result.service_is_ready():
                    next_probe = waited + self.probe_s
                    probe = self._result.call_async(self._action_type.Impl.GetResultService.Request(goal_id=goal_id))
                stop = None
                if not context.ok():
                    stop = Cancelled(f"'{name}': shutting down")
                elif gone_for >= self.server_lost_s:
                    raise CommunicationTimeout(f"action server '{name}' went away while running the goal "
                                               f"(gone for {gone_for:.1f} s; did its node stop?)")
                elif cancel_event is not None and cancel_event.is_set():
                    stop = Cancelled(f"'{name}' cancelled")
                elif waited >= timeout_s:
                    stop = StepTimeout(f"'{name}' gave no result within {timeout_s:g} s (goal cancelled)")
                if stop is not None:
                    from action_msgs.srv import CancelGoal

                    self._cancel.call_async(CancelGoal.Request(goal_info=GoalInfo(goal_id=goal_id)))
                    if isinstance(stop, Cancelled):
                        done.wait(server_timeout_s)
                    raise stop
            answer = result_future.result()
            if answer.status == GoalStatus.STATUS_UNKNOWN:
                # never a silent success: an expired or forgotten goal answers UNKNOWN with an empty result
                raise CommunicationTimeout(f"action server '{name}' no longer knows the goal (its result expired "
                                           f"or its node restarted)")
            return raise_for_result(answer.result)
        finally:
            self._feedback_cbs.pop(key, None)

    def destroy(self) -> None:
        for entity in (self._send, self._result, self._cancel):
            self._node.destroy_client(entity)
        self._node.destroy_subscription(self._feedback_sub)


def wait_future(future: Any, timeout_s: float) -> Any:
    done = threading.Event()
    future.add_done_callback(lambda _f: done.set())
    return future.result() if done.wait(timeout_s) else None


# how often a request that is safe to repeat is asked again while no answer has come
REASK_S = 3.0


def call_service(client: Any, request: Any, timeout_s: float, *, reask_s: Optional[float] = None) -> Any:
    """The answer to ``request`` over ``client`` within ``timeout_s``, or None when none came (from a
    thread other than the executor's; the caller has waited for the service).

    ``reask_s``, only for requests that are safe to repeat (queries, cancel-all): ask again every
    ``reask_s``. A server answering a client it has not matched yet drops the answer ("failed to
    send response"), and waiting the whole timeout for it once held a lab's bring-up for 60 s."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = max(0.0, deadline - time.monotonic())
        future = client.call_async(request)
        answer = wait_future(future, left if reask_s is None else min(reask_s, left))
        if answer is not None:
            return answer
        client.remove_pending_request(future)
        if reask_s is None or time.monotonic() >= deadline:
            return None


@contextlib.contextmanager
def service_client(node: Node, srv_type: Any, name: str, callback_group: Any = None) -> Iterator[Any]:
    """A client for one exchange, destroyed after it (whatever the outcome)."""
    client = node.create_client(srv_type, name, callback_group=callback_group)
    try:
        yield client
    finally:
        node.destroy_client(client)


def call_action(client: "ActionClient | DeviceActionClient", goal: Any, *, timeout_s: float, server_timeout_s: float = 10.0,
                feedback_cb: Optional[Callable[[Any], None]] = None,
                cancel_event: Optional[threading.Event] = None) -> Any:
    """Send ``goal`` and block until its result (from a thread other than the executor's).

    Raises the typed error of a failed result; CommunicationTimeout when the server is not there;
    ConflictError when the goal is rejected; StepTimeout (after cancelling the goal) on timeout;
    Cancelled (after cancelling the goal) when ``cancel_event`` is set.
    """
    if isinstance(client, DeviceActionClient):
        return client.call(goal, timeout_s=timeout_s, server_timeout_s=server_timeout_s, feedback_cb=feedback_cb,
                           cancel_event=cancel_event)
    name = getattr(client, "_action_name", "action")
    if not client.server_is_ready() and not client.wait_for_server(timeout_sec=server_timeout_s):
        raise CommunicationTimeout(f"action server '{name}' not available after {server_timeout_s:g} s")
    accepted = threading.Event()
    send_future = client.send_goal_async(
        goal, feedback_callback=(lambda fb: feedback_cb(fb.feedback)) if feedback_cb else None)
    send_future.add_done_callback(lambda _f: accepted.set())
    if not accepted.wait(server_timeout_s):
        raise CommunicationTimeout(f"action server '{name}' did not answer the goal within {server_timeout_s:g} s")
    goal_handle = send_future.result()
    if not goal_handle.accepted:
        raise ConflictError(f"action server '{name}' rejected the goal")
    done = threading.Event()
    result_future = goal_handle.get_result_async()
    result_future.add_done_callback(lambda _f: done.set())
    waited = 0.0
    context = client._node.context
    while not done.wait(0.05):
        waited += 0.05
        if not context.ok():
            raise Cancelled(f"'{name}': shutting down")
        if cancel_event is not None and cancel_event.is_set():
            goal_handle.cancel_goal_async()
            done.wait(server_timeout_s)
            raise Cancelled(f"'{name}' cancelled")
        if waited >= timeout_s:
            goal_handle.cancel_goal_async()
            raise StepTimeout(f"'{name}' gave no result within {timeout_s:g} s (goal cancelled)")
    return raise_for_result(result_future.result().result)


# --- hardware lifecycle base -------------------------------------------------------------
class HardwareNode(LifecycleNode):
    """Lifecycle node for anything that moves or heats.

    configure: validate parameters (``params_model``), open ports (``configure_core``);
    activate: enable actuation (``activate_core``);
    deactivate, error, shutdown, e-stop: ``safe_state()`` first, always.
    A failed configure logs one line that says what is wrong (the port, the field) and leaves
    the node unconfigured.
    """

    params_model: type[Params]

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params: Any = None
        self.estop_active = False
        self.estop_reason = ""
        self.cb_group = ReentrantCallbackGroup()
        declare_params(self, self.params_model)
        subscribe_estop(self, self._on_estop)

    # hooks for subclasses ------------------------------------------------------------------
    def configure_core(self, params: Any) -> None:
        """Build the core from validated params; open ports; move nothing."""

    def activate_core(self) -> None:
        """Enable actuation."""

    def deactivate_core(self) -> None:
        """Disable actuation (after safe_state)."""

    def cleanup_core(self) -> None:
        """Close ports, drop the core."""

    def safe_state(self) -> None:
        """Drive the hardware to its safe state. Must be idempotent and never raise."""

    # lifecycle -------------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self.params = load_params(self, self.params_model)
            self.configure_core(self.params)
        except AIChemistError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self._quiet(self.cleanup_core)
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # an unexpected failure still leaves the node unconfigured
            self.get_logger().error(f"configure failed: {exc!r}")
            self._quiet(self.cleanup_core)
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info("configured")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        if self.estop_active:
            self.get_logger().error(f"activate refused: e-stop is active ({self.estop_reason})")
            return TransitionCallbackReturn.FAILURE
        try:
            self.activate_core()
        except Exception as exc:
            self.get_logger().error(f"activate failed: {exc}")
            self._quiet(self.safe_state)
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info("active: actuation enabled")
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._quiet(self.safe_state)
        self._quiet(self.deactivate_core)
        self.get_logger().info("inactive: hardware in safe state")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._quiet(self.safe_state)
        self._quiet(self.cleanup_core)
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._quiet(self.safe_state)
        self._quiet(self.cleanup_core)
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self.get_logger().error("error: driving hardware to safe state")
        self._quiet(self.safe_state)
        self._quiet(self.cleanup_core)
        return TransitionCallbackReturn.SUCCESS

    @property
    def is_active(self) -> bool:
        return self._state_machine.current_state[1] == "active"

    def require_actuation(self) -> None:
        """Raise unless goals may move hardware now (active, no e-stop)."""
        if self.estop_active:
            raise EmergencyStop(f"{self.get_name()}: e-stop active ({self.estop_reason}); goal refused")
        if not self.is_active:
            raise DeviceNotReady(f"{self.get_name()}: node is not active "
                                 f"(state '{self._state_machine.current_state[1]}'); goal refused")

    def _on_estop(self, estop: bool, source: str, reason: str) -> None:
        if estop and not self.estop_active:
            self.get_logger().error(f"E-STOP from {source}: {reason}: driving to safe state")
            self.estop_active, self.estop_reason = True, f"{source}: {reason}"
            self._quiet(self.safe_state)
        elif not estop and self.estop_active:
            self.get_logger().warning(f"e-stop cleared by {source}")
            self.estop_active, self.estop_reason = False, ""

    def _quiet(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # safe-state paths must not stop each other
            self.get_logger().error(f"{getattr(fn, '__name__', fn)} failed: {exc!r}")

    def on_process_exit(self) -> None:
        self._quiet(self.safe_state)
        self._quiet(self.cleanup_core)


# --- main --------------------------------------------------------------------------------
#: seconds a stopping node gets for its clean shutdown (safe state first) before it exits anyway
SHUTDOWN_GRACE_S = 10.0


def spin_node(node_factory: Callable[[], Node], args: Optional[list[str]] = None, threads: int = 4) -> int:
    """Init, spin a MultiThreadedExecutor until Ctrl-C or SIGTERM, then shut down cleanly
    (hardware nodes go to their safe state on the way out).

    An exception escaping a callback is logged with its traceback and the node keeps serving:
    one bad message must not silently stop a node. The process exits when shutdown is done,
    even if a worker thread is still blocked in a device call.
    """
    rclpy.init(args=args)
    node = None
    # one thread: no thread-pool hand-off per callback (only for nodes that never block in one)
    executor = SingleThreadedExecutor() if threads == 1 else MultiThreadedExecutor(num_threads=threads)
    code = 0
    try:
        node = node_factory()
        executor.add_node(node)
        while rclpy.ok():
            try:
                executor.spin()
            except (KeyboardInterrupt, ExternalShutdownException):
                break
            except Exception as exc:  # noqa: BLE001 - logged, and the node keeps serving
                node.get_logger().error(f"unhandled exception in a callback: {exc!r}\n{traceback.format_exc()}")
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except AIChemistError as exc:
        print(f"[fatal] {exc}", flush=True)
        code = 2
    except Exception:  # noqa: BLE001
        print(f"[fatal] {traceback.format_exc()}", flush=True)
        code = 1
    finally:
        # a callback blocked in a long call (the planner's tasks) can hold the executor's shutdown
        # forever; a node told to stop (SIGTERM from a dying launcher too) must not outlive it
        watchdog = threading.Timer(SHUTDOWN_GRACE_S, lambda: os._exit(code or 3))
        watchdog.daemon = True
        watchdog.start()
        if node is not None:
            if hasattr(node, "on_process_exit"):
                node.on_process_exit()
            try:
                node.destroy_node()
            except Exception:  # noqa: BLE001
                pass
        executor.shutdown(timeout_sec=5.0)
        rclpy.try_shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # do not wait for worker threads still blocked in a device call
