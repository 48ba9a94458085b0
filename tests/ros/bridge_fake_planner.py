"""A small real planner stand-in for the bridge tests: an rclpy action server on
/planner/execute_task that runs each task for --duration-s (publishing feedback), refuses a task
id it has already run (the ids are kept in --run-log, so this holds across restarts too), and
honours cancel requests. Every start of a run appends the task id to --run-log.

Run: python tests/ros/bridge_fake_planner.py --run-log FILE [--duration-s 3]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import threading

import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from aichemist_interfaces.action import ExecuteTask


class FakePlanner(Node):
    def __init__(self, run_log: pathlib.Path, duration_s: float) -> None:
        super().__init__("planner_node")
        self.run_log, self.duration_s = run_log, duration_s
        self.lock = threading.Lock()
        self.server = ActionServer(self, ExecuteTask, "/planner/execute_task", self.execute,
                                   goal_callback=lambda _g: GoalResponse.ACCEPT,
                                   cancel_callback=lambda _g: CancelResponse.ACCEPT,
                                   callback_group=ReentrantCallbackGroup())
        print("fake planner ready", flush=True)

    def _already_ran(self, task_id: str) -> bool:
        with self.lock:
            seen = self.run_log.read_text().split() if self.run_log.exists() else []
            if task_id in seen:
                return True
            with self.run_log.open("a") as f:
                f.write(task_id + "\n")
            return False

    def execute(self, goal_handle):  # type: ignore[no-untyped-def]
        task_id = goal_handle.request.task_id
        result = ExecuteTask.Result()
        if self._already_ran(task_id):
            goal_handle.abort()
            result.code, result.error_type = 4, "ConflictError"
            result.message = f"task {task_id} has already been run by this planner; refusing to run it twice"
            return result
        task = json.loads(goal_handle.request.task_json)
        steps = max(1, int(self.duration_s / 0.1))
        wake = threading.Event()
        for i in range(steps):
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
                result.code, result.error_type, result.message = 40, "Cancelled", "cancelled on request"
                return result
            fb = ExecuteTask.Feedback(phase="running", progress=i / steps,
                                      detail_json=json.dumps({"step": i, "of": steps}))
            goal_handle.publish_feedback(fb)
            wake.wait(self.duration_s / steps)  # the simulated experiment takes this long
        c = task["conditions"]
        yield_fraction = min(0.99, 0.1 * c["equivalents"] * c["residence_time_min"] * c["temp_c"] / 60.0)
        result.code, result.message = 0, "done"
        result.result_json = json.dumps({"experiments": [{"conditions": c, "yield_fraction": yield_fraction,
                                                          "sty_kg_m3_h": 1000.0 * yield_fraction,
                                                          "e_factor": 10.0 / max(yield_fraction, 0.01)}]})
        goal_handle.succeed()
        return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-log", required=True, type=pathlib.Path)
    parser.add_argument("--duration-s", type=float, default=3.0)
    args = parser.parse_args()
    rclpy.init()
    node = FakePlanner(args.run_log, args.duration_s)
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
