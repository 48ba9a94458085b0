"""planner_node: the ExecuteTask action server (/planner/execute_task).

Thin adapter over the planner core: the task journal (planner.journal) refuses a task id it has
already run; planner.runner compiles the task (every check before anything moves), schedules it
and runs it through planner.executor with device adapters that are ROS action clients:

- run_flow -> /flow_reactor/run_flow_experiment (RunFlowExperiment), collecting into the vial the
  robot put at the reactor outlet
- measure  -> /hplc/measure_sample (MeasureSample), for a lab profile with ``analysis: hplc`` or
  ``hplc_robot`` (the autosampler position the robot put the vial in)
- fetch_vial / move_vial / store_vial -> /manipulator/pick_place (PickPlace), ``analysis:
  hplc_robot``: the slots are chosen when the step starts (planner.arbiter)

Tasks run concurrently, each on its own executor, sharing one ``LabArbiter``: a step starts when
its resources (robot, reactor, HPLC) and, for a vial transfer, its vial and a free target slot are
available, older tasks first. So the reactor runs task k+1 while the robot carries task k's vial and
the HPLC measures it. Where the vials are is kept in the journal (a restarted planner knows). The
executor runs on the node's ROS clock (the twin's simulated time with use_sim_time): step timeouts
and the schedule reported in each result (``schedule``: resource, start_s, end_s per step) are on
the lab's timeline.

With ``records_dir`` set, every finished experiment is also written as an Open Reaction Database
record (planner.records.OrdRecorder on the executor's document stream). The executor's step journal lives in the same SQLite file, so a restarted planner fails the steps
that were in flight and resumes a campaign at its next round. The executor's document stream is
forwarded as ExecuteTask feedback. result_json = {"kind", "experiments": [{"conditions", "yield_fraction",
"sty_kg_m3_h", "e_factor", ...}], ...}.
"""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any, Literal, Optional

from pydantic import Field
from rclpy.action import CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node

from aichemist.errors import AIChemistError, Cancelled, ConfigurationError
from aichemist.params import Params
from aichemist_interfaces.action import ExecuteTask, MeasureSample, NavigateToStation, PickPlace, RunFlowExperiment
from aichemist_nodes.node_base import (REASK_S, DeviceActionClient, action_server, call_action, call_service,
                                       declare_params, error_fields, load_params, service_client, spin_node)
from aichemist_nodes.ros_time import RosTimeClock
from planner.arbiter import TRANSFER_OPS, LabArbiter, VialTracker
from planner.compiler import Step
from planner.executor import Executor, RetryPolicy, StepJournal
from planner.journal import TaskJournal
from planner.lab import load_lab
from planner.records import OrdRecorder
from planner.runner import run_task


#: tasks run at once (each on its own executor, sharing the lab's arbiter); the bridge node sends
#: fewer (its max_concurrent), a goal beyond this is rejected
MAX_CONCURRENT_TASKS = 8
LOCATE_VIAL_TIMEOUT_S = 5.0  # asking the robot where a vial is after an interrupted transfer


class PlannerNodeParams(Params):
    journal_path: str = Field(description="SQLite file of the task and step journal (survives restarts)")
    lab: str = Field(default="default", description="lab profile: a name in config/lab/ or a YAML path")
    analysis: Literal["", "inline", "hplc", "hplc_robot"] = Field(
        default="inline", description="override the lab profile's analysis mode ('' keeps the profile's)")
    flow_action: str = Field(default="/flow_reactor/run_flow_experiment")
    hplc_action: str = Field(default="/hplc/measure_sample")
    pick_place_action: str = Field(default="/manipulator/pick_place")
    navigate_action: str = Field(default="/manipulator/navigate_to_station")
    transfer_timeout_s: float = Field(default=600.0, gt=0, le=7200, description="wall time for one vial transfer")
    server_timeout_s: float = Field(default=30.0, gt=0, le=600, description="wait for a device action server")
    experiment_timeout_s: float = Field(default=1800.0, gt=0, le=86400, description="wall time for one flow experiment")
    measure_timeout_s: float = Field(default=1800.0, gt=0, le=86400, description="wall time for one HPLC run")
    collect: bool = Field(default=True, description="divert the steady-state product to a collection vial")
    max_attempts: int = Field(default=2, ge=1, le=10, description="tries of a step failing with a retryable error")
    backoff_s: float = Field(default=2.0, ge=0, le=600, description="first retry delay (doubles each retry)")
    records_dir: str = Field(default="", description="write an ORD record per experiment here ('' = off)")
    result_keep_s: int = Field(default=600, ge=10, le=86400,
                               description="keep a finished task's result for a bridge node that takes the task "
                                           "over (must exceed the bridge's lease)")


