"""Executor + runner: adapters, retries with backoff, recovery, timeouts, pause/resume/cancel,
journal resume after a restart, document stream, and a campaign closing the loop."""

from __future__ import annotations

import threading

import pytest

from aichemist.clock import SimClock
from aichemist.errors import (Cancelled, CommunicationTimeout, ConflictError, DeviceError, PerceptionError,
                              StepTimeout, ValidationError)
from planner.compiler import Step, compile_task
from planner.executor import Executor, RetryPolicy, StepInFlightLost, StepJournal
from planner.lab import load_lab
from planner.runner import run_task
from sim.kinetics.snar import evaluate

GOOD = {"residence_time_min": 1.0, "temp_c": 90.0, "equivalents": 2.0, "conc_dfnb_m": 0.3}


class TwinDevices:
    """In-process stand-ins for the lab's devices: the reactor runs the SnAr kinetics on a SimClock."""

    def __init__(self, clock):
        self.clock = clock
        self.calls: list[str] = []
        self.vials: dict[str, str] = {}
        self.samples: dict[str, dict] = {}

    def adapters(self):
        return {"fetch_vial": self.move, "move_vial": self.move, "store_vial": self.move, "run_flow": self.run_flow,
                "measure": self.measure, "dispense": self.move}

    def move(self, step, ctx):
        self.calls.append(step.id)
        ctx.sleep(step.duration_s)
        self.vials[step.params.get("vial_id", "")] = step.params.get("to_station", "")
        return {"at": step.params.get("to_station")}

    def run_flow(self, step, ctx):
        self.calls.append(step.id)
        c = step.params["conditions"]
        ctx.sleep(step.duration_s)
        out = evaluate(c["residence_time_min"], c["equivalents"], c["conc_dfnb_m"], c["temp_c"], model="current")
        self.samples[step.params["collect_vial"]] = out
        return {"yield_fraction": out["yield_fraction"], "sty_kg_m3_h": out["sty_kg_m3_h"],
                "e_factor": out["e_factor"]}

    def measure(self, step, ctx):
        self.calls.append(step.id)
        ctx.sleep(step.duration_s)
        return {"yield_fraction": self.samples[step.params["vial_id"]]["yield_fraction"], "chromatogram": "c.csv"}


@pytest.fixture
def lab():
    return load_lab("default")


@pytest.fixture
def journal(tmp_path):
    j = StepJournal(tmp_path / "journal.db")
    yield j
    j.close()


def test_flow_experiment_runs_through_adapters_and_streams_documents(lab, journal):
    clock = SimClock(max_step=10.0)
    twin = TwinDevices(clock)
    ex = Executor(twin.adapters(), journal, clock=clock)
    docs: list[dict] = []
    ex.subscribe(docs.append)
    result = run_task("t1", {"kind": "flow_experiment", "conditions": GOOD, "proposed_by": "model-7"}, lab, ex)
    assert twin.calls == ["e0.fetch_vial", "e0.run_flow", "e0.move_vial", "e0.measure", "e0.store_vial"]
    (exp,) = result["experiments"]
    expected = evaluate(1.0, 2.0, 0.3, 90.0, model="current")
    assert exp["yield_fraction"] == pytest.approx(expected["yield_fraction"])
    assert exp["sty_kg_m3_h"] == pytest.approx(expected["sty_kg_m3_h"]) and exp["proposed_by"] == "model-7"
    assert docs[0]["type"] == "start" and docs[-1]["type"] == "stop" and docs[-1]["exit_status"] == "success"
    assert docs[0]["metadata"]["task_id"] == "t1"
    states = [(d["step_id"], d["state"]) for d in docs if d["type"] == "event"]
    assert ("e0.run_flow", "running") in states and ("e0.measure", "succeeded") in states
    assert clock.now() == pytest.approx(3 * lab.durations.move_vial_s + lab.reactor.heat_up_s + 360 + 600)
    assert all(rec["state"] == "succeeded" for rec in journal.steps("t1").values())
    with pytest.raises(ConflictError):  # a finished run id is never run twice
        ex.run("t1", compile_task({"kind": "flow_experiment", "conditions": GOOD}, lab).steps)


