"""The bridge's web page in headless Debian chromium (Playwright): list with live status, details
and results, approve and cancel by scope, the campaign plot."""

from __future__ import annotations

import json
import os
import socket
import threading

import pytest
import uvicorn

from cloud_bridge import store
from cloud_bridge.api import create_app
from cloud_bridge.config import BridgeSettings
from cloud_bridge.testing import TASK, Keys, task

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                 reason=f"{CHROMIUM} missing: apt-get install chromium (scripts/apt-packages.txt)")]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def site(tmp_path):
    app = create_app(f"sqlite:///{tmp_path / 'web.db'}", BridgeSettings(sse_poll_s=0.05, rate_limit_per_s=1000,
                                                                        rate_limit_burst=1000))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    waiter = threading.Event()
    for _ in range(200):
        if srv.started:
            break
        waiter.wait(0.05)
    yield f"http://127.0.0.1:{port}", app.state.db, Keys(app.state.db)
    srv.should_exit = True
    thread.join(timeout=10)
    app.state.db.dispose()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context()
        pg = context.new_page()
        pg.set_default_timeout(15000)
        yield pg
        browser.close()


def finish(db, task_id, owner, yield_fraction):
    claim = store.claim_next(db, lab="lab1", owner=owner, lease_s=30, max_attempts=3)
    assert claim is not None and claim.id == task_id
    exp = {"conditions": TASK["conditions"], "yield_fraction": yield_fraction, "sty_kg_m3_h": 900 * yield_fraction,
           "e_factor": 5 / yield_fraction}
    assert store.finish_task(db, task_id, owner, status="succeeded", code=0,
                             result_json=json.dumps({"experiments": [exp]}))


def sign_in(page, url, key):
    page.goto(url + "/")
    page.fill("#api-key", key)
    page.click("#use-key")
    page.wait_for_selector("#live.on")


def row(page, task_id):
    return page.locator(f'#tasks tbody tr[data-id="{task_id}"]')


def test_live_list_details_approve_cancel_and_plot(site, page):
    from playwright.sync_api import expect

    url, db, keys = site
    settings = BridgeSettings()
    model_who = store.authenticate(db, keys.model)
    sched_who = store.authenticate(db, keys.scheduler)
    waiting = store.submit_task(db, model_who, TASK, idempotency_key="w1", settings=settings)[0]["id"]
    queued = store.submit_task(db, sched_who, task(temp_c=70.0), idempotency_key="q1", settings=settings)[0]["id"]

    sign_in(page, url, keys.admin)
    expect(row(page, waiting)).to_have_attribute("data-status", "awaiting_approval")
    expect(row(page, queued)).to_have_attribute("data-status", "queued")

    # approve a model-service task
    row(page, waiting).click()
    expect(page.locator("#approve")).to_be_visible()
    page.click("#approve")
    expect(row(page, waiting)).to_have_attribute("data-status", "queued")
    expect(page.locator("#approve")).to_be_hidden()
    assert store.get_task(db, model_who, waiting)["approved_by"] == store.split_key(keys.admin)

    # cancel the other one
    row(page, queued).click()
    page.click("#cancel")
    expect(row(page, queued)).to_have_attribute("data-status", "cancelled")

    # a task submitted and run elsewhere shows up and changes status live, without a reload
    live = [store.submit_task(db, sched_who, task(temp_c=40.0 + 10 * i), idempotency_key=f"l{i}",
                              campaign="camp", settings=settings)[0]["id"] for i in range(3)]
    expect(row(page, live[0])).to_have_attribute("data-status", "queued")
    finish(db, waiting, "bridge-x", 0.2)  # the approved task is the oldest queued one
    for i, tid in enumerate(live):
        finish(db, tid, "bridge-x", 0.3 + 0.2 * i)
    expect(row(page, live[2])).to_have_attribute("data-status", "succeeded")

    # details and results of a finished task
    row(page, live[1]).click()
    expect(page.locator("#detail-status")).to_contain_text("succeeded")
    expect(page.locator("#result-table")).to_contain_text("0.5")
    expect(page.locator("#cancel")).to_be_hidden()

    # the campaign plot: one point per experiment, a best-so-far line
    page.fill("#campaign", "camp")
    page.click("#plot-button")
    expect(page.locator("#plot svg circle.point")).to_have_count(3)
    assert page.locator("#plot svg polyline.best-so-far").count() == 1
    page.select_option("#objective", "e_factor")
    page.click("#plot-button")
    expect(page.locator("#plot svg")).to_have_attribute("aria-label", "e_factor over experiments")


def test_buttons_follow_the_keys_scopes(site, page):
    from playwright.sync_api import expect

    url, db, keys = site
    who = store.authenticate(db, keys.model)
    tid = store.submit_task(db, who, TASK, idempotency_key="w1", settings=BridgeSettings())[0]["id"]
    store.report_lab_status(db, "lab1", "bridge-a", {"nodes": ["/planner_node", "/bridge_node"], "devices": {},
                                                     "safety": {"estop": True, "source": "op", "reason": "door open"}})
    sign_in(page, url, keys.reader)
    expect(page.locator("#lab-status")).to_contain_text("E-STOP: door open")
    expect(page.locator("#lab-status")).to_contain_text("2 nodes")
    expect(page.locator("#lab-status")).to_contain_text("1 awaiting approval")
    row(page, tid).click()
    expect(page.locator("#detail-status")).to_contain_text("awaiting_approval")
    expect(page.locator("#approve")).to_be_hidden()
    expect(page.locator("#cancel")).to_be_hidden()
    # a bad key is refused with a message and shows nothing
    page.fill("#api-key", "ak_000000000000_wrong")
    page.click("#use-key")
    expect(page.locator("#error")).to_contain_text("not accepted")
