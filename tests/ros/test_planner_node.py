"""planner_node across real processes: the planner as a subprocess, a stand-in flow reactor
(a real rclpy RunFlowExperiment action server in the test process). One flow experiment through
/planner/execute_task; a re-sent task id refused (also after a restart: persistent journal); a task
beyond the limits rejected with every problem and no device goal sent; a campaign."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading

import pytest
from ros_helpers import wait_for

pytestmark = pytest.mark.ros
PLANNER = str(pathlib.Path(sys.executable).parent / "planner_node")
GOOD = {"residence_time_min": 1.0, "temp_c": 90.0, "equivalents": 2.0, "conc_dfnb_m": 0.3}


class FakeReactor:
    """RunFlowExperiment server: answers at once with a yield that depends on the temperature."""

    def __init__(self, node) -> None:
        from rclpy.action import ActionServer
        from rclpy.callback_groups import ReentrantCallbackGroup

        from aichemist_interfaces.action import RunFlowExperiment

        self.goals: list = []
        self.received = threading.Event()
        self._server = ActionServer(node, RunFlowExperiment, "/flow_reactor/run_flow_experiment", self.execute,
                                    callback_group=ReentrantCallbackGroup())

    def execute(self, goal_handle):  # noqa: ANN001
        from aichemist_interfaces.action import RunFlowExperiment

        g = goal_handle.request
        self.goals.append(g)
        self.received.set()
        res = RunFlowExperiment.Result()
        res.yield_fraction = g.temp_c / 200.0
        res.conc_product_m = res.yield_fraction * g.conc_dfnb_m
        res.result_json = json.dumps({"sty_kg_m3_h": 100.0 * g.temp_c, "e_factor": 1000.0 / g.temp_c,
                                      "collected_vial": "V1"})
        goal_handle.succeed()
        return res


def start_planner(tmp_path: pathlib.Path, journal: pathlib.Path) -> subprocess.Popen:
    log = open(tmp_path / f"planner{len(list(tmp_path.glob('planner*.log')))}.log", "w")
    return subprocess.Popen([PLANNER, "--ros-args", "-p", f"journal_path:={journal}", "-p", "analysis:=inline",
                             "-p", f"records_dir:={tmp_path / 'ord'}",
                             "-p", "server_timeout_s:=10.0", "-p", "backoff_s:=0.1"],
                            stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(), start_new_session=True)


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def execute(node, task_id: str, task: dict, timeout_s: float = 60.0):
    from rclpy.action import ActionClient

    from aichemist_interfaces.action import ExecuteTask

    # After a kill -9 the dead server stays discovered for a while and a goal request may go only
    # to it: send again (the journal refuses a second run of the same id anyway).
    for _attempt in range(6):
        client = ActionClient(node, ExecuteTask, "/planner/execute_task")
        try:
            assert client.wait_for_server(timeout_sec=30.0), "planner_node did not come up"
            done = threading.Event()
            future = client.send_goal_async(ExecuteTask.Goal(task_id=task_id, task_json=json.dumps(task)))
            future.add_done_callback(lambda _f: done.set())
            # long enough for a loaded host to accept: a second send of an id the planner has
            # already run would be refused (ConflictError)
            if not done.wait(15.0):
                continue
            handle = future.result()
            assert handle.accepted
            result_done = threading.Event()
            rf = handle.get_result_async()
            rf.add_done_callback(lambda _f: result_done.set())
            assert result_done.wait(timeout_s), f"no result for {task_id}"
            return rf.result().result
        finally:
            client.destroy()
    raise AssertionError(f"goal {task_id} never answered")


def test_flow_experiment_refusal_limits_and_restart(ros_probe, tmp_path):
    reactor = FakeReactor(ros_probe)
    journal = tmp_path / "journal.db"
    planner = start_planner(tmp_path, journal)
    try:
        res = execute(ros_probe, "task-1", {"kind": "flow_experiment", "conditions": GOOD, "proposed_by": "m1"})
        assert res.code == 0, res.message
        out = json.loads(res.result_json)
        (exp,) = out["experiments"]
        assert exp["yield_fraction"] == pytest.approx(0.45) and exp["sty_kg_m3_h"] == pytest.approx(9000.0)
        assert exp["conditions"] == GOOD and exp["proposed_by"] == "m1"
        assert len(reactor.goals) == 1 and reactor.goals[0].temp_c == 90.0
        assert reactor.goals[0].experiment_id.startswith("task-1/")
        record = json.loads((tmp_path / "ord" / "task-1_e0.ord.json").read_text())
        assert record["provenance"]["reactionMetadata"]["proposed_by"]["stringValue"] == "m1"

        again = execute(ros_probe, "task-1", {"kind": "flow_experiment", "conditions": GOOD})
        assert again.error_type == "ConflictError" and len(reactor.goals) == 1

        bad = execute(ros_probe, "task-2", {"kind": "flow_experiment",
                                            "conditions": {**GOOD, "temp_c": 500.0, "residence_time_min": 0.1}})
        assert bad.code != 0 and bad.error_type == "ValidationError"
        assert "temp_c" in bad.message and "residence_time_min" in bad.message
        assert len(reactor.goals) == 1  # nothing was sent to the reactor

        camp = execute(ros_probe, "camp-1", {
            "kind": "campaign", "budget": 3, "seed": 1,
            "variables": [{"name": "temp_c", "type": "continuous", "low": 30, "high": 120}],
            "fixed": {"residence_time_min": 1.0, "equivalents": 2.0, "conc_dfnb_m": 0.3},
            "objectives": [{"name": "yield_fraction", "direction": "max"}]}, timeout_s=120)
        assert camp.code == 0, camp.message
        exps = json.loads(camp.result_json)["experiments"]
        assert len(exps) == 3 and len(reactor.goals) == 4
        assert all(e["yield_fraction"] == pytest.approx(e["conditions"]["temp_c"] / 200) for e in exps)
    finally:
        stop(planner, signal.SIGKILL)
    planner2 = start_planner(tmp_path, journal)  # a new process on the same journal
    try:
        res = execute(ros_probe, "task-1", {"kind": "flow_experiment", "conditions": GOOD})
        assert res.error_type == "ConflictError" and len(reactor.goals) == 4
    finally:
        stop(planner2)


class SlowReactor(FakeReactor):
    """Holds each goal until released; records how many ran at once."""

    def __init__(self, node) -> None:
        self.release = threading.Event()
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()
        super().__init__(node)

    def execute(self, goal_handle):  # noqa: ANN001
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        self.received.set()
        try:
            self.release.wait(30)
            return super().execute(goal_handle)
        finally:
            with self.lock:
                self.running -= 1


def test_concurrent_tasks_take_turns_on_the_reactor_and_say_they_are_queued(ros_probe, tmp_path):
    from rclpy.action import ActionClient

    from aichemist_interfaces.action import ExecuteTask

    reactor = SlowReactor(ros_probe)
    planner = start_planner(tmp_path, tmp_path / "journal.db")
    client = ActionClient(ros_probe, ExecuteTask, "/planner/execute_task")
    try:
        assert client.wait_for_server(timeout_sec=30.0)
        phases: list[str] = []
        # more tasks than the old 4 executor threads: each running task holds one for its whole
        # duration, and the device calls' answers need a free one (4 tasks had deadlocked it)
        n_tasks = 6
        done = [threading.Event() for _ in range(n_tasks)]
        futures = []
        for k in range(n_tasks):
            goal = ExecuteTask.Goal(task_id=f"t{k}", task_json=json.dumps(
                {"kind": "flow_experiment", "conditions": {**GOOD, "temp_c": 50.0 + k}}))
            f = client.send_goal_async(goal, feedback_callback=lambda fb: phases.append(fb.feedback.phase))
            f.add_done_callback(lambda _f, e=done[k]: e.set())
            futures.append(f)
        assert all(e.wait(30) for e in done)
        assert reactor.received.wait(30)
        # the first task holds the reactor until released: every other one waits for it, saying so
        assert wait_for(lambda: "queued" in phases, 30.0), phases
        reactor.release.set()
        results = []
        for f in futures:
            ready = threading.Event()
            rf = f.result().get_result_async()
            rf.add_done_callback(lambda _f: ready.set())
            assert ready.wait(60)
            results.append(rf.result().result)
        assert all(r.code == 0 for r in results), [r.message for r in results]
        assert len(reactor.goals) == n_tasks and reactor.max_running == 1
        assert "queued" in phases
    finally:
        client.destroy()
        stop(planner)
