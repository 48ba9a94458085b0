"""The bridge in the whole twin lab (launch/twin.yaml): the approval gate holds a model-service
task until a human approves it, and a bridge_node killed with SIGKILL in the middle of an
experiment is respawned and takes its task over; the planner runs it once (the task completes, or
ends failed with the planner's refusal as the reason)."""

from __future__ import annotations

import os
import signal
import threading

import httpx
import pytest

from aichemist.errors import PermissionDeniedError
from cloud_bridge import store
from cloud_bridge.client import BridgeClient
from cloud_bridge.db import Database
from cloud_bridge.models import Task

pytestmark = [pytest.mark.twin, pytest.mark.slow]

CONDITIONS = {"residence_time_min": 0.5, "temp_c": 45.0, "equivalents": 2.0, "conc_dfnb_m": 0.2}


def wait_until(predicate, timeout_s: float, what: str):
    tick = threading.Event()
    waited = 0.0
    while waited < timeout_s:
        value = predicate()
        if value:
            return value
        tick.wait(0.2)
        waited += 0.2
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture(scope="module")
def lab_db(twin_lab):
    db = Database(twin_lab.database_url)
    yield db
    db.dispose()


def test_model_service_task_waits_for_a_human_approval(twin_lab, lab_db):
    model_key, _ = store.create_key(lab_db, lab="twin", scopes=["submit", "read"], kind="model_service")
    task = {"kind": "flow_experiment", "name": "gated", "conditions": CONDITIONS}
    with BridgeClient(twin_lab.url, model_key) as model, twin_lab.client() as admin:
        t = model.submit(task, idempotency_key="gated-1")
        assert t["status"] == "awaiting_approval"
        # the bridge node polls every 0.2 s: for 3 s of the task's own event stream nothing but
        # its submission happens
        seen = []
        with pytest.raises(httpx.ReadTimeout):
            for ev in model.events(t["id"], timeout_s=3.0):
                seen.append(ev["event"])
        assert seen == ["snapshot", "submitted"]
        with pytest.raises(PermissionDeniedError):
            model.approve(t["id"])
        assert admin.approve(t["id"])["status"] == "queued"
        final = admin.wait(t["id"], timeout_s=300)
    assert final["status"] == "succeeded", final
    assert final["approved_by"] == store.split_key(twin_lab.api_key)


def test_bridge_node_killed_mid_experiment_is_respawned_and_takes_over(twin_lab, lab_db):
    task = {"kind": "flow_experiment", "name": "kill-bridge", "conditions": CONDITIONS}
    with twin_lab.client() as client:
        t = client.submit(task, idempotency_key="kill-bridge-1")

        def sent():
            with lab_db.read() as s:
                row = s.get(Task, t["id"])
                return row.status == "running" and row.goal_uuid is not None and row
        first = wait_until(sent, 120, "the task to be sent to the planner")
        pid = twin_lab.launcher.pid("bridge_node")
        assert pid is not None and first.lease_owner.endswith(f":{pid}")
        os.kill(pid, signal.SIGKILL)
        final = client.wait(t["id"], timeout_s=300)
        experiments = client.result(t["id"])["experiments"]
        events = store.events_since(lab_db, "twin", 0, task_id=t["id"])
    types = [e["type"] for e in events]
    taken = [e for e in events if e["type"] == "taken_over"]
    assert len(taken) == 1 and taken[0]["data"]["previous_owner"] == first.lease_owner
    assert types.count("finished") == 1 and final["attempts"] == 2
    if final["status"] == "succeeded":
        # the successor collected the planner's result of the one run (get_result on the goal id)
        assert final["error_type"] == "" and experiments[0]["yield_fraction"] > 0
    else:
        # the experiment ended during the lease gap and the planner no longer held the goal's
        # result: the successor re-sent the task id and the planner refused to run it twice
        assert final["status"] == "failed", (final["error_type"], final["message"], types)
        assert final["error_type"] == "ConflictError" and "already run" in final["message"]