def test_retryable_errors_are_retried_with_backoff_and_recovery(journal):
    clock = SimClock(max_step=1.0)
    attempts = {"n": 0}
    recovered: list[str] = []

    def flaky(step, ctx):
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise CommunicationTimeout("pump did not answer")
        if attempts["n"] == 2:
            raise PerceptionError("fiducial not found")
        return {"ok": True}

    def relocalise(step, ctx, err):
        recovered.append(type(err).__name__)

    ex = Executor({"x": flaky}, journal, clock=clock, retry=RetryPolicy(max_attempts=3, backoff_s=2.0),
                  recoveries={"PerceptionError": relocalise})
    out = ex.run("r", [Step("s", "x", [], 1.0, timeout_s=100)])
    assert out["s"] == {"ok": True} and attempts["n"] == 3
    assert recovered == ["PerceptionError"]
    assert clock.now() == pytest.approx(2.0 + 4.0)  # exponential backoff on the executor's clock
    assert journal.steps("r")["s"]["attempts"] == 3


def test_non_retryable_error_fails_fast_and_skips_dependents(journal):
    calls: list[str] = []

    def broken(step, ctx):
        calls.append(step.id)
        raise DeviceError("thermostat fault E42")

    ex = Executor({"x": broken, "y": lambda s, c: calls.append(s.id) or {}}, journal, clock=SimClock())
    with pytest.raises(DeviceError, match="E42"):
        ex.run("r", [Step("a", "x", ["reactor"], 1, timeout_s=10), Step("b", "y", ["hplc"], 1, ["a"], timeout_s=10)])
    assert calls == ["a"]
    steps = journal.steps("r")
    assert steps["a"]["state"] == "failed" and steps["a"]["attempts"] == 1
    assert steps["b"]["state"] == "skipped" and journal.run_state("r") == "failed"


def test_timeout_is_retried_then_fails_with_step_timeout(journal):
    clock = SimClock(max_step=1.0)

    def slow(step, ctx):
        ctx.sleep(50.0)
        return {}

    ex = Executor({"x": slow}, journal, clock=clock, retry=RetryPolicy(max_attempts=2, backoff_s=1.0))
    with pytest.raises(StepTimeout):
        ex.run("r", [Step("a", "x", [], 5.0, timeout_s=10.0)])
    assert journal.steps("r")["a"]["attempts"] == 2 and journal.steps("r")["a"]["error_type"] == "StepTimeout"


def test_missing_adapter_is_rejected_before_anything_runs(journal):
    ex = Executor({}, journal, clock=SimClock())
    with pytest.raises(ValidationError, match="no device adapter"):
        ex.run("r", [Step("a", "run_flow", [], 1)])
    assert journal.run_state("r") is None


def test_pause_resume_and_cancel(journal):
    started = {k: threading.Event() for k in ("a", "b", "c")}
    release = threading.Event()

    def blocking(step, ctx):
        started[step.id].set()
        while not release.wait(0.01):
            ctx.check()  # raises Cancelled when the run is cancelled
        return {"done": step.id}

    ex = Executor({"x": blocking}, journal)  # wall clock: real threads
    steps = [Step("a", "x", ["r"], 1, timeout_s=60), Step("b", "x", ["r"], 1, ["a"], timeout_s=60),
             Step("c", "x", ["r"], 1, ["b"], timeout_s=60)]
    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("err", _run_catch(ex, "r", steps)))
    t.start()
    assert started["a"].wait(10)
    ex.pause()
    release.set()  # a finishes while paused; b must not start
    assert not started["b"].wait(0.5)
    assert journal.steps("r")["a"]["state"] == "succeeded" and journal.steps("r")["b"]["state"] == "pending"
    release.clear()
    ex.resume()
    assert started["b"].wait(10)
    ex.cancel()
    t.join(10)
    assert isinstance(box["err"], Cancelled)
    s = journal.steps("r")
    assert s["a"]["state"] == "succeeded" and s["b"]["state"] == "cancelled" and s["c"]["state"] == "cancelled"
    assert journal.run_state("r") == "cancelled"


def _run_catch(ex, run_id, steps):
    try:
        ex.run(run_id, steps)
    except Exception as exc:  # noqa: BLE001 - handed to the test thread
        return exc
    return None


def test_restart_fails_in_flight_steps_and_does_not_repeat_finished_ones(tmp_path):
    path = tmp_path / "j.db"
    steps = [Step("a", "x", [], 1, timeout_s=10), Step("b", "x", [], 1, ["a"], timeout_s=10),
             Step("c", "x", [], 1, timeout_s=10)]
    j1 = StepJournal(path)
    j1.open_run("r", steps)  # the first planner: a finished, b was running when it died
    j1.set_step("r", "a", "succeeded", attempts=1, result={"v": 1})
    j1.set_step("r", "b", "running", attempts=1)
    j1.close()
    calls: list[str] = []
    j2 = StepJournal(path)
    ex = Executor({"x": lambda s, c: calls.append(s.id) or {"v": 2}}, j2, clock=SimClock())
    docs: list[dict] = []
    ex.subscribe(docs.append)
    with pytest.raises(StepInFlightLost):
        ex.run("r", steps)
    s = j2.steps("r")
    assert s["a"]["state"] == "succeeded" and s["a"]["result"] == {"v": 1} and "a" not in calls
    assert s["b"]["state"] == "failed" and "in flight" in s["b"]["message"] and "b" not in calls
    assert docs[0]["resumed"] is True and docs[-1]["exit_status"] == "fail"
    j2.close()


