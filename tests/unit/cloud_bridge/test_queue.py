"""The durable queue: exclusive claims, leases, takeover, one terminal write, abandonment."""

from __future__ import annotations

import threading

import pytest

from aichemist.errors import ValidationError
from cloud_bridge import store
from cloud_bridge.config import BridgeSettings
from cloud_bridge.db import Database
from cloud_bridge.testing import TASK, FakeClock, task


@pytest.fixture
def qdb(db_url):
    d = Database(db_url)
    d.upgrade()
    yield d
    d.dispose()


@pytest.fixture
def submitter(qdb):
    _, who = store.create_key(qdb, lab="lab1", scopes=["submit", "read"], kind="scheduler")
    return who


def put(qdb, who, n=1, clock=None):
    return [store.submit_task(qdb, who, task(temp_c=40.0 + i), idempotency_key=f"q{i}", settings=BridgeSettings(),
                              clock=clock)[0]["id"] for i in range(n)]


def test_claim_is_exclusive_until_the_lease_expires_then_taken_over(qdb, submitter):
    clock = FakeClock()
    [tid] = put(qdb, submitter, clock=clock)
    a = store.claim_next(qdb, lab="lab1", owner="a", lease_s=10, max_attempts=3, clock=clock)
    assert a.id == tid and a.attempts == 1 and a.previous_owner is None
    assert store.claim_next(qdb, lab="lab1", owner="b", lease_s=10, max_attempts=3, clock=clock) is None
    assert store.claim_next(qdb, lab="other", owner="b", lease_s=10, max_attempts=3, clock=clock) is None
    assert store.record_goal(qdb, tid, "a", "goal-1", clock=clock)
    clock.t += 8
    assert store.heartbeat(qdb, tid, "a", 10, clock=clock) == (True, False)
    clock.t += 8  # renewed at +8, so still held at +16
    assert store.claim_next(qdb, lab="lab1", owner="b", lease_s=10, max_attempts=3, clock=clock) is None
    clock.t += 5  # a died: no heartbeat; the lease ran out
    b = store.claim_next(qdb, lab="lab1", owner="b", lease_s=10, max_attempts=3, clock=clock)
    assert b.id == tid and b.previous_owner == "a" and b.attempts == 2 and b.goal_uuid == "goal-1"
    # the former owner has lost it: no heartbeat, no progress, no terminal write
    assert store.heartbeat(qdb, tid, "a", 10, clock=clock) == (False, False)
    assert not store.record_progress(qdb, tid, "a", phase="running", progress=0.5, clock=clock)
    assert not store.finish_task(qdb, tid, "a", status="succeeded", code=0, clock=clock)
    assert store.finish_task(qdb, tid, "b", status="succeeded", code=0, result_json='{"experiments": []}',
                             clock=clock)


def test_terminal_state_is_written_once(qdb, submitter):
    [tid] = put(qdb, submitter)
    store.claim_next(qdb, lab="lab1", owner="a", lease_s=10, max_attempts=3)
    assert store.finish_task(qdb, tid, "a", status="failed", code=20, error_type="InterlockTripped",
                             message="interlock 'pressure' tripped")
    assert not store.finish_task(qdb, tid, "a", status="succeeded", code=0)
    events = [e["type"] for e in store.events_since(qdb, "lab1", 0, task_id=tid)]
    assert events == ["submitted", "claimed", "finished"]
    with pytest.raises(ValidationError):
        store.finish_task(qdb, tid, "a", status="running", code=0)
    # nothing claimable afterwards
    assert store.claim_next(qdb, lab="lab1", owner="b", lease_s=10, max_attempts=3) is None


def test_task_abandoned_after_max_attempts_ends_failed_with_reason(qdb, submitter):
    clock = FakeClock()
    [tid] = put(qdb, submitter, clock=clock)
    for owner in ("a", "b"):
        assert store.claim_next(qdb, lab="lab1", owner=owner, lease_s=5, max_attempts=2, clock=clock).id == tid
        clock.t += 6
    assert store.claim_next(qdb, lab="lab1", owner="c", lease_s=5, max_attempts=2, clock=clock) is None
    with qdb.read() as s:
        from cloud_bridge.models import Task
        row = s.get(Task, tid)
        assert row.status == "failed" and "abandoned" in row.message and row.error_type == "StepTimeout"


def test_release_returns_an_unsent_task_to_the_queue(qdb, submitter):
    [tid] = put(qdb, submitter)
    store.claim_next(qdb, lab="lab1", owner="a", lease_s=10, max_attempts=3)
    assert store.release_task(qdb, tid, "a")
    again = store.claim_next(qdb, lab="lab1", owner="b", lease_s=10, max_attempts=3)
    assert again.id == tid and again.attempts == 1


def test_concurrent_claimers_never_share_a_task(qdb, submitter):
    ids = put(qdb, submitter, n=12)
    claimed: dict[str, list[str]] = {}
    lock = threading.Lock()

    def worker(owner: str) -> None:
        other = Database(qdb.url)  # its own engine, like another process
        try:
            while True:
                c = store.claim_next(other, lab="lab1", owner=owner, lease_s=60, max_attempts=3)
                if c is None:
                    return
                with lock:
                    claimed.setdefault(c.id, []).append(owner)
                assert store.finish_task(other, c.id, owner, status="succeeded", code=0)
        finally:
            other.dispose()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(claimed) == sorted(ids)
    assert all(len(owners) == 1 for owners in claimed.values())


def test_progress_events_and_campaign_objective(qdb, submitter):
    ids = [store.submit_task(qdb, submitter, TASK, idempotency_key=f"c{i}", campaign="camp",
                             settings=BridgeSettings())[0]["id"] for i in range(2)]
    for i, tid in enumerate(ids):
        store.claim_next(qdb, lab="lab1", owner="a", lease_s=10, max_attempts=3)
        assert store.record_progress(qdb, tid, "a", phase="running", progress=0.5, detail={"step": 1})
        exp = {"conditions": TASK["conditions"], "yield_fraction": 0.4 + 0.1 * i, "sty_kg_m3_h": 100.0 + i,
               "e_factor": 9.0 - i}
        store.finish_task(qdb, tid, "a", status="succeeded", code=0,
                          result_json=f'{{"experiments": [{__import__("json").dumps(exp)}]}}')
    obj = store.campaign_objective(qdb, submitter, "camp")
    assert [p["task_id"] for p in obj["points"]] == ids
    assert [p["yield_fraction"] for p in obj["points"]] == pytest.approx([0.4, 0.5])
    assert [p["index"] for p in obj["points"]] == [1, 2]
    res = store.get_result(qdb, submitter, ids[0])
    assert res["experiments"][0]["sty_kg_m3_h"] == 100.0 and res["status"] == "succeeded"
    prog = [e for e in store.events_since(qdb, "lab1", 0, task_id=ids[0]) if e["type"] == "progress"]
    assert prog[0]["data"] == {"phase": "running", "progress": 0.5, "detail": {"step": 1}}
