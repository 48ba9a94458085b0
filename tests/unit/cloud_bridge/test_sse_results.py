"""Live events (SSE, over a real uvicorn server), results JSON, ORD export, campaign objective, the
Python client's typed errors and the CLI."""

from __future__ import annotations

import json
import socket
import threading

import pytest
import uvicorn
from typer.testing import CliRunner

from aichemist.errors import AuthenticationError, ConflictError, NotFoundError, ValidationError
from cloud_bridge import store
from cloud_bridge.cli import app as cli_app
from cloud_bridge.client import BridgeClient
from cloud_bridge.testing import TASK, task


@pytest.fixture
def db_url(tmp_path) -> str:
    """These tests are about HTTP, SSE and the CLI: SQLite only (the database paths they use run on
    both databases in test_api and test_queue)."""
    return f"sqlite:///{tmp_path / 'bridge.db'}"


@pytest.fixture
def server(app):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(100):
        if srv.started:
            started.set()
            break
        started.wait(0.05)
    assert srv.started
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def run_task(db, task_id, owner="b1", experiments=None, status="succeeded"):
    claim = store.claim_next(db, lab="lab1", owner=owner, lease_s=30, max_attempts=3)
    assert claim.id == task_id
    store.record_progress(db, task_id, owner, phase="running", progress=0.5)
    exp = experiments if experiments is not None else [{"conditions": TASK["conditions"], "yield_fraction": 0.61,
                                                        "sty_kg_m3_h": 812.0, "e_factor": 7.5}]
    store.finish_task(db, task_id, owner, status=status, code=0 if status == "succeeded" else 20,
                      error_type="" if status == "succeeded" else "InterlockTripped",
                      result_json=json.dumps({"experiments": exp}))


def test_task_event_stream_follows_the_task_live_and_ends(server, db, keys):
    with BridgeClient(server, keys.scheduler) as c:
        t = c.submit(TASK, idempotency_key="sse-1")
        seen: list[dict] = []
        subscribed = threading.Event()

        def follow() -> None:
            for ev in c.events(t["id"], timeout_s=20):
                seen.append(ev)
                subscribed.set()

        reader = threading.Thread(target=follow)
        reader.start()
        assert subscribed.wait(10)
        run_task(db, t["id"])
        reader.join(timeout=20)
        assert not reader.is_alive()
    types = [e["event"] for e in seen]
    assert types[0] == "snapshot" and types[-1] == "finished"
    assert types[1:] == ["submitted", "claimed", "progress", "finished"]
    assert seen[-1]["data"]["data"]["status"] == "succeeded"
    ids = [int(e["id"]) for e in seen[1:]]
    assert ids == sorted(ids)
    # resuming after the last event of an ended task ends at once
    with BridgeClient(server, keys.reader) as c:
        again = list(c.events(t["id"], after=ids[-1], timeout_s=10))
        assert [e["event"] for e in again] == ["snapshot"]
        assert c.wait(t["id"], timeout_s=10)["status"] == "succeeded"


def test_lab_event_stream_sees_every_task_of_the_lab_only(server, db, keys):
    with BridgeClient(server, keys.admin) as c, BridgeClient(server, keys.other_lab) as other:
        first = c.submit(TASK, idempotency_key="lab-1")
        other.submit(TASK, idempotency_key="lab-x")
        second = c.submit(task(temp_c=60.0), idempotency_key="lab-2")
        seen = []
        for ev in c.events(after=0, timeout_s=10):
            seen.append(ev)
            if len(seen) == 2:
                break
    assert [e["data"]["task_id"] for e in seen] == [first["id"], second["id"]]
    assert {e["event"] for e in seen} == {"submitted"}


