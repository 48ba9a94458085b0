"""kill -9 each kind of process in the middle of a closed-loop campaign in the twin.

One campaign (the main job, 60x real time) runs while a fault injector kills, one after the
other, the bridge's HTTP API, the bridge node, the flow reactor node, the manipulator node, the
perception node (which the robot asks where each station is), the planner and the twin itself, each at a moment it is busy (a task running, the reactor pumping, the
robot carrying a vial). The launcher respawns each; the lifecycle manager brings device nodes back
to active. Afterwards: every experiment of the campaign has a result (a task hit by a fault ends
failed with a reason and the model service runs the experiment again), no task is lost (all are
terminal) and none is run twice (the planner's journal and the bridge agree task by task).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
import pytest

from fault_log import FAULTS  # printed at the end of the run by tests/faults/conftest.py

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(1200)]

EXPERIMENTS = 12
LIFECYCLE_DEVICE = {"flow_reactor_node": "flow_reactor", "manipulator_node": "manipulator", "hplc_node": "hplc"}
REACTOR_BUSY = {"priming", "heating", "equilibrating", "measuring", "collecting", "flushing"}


def _db(run_dir) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{run_dir / 'bridge.db'}?mode=ro", uri=True, timeout=10)
    db.execute("PRAGMA busy_timeout=10000")
    return db


@dataclass
class Fault:
    process: str
    doing: str
    busy: Callable[["Injector"], bool]
    record: dict[str, Any] = field(default_factory=dict)


class Injector:
    """Runs beside the campaign (run_campaign's ``during``): one kill at a time, each once the lab
    has recovered from the previous one and finished a task since."""

    def __init__(self, faults: list[Fault]) -> None:
        self.faults = faults
        self.lab: Any = None
        self.stop = threading.Event()
        self.errors: list[str] = []

    # --- what the lab is doing -----------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        try:
            return httpx.get(self.lab.url + "/v1/lab/status", timeout=3.0,
                             headers={"Authorization": f"Bearer {self.lab.api_key}"}).json()
        except (httpx.HTTPError, ValueError):
            return {}

    def rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            with _db(self.lab.run_dir) as db:
                return list(db.execute(sql, args))
        except sqlite3.Error:
            return []

    def tasks_running(self) -> bool:
        return bool(self.rows("SELECT 1 FROM tasks WHERE status='running' AND phase NOT IN ('', 'queued')"))

    def reactor_pumping(self) -> bool:
        flow = (self.status().get("devices") or {}).get("flow_reactor") or {}
        return flow.get("phase") in REACTOR_BUSY

    def robot_moving(self) -> bool:
        since = time.time() - 1.0
        return any('"device": "robot"' in r[0] for r in self.rows(
            "SELECT data_json FROM task_events WHERE created_at > ? AND type='progress'", (since,)))

    def terminal_count(self) -> int:
        rows = self.rows("SELECT count(*) FROM tasks WHERE status IN ('succeeded', 'failed', 'cancelled')")
        return rows[0][0] if rows else 0

    # --- one fault -----------------------------------------------------------------------------
    def back(self, fault: Fault, old_pid: int, killed_wall: float, deadline: float) -> bool:
        """The process runs again (a new pid) and the lab sees it: a device node active (reported
        after the kill), a ROS node in the graph once its dead predecessor has left it (the lab's
        DDS lease is 8 s), the HTTP API ready."""
        launcher = self.lab.launcher
        while time.monotonic() < deadline and not self.stop.is_set():
            pid = launcher.pid(fault.process)
            if pid is not None and pid != old_pid:
                if fault.process == "bridge_api":
                    try:
                        if httpx.get(self.lab.url + "/readyz", timeout=2.0).status_code == 200:
                            return True
                    except httpx.HTTPError:
                        pass
                elif fault.process in LIFECYCLE_DEVICE:
                    device = (self.status().get("devices") or {}).get(LIFECYCLE_DEVICE[fault.process]) or {}
                    if device.get("lifecycle_state") == "active" and device.get("seen_at", 0) > killed_wall + 0.5:
                        return True
                elif (time.time() > killed_wall + 9.0
                      and f"/{fault.process}" in (self.status().get("nodes") or [])):
                    return True
            self.stop.wait(0.2)
        return False

    def inject(self, fault: Fault) -> None:
        rec = fault.record
        rec.update(process=fault.process, **{"while": fault.doing})
        deadline = time.monotonic() + 180.0
        while not fault.busy(self):
            if time.monotonic() > deadline or self.stop.is_set():
                rec.update(survived=False, why=f"never saw it busy ({fault.doing})")
                return
            self.stop.wait(0.1)
        old_pid = self.lab.launcher.pid(fault.process)
        failed_before = self.rows("SELECT id FROM tasks WHERE status='failed'")
        import os

        os.kill(old_pid, signal.SIGKILL)
        killed = time.monotonic()
        rec["killed_at"] = time.time()
        if not self.back(fault, old_pid, rec["killed_at"], killed + 120.0):
            rec.update(back_s=None, survived=False, why="not back within 120 s")
            return
        rec["back_s"] = time.monotonic() - killed
        # let the lab show it works again: one more task finished after the process came back
        done = self.terminal_count()
        deadline = time.monotonic() + 240.0
        while self.terminal_count() <= done and time.monotonic() < deadline and not self.stop.is_set():
            self.stop.wait(0.2)
        rec["affected"] = len(set(self.rows("SELECT id FROM tasks WHERE status='failed'")) - set(failed_before))

    def __call__(self, lab: Any, _service: Any) -> None:
        self.lab = lab
        for fault in self.faults:
            if self.stop.is_set():
                break
            try:
                self.inject(fault)
            except Exception as exc:  # noqa: BLE001 - recorded; the test reports it
                fault.record.update(process=fault.process, survived=False, why=f"injector error: {exc!r}")
                self.errors.append(repr(exc))


FAULT_PLAN = [
    Fault("bridge_api", "a task is running", Injector.tasks_running),
    Fault("flow_reactor_node", "the reactor is pumping", Injector.reactor_pumping),
    Fault("bridge_node", "a task is running", Injector.tasks_running),
    Fault("manipulator_node", "the robot is carrying a vial", Injector.robot_moving),
    Fault("perception_node", "the robot is on its way to a station", Injector.robot_moving),
    Fault("planner_node", "the reactor is pumping", Injector.reactor_pumping),
    Fault("twin_node", "the reactor is pumping", Injector.reactor_pumping),
]


@pytest.fixture(scope="module")
def faulted_campaign(tmp_path_factory: pytest.TempPathFactory):
    from aichemist.campaign import run_campaign

    run_dir = tmp_path_factory.mktemp("faults")
    injector = Injector(FAULT_PLAN)
    summary = None
    try:
        summary = run_campaign(EXPERIMENTS, speed=60.0, run_dir=run_dir, during=injector,
                               say=lambda m: print(m, flush=True))
    finally:
        injector.stop.set()
        for fault in FAULT_PLAN:
            if fault.record:
                fault.record.setdefault("survived", summary is not None
                                        and summary["succeeded"] == summary["experiments"])
                FAULTS.append(fault.record)
    print(f"fault campaign log: {run_dir / 'lab.log'}")
    return summary, injector, run_dir


def test_the_campaign_completes_every_experiment_despite_the_faults(faulted_campaign):
    summary, injector, _ = faulted_campaign
    assert summary["experiments"] == EXPERIMENTS and summary["succeeded"] == EXPERIMENTS, summary["results"]
    for result in summary["results"]:
        for attempt in result["attempts"]:  # every failed try says why
            assert attempt["status"] == "failed" and attempt["message"], attempt
    assert not injector.errors


def test_no_task_is_lost_or_run_twice(faulted_campaign):
    summary, _, run_dir = faulted_campaign
    with _db(run_dir) as db:
        tasks = {r[0]: (r[1], r[2]) for r in db.execute("SELECT id, status, message FROM tasks")}
    assert all(st in ("succeeded", "failed") for st, _ in tasks.values()), tasks       # none lost in flight
    assert len(tasks) == summary["experiments"] + summary["retried"]                  # nothing extra
    journal = sqlite3.connect(f"file:{run_dir / 'planner_journal.db'}?mode=ro", uri=True)
    ran = {r[0]: r[1] for r in journal.execute("SELECT task_id, state FROM tasks")}
    assert set(ran) <= set(tasks)
    for task_id, (status, message) in tasks.items():
        if status == "succeeded":  # the planner ran it once, and its result is the one the bridge holds
            assert ran.get(task_id) == "succeeded", (task_id, ran.get(task_id))
        else:
            assert message, task_id
    results = {r["task_id"] for r in summary["results"]}
    assert results <= {t for t, (st, _) in tasks.items() if st == "succeeded"}


@pytest.mark.parametrize("process", [f.process for f in FAULT_PLAN])
def test_each_killed_process_came_back_and_the_lab_went_on(faulted_campaign, process):
    record = next(f.record for f in FAULT_PLAN if f.process == process)
    assert record.get("killed_at"), record.get("why", "never killed")
    assert record.get("back_s") is not None, record.get("why")
    assert record.get("survived"), record.get("why")


def test_the_bag_and_the_report_were_written(faulted_campaign):
    summary, _, run_dir = faulted_campaign
    assert (run_dir / "report.html").stat().st_size > 10_000
    schedule = json.loads((run_dir / "schedule.json").read_text())
    assert {e["resource"] for e in schedule} == {"robot", "reactor", "hplc"}
