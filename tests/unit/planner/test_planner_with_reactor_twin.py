"""The planner core driving the in-process reactor twin: the executor's run_flow adapter calls the
real flow reactor controller (real drivers on loopback transports to the device emulators, the
reactor physics on a SimClock), so the task's outcome is the twin's measured steady state."""

from __future__ import annotations

import pathlib

import pytest

from aichemist.clock import SimClock
from aichemist.errors import InterlockTripped
from flow_reactor.config import DEVICE_ROLES, load_params_file
from flow_reactor.controller import FlowConditions, FlowReactorController, create_devices
from planner.executor import Executor, StepJournal
from planner.lab import load_lab
from planner.records import OrdRecorder
from planner.runner import run_task
from sim.emulators.loopback import LoopbackTransport
from sim.kinetics.snar import evaluate
from sim.lab_twin import LabTwin
from sim.reactor_twin import build_flow_reactor_twin

REPO = pathlib.Path(__file__).resolve().parents[3]


def reactor_rig():
    twin = build_flow_reactor_twin(seed=0)
    clock = SimClock(max_step=0.05)
    LabTwin({"flow_reactor": twin}, clock=clock)
    params = load_params_file(str(REPO / "config/twin/flow_reactor.yaml"), substitutions={"twin_dir": "/nonexistent"})
    transports = {name: LoopbackTransport(twin.emulators[name]) for name in DEVICE_ROLES}
    controller = FlowReactorController(params, create_devices(params, transports, clock=clock), clock)
    controller.connect()
    return twin, clock, controller


def run_flow_adapter(controller):
    def adapter(step, ctx):
        c = step.params["conditions"]
        res = controller.run_experiment(FlowConditions(**c), experiment_id=step.params["experiment_id"],
                                        feedback=lambda fb: ctx.emit(phase=fb.phase))
        out = res.to_dict()
        return {"yield_fraction": out["yield_fraction"], "sty_kg_m3_h": out["sty_kg_m3_h"],
                "e_factor": out["e_factor"], "collected_vial": out["collected_vial"], "flow_record": out}
    return adapter


def test_flow_experiment_task_through_the_reactor_twin(tmp_path):
    twin, clock, controller = reactor_rig()
    lab = load_lab("default").model_copy(update={"analysis": "inline"})
    journal = StepJournal(tmp_path / "j.db")
    ex = Executor({"run_flow": run_flow_adapter(controller)}, journal, clock=clock)
    ords = OrdRecorder(lab, tmp_path / "ord")
    ex.subscribe(ords)
    cond = {"residence_time_min": 0.5, "temp_c": 40.0, "equivalents": 2.0, "conc_dfnb_m": 0.2}
    result = run_task("twin-1", {"kind": "flow_experiment", "conditions": cond, "proposed_by": "test"}, lab, ex)
    (exp,) = result["experiments"]
    expected = evaluate(0.5, 2.0, 0.2, 40.0, model="current")["yield_fraction"]
    assert exp["yield_fraction"] == pytest.approx(expected, rel=0.05)
    assert exp["collected_vial"]
    assert [p.name for p in ords.written] == ["twin-1_e0.ord.json", "twin-1.dataset.ord.json"]
    journal.close()


def test_an_interlock_trip_fails_the_step_without_retry(tmp_path):
    twin, clock, controller = reactor_rig()
    lab = load_lab("default").model_copy(update={"analysis": "inline"})
    journal = StepJournal(tmp_path / "j.db")
    calls = []
    inner = run_flow_adapter(controller)

    def tripping(step, ctx):
        calls.append(step.id)
        clock.add_stepper(lambda t, dt: twin.emulators["pressure_sensor"].inject("pressure_spike", bar=80.0)
                          if t > 30 else None)
        return inner(step, ctx)

    ex = Executor({"run_flow": tripping}, journal, clock=clock)
    cond = {"residence_time_min": 0.5, "temp_c": 60.0, "equivalents": 2.0, "conc_dfnb_m": 0.2}
    with pytest.raises(InterlockTripped):
        run_task("twin-2", {"kind": "flow_experiment", "conditions": cond}, lab, ex)
    assert calls == ["e0.run_flow"]  # a safety trip is not retryable
    assert journal.steps("twin-2")["e0.run_flow"]["error_type"] == "InterlockTripped"
    assert not any(twin.emulators[n].running for n in ("pump_dfnb", "pump_pyrrolidine", "pump_ethanol"))
    journal.close()
