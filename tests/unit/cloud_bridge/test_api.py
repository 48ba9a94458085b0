"""HTTP API behaviour: validation, idempotency, auth (401/403), approval gate, cancel, listing."""

from __future__ import annotations

import json
import logging

from sqlalchemy import func, select

from cloud_bridge import store
from cloud_bridge.models import AuditEntry, Task

from cloud_bridge.testing import TASK, auth, task


def submit(client, key, body=TASK, idem="k1", **params):
    return client.post("/v1/tasks", json=body, headers={**auth(key), "Idempotency-Key": idem}, params=params)


def count_tasks(db) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(Task))


def test_submit_then_get(client, keys):
    r = submit(client, keys.scheduler, campaign="c1")
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued" and body["campaign"] == "c1" and body["requires_approval"] is False
    assert r.headers["location"] == f"/v1/tasks/{body['id']}"
    got = client.get(f"/v1/tasks/{body['id']}", headers=auth(keys.reader))
    assert got.status_code == 200 and got.json()["task"]["conditions"]["temp_c"] == 90.0
    assert got.json() == body  # the 202 answer is the stored task, field for field


def test_idempotent_replay_returns_same_task_and_different_body_conflicts(client, keys, db):
    first = submit(client, keys.scheduler, idem="same")
    again = submit(client, keys.scheduler, idem="same")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = submit(client, keys.scheduler, body=task(temp_c=95.0), idem="same")
    assert other.status_code == 409
    assert other.json()["error"]["error_type"] == "ConflictError"
    assert count_tasks(db) == 1


def test_out_of_limits_is_422_naming_field_value_limit_and_stores_nothing(client, keys, db):
    r = submit(client, keys.scheduler, body=task(temp_c=150.0, residence_time_min=0.1))
    assert r.status_code == 422
    problems = {p["field"]: p for p in r.json()["error"]["problems"]}
    assert problems["conditions.temp_c"]["value"] == 150.0 and problems["conditions.temp_c"]["limit"] == 120.0
    assert problems["conditions.residence_time_min"]["limit"] == 0.5
    assert "temp_c" in r.json()["error"]["message"]
    assert count_tasks(db) == 0


def test_schema_violations_are_422(client, keys, db):
    r = submit(client, keys.scheduler, body={"kind": "flow_experiment", "conditions": {"temp_c": "hot"}})
    assert r.status_code == 422
    fields = {p["field"] for p in r.json()["error"]["problems"]}
    assert any("temp_c" in f for f in fields) and any("residence_time_min" in f for f in fields)
    assert submit(client, keys.scheduler, body=[1, 2], idem="k2").status_code == 422
    assert submit(client, keys.scheduler, body={**TASK, "extra": 1}, idem="k3").status_code == 422
    assert count_tasks(db) == 0


