"""bridge_node: the ROS side of the cloud bridge.

Claims queued tasks from the bridge database with a lease (renewed by a heartbeat), sends each
to the planner's ``/planner/execute_task`` (aichemist_interfaces/action/ExecuteTask), writes
feedback and the result back, and reports what it sees of the lab (ROS nodes, the flow reactor's
state, the e-stop) for ``GET /v1/lab/status``.

Exactly-once across crashes: the goal id is stored with the task *before* the goal is sent.
When a bridge node dies its lease runs out and another bridge node claims the task; seeing a
stored goal id it does not send the task again but asks the planner's action server for that
goal's result (the ``_action/get_result`` service answers for any client, waiting until the goal
ends). Only if the planner does not know the goal (it never arrived) is the task sent again, with
the same task id, which the planner refuses if it ever ran it. The terminal state is a
conditional write that only the current lease holder can make, once (cloud_bridge.store).

Parameters: cloud_bridge.config.BridgeNodeParams (database_url, lab, owner, lease_s, heartbeat_s,
poll_s, max_attempts, max_concurrent, action_name, status_period_s).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Optional

from action_msgs.msg import GoalInfo, GoalStatus
from rclpy.action import ActionClient
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from unique_identifier_msgs.msg import UUID

from aichemist.errors import ResultCode
from aichemist_nodes.node_base import STATE_QOS, declare_params, load_params, spin_node, subscribe_estop
from cloud_bridge import store
from cloud_bridge.config import BridgeNodeParams, resolve_database_url
from cloud_bridge.db import Database

FEEDBACK_MIN_PERIOD_S = 0.5  # progress rows written at most this often per task (unless the phase changes)


@dataclass
class Running:
    claim: store.Claim
    goal_uuid: Optional[str] = None
    handle: Any = None
    resumed: bool = False
    cancel_sent: bool = False
    last_phase: str = ""
    last_feedback_at: float = 0.0
    done: bool = False
    planner: frozenset = frozenset()   # the planner instance the goal went to (its status publisher's gids)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _uuid_msg(value: str) -> UUID:
    return UUID(uuid=list(uuid.UUID(value).bytes))


def _uuid_str(msg: UUID) -> str:
    return str(uuid.UUID(bytes=bytes(msg.uuid)))


class BridgeNode(Node):
    def __init__(self) -> None:
        super().__init__("bridge_node")
        declare_params(self, BridgeNodeParams)
        self.params: BridgeNodeParams = load_params(self, BridgeNodeParams)
        p = self.params
        self.owner = p.owner or f"{socket.gethostname()}:{os.getpid()}"
        self.db = Database(resolve_database_url(p.database_url or None), pool_size=4)
        self.db.upgrade()
        from aichemist_interfaces.action import ExecuteTask

        self._action_type = ExecuteTask
        self.cb = ReentrantCallbackGroup()
        self.client = ActionClient(self, ExecuteTask, p.action_name, callback_group=self.cb)
        self.get_result_client = self.create_client(ExecuteTask.Impl.GetResultService,
                                                    f"{p.action_name}/_action/get_result", callback_group=self.cb)
        self.cancel_client = self.create_client(ExecuteTask.Impl.CancelGoalService,
                                                f"{p.action_name}/_action/cancel_goal", callback_group=self.cb)
        # One raw feedback subscription serves sent and resumed goals alike (matched by goal id).
        self.create_subscription(ExecuteTask.Impl.FeedbackMessage, f"{p.action_name}/_action/feedback",
                                 self._on_feedback, 10, callback_group=self.cb)
        self.running: dict[str, Running] = {}
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._safety: dict[str, Any] | None = None
        self._devices: dict[str, Any] = {}
        subscribe_estop(self, self._on_estop)
        try:
            from aichemist_interfaces.msg import FlowReactorState

            self.create_subscription(FlowReactorState, "/flow_reactor/state", self._on_reactor_state, STATE_QOS,
                                     callback_group=self.cb)
        except ImportError:
            pass
        from lifecycle_msgs.srv import GetState

        self._get_state = {name: self.create_client(GetState, f"/{name}/get_state", callback_group=self.cb)
                           for name in p.device_nodes}
        self.create_timer(p.poll_s, self._poll, callback_group=self.cb)
        self.create_timer(p.heartbeat_s, self._heartbeat, callback_group=self.cb)
        self.create_timer(p.status_period_s, self._report_status, callback_group=self.cb)
        self.get_logger().info(f"bridge for lab '{p.lab}' as '{self.owner}' (lease {p.lease_s:g} s, "
                               f"heartbeat {p.heartbeat_s:g} s) -> {p.action_name}")

    # --- queue --------------------------------------------------------------------------------
    def _poll(self) -> None:
        if not self._poll_lock.acquire(blocking=False):
            return
        try:
            with self._lock:
                busy = len(self.running)
            if busy >= self.params.max_concurrent:
                return
            if not self.client.server_is_ready():
                return  # leave tasks queued while no planner is there
            claim = store.claim_next(self.db, lab=self.params.lab, owner=self.owner, lease_s=self.params.lease_s,
                                     max_attempts=self.params.max_attempts)
            if claim is None:
                return
            run = Running(claim)
            with self._lock:
                self.running[claim.id] = run
            if claim.goal_uuid:
                self.get_logger().warning(f"task {claim.id}: taking over from {claim.previous_owner}; "
                                          f"asking the planner for goal {claim.goal_uuid}")
                run.goal_uuid, run.resumed = claim.goal_uuid, True
                self._resume(run)
            else:
                self._send(run)
        except Exception as exc:  # a database hiccup must not kill the timer
            self.get_logger().error(f"poll failed: {type(exc).__name__}: {exc}")
        finally:
            self._poll_lock.release()

    def _send(self, run: Running) -> None:
        goal_uuid = str(uuid.uuid4())
        if not store.record_goal(self.db, run.claim.id, self.owner, goal_uuid):
            self._drop(run, "lease lost before sending")
            return
        run.goal_uuid = goal_uuid
        run.planner = self._planner_instance()
        goal = self._action_type.Goal(task_id=run.claim.id, task_json=run.claim.task_json)
        self.get_logger().info(f"task {run.claim.id}: sending to the planner (goal {goal_uuid}, "
                               f"attempt {run.claim.attempts})")
        future = self.client.send_goal_async(goal, goal_uuid=_uuid_msg(goal_uuid))
        future.add_done_callback(partial(self._on_goal_response, run))

    def _on_goal_response(self, run: Running, future: Any) -> None:
        try:
            handle = future.result()
        except Exception as exc:
            self._finish(run, "failed", int(ResultCode.COMMUNICATION_ERROR), "CommunicationTimeout",
                         f"sending the goal to the planner failed: {exc!r}", "")
            return
        if not handle.accepted:
            self._finish(run, "failed", int(ResultCode.CONFLICT), "ConflictError",
                         "the planner rejected the goal (it refuses a task id it has already run)", "")
            return
        run.handle = handle
        handle.get_result_async().add_done_callback(partial(self._on_result, run))

    def _on_result(self, run: Running, future: Any) -> None:
        try:
            wrapped = future.result()
        except Exception as exc:
            self._finish(run, "failed", int(ResultCode.COMMUNICATION_ERROR), "CommunicationTimeout",
                         f"no result from the planner: {exc!r}", "")
            return
        self._finish_from(run, wrapped.status, wrapped.result)

    def _resume(self, run: Running) -> None:
        if not self.get_result_client.service_is_ready():
            self._release_for_retry(run, "planner result service not ready")
            return
        run.planner = self._planner_instance()
        request = self._action_type.Impl.GetResultService.Request(goal_id=_uuid_msg(run.goal_uuid or ""))
        self.get_result_client.call_async(request).add_done_callback(partial(self._on_resumed_result, run))

    def _planner_instance(self) -> frozenset:
        """Identifies the planner process serving the action (the gids of its status publisher)."""
        infos = self.get_publishers_info_by_topic(f"{self.params.action_name}/_action/status")
        return frozenset(bytes(i.endpoint_gid) for i in infos)

    def _check_planner_restarts(self, runs: list[Running]) -> None:
        """A goal sent to a planner process that has since died never gets a result: once a new
        planner serves the action, ask it (it fails the task it lost, or the task is sent again)."""
        current = self._planner_instance()
        if not current or not self.get_result_client.service_is_ready():
            return
        for run in runs:
            if run.done or not run.goal_uuid or not run.planner or run.planner & current:
                continue
            self.get_logger().warning(f"task {run.claim.id}: the planner that ran goal {run.goal_uuid} has "
                                      f"gone; asking its successor")
            self._resume(run)

    def _on_resumed_result(self, run: Running, future: Any) -> None:
        try:
            response = future.result()
        except Exception as exc:
            self._release_for_retry(run, f"get_result failed: {exc!r}")
            return
        if response.status == GoalStatus.STATUS_UNKNOWN:
            # The planner never saw that goal (the previous bridge died before sending it) or has
            # forgotten it: send the task again. The planner refuses it if it did run it.
            self.get_logger().warning(f"task {run.claim.id}: planner does not know goal {run.goal_uuid}; resending")
            run.resumed = False
            self._send(run)
            return
        self._finish_from(run, response.status, response.result)

    def _finish_from(self, run: Running, status: int, result: Any) -> None:
        code = int(result.code)
        if status == GoalStatus.STATUS_SUCCEEDED and code == ResultCode.SUCCESS:
            self._finish(run, "succeeded", code, "", result.message, result.result_json)
        elif status == GoalStatus.STATUS_CANCELED or code == ResultCode.CANCELLED:
            self._finish(run, "cancelled", int(ResultCode.CANCELLED), result.error_type or "Cancelled",
                         result.message or "cancelled on request", result.result_json)
        else:
            message = result.message or f"the planner ended the goal with status {status} and no message"
            self._finish(run, "failed", code or int(ResultCode.INTERNAL), result.error_type or "AIChemistError",
                         message, result.result_json)

    def _finish(self, run: Running, status: str, code: int, error_type: str, message: str, result_json: str) -> None:
        with run.lock:
            if run.done:
                return
            run.done = True
        try:
            written = store.finish_task(self.db, run.claim.id, self.owner, status=status, code=code,
                                        error_type=error_type, message=message, result_json=result_json)
        except Exception as exc:
            # Leave the lease to expire: a successor asks the planner for the same goal's result.
            self.get_logger().error(f"task {run.claim.id}: could not write the result: {exc!r}")
            written = False
        if written:
            self.get_logger().info(f"task {run.claim.id}: {status} ({error_type or 'ok'}) {message[:200]}")
        else:
            self.get_logger().warning(f"task {run.claim.id}: result not written (lease no longer ours)")
        with self._lock:
            self.running.pop(run.claim.id, None)

    def _drop(self, run: Running, why: str) -> None:
        self.get_logger().warning(f"task {run.claim.id}: {why}; leaving it")
        run.done = True
        with self._lock:
            self.running.pop(run.claim.id, None)

    def _release_for_retry(self, run: Running, why: str) -> None:
        """Stop tracking a resumed task and let its lease lapse so it is tried again later."""
        self._drop(run, why)

    # --- feedback, heartbeat, cancel -----------------------------------------------------------
    def _on_feedback(self, msg: Any) -> None:
        goal = _uuid_str(msg.goal_id)
        with self._lock:
            run = next((r for r in self.running.values() if r.goal_uuid == goal), None)
        if run is None:
            return
        fb = msg.feedback
        now = time.monotonic()
        if fb.phase == run.last_phase and now - run.last_feedback_at < FEEDBACK_MIN_PERIOD_S:
            return
        run.last_phase, run.last_feedback_at = fb.phase, now
        try:
            detail = json.loads(fb.detail_json) if fb.detail_json else None
        except ValueError:
            detail = fb.detail_json
        try:
            store.record_progress(self.db, run.claim.id, self.owner, phase=fb.phase, progress=float(fb.progress),
                                  detail=detail)
        except Exception as exc:
            self.get_logger().error(f"task {run.claim.id}: progress not written: {exc!r}")

    def _heartbeat(self) -> None:
        with self._lock:
            runs = list(self.running.values())
        self._check_planner_restarts(runs)
        for run in runs:
            try:
                held, cancel = store.heartbeat(self.db, run.claim.id, self.owner, self.params.lease_s)
            except Exception as exc:
                self.get_logger().error(f"task {run.claim.id}: heartbeat failed: {exc!r}")
                continue
            if not held:
                self._drop(run, "lease lost (another bridge node took it over or it ended)")
                continue
            if cancel and not run.cancel_sent and run.goal_uuid:
                run.cancel_sent = True
                self.get_logger().info(f"task {run.claim.id}: cancel requested; cancelling goal {run.goal_uuid}")
                request = self._action_type.Impl.CancelGoalService.Request(
                    goal_info=GoalInfo(goal_id=_uuid_msg(run.goal_uuid)))
                self.cancel_client.call_async(request)

    # --- lab status ----------------------------------------------------------------------------
    def _on_estop(self, estop: bool, source: str, reason: str) -> None:
        self._safety = {"estop": estop, "source": source, "reason": reason, "seen_at": time.time()}

    def _on_reactor_state(self, msg: Any) -> None:
        self._devices["flow_reactor"] = {
            "lifecycle_state": msg.lifecycle_state, "phase": msg.phase, "safe": msg.safe,
            "active_interlock": msg.active_interlock, "pressure_bar": msg.pressure_bar, "temp_c": msg.temp_c,
            "temp_setpoint_c": msg.temp_setpoint_c,
            "pumps": {n: {"flow_ml_min": f, "setpoint_ml_min": s}
                      for n, f, s in zip(msg.pump_names, msg.pump_flow_ml_min, msg.pump_flow_setpoint_ml_min)},
            "seen_at": time.time(),
        }

    def _query_device_states(self, nodes: list[str]) -> None:
        """Ask each device node for its lifecycle state (answers land in the next report)."""
        from lifecycle_msgs.srv import GetState

        for name, client in self._get_state.items():
            device = name[:-5] if name.endswith("_node") else name
            if f"/{name}" not in nodes:
                self._devices[device] = {**self._devices.get(device, {}), "lifecycle_state": "absent",
                                         "seen_at": time.time()}
                continue
            if not client.service_is_ready():
                continue

            def done(future: Any, device: str = device) -> None:
                try:
                    label = future.result().current_state.label
                except Exception:  # the node went away between the check and the answer
                    return
                self._devices[device] = {**self._devices.get(device, {}), "lifecycle_state": label,
                                         "seen_at": time.time()}
            client.call_async(GetState.Request()).add_done_callback(done)

    def _report_status(self) -> None:
        nodes = sorted(f"{ns.rstrip('/')}/{name}" for name, ns in self.get_node_names_and_namespaces())
        self._query_device_states(nodes)
        with self._lock:
            active = sorted(self.running)
        report = {"nodes": nodes, "devices": dict(self._devices), "safety": self._safety,
                  "bridge": {"owner": self.owner, "active_tasks": active,
                             "planner_ready": self.client.server_is_ready()}}
        try:
            store.report_lab_status(self.db, self.params.lab, self.owner, report)
        except Exception as exc:
            self.get_logger().error(f"lab status not written: {exc!r}")

    def on_process_exit(self) -> None:
        """Clean shutdown: give back tasks not sent yet; let a successor resume the others at once."""
        with self._lock:
            runs = list(self.running.values())
        for run in runs:
            try:
                if not store.release_task(self.db, run.claim.id, self.owner):
                    store.expire_lease(self.db, run.claim.id, self.owner)
            except Exception as exc:
                self.get_logger().error(f"task {run.claim.id}: could not hand back: {exc!r}")
        self.db.dispose()


def main(args: Optional[list[str]] = None) -> int:
    return spin_node(BridgeNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
