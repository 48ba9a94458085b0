"""planner_node: the ExecuteTask action server (/planner/execute_task).

Thin adapter: parse and check the task (planner.tasks), refuse a task id the journal has seen
(planner.journal), run it through the device adapters (ROS action clients), write the terminal
state once, and map errors to result codes. A flow_experiment runs as one RunFlowExperiment on
the flow reactor node.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from pydantic import Field
from rclpy.action import ActionClient, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node

from aichemist.errors import Cancelled
from aichemist.params import Params
from aichemist_interfaces.action import ExecuteTask, RunFlowExperiment
from aichemist_nodes.node_base import (action_server, call_action, declare_params, error_fields, load_params,
                                       spin_node)
from planner.journal import TaskJournal
from planner.tasks import FlowExperimentTask, LabLimits, check_limits, parse_task


class PlannerNodeParams(Params):
    journal_path: str = Field(description="SQLite file of the task journal (survives restarts)")
    flow_action: str = Field(default="/flow_reactor/run_flow_experiment")
    server_timeout_s: float = Field(default=30.0, gt=0, le=600, description="wait for a device action server")
    experiment_timeout_s: float = Field(default=1800.0, gt=0, le=86400, description="wall time for one flow experiment")
    collect: bool = Field(default=True, description="divert the steady-state product to a collection vial")
    limits: LabLimits = Field(default_factory=LabLimits)


class PlannerNode(Node):
    def __init__(self) -> None:
        super().__init__("planner_node")
        declare_params(self, PlannerNodeParams)
        self.params: PlannerNodeParams = load_params(self, PlannerNodeParams)
        self.journal = TaskJournal(self.params.journal_path)
        failed = self.journal.recover()
        if failed:
            self.get_logger().warning(f"failed {len(failed)} task(s) left running by a previous planner: {failed}")
        group = ReentrantCallbackGroup()
        self._flow = ActionClient(self, RunFlowExperiment, self.params.flow_action, callback_group=group)
        self._cancel_events: dict[str, threading.Event] = {}
        self._server = action_server(self, ExecuteTask, "/planner/execute_task", self._execute,
                                     goal_callback=lambda _g: GoalResponse.ACCEPT,
                                     cancel_callback=self._on_cancel, callback_group=group)
        self.get_logger().info("planner ready: /planner/execute_task")

    def _on_cancel(self, goal_handle: Any) -> CancelResponse:
        event = self._cancel_events.get(goal_handle.request.task_id)
        if event is not None:
            event.set()
        return CancelResponse.ACCEPT

    def _execute(self, goal_handle: Any) -> ExecuteTask.Result:
        request = goal_handle.request
        result = ExecuteTask.Result()
        cancel = threading.Event()

        def feedback(phase: str, progress: float, **detail: Any) -> None:
            fb = ExecuteTask.Feedback()
            fb.phase, fb.progress, fb.detail_json = phase, float(progress), json.dumps(detail)
            goal_handle.publish_feedback(fb)

        try:
            self.journal.begin(request.task_id, request.task_json)
        except Exception as exc:  # already run: refuse, record nothing new
            result.code, result.error_type, result.message = error_fields(exc)
            goal_handle.abort()
            return result
        self._cancel_events[request.task_id] = cancel
        try:
            feedback("compiling", 0.0)
            task = parse_task(json.loads(request.task_json))
            check_limits(task, self.params.limits)
            outcome = self._run(task, feedback, cancel)
            result.result_json = json.dumps(outcome)
            self.journal.finish(request.task_id, code=0, result=outcome)
            feedback("done", 1.0)
            goal_handle.succeed()
        except Exception as exc:
            result.code, result.error_type, result.message = error_fields(exc)
            self.journal.finish(request.task_id, code=result.code, error_type=result.error_type,
                                message=result.message)
            self.get_logger().error(f"task {request.task_id} failed: {result.error_type}: {result.message}")
            if isinstance(exc, Cancelled) and goal_handle.is_cancel_requested:
                goal_handle.canceled()
            else:
                goal_handle.abort()
        finally:
            self._cancel_events.pop(request.task_id, None)
        return result

    def _run(self, task: FlowExperimentTask, feedback: Any, cancel: threading.Event) -> dict[str, Any]:
        c = task.conditions
        goal = RunFlowExperiment.Goal(experiment_id=task.name or "", residence_time_min=c.residence_time_min,
                                      temp_c=c.temp_c, equivalents=c.equivalents, conc_dfnb_m=c.conc_dfnb_m,
                                      collect=self.params.collect)

        def on_flow_feedback(fb: Any) -> None:
            feedback("running", 0.1, device="flow_reactor", device_phase=fb.phase, elapsed_s=fb.elapsed_s,
                     pressure_bar=fb.pressure_bar, temp_c=fb.temp_c)

        res = call_action(self._flow, goal, timeout_s=self.params.experiment_timeout_s,
                          server_timeout_s=self.params.server_timeout_s, feedback_cb=on_flow_feedback,
                          cancel_event=cancel)
        record = json.loads(res.result_json) if res.result_json else {}
        experiment = {"conditions": c.model_dump(), "yield_fraction": res.yield_fraction,
                      "conc_product_m": res.conc_product_m, "time_to_steady_state_s": res.time_to_steady_state_s,
                      "reagent_used_ml": res.reagent_used_ml,
                      "sty_kg_m3_h": record.get("sty_kg_m3_h"), "e_factor": record.get("e_factor"),
                      "flow_record": record}
        return {"kind": task.kind, "proposed_by": task.proposed_by, "experiments": [experiment]}

    def destroy_node(self) -> None:
        self.journal.close()
        super().destroy_node()


def main(args: Any = None) -> int:
    return spin_node(PlannerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