def test_malformed_and_oversized_bodies(client, keys, db):
    r = client.post("/v1/tasks", content=b"{not json", headers={**auth(keys.admin), "Idempotency-Key": "m",
                                                                  "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("body is not valid JSON")
    big = {**TASK, "name": "x" * 10_000}
    r = client.post("/v1/tasks", json=big, headers={**auth(keys.admin), "Idempotency-Key": "b"})
    assert r.status_code == 413
    assert count_tasks(db) == 0
    assert client.post("/v1/tasks", json=TASK, headers=auth(keys.admin)).status_code == 422  # no Idempotency-Key


def test_unknown_task_is_404_and_other_labs_tasks_are_invisible(client, keys):
    assert client.get("/v1/tasks/does-not-exist", headers=auth(keys.reader)).status_code == 404
    tid = submit(client, keys.admin).json()["id"]
    assert client.get(f"/v1/tasks/{tid}", headers=auth(keys.other_lab)).status_code == 404
    assert client.post(f"/v1/tasks/{tid}/cancel", headers=auth(keys.other_lab)).status_code == 404
    assert client.get("/v1/tasks", headers=auth(keys.other_lab)).json()["items"] == []


def test_401_vs_403(client, keys, db):
    r = client.get("/v1/tasks")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/v1/tasks", headers=auth("ak_000000000000_nope")).status_code == 401
    assert client.get("/v1/tasks", headers=auth("garbage")).status_code == 401
    assert client.get("/v1/tasks", headers={"Authorization": "Basic abc"}).status_code == 401
    r = submit(client, keys.reader)
    assert r.status_code == 403 and "submit" in r.json()["error"]["message"]
    assert client.get("/v1/audit", headers=auth(keys.scheduler)).status_code == 403
    # revoked keys are refused from the next request on
    key_id = store.split_key(keys.reader)
    store.revoke_key(db, key_id)
    assert client.get("/v1/tasks", headers=auth(keys.reader)).status_code == 401


def test_model_service_tasks_wait_for_a_human_approval(client, keys):
    r = submit(client, keys.model)
    assert r.status_code == 202 and r.json()["status"] == "awaiting_approval"
    tid = r.json()["id"]
    # approve needs the approve scope, and a human key
    assert client.post(f"/v1/tasks/{tid}/approve", headers=auth(keys.model)).status_code == 403
    assert client.post(f"/v1/tasks/{tid}/approve", headers=auth(keys.model_approver)).status_code == 403
    assert client.get(f"/v1/tasks/{tid}", headers=auth(keys.reader)).json()["status"] == "awaiting_approval"
    ok = client.post(f"/v1/tasks/{tid}/approve", headers=auth(keys.admin))
    assert ok.status_code == 200 and ok.json()["status"] == "queued"
    assert ok.json()["approved_by"] == store.split_key(keys.admin)
    assert client.post(f"/v1/tasks/{tid}/approve", headers=auth(keys.admin)).status_code == 409


def test_awaiting_tasks_are_not_claimable(client, keys, db):
    submit(client, keys.model)
    assert store.claim_next(db, lab="lab1", owner="b1", lease_s=10, max_attempts=3) is None


def test_cancel_rules(client, keys, db):
    tid = submit(client, keys.scheduler).json()["id"]
    assert client.post(f"/v1/tasks/{tid}/cancel", headers=auth(keys.reader)).status_code == 403
    assert client.post(f"/v1/tasks/{tid}/cancel", headers=auth(keys.model)).status_code == 403  # not its task
    r = client.post(f"/v1/tasks/{tid}/cancel", headers=auth(keys.scheduler))
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    assert client.post(f"/v1/tasks/{tid}/cancel", headers=auth(keys.admin)).status_code == 409
    # a running task is asked to cancel; the lab side ends it
    tid2 = submit(client, keys.scheduler, idem="k2").json()["id"]
    claim = store.claim_next(db, lab="lab1", owner="b1", lease_s=10, max_attempts=3)
    assert claim.id == tid2
    r = client.post(f"/v1/tasks/{tid2}/cancel", headers=auth(keys.admin))
    assert r.json()["status"] == "running" and r.json()["cancel_requested"] is True
    assert store.heartbeat(db, tid2, "b1", 10) == (True, True)


def test_list_filters_and_pagination(client, keys, db):
    ids = [submit(client, keys.scheduler, body=task(temp_c=40.0 + i), idem=f"p{i}",
                  campaign="even" if i % 2 == 0 else "odd").json()["id"] for i in range(7)]
    store.claim_next(db, lab="lab1", owner="b1", lease_s=10, max_attempts=3)
    seen = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/tasks", headers=auth(keys.reader), params=params).json()
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    evens = client.get("/v1/tasks", headers=auth(keys.reader), params={"campaign": "even"}).json()["items"]
    assert len(evens) == 4 and {t["campaign"] for t in evens} == {"even"}
    running = client.get("/v1/tasks", headers=auth(keys.reader), params={"status": "running"}).json()["items"]
    assert [t["id"] for t in running] == [ids[0]]
    assert client.get("/v1/tasks", headers=auth(keys.reader), params={"status": "bogus"}).status_code == 422
    assert client.get("/v1/tasks", headers=auth(keys.reader), params={"cursor": "zzz"}).status_code == 422
    assert client.get("/v1/tasks", headers=auth(keys.reader), params={"limit": 0}).status_code == 422


def test_rate_limit_per_key(client, keys, db):
    slow, _ = store.create_key(db, lab="lab1", scopes=["read"], rate_limit_per_s=0.001)
    codes = [client.get("/v1/me", headers=auth(slow)).status_code for _ in range(4)]
    assert codes.count(429) > 0 and codes[0] == 200
    limited = client.get("/v1/me", headers=auth(slow))
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    # another key is unaffected
    assert client.get("/v1/me", headers=auth(keys.reader)).status_code == 200


def test_audit_log_records_who_did_what_without_secrets(client, keys, db):
    tid = submit(client, keys.model).json()["id"]
    client.post(f"/v1/tasks/{tid}/approve", headers=auth(keys.admin))
    client.get("/v1/tasks", headers=auth("ak_000000000000_wrongsecret"))
    submit(client, keys.reader, idem="denied")
    entries = client.get("/v1/audit", headers=auth(keys.admin)).json()
    actions = {(e["action"], e["outcome"], e["key_id"]) for e in entries}
    assert ("task.submit", "ok", store.split_key(keys.model)) in actions
    assert ("task.approve", "ok", store.split_key(keys.admin)) in actions
    assert any(e["outcome"] == "denied" and e["key_id"] == store.split_key(keys.reader) for e in entries)
    with db.read() as s:
        rows = list(s.scalars(select(AuditEntry)))
        every = [json.dumps([a.key_id, a.detail, a.target, a.action]) for a in rows]
        assert any(a.outcome == "unauthenticated" and a.key_id == "000000000000" for a in rows)
    secrets = [k.split("_", 2)[2] for k in (keys.admin, keys.model, keys.reader)] + ["wrongsecret"]
    assert not any(sec in row for sec in secrets for row in every)


def test_no_secret_in_any_log_line(client, keys, caplog):
    caplog.set_level(logging.DEBUG)
    submit(client, keys.admin)
    client.get("/v1/tasks", headers=auth(keys.admin + "x"))
    client.get("/v1/tasks", headers=auth(keys.reader))
    text = "\n".join(r.getMessage() for r in caplog.records)
    for key in (keys.admin, keys.reader):
        assert key.split("_", 2)[2] not in text


def test_health_ready_me_and_openapi_examples(client, keys, db_url):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == ("sqlite" if db_url.startswith("sqlite") else "postgresql")
    me = client.get("/v1/me", headers=auth(keys.model)).json()
    assert me["kind"] == "model_service" and me["scopes"] == ["read", "submit"] and me["lab"] == "lab1"
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/v1/tasks"]["post"]
    assert post["requestBody"]["content"]["application/json"]["examples"]["flow_experiment"]["value"]["kind"] \
        == "flow_experiment"
    assert "#/$defs" not in json.dumps(spec)
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_inventory_and_lab_status(client, keys, db):
    r = client.put("/v1/lab/inventory/vial-1", headers=auth(keys.admin),
                   json={"kind": "vial", "location": "rack_a/1", "amount": 2.0, "unit": "mL"})
    assert r.status_code == 200
    assert client.put("/v1/lab/inventory/vial-2", headers=auth(keys.scheduler), json={"kind": "vial"}).status_code == 403
    assert client.put("/v1/lab/inventory/vial-2", headers=auth(keys.admin), json={"kind": "vial", "amount": -1}
                      ).status_code == 422
    items = client.get("/v1/lab/inventory", headers=auth(keys.reader)).json()
    assert [(i["item_id"], i["location"], i["amount"]) for i in items] == [("vial-1", "rack_a/1", 2.0)]
    assert client.get("/v1/lab/inventory", headers=auth(keys.other_lab)).json() == []
    assert client.delete("/v1/lab/inventory/vial-1", headers=auth(keys.admin)).status_code == 204
    assert client.delete("/v1/lab/inventory/vial-1", headers=auth(keys.admin)).status_code == 404

    status = client.get("/v1/lab/status", headers=auth(keys.reader)).json()
    assert status["safety"]["estop"] is None and status["nodes"] == []
    store.report_lab_status(db, "lab1", "bridge-a", {"nodes": ["/planner_node", "/bridge_node"],
                                                     "devices": {"flow_reactor": {"phase": "idle"}},
                                                     "safety": {"estop": False, "source": "", "reason": ""}})
    submit(client, keys.scheduler)
    status = client.get("/v1/lab/status", headers=auth(keys.reader)).json()
    assert status["nodes"] == ["/bridge_node", "/planner_node"] and status["safety"]["estop"] is False
    assert status["devices"]["flow_reactor"]["phase"] == "idle" and status["queue"]["queued"] == 1