def test_results_ord_export_and_campaign_objective(client, db, keys):
    from cloud_bridge.testing import auth

    ids = []
    for i in range(3):
        r = client.post("/v1/tasks", json=task(temp_c=50.0 + 10 * i), params={"campaign": "camp-1"},
                        headers={**auth(keys.scheduler), "Idempotency-Key": f"c{i}"})
        ids.append(r.json()["id"])
    assert client.get(f"/v1/tasks/{ids[0]}/result", headers=auth(keys.reader)).status_code == 409  # not yet
    for i, tid in enumerate(ids):
        run_task(db, tid, experiments=[{"conditions": task(temp_c=50.0 + 10 * i)["conditions"],
                                        "yield_fraction": 0.2 + 0.1 * i, "sty_kg_m3_h": 100.0 * (i + 1),
                                        "e_factor": 20.0 - i}])
    res = client.get(f"/v1/tasks/{ids[1]}/result", headers=auth(keys.reader)).json()
    assert res["status"] == "succeeded" and res["experiments"][0]["yield_fraction"] == pytest.approx(0.3)
    ord_ds = client.get(f"/v1/tasks/{ids[1]}/result/ord", headers=auth(keys.reader))
    assert ord_ds.status_code == 200, ord_ds.text
    rxn = ord_ds.json()["reactions"][0]
    assert rxn["conditions"]["temperature"]["setpoint"] == {"value": 60.0, "units": "CELSIUS"}
    product = rxn["outcomes"][0]["products"][0]
    assert product["measurements"][0]["percentage"]["value"] == pytest.approx(30.0)
    assert {i["value"] for i in product["identifiers"]} >= {"O=[N+]([O-])c1ccc(F)cc1N1CCCC1"}
    # the record parses back with ord-schema
    from google.protobuf import json_format
    from ord_schema.proto import dataset_pb2
    parsed = json_format.ParseDict(ord_ds.json(), dataset_pb2.Dataset())
    assert parsed.reactions[0].outcomes[0].reaction_time.value == 1.0
    obj = client.get("/v1/campaigns/camp-1/objective", headers=auth(keys.reader)).json()
    assert [p["task_id"] for p in obj["points"]] == ids
    assert [p["sty_kg_m3_h"] for p in obj["points"]] == [100.0, 200.0, 300.0]


def test_client_raises_typed_errors(server, keys):
    with BridgeClient(server, keys.scheduler) as c:
        with pytest.raises(ValidationError) as err:
            c.submit(task(temp_c=500.0))
        assert err.value.problems[0]["field"] == "conditions.temp_c"
        with pytest.raises(NotFoundError):
            c.get("nope")
        c.submit(TASK, idempotency_key="x")
        with pytest.raises(ConflictError):
            c.submit(task(temp_c=31.0), idempotency_key="x")
    with BridgeClient(server, "ak_000000000000_bad") as c, pytest.raises(AuthenticationError):
        c.me()


def test_cli_keys_submit_status_watch(server, db, db_url, tmp_path, monkeypatch):
    runner = CliRunner()
    created = runner.invoke(cli_app, ["keys", "create", "--lab", "lab1", "--scopes", "submit,read",
                                      "--kind", "scheduler", "--database-url", db_url])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("ak_")
    listed = runner.invoke(cli_app, ["keys", "list", "--database-url", db_url])
    assert store.split_key(key) in listed.stdout and key.split("_", 2)[2] not in listed.stdout
    bad = runner.invoke(cli_app, ["keys", "create", "--lab", "lab1", "--scopes", "root", "--database-url", db_url])
    assert bad.exit_code == 2 and "scopes" in bad.output
    task_file = tmp_path / "t.json"
    task_file.write_text(json.dumps(TASK))
    monkeypatch.setenv("AICHEMIST_BRIDGE_URL", server)
    monkeypatch.setenv("AICHEMIST_API_KEY", key)
    sub = runner.invoke(cli_app, ["submit", str(task_file), "--campaign", "cli"])
    assert sub.exit_code == 0, sub.output
    tid = json.loads(sub.stdout)["id"]
    st = runner.invoke(cli_app, ["status", "--campaign", "cli"])
    assert tid in st.stdout and "queued" in st.stdout
    one = runner.invoke(cli_app, ["status", tid])
    assert json.loads(one.stdout)["status"] == "queued"
    # watch follows a task to its end: here the lab runs it while the CLI watches
    finisher = threading.Timer(0.5, run_task, args=(db, tid))
    finisher.start()
    watched = runner.invoke(cli_app, ["watch", tid])
    finisher.join()
    lines = [json.loads(line) for line in watched.stdout.splitlines()]
    assert watched.exit_code == 0 and lines[0]["event"] == "snapshot" and lines[-1]["event"] == "finished"
    assert lines[-1]["data"]["data"]["status"] == "succeeded"
    revoked = runner.invoke(cli_app, ["keys", "revoke", store.split_key(key), "--database-url", db_url])
    assert revoked.exit_code == 0
    denied = runner.invoke(cli_app, ["status", tid])
    assert denied.exit_code == 2 and "revoked" in denied.output