def test_campaign_closes_the_loop_and_resumes_after_a_restart(lab, tmp_path):
    task = {"kind": "campaign", "budget": 4, "batch_size": 2, "seed": 3,
            "variables": [{"name": "temp_c", "type": "continuous", "low": 30, "high": 120},
                          {"name": "residence_time_min", "type": "continuous", "low": 0.5, "high": 2.0}],
            "fixed": {"equivalents": 2.0, "conc_dfnb_m": 0.3},
            "objectives": [{"name": "sty_kg_m3_h", "direction": "max"},
                           {"name": "e_factor", "direction": "min"}]}
    clock = SimClock(max_step=30.0)
    twin = TwinDevices(clock)
    j = StepJournal(tmp_path / "c.db")
    from aichemist.clock import SimClock as _C  # the resumed planner has its own clock
    clock2 = _C(max_step=30.0)

    in_round_1 = threading.Event()
    never = threading.Event()

    def stuck_in_round_1(step, ctx):
        if step.id.startswith("r1."):
            in_round_1.set()
            never.wait(30)  # the first planner process "dies" here: its steps stay 'running'
            raise DeviceError("abandoned")
        return twin.run_flow(step, ctx)

    adapters = {**twin.adapters(), "run_flow": stuck_in_round_1}
    first = threading.Thread(target=lambda: _run_task_catch("camp", task, lab, Executor(adapters, j, clock=clock)),
                             daemon=True)
    first.start()
    assert in_round_1.wait(60)
    first_two = j.get_all("campaign:camp")
    assert sorted(first_two) == ["e0", "e1"]

    j2 = StepJournal(tmp_path / "c.db")
    twin2 = TwinDevices(clock2)
    result = run_task("camp", task, lab, Executor(twin2.adapters(), j2, clock=clock2))
    exps = result["experiments"]
    assert [e["index"] for e in exps] == [0, 1, 2, 3]
    assert exps[0] == first_two["e0"]  # not repeated
    # round 1 resumed with the same proposals; its failed steps are not re-run
    assert all(e["failed"] for e in exps[2:]) and not any(c.startswith("r0.") for c in twin2.calls)
    for e in exps[:2]:
        assert 30 <= e["conditions"]["temp_c"] <= 120 and e["conditions"]["equivalents"] == 2.0
        assert e["sty_kg_m3_h"] > 0 and e["proposed_by"].startswith("planner.optimizer")
    assert result["pareto_front"]
    never.set()
    first.join(10)
    j.close()
    j2.close()


def _run_task_catch(*args):
    try:
        run_task(*args)
    except Exception:  # noqa: BLE001 - the abandoned first planner
        pass


def test_a_step_cancelled_by_its_device_fails_the_run(journal):
    def cancelled_by_device(step, ctx):
        raise Cancelled("goal cancelled by the device")

    ex = Executor({"run_flow": cancelled_by_device}, journal, clock=SimClock())
    with pytest.raises(Cancelled):
        ex.run("r-dev", [Step("a", "run_flow", ["reactor"], 1.0), Step("b", "run_flow", ["reactor"], 1.0, ["a"])])
    assert journal.run_state("r-dev") == "failed"
    assert journal.steps("r-dev")["b"]["state"] == "skipped"


def test_a_blocking_device_call_cancelled_at_its_deadline_is_retried_after_the_back_off(journal):
    from aichemist.clock import WallClock

    attempts = []

    def device(step, ctx):  # blocks like a device action call, until done or cancelled
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            assert ctx.cancel.wait(10.0)
            raise Cancelled("goal cancelled")
        return {"ok": True}

    ex = Executor({"x": device}, journal, clock=WallClock(), retry=RetryPolicy(max_attempts=2, backoff_s=0.3))
    results = ex.run("r-block", [Step("a", "x", [], 0.1, timeout_s=0.2)])
    assert results["a"] == {"ok": True} and attempts == [1, 2]
    assert journal.steps("r-block")["a"]["attempts"] == 2
