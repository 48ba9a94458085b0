"""Group commit of submissions: several submissions in one transaction keep every per-request
guarantee (Idempotency-Key replay and conflict, audit entry, submitted event, durable before the
answer), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import pytest
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from aichemist.errors import ConflictError
from cloud_bridge import store
from cloud_bridge.config import BridgeSettings
from cloud_bridge.group_commit import GroupCommitter
from cloud_bridge.models import AuditEntry, Task, TaskEvent
from cloud_bridge.testing import TASK, auth, pg_unavailable_reason, task


def _count(db, model, **where) -> int:
    with db.read() as s:
        q = select(func.count()).select_from(model)
        for name, value in where.items():
            q = q.where(getattr(model, name) == value)
        return s.scalar(q)


def _prepare(who, document, key, settings=None):
    return store.prepare_submission(who, document, idempotency_key=key, settings=settings or BridgeSettings())


def test_one_batch_stores_each_with_its_event_and_audit_and_resolves_keys(db, keys):
    who = store.authenticate(db, keys.scheduler)
    before, _ = store.submit_task(db, who, task(temp_c=50.0), idempotency_key="old", settings=BridgeSettings())
    subs = [_prepare(who, task(temp_c=60.0), "a"),
            _prepare(who, task(temp_c=61.0), "b"),
            _prepare(who, task(temp_c=60.0), "a"),   # same key, same body, same batch: replay of "a"
            _prepare(who, task(temp_c=99.0), "b"),   # same key, other body, same batch: 409
            _prepare(who, task(temp_c=50.0), "old"),  # stored earlier, same body: replay
            _prepare(who, task(temp_c=51.0), "old")]  # stored earlier, other body: 409
    out = store.store_submissions(db, subs)
    (a, a_new), (b, b_new), (a2, a2_new), b_conflict, (old, old_new), old_conflict = out
    assert a_new and b_new and not a2_new and not old_new
    assert a2 == a and old == before
    assert isinstance(b_conflict, ConflictError) and b["id"] in b_conflict.message
    assert isinstance(old_conflict, ConflictError) and before["id"] in old_conflict.message
    assert _count(db, Task) == 3
    for view in (a, b):
        assert store.get_task(db, who, view["id"]) == view  # the answer is the stored row
        assert _count(db, TaskEvent, task_id=view["id"], type="submitted") == 1
        assert _count(db, AuditEntry, target=view["id"], action="task.submit") == 1


def _statements(db):
    """SQL statements sent to the database (every engine of ``db``), in order."""
    from sqlalchemy import event

    sent = []
    engines = [db.engine] + ([db._autocommit_engine] if db._autocommit_engine is not None else [])
    for engine in engines:
        event.listen(engine, "before_cursor_execute", lambda conn, cur, sql, *rest: sent.append(sql))
    return sent


def test_a_batch_of_new_keys_with_repeats_in_it_is_one_write(db, keys):
    """Repeated keys inside a batch are resolved before the write; the new tasks, their events and
    audit entries then go in one statement on PostgreSQL (its own transaction: no BEGIN, no
    COMMIT) and in one transaction of one executemany per table on SQLite."""
    who = store.authenticate(db, keys.scheduler)
    subs = [_prepare(who, task(temp_c=60.0 + i), f"n{i}") for i in range(5)]
    subs += [_prepare(who, task(temp_c=60.0), "n0"),   # repeat, same body: replay
             _prepare(who, task(temp_c=99.0), "n1")]   # repeat, other body: 409
    sent = _statements(db)
    out = store.store_submissions(db, subs)
    assert [o[1] for o in out[:5]] == [True] * 5
    assert out[5] == (out[0][0], False)
    assert isinstance(out[6], ConflictError) and out[1][0]["id"] in out[6].message
    if db.sqlite:
        assert [sql.split()[:3] for sql in sent] == [["BEGIN", "IMMEDIATE"]] + [
            ["INSERT", "INTO", table] for table in ("tasks", "task_events", "audit_log")]
    else:
        assert len(sent) == 1 and sent[0].startswith("WITH ")
    assert _count(db, Task) == 5
    for view, _ in out[:5]:
        assert store.get_task(db, who, view["id"]) == view
        assert _count(db, TaskEvent, task_id=view["id"], type="submitted") == 1
        assert _count(db, AuditEntry, target=view["id"], action="task.submit") == 1


_PG_REASON = pg_unavailable_reason()


# PostgreSQL only: the failure is a column length, which SQLite does not enforce
@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=[
    pytest.mark.postgres, pytest.mark.skipif(_PG_REASON is not None, reason=str(_PG_REASON))])], indirect=True)
def test_a_batch_that_cannot_be_written_stores_nothing_of_it(db, keys):
    """A database error (here an audit entry too long for its column) fails the whole batch: no
    task of it is stored, not even its events."""
    from sqlalchemy.exc import DataError

    who = store.authenticate(db, keys.scheduler)
    subs = [_prepare(who, task(temp_c=60.0 + i), f"d{i}") for i in range(3)]
    subs[2].audit["action"] = "x" * 65  # audit_log.action is VARCHAR(64)
    with pytest.raises(DataError):
        store.store_submissions(db, subs)
    assert _count(db, Task) == _count(db, TaskEvent) == 0
    assert _count(db, AuditEntry, action="task.submit") == 0


def test_a_submission_whose_row_breaks_a_constraint_fails_alone(db, keys):
    """The others of its batch are stored and answered; it gets its own database error."""
    from sqlalchemy.exc import IntegrityError

    who = store.authenticate(db, keys.scheduler)
    subs = [_prepare(who, task(temp_c=60.0 + i), f"b{i}") for i in range(3)]
    subs[1].row["campaign"] = None  # tasks.campaign is NOT NULL
    out = store.store_submissions(db, subs)
    assert isinstance(out[1], IntegrityError)
    assert out[0][1] and out[2][1]
    assert _count(db, Task) == 2
    for view, _ in (out[0], out[2]):
        assert store.get_task(db, who, view["id"]) == view
        assert _count(db, TaskEvent, task_id=view["id"]) == 1
    with pytest.raises(IntegrityError):  # submit_task raises it
        store.submit_task(db, who, TASK, idempotency_key="b1", campaign=None, settings=BridgeSettings())


def test_a_batch_mixing_whole_and_fractional_timestamps_is_stored_exactly(db, keys):
    """A clock may give whole seconds (an int); any double must read back as the same double."""
    from cloud_bridge.testing import FakeClock

    who = store.authenticate(db, keys.scheduler)
    times = [1_800_000_000, 1_800_000_000.123456789, 0.1 + 0.2, 1_799_999_999.9999998, 5e-324]
    subs = [store.prepare_submission(who, TASK, idempotency_key=f"t{i}", settings=BridgeSettings(),
                                     clock=FakeClock(t)) for i, t in enumerate(times)]
    out = store.store_submissions(db, subs)
    assert [store.get_task(db, who, view["id"])["created_at"] for view, _ in out] == times
    assert [e["at"] for e in store.events_since(db, who.lab, 0)] == times


def test_key_inserted_by_another_process_after_the_lookup_is_a_replay(db, keys, monkeypatch):
    """The unique constraint catches what the batch's look-up could not see (another API process
    committed the same key in between); the batch is then stored submission by submission."""
    who = store.authenticate(db, keys.scheduler)
    theirs, _ = store.submit_task(db, who, TASK, idempotency_key="raced", settings=BridgeSettings())
    real_lookup = store._SELECT_BY_KEYS
    blind_lookup = real_lookup.where(Task.id.is_(None))  # sees nothing, like a look-up made earlier
    calls = []
    real_batch = store._store_batch

    def batch_with_stale_first_lookup(db_, subs, *, look_up):
        calls.append((len(subs), look_up))
        stale = look_up and calls.count((len(subs), True)) == 1 and len(subs) == 2
        monkeypatch.setattr(store, "_SELECT_BY_KEYS", blind_lookup if stale else real_lookup)
        return real_batch(db_, subs, look_up=look_up)

    monkeypatch.setattr(store, "_store_batch", batch_with_stale_first_lookup)
    out = store.store_submissions(db, [_prepare(who, task(temp_c=70.0), "fresh"), _prepare(who, TASK, "raced")])
    # insert without look-up: the key is taken; with the (stale) look-up: taken again; one by one
    assert calls == [(2, False), (2, True), (1, True), (1, True)]
    (fresh, fresh_new), (replay, replay_new) = out
    assert fresh_new and not replay_new and replay == theirs
    assert _count(db, Task) == 2 and _count(db, AuditEntry, action="task.submit") == 2


def test_concurrent_requests_share_transactions_and_each_is_answered_after_its_commit(db, keys, monkeypatch):
    who = store.authenticate(db, keys.scheduler)
    committer = GroupCommitter(db)
    committed = []
    real = store.store_submissions

    def recording(db_, subs):
        out = real(db_, subs)
        committed.extend(s.row["id"] for s in subs)  # returns only after the commit
        return out

    monkeypatch.setattr(store, "store_submissions", recording)

    async def run():
        async def one(i):
            view, created = await committer.submit(_prepare(who, task(temp_c=40.0 + i), f"c{i}"))
            assert created and view["id"] in committed
            return view

        try:
            return await asyncio.gather(*(one(i) for i in range(40)))
        finally:
            committer.stop()

    views = asyncio.run(run())
    assert len({v["id"] for v in views}) == 40 and _count(db, Task) == 40
    assert committer.stored == 40 and committer.batches < 40  # batched while the writer was busy


def test_a_failed_commit_fails_every_request_of_its_batch_and_stores_none(db, keys, monkeypatch):
    who = store.authenticate(db, keys.scheduler)
    committer = GroupCommitter(db)

    def database_down(db_, subs):
        raise OperationalError("INSERT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(store, "store_submissions", database_down)

    async def run():
        try:
            return await asyncio.gather(*(committer.submit(_prepare(who, TASK, f"f{i}")) for i in range(5)),
                                        return_exceptions=True)
        finally:
            committer.stop()

    outcomes = asyncio.run(run())
    assert all(isinstance(o, OperationalError) for o in outcomes)
    assert _count(db, Task) == 0


def test_http_submissions_under_concurrency_keep_idempotency(app, keys, db):
    """Through the API: 30 concurrent requests, 10 keys sent 3 times each -> 10 tasks, 10 answers
    of 202, 20 replays of 200 with the same task."""
    import httpx

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
            async def one(i):
                return await client.post("/v1/tasks", json=task(temp_c=40.0 + i % 10),
                                         headers={**auth(keys.scheduler), "Idempotency-Key": f"h{i % 10}"})

            try:
                return await asyncio.gather(*(one(i) for i in range(30)))
            finally:
                app.state.committer.stop()

    answers = asyncio.run(run())
    assert sorted(r.status_code for r in answers) == [200] * 20 + [202] * 10
    by_key: dict[str, set[str]] = {}
    for i, r in enumerate(answers):
        by_key.setdefault(f"h{i % 10}", set()).add(r.json()["id"])
    assert all(len(ids) == 1 for ids in by_key.values())
    assert _count(db, Task) == 10 and _count(db, AuditEntry, action="task.submit") == 10


@pytest.mark.parametrize("cache_s", [0.0, 1.0])
def test_revoked_key_is_refused_at_once_with_or_without_the_key_cache(db_url, keys, cache_s):
    from fastapi.testclient import TestClient

    from cloud_bridge.api import create_app

    application = create_app(db_url, BridgeSettings(auth_cache_s=cache_s, rate_limit_per_s=1000,
                                                    rate_limit_burst=1000))
    try:
        with TestClient(application) as client:
            ok = client.post("/v1/tasks", json=TASK, headers={**auth(keys.scheduler), "Idempotency-Key": "r1"})
            assert ok.status_code == 202
            store.revoke_key(application.state.db, store.split_key(keys.scheduler))
            refused = client.post("/v1/tasks", json=TASK, headers={**auth(keys.scheduler), "Idempotency-Key": "r2"})
            assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
    finally:
        application.state.db.dispose()


def _errors_as_json(app):
    @app.exception_handler(RequestValidationError)
    async def _errors(request, exc):
        return JSONResponse({"errors": json.loads(json.dumps(_comparable(exc.errors()), default=str))}, status_code=422)

    return app


def _reference_app():
    """A route declaring the submission's parameters the FastAPI way (what the bridge did before
    it checked them by hand on the hot path)."""
    ref = _errors_as_json(FastAPI())

    @ref.post("/v1/tasks")
    async def submit(idempotency_key: Annotated[str, Header(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
                                                            examples=["snar-2026-11-21-001"])],
                     campaign: Annotated[str, Query(max_length=128, pattern=r"^[A-Za-z0-9_.:-]*$",
                                                    description="campaign this task belongs to")] = ""):
        return {"key": idempotency_key, "campaign": campaign}

    return ref


def _hand_checked_app():
    from cloud_bridge.api import _submit_params

    app = _errors_as_json(FastAPI())

    @app.post("/v1/tasks")
    async def submit(request: Request):
        key, campaign = _submit_params(request)
        return {"key": key, "campaign": campaign}

    return app


def _comparable(errors):
    return [{k: e.get(k) for k in ("type", "loc", "msg", "input", "ctx")} for e in errors]


KEY = "Idempotency-Key"
CASES = [({}, {}), ({KEY: ""}, {}), ({KEY: "a b"}, {}), ({KEY: "x" * 200}, {}), ({KEY: "x" * 201}, {}),
         ({KEY: "é".encode("latin-1")}, {}), ({KEY: "ok"}, {"campaign": "c7.run-2:a_b"}),
         ({KEY: "ok"}, {"campaign": ""}), ({KEY: "ok"}, {"campaign": "bad campaign"}),
         ({KEY: "ok"}, {"campaign": "c" * 128}), ({KEY: "ok"}, {"campaign": "c" * 129}),
         ({KEY: "ok"}, {"campaign": "a\n"}), ({}, {"campaign": "bad!"}),
         ({KEY: "ok"}, [("campaign", "a"), ("campaign", "b c")])]


@pytest.mark.parametrize("headers,params", CASES)
def test_hand_checked_submission_parameters_behave_like_declared_ones(headers, params):
    from fastapi.testclient import TestClient

    with TestClient(_reference_app()) as ref, TestClient(_hand_checked_app()) as ours:
        expected = ref.post("/v1/tasks", headers=headers, params=params)
        got = ours.post("/v1/tasks", headers=headers, params=params)
    assert (got.status_code, got.json()) == (expected.status_code, expected.json())


def test_submission_parameters_are_documented_as_declared_ones():
    from cloud_bridge.api import SUBMIT_PARAMETERS

    assert _reference_app().openapi()["paths"]["/v1/tasks"]["post"]["parameters"] == SUBMIT_PARAMETERS