class PlannerNode(Node):
    def __init__(self) -> None:
        super().__init__("planner_node")
        declare_params(self, PlannerNodeParams)
        self.params: PlannerNodeParams = load_params(self, PlannerNodeParams)
        lab = load_lab(self.params.lab)
        if self.params.analysis:
            lab = lab.model_copy(update={"analysis": self.params.analysis})
        self.lab = lab
        self.journal = TaskJournal(self.params.journal_path)
        self.steps_journal = StepJournal(self.params.journal_path)
        failed = self.journal.recover()
        lost = self.steps_journal.fail_in_flight()
        if failed or lost:
            self.get_logger().warning(f"failed {len(failed)} task(s) and {len(lost)} step(s) left running by a "
                                   f"previous planner: {failed} {lost}")
        group = ReentrantCallbackGroup()
        self._flow = DeviceActionClient(self, RunFlowExperiment, self.params.flow_action, callback_group=group)
        self._hplc = DeviceActionClient(self, MeasureSample, self.params.hplc_action, callback_group=group)
        self._robot = DeviceActionClient(self, PickPlace, self.params.pick_place_action, callback_group=group)
        self._navigate = DeviceActionClient(self, NavigateToStation, self.params.navigate_action, callback_group=group)
        self._executors: dict[str, Executor] = {}
        self._arrivals = itertools.count()
        self.clock = RosTimeClock(self)
        saved = self.steps_journal.get_all("lab").get("vials") or {}
        # no task runs at start: vials stay where the journal last saw them, unbound
        vials = VialTracker.from_state(lab.vial_tracker_slots(), {"positions": saved.get("positions") or {
            v: where.split("/", 1) for where, v in lab.vials.items()}})
        self.arbiter = LabArbiter({r.name: r.capacity for r in lab.resources}, vials,
                                  on_change=lambda state: self.steps_journal.put("lab", "vials", state),
                                  home=lab.rack_station)
        self._ord = OrdRecorder(lab, self.params.records_dir) if self.params.records_dir else None
        self._group = group
        self._server = None
        # the action is served only once the lab is known: what a previous planner left running is
        # cancelled and the vials are where the robot says they are (tidied back to the rack)
        threading.Thread(target=self._start_serving, args=(bool(failed or lost),), name="planner-start",
                         daemon=True).start()

    def _start_serving(self, after_crash: bool) -> None:
        try:
            if after_crash:
                self._cancel_orphan_goals()
            if self.lab.analysis == "hplc_robot":
                self._reconcile_vials()
        except Exception as exc:  # noqa: BLE001 - serve anyway, with what the journal knows
            self.get_logger().error(f"lab reconciliation failed ({type(exc).__name__}: {exc}); using the journal's "
                                    f"vial positions")
        self._server = action_server(self, ExecuteTask, "/planner/execute_task", self._execute,
                                     goal_callback=self._accept_goal,
                                     cancel_callback=self._on_cancel, callback_group=self._group,
                                     # tasks are few and long: keep results for a bridge takeover
                                     result_timeout=self.params.result_keep_s)
        self.get_logger().info(f"planner ready: /planner/execute_task (lab {self.lab.name}, "
                               f"analysis {self.lab.analysis})")

    def _retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.params.max_attempts, backoff_s=self.params.backoff_s,
                           max_backoff_s=max(60.0, 4 * self.params.backoff_s))

    def _query(self, srv_type: Any, name: str, request: Any, timeout_s: float) -> Any:
        """The answer to a request that is safe to repeat (asked again while none comes), or None."""
        with service_client(self, srv_type, name, self._group) as client:
            if not client.wait_for_service(timeout_sec=timeout_s):
                return None
            return call_service(client, request, timeout_s, reask_s=REASK_S)

    def _cancel_orphan_goals(self) -> None:
        """The previous planner died: stop whatever it left running on the devices (a cancel
        request with a zero goal id and stamp cancels all of a server's goals)."""
        from action_msgs.srv import CancelGoal

        actions = [self.params.flow_action, self.params.hplc_action]
        if self.lab.analysis == "hplc_robot":
            actions.append(self.params.pick_place_action)
        for action in actions:
            answer = self._query(CancelGoal, f"{action}/_action/cancel_goal", CancelGoal.Request(), 10.0)
            n = len(answer.goals_canceling) if answer is not None else 0
            self.get_logger().warning(f"after a restart: cancelled {n} goal(s) left running on {action}"
                                   if answer is not None else f"after a restart: {action} did not answer a cancel")

    def _robot_positions(self, timeout_s: Optional[float] = None) -> Optional[dict[str, tuple[str, str]]]:
        """Where the robot says each vial is, by the lab's station names (a vial in its gripper
        counts as in the slot it came from); None when the robot does not answer."""
        from aichemist_interfaces.srv import GetInventory

        answer = self._query(GetInventory, "/manipulator/get_inventory", GetInventory.Request(),
                             self.params.server_timeout_s if timeout_s is None else timeout_s)
        if answer is None or answer.code != 0:
            self.get_logger().warning("the robot did not say where the vials are"
                                   + (f" ({answer.error_type}: {answer.message})" if answer is not None else ""))
            return None
        by_robot_name = {st.robot_name: st.name for st in self.lab.stations if st.slots}
        robot_view = dict(zip(answer.slots, answer.vials))
        if answer.held_vial and answer.held_from:
            robot_view[answer.held_from] = answer.held_vial
        positions = {}
        for where, vial in robot_view.items():
            station, _, slot = where.partition("/")
            if station in by_robot_name:
                positions[vial] = (by_robot_name[station], slot)
        return positions

    def _reconcile_vials(self) -> None:
        """Take the vial positions from the robot (it knows where it put them); vials away from
        the rack are returned."""
        positions = self._robot_positions()
        if positions is None:
            self.get_logger().warning("using the journal's vial positions")
            return
        stray = self.arbiter.reconcile(positions)
        self.get_logger().info(f"vials from the robot: {len(positions)} known"
                               + (f"; returning {', '.join(stray)} to the rack" if stray else ""))
        if stray:
            self._tidy("startup", stray, priority=-1)

    def _accept_goal(self, _goal: Any) -> GoalResponse:
        if len(self._executors) >= MAX_CONCURRENT_TASKS:
            self.get_logger().warning(f"goal rejected: {MAX_CONCURRENT_TASKS} tasks already running")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _on_cancel(self, goal_handle: Any) -> CancelResponse:
        executor = self._executors.get(goal_handle.request.task_id)
        if executor is not None:
            executor.cancel()
        return CancelResponse.ACCEPT

    # ---- device adapters (ROS action clients) ------------------------------------------------
    def _device_name(self, task_id: str, vial: str, station: str) -> str:
        """The device's name for the position the robot put the task's ``vial`` in at ``station``."""
        where = self.arbiter.slot_of(task_id, vial)
        if where is None or where[0] != station:
            raise ConfigurationError(f"vial {vial} of task {task_id} is not at {station} "
                                     f"(it is at {'/'.join(where) if where else 'no known place'})")
        return self.lab.station(station).slots[where[1]]

    def _run_flow(self, task_id: str) -> Any:
        def adapter(step: Any, ctx: Any) -> dict[str, Any]:
            c = step.params["conditions"]
            robot = self.lab.analysis == "hplc_robot" and step.params.get("collect_vial")
            goal = RunFlowExperiment.Goal(experiment_id=f"{task_id}/{step.params['experiment_id']}",
                                          residence_time_min=c["residence_time_min"], temp_c=c["temp_c"],
                                          equivalents=c["equivalents"], conc_dfnb_m=c["conc_dfnb_m"],
                                          collect=self.params.collect)
            if robot:  # collect into the vial the robot put at the outlet
                goal.collect_vial = self._device_name(task_id, step.params["collect_vial"], self.lab.reactor_station)

            def on_feedback(fb: Any) -> None:
                ctx.emit(device="flow_reactor", phase=fb.phase, elapsed_s=fb.elapsed_s,
                         pressure_bar=fb.pressure_bar, temp_c=fb.temp_c)

            res = call_action(self._flow, goal, timeout_s=max(self.params.experiment_timeout_s, step.timeout_s),
                              server_timeout_s=self.params.server_timeout_s, feedback_cb=on_feedback,
                              cancel_event=ctx.cancel)
            record = json.loads(res.result_json) if res.result_json else {}
            return {"yield_fraction": res.yield_fraction, "conc_product_m": res.conc_product_m,
                    "time_to_steady_state_s": res.time_to_steady_state_s, "reagent_used_ml": res.reagent_used_ml,
                    "sty_kg_m3_h": record.get("sty_kg_m3_h"), "e_factor": record.get("e_factor"),
                    "collected_vial": record.get("collected_vial"), "flow_record": record}
        return adapter

    def _measure(self, task_id: str) -> Any:
        def adapter(step: Any, ctx: Any) -> dict[str, Any]:
            run = ctx.results.get(step.params.get("run_step", ""), {})
            if self.lab.analysis == "hplc_robot":  # the autosampler position the robot put the vial in
                vial = self._device_name(task_id, step.params["vial_id"], self.lab.hplc_station)
            else:
                vial = run.get("collected_vial") or step.params["vial_id"]
            goal = MeasureSample.Goal(sample_id=f"{task_id}/{step.id}", vial=vial,
                                      conc_dfnb_fed_m=float(step.params.get("conc_dfnb_fed_m") or 0.0))
            res = call_action(self._hplc, goal, timeout_s=max(self.params.measure_timeout_s, step.timeout_s),
                              server_timeout_s=self.params.server_timeout_s, cancel_event=ctx.cancel)
            return {"yield_fraction": res.yield_fraction, "vial": vial,
                    "peaks": {n: {"retention_min": t, "area": a, "conc_m": c} for n, t, a, c in
                              zip(res.peak_names, res.peak_retention_min, res.peak_areas, res.peak_conc_m)}}
        return adapter

    def _transfer(self, task_id: str) -> Any:
        def adapter(step: Any, ctx: Any) -> dict[str, Any]:
            t = ctx.transfer
            if t is None:
                raise ConfigurationError(f"step {step.id} ({step.op}): no slots were chosen for the transfer")
            source, target = self.lab.station(t.from_station), self.lab.station(t.to_station)
            goal = PickPlace.Goal(source_station=source.robot_name, source_slot=t.from_slot,
                                  target_station=target.robot_name, target_slot=t.to_slot)

            def on_feedback(fb: Any) -> None:
                ctx.emit(device="robot", phase=fb.phase, progress=fb.progress)

            def moved(robot_duration_s: Optional[float]) -> dict[str, Any]:
                return {"vial": t.vial, "from": f"{t.from_station}/{t.from_slot}", "to": f"{t.to_station}/{t.to_slot}",
                        "robot_duration_s": robot_duration_s}

            try:
                res = call_action(self._robot, goal, timeout_s=self.params.transfer_timeout_s,
                                  server_timeout_s=self.params.server_timeout_s, feedback_cb=on_feedback,
                                  cancel_event=ctx.cancel)
            except AIChemistError as exc:
                # interrupted (a timeout, a cancel, a robot restart): the vial may be anywhere on its
                # way; the planner's books follow the robot's, so a retry and a tidy-up start from
                # where the vial really is
                try:
                    where = self._locate_vial(t.vial)
                except Exception as query_error:  # noqa: BLE001 - the transfer's own error is the one to report
                    self.get_logger().warning(f"{step.id}: asking the robot where {t.vial} is failed: {query_error!r}")
                    raise exc from None
                if where == (t.to_station, t.to_slot):
                    # the work is done (a later task cancel still stops the steps after this one)
                    self.get_logger().warning(f"{step.id}: {t.vial} reached {t.to_station}/{t.to_slot} before the "
                                              f"transfer was interrupted ({type(exc).__name__}); counted as done")
                    return moved(None)
                raise
            if res.vial_id and res.vial_id != t.vial:
                self.get_logger().warning(f"{step.id}: the robot carried {res.vial_id}, the planner expected {t.vial}")
            return moved(res.duration_s)
        return adapter

    def _locate_vial(self, vial: str) -> Optional[tuple[str, str]]:
        """Ask the robot where ``vial`` is and move it there in the planner's books (briefly: a
        robot that is down does not answer, and the step's retry or failure should not wait)."""
        positions = self._robot_positions(timeout_s=LOCATE_VIAL_TIMEOUT_S)
        if positions is None:
            return None
        where = positions.get(vial)
        before = self.arbiter.position(vial)
        refused = self.arbiter.relocate(vial, where)
        if refused:
            self.get_logger().error(f"{vial}: the robot reports it at {'/'.join(where)}, which the planner's books "
                                    f"cannot hold ({refused}); books unchanged")
            return None
        if where != (tuple(before) if before else None):
            self.get_logger().warning(f"{vial}: the robot has it at {'/'.join(where) if where else 'no known slot'}, "
                                   f"not {'/'.join(before) if before else 'unknown'}; the planner follows the robot")
        return where

    def _tidy(self, task_id: str, vials: list[str], priority: int) -> None:
        """Vials a failed task left at the reactor outlet or the autosampler go back to the rack
        (before its failure is reported), so the slots are free for the tasks that follow."""
        if not vials or self.lab.analysis != "hplc_robot":
            return
        owner = f"{task_id}/tidy"
        steps = []
        for vial in vials:
            where = self.arbiter.position(vial)
            if where is None:
                continue
            self.arbiter.adopt(owner, vial, vial)
            d = self.lab.durations.move_vial_s
            steps.append(Step(f"tidy.{vial}", "store_vial", [self.lab.robot], d,
                              params={"vial_id": vial, "from_station": where[0], "to_station": self.lab.rack_station},
                              timeout_s=d * self.lab.durations.timeout_factor + 30.0))
        transfer = self._transfer(owner)
        tidy = Executor({op: transfer for op in TRANSFER_OPS}, self.steps_journal, clock=self.clock,
                        retry=self._retry_policy(),
                        arbiter=self.arbiter, owner=owner, priority=priority)
        try:
            tidy.run(f"{owner}/{int(self.clock.now() * 1000)}", steps)
            self.get_logger().info(f"{task_id}: returned {', '.join(vials)} to the rack")
        except Exception as exc:  # noqa: BLE001 - reported; the vial stays where it is
            self.get_logger().error(f"{task_id}: could not return {vials} to the rack: {exc}")

    def _relocalise(self, step: Any, ctx: Any, exc: Exception) -> None:
        """Recovery before retrying a transfer that failed to localise: dock at the source again."""
        t = ctx.transfer
        if t is None:
            return
        goal = NavigateToStation.Goal(station=self.lab.station(t.from_station).robot_name)
        call_action(self._navigate, goal, timeout_s=self.params.transfer_timeout_s,
                    server_timeout_s=self.params.server_timeout_s, cancel_event=ctx.cancel)

    # ---- the action ---------------------------------------------------------------------------
    def _execute(self, goal_handle: Any) -> ExecuteTask.Result:
        request = goal_handle.request
        result = ExecuteTask.Result()

        def feedback(phase: str, progress: float, detail: dict) -> None:
            fb = ExecuteTask.Feedback()
            fb.phase, fb.progress, fb.detail_json = phase, float(progress), json.dumps(detail, default=str)
            goal_handle.publish_feedback(fb)

        try:
            self.journal.begin(request.task_id, request.task_json)
        except Exception as exc:  # already run: refuse, record nothing new
            result.code, result.error_type, result.message = error_fields(exc)
            goal_handle.abort()
            return result
        transfer = self._transfer(request.task_id)
        executor = Executor({"run_flow": self._run_flow(request.task_id), "measure": self._measure(request.task_id),
                             **{op: transfer for op in TRANSFER_OPS}},
                            self.steps_journal, clock=self.clock,
                            retry=self._retry_policy(),
                            recoveries={"PerceptionError": self._relocalise, "LocalisationFailed": self._relocalise},
                            arbiter=self.arbiter, owner=request.task_id, priority=next(self._arrivals))
        state = {"progress": 0.0}
        schedule: list[dict[str, Any]] = []
        started: dict[str, float] = {}

        def on_schedule(doc: dict) -> None:
            if doc["type"] != "event" or "clock_s" not in doc:
                return
            if doc["state"] == "running":
                started.setdefault(doc["step_id"], doc["clock_s"])
            elif doc["state"] in ("succeeded", "failed", "cancelled") and doc["step_id"] in started:
                schedule.append({"step": doc["step_id"], "op": doc.get("op"), "resources": doc.get("resources", []),
                                 "experiment": doc.get("experiment"), "state": doc["state"],
                                 "start_s": started.pop(doc["step_id"]), "end_s": doc["clock_s"]})

        def on_document(doc: dict) -> None:
            if doc["type"] == "event" and doc.get("state") in ("running", "succeeded", "failed", "retrying",
                                                               "recovering", "progress", "waiting"):
                phase = {"recovering": "recovering", "waiting": "queued"}.get(doc["state"], "running")
                feedback(phase, state["progress"],
                         {k: v for k, v in doc.items() if k not in ("result",)})

        def on_progress(phase: str, fraction: float, detail: dict) -> None:
            state["progress"] = fraction
            feedback(phase, fraction, detail)

        executor.subscribe(on_document)
        executor.subscribe(on_schedule)
        if self._ord is not None:
            executor.subscribe(self._ord)
        self._executors[request.task_id] = executor
        try:
            feedback("compiling", 0.0, {})
            outcome = run_task(request.task_id, request.task_json, self.lab, executor, progress=on_progress)
            outcome.pop("steps", None)
            outcome["schedule"] = schedule
            result.result_json = json.dumps(outcome, default=str)
            self.journal.finish(request.task_id, code=0, result=outcome)
            goal_handle.succeed()
        except Exception as exc:
            self._tidy(request.task_id, executor.left_behind, executor.priority)
            result.code, result.error_type, result.message = error_fields(exc)
            self.journal.finish(request.task_id, code=result.code, error_type=result.error_type,
                                message=result.message)
            self.get_logger().error(f"task {request.task_id} failed: {result.error_type}: {result.message}")
            if isinstance(exc, Cancelled) and goal_handle.is_cancel_requested:
                goal_handle.canceled()
            else:
                goal_handle.abort()
        finally:
            self._executors.pop(request.task_id, None)
        return result

    def destroy_node(self) -> None:
        self.journal.close()
        self.steps_journal.close()
        super().destroy_node()


def main(args: Any = None) -> int:
    # each running task holds an executor thread for its whole duration (ExecuteTask's execute
    # callback); the device calls' answers need free ones: more threads than tasks, always
    return spin_node(PlannerNode, args, threads=MAX_CONCURRENT_TASKS + 4)


if __name__ == "__main__":
    raise SystemExit(main())
