"""bridge_node across real processes: a fake planner (real rclpy action server), bridge nodes and
the API server as subprocesses. Kills are SIGKILL (kill -9)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
from typing import Any, Callable

import pytest

from cloud_bridge import store, testing
from cloud_bridge.config import BridgeSettings
from cloud_bridge.db import Database
from cloud_bridge.models import Task
from cloud_bridge.testing import TASK, task

pytestmark = pytest.mark.ros

HERE = pathlib.Path(__file__).resolve().parent
PY = sys.executable


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    tick = threading.Event()
    waited = 0.0
    while waited < timeout_s:
        value = predicate()
        if value:
            return value
        tick.wait(0.1)
        waited += 0.1
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Procs:
    def __init__(self, tmp: pathlib.Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                             start_new_session=True)
        self.procs[name] = p
        return p

    def kill9(self, name: str) -> None:
        p = self.procs.pop(name)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for name, p in self.procs.items():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


_PG_REASON = testing.pg_unavailable_reason()
BOTH_BACKENDS = pytest.mark.parametrize("backend", [
    "sqlite",
    pytest.param("postgres", marks=[pytest.mark.postgres,
                                    pytest.mark.skipif(_PG_REASON is not None, reason=str(_PG_REASON))]),
], indirect=True)


@pytest.fixture
def backend(request, tmp_path):
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'bridge.db'}"
        return
    name = f"aichemist_test_{os.getpid()}_ros"
    url = testing.create_pg_database(name)
    yield url
    testing.drop_pg_database(name)


@pytest.fixture
def env(tmp_path, backend):
    procs = Procs(tmp_path)
    db_url = backend
    db = Database(db_url)
    db.upgrade()
    _, who = store.create_key(db, lab="lab1", scopes=["submit", "read", "approve"], kind="human")
    yield procs, db, db_url, who, tmp_path
    procs.stop_all()
    db.dispose()
    for name in procs.procs:  # shown by pytest only when the test failed
        print(f"----- {name} -----\n{procs.log(name)[-3000:]}")


def start_planner(procs: Procs, tmp: pathlib.Path, name: str = "planner", duration_s: float = 3.0) -> None:
    procs.start(name, [PY, str(HERE / "bridge_fake_planner.py"), "--run-log", str(tmp / "runs.log"),
                       "--duration-s", str(duration_s)])


def start_bridge(procs: Procs, db_url: str, name: str, lease_s: float = 1.5) -> None:
    procs.start(name, [PY, "-m", "aichemist_nodes.bridge_node", "--ros-args", "-r", f"__node:={name}",
                       "-p", f"database_url:={db_url}", "-p", "lab:=lab1", "-p", f"owner:={name}",
                       "-p", f"lease_s:={lease_s}", "-p", "heartbeat_s:=0.3", "-p", "poll_s:=0.2",
                       "-p", "status_period_s:=0.5"])


def row(db: Database, task_id: str) -> Task:
    with db.read() as s:
        return s.get(Task, task_id)


def runs(tmp: pathlib.Path) -> list[str]:
    path = tmp / "runs.log"
    return path.read_text().split() if path.exists() else []


def submit(db: Database, who, doc=TASK, key="t1") -> str:
    return store.submit_task(db, who, doc, idempotency_key=key, settings=BridgeSettings())[0]["id"]


def test_task_runs_once_with_progress_result_and_lab_status(env):
    procs, db, db_url, who, tmp = env
    start_planner(procs, tmp, duration_s=1.0)
    start_bridge(procs, db_url, "bridge_a")
    tid = submit(db, who)
    final = wait_until(lambda: (r := row(db, tid)).status in ("succeeded", "failed") and r, 40, "task to end")
    assert final.status == "succeeded", final.message
    assert final.attempts == 1 and final.lease_owner == "bridge_a" and final.progress == 1.0
    exp = json.loads(final.result_json)["experiments"][0]
    assert exp["conditions"] == TASK["conditions"] and 0 < exp["yield_fraction"] < 1
    types = [e["type"] for e in store.events_since(db, "lab1", 0, task_id=tid)]
    assert types[:2] == ["submitted", "claimed"] and "progress" in types and types[-1] == "finished"
    assert runs(tmp) == [tid]
    status = wait_until(lambda: (s := store.lab_status(db, who, stale_s=30))["nodes"] and
                        "/planner_node" in s["nodes"] and s, 20, "lab status with the planner")
    assert "/bridge_a" in status["nodes"]


@BOTH_BACKENDS
def test_bridge_killed_mid_task_is_taken_over_and_the_task_runs_once(env):
    procs, db, db_url, who, tmp = env
    start_planner(procs, tmp, duration_s=4.0)
    start_bridge(procs, db_url, "bridge_a")
    tid = submit(db, who)
    # bridge_a has it and the planner is running it
    first = wait_until(lambda: (r := row(db, tid)).goal_uuid and r.progress > 0 and r, 40, "the task to run")
    start_bridge(procs, db_url, "bridge_b")
    procs.kill9(first.lease_owner)
    final = wait_until(lambda: (r := row(db, tid)).status in ("succeeded", "failed", "cancelled") and r, 60,
                       "the task to end after the takeover")
    assert final.status == "succeeded", final.message
    assert final.lease_owner == "bridge_b" and final.attempts == 2
    assert runs(tmp) == [tid]  # the planner ran it once
    events = store.events_since(db, "lab1", 0, task_id=tid)
    taken = [e for e in events if e["type"] == "taken_over"]
    assert len(taken) == 1 and taken[0]["data"]["previous_owner"] == "bridge_a"
    assert [e["type"] for e in events].count("finished") == 1
    # the survivor carries on with new work
    tid2 = submit(db, who, task(temp_c=50.0), key="t2")
    assert wait_until(lambda: row(db, tid2).status == "succeeded", 40, "second task")
    assert runs(tmp) == [tid, tid2]


def test_bridge_and_planner_both_killed_ends_failed_with_reason_never_run_twice(env):
    procs, db, db_url, who, tmp = env
    start_planner(procs, tmp, name="planner1", duration_s=6.0)
    start_bridge(procs, db_url, "bridge_a")
    tid = submit(db, who)
    wait_until(lambda: (r := row(db, tid)).goal_uuid and r.progress > 0, 40, "the task to run")
    procs.kill9("bridge_a")
    procs.kill9("planner1")
    start_planner(procs, tmp, name="planner2", duration_s=1.0)
    start_bridge(procs, db_url, "bridge_b")
    final = wait_until(lambda: (r := row(db, tid)).status in ("succeeded", "failed") and r, 60, "the task to end")
    assert final.status == "failed"
    assert final.error_type == "ConflictError" and "already been run" in final.message
    assert runs(tmp) == [tid]


def test_cancel_of_a_running_task_reaches_the_planner(env):
    procs, db, db_url, who, tmp = env
    start_planner(procs, tmp, duration_s=20.0)
    start_bridge(procs, db_url, "bridge_a")
    tid = submit(db, who)
    wait_until(lambda: row(db, tid).progress > 0, 40, "the task to run")
    assert store.cancel_task(db, who, tid)["cancel_requested"] is True
    final = wait_until(lambda: (r := row(db, tid)).status in ("succeeded", "failed", "cancelled") and r, 30,
                       "the cancel")
    assert final.status == "cancelled" and final.result_code == 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@BOTH_BACKENDS
def test_api_server_killed_mid_task_loses_nothing(env):
    from cloud_bridge.client import BridgeClient

    procs, db, db_url, _who, tmp = env
    port = _free_port()
    admin = "ak_0123456789ab_" + "s" * 40
    serve = [PY, "-m", "cloud_bridge", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--database-url", db_url, "--bootstrap-lab", "lab1"]
    server_env = {"AICHEMIST_BOOTSTRAP_ADMIN_KEY": admin}
    procs.start("api1", serve, server_env)
    start_planner(procs, tmp, duration_s=3.0)
    start_bridge(procs, db_url, "bridge_a")
    with BridgeClient(f"http://127.0.0.1:{port}", admin, timeout_s=5) as client:
        wait_until(lambda: _ok(client), 30, "the API server")
        t = client.submit(TASK, idempotency_key="crash-1", campaign="crash")
        assert t["status"] == "queued"
        wait_until(lambda: client.get(t["id"])["status"] == "running", 40, "the task to run")
        procs.kill9("api1")
        procs.start("api2", serve, server_env)
        wait_until(lambda: _ok(client), 30, "the restarted API server")
        again = client.submit(TASK, idempotency_key="crash-1", campaign="crash")
        assert again["id"] == t["id"]  # the retry after the crash is the same task
        final = client.wait(t["id"], timeout_s=60)
        assert final["status"] == "succeeded" and final["attempts"] == 1
        assert client.result(t["id"])["experiments"][0]["conditions"] == TASK["conditions"]
        assert len(client.list(campaign="crash")["items"]) == 1
    assert runs(tmp) == [t["id"]]
    assert admin[16:] not in procs.log("api1") + procs.log("api2")


def _ok(client) -> bool:
    try:
        client.me()
        return True
    except Exception:
        return False
