"""Reactor twin physics: steady state equals the integrated kinetics, dispersion, dead volumes,
pressure from flow and viscosity, faults, collection, and the wiring to the device emulators."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from aichemist.clock import SimClock
from sim.emulators.huber_thermostat import HuberThermostatEmulator
from sim.emulators.ssi_pump import SSIPumpEmulator
from sim.kinetics import snar
from sim.lab_twin import LabTwin
from sim.reactor_twin import (FlowReactorTwin, ReactorPhysics, ReactorTwinConfig, ethanol_viscosity_pa_s,
                              poiseuille_bar_per_ml_min)

VOLUME_ML = 3.0


def _flows(tau, equiv, c0):
    q = snar.feed_flows_ml_min(VOLUME_ML, tau, equiv, c0)
    return {"pump_dfnb": q["dfnb"], "pump_pyrrolidine": q["pyrrolidine"], "pump_ethanol": q["ethanol"]}


def _run(physics, flows, temp_c, seconds, dt=0.05, record=None):
    t = 0.0
    while t < seconds - 1e-9:
        physics.step(dt, flows, temp_c)
        t += dt
        if record is not None:
            record.append((t, physics.detector_m.copy()))


@pytest.mark.parametrize("cond", [(1.0, 2.0, 0.3, 90.0), (0.5, 1.5, 0.2, 60.0), (2.0, 3.0, 0.4, 110.0)])
def test_steady_state_outlet_equals_integrated_kinetics(cond):
    tau, equiv, c0, temp = cond
    physics = ReactorPhysics(ReactorTwinConfig(reactor_volume_ml=VOLUME_ML))
    _run(physics, _flows(tau, equiv, c0), temp, 6 * tau * 60)
    want = snar.outlet_concentrations(tau, equiv, c0, temp)
    got = physics.reactor_outlet_m
    # dispersion (40 cells in series) differs from ideal plug flow by < 1.5 % of the DFNB fed
    np.testing.assert_allclose(got, want, atol=0.015 * c0)
    assert got[2] == pytest.approx(want[2], rel=0.03)
    # and the detector, downstream through the dead volume, sees the same
    np.testing.assert_allclose(physics.detector_m, got, atol=1e-6)


def test_steady_state_needs_one_and_a_half_to_three_reactor_volumes():
    tau, equiv, c0, temp = 1.0, 2.0, 0.3, 90.0
    physics = ReactorPhysics(ReactorTwinConfig(reactor_volume_ml=VOLUME_ML))
    trace = []
    _run(physics, _flows(tau, equiv, c0), temp, 5 * tau * 60, record=trace)
    t = np.array([x[0] for x in trace])
    ortho = np.array([x[1][2] for x in trace])
    final = ortho[-1]
    transit_s = (VOLUME_ML + 0.10) / (VOLUME_ML / tau) * 60
    # nothing arrives long before the plug-flow transit (the dead volume delays the front)
    first = t[np.argmax(ortho > 0.01 * final)]
    assert 0.5 * transit_s < first < transit_s
    # 99 % of the final value after 1.5 - 3 reactor volumes, not before
    t99 = t[np.argmax(np.abs(ortho - final) < 0.01 * final)]
    assert 1.2 * tau * 60 <= t99 <= 3.0 * tau * 60


def test_pressure_follows_hagen_poiseuille_and_viscosity():
    cfg = ReactorTwinConfig(reactor_volume_ml=VOLUME_ML)
    physics = ReactorPhysics(cfg)
    flows = {"pump_ethanol": 3.0}
    _run(physics, flows, 30.0, 20.0)
    p_cold = physics.pressure_bar
    # independent Hagen-Poiseuille: coil at 30 C plus transfer lines at ambient
    area = math.pi * (0.8e-3) ** 2 / 4
    length = VOLUME_ML * 1e-6 / area
    q_m3_s = 3.0e-6 / 60
    coil_pa = 128 * ethanol_viscosity_pa_s(30.0) * length * q_m3_s / (math.pi * (0.8e-3) ** 4)
    t_area = math.pi * (0.5e-3) ** 2 / 4
    t_len = 0.25e-6 / t_area
    transfer_pa = 128 * ethanol_viscosity_pa_s(22.0) * t_len * q_m3_s / (math.pi * (0.5e-3) ** 4)
    assert p_cold == pytest.approx(cfg.bpr_pressure_bar + (coil_pa + transfer_pa) / 1e5, rel=1e-3)
    assert poiseuille_bar_per_ml_min(1.0, 1.0, 1e-3) * 1.0 == pytest.approx(
        128 * 1e-3 * 1.0 * (1e-6 / 60) / (math.pi * 1e-12) / 1e5)
    # hot ethanol is thinner: lower pressure drop at the same flow
    _run(physics, flows, 110.0, 20.0)
    assert cfg.bpr_pressure_bar < physics.pressure_bar < p_cold
    # double the flow: the drop above the BPR doubles
    drop = physics.pressure_bar - cfg.bpr_pressure_bar
    _run(physics, {"pump_ethanol": 6.0}, 110.0, 20.0)
    assert physics.pressure_bar - cfg.bpr_pressure_bar == pytest.approx(2 * drop, rel=1e-3)
    assert physics.expected_pressure_bar(6.0, 110.0) == pytest.approx(physics.pressure_bar, rel=1e-3)


def test_blockage_raises_and_leak_lowers_pressure():
    physics = ReactorPhysics(ReactorTwinConfig(reactor_volume_ml=VOLUME_ML))
    flows = {"pump_ethanol": 3.0}
    _run(physics, flows, 60.0, 20.0)
    normal = physics.pressure_bar
    physics.inject("blockage")
    _run(physics, flows, 60.0, 1.0)
    # fully blocked: the pumped volume compresses into the compliance, Q / C per second
    rise = physics.pressure_bar - normal
    assert rise == pytest.approx(3.0 / 60.0 / physics.config.compliance_ml_per_bar * 1.0, rel=0.1)
    assert physics.flow_through_ml_min == 0.0
    physics.clear_faults()
    _run(physics, flows, 60.0, 20.0)
    assert physics.pressure_bar == pytest.approx(normal, rel=1e-3)
    physics.inject("leak", resistance_bar_per_ml_min=0.5)
    _run(physics, flows, 60.0, 20.0)
    assert physics.pressure_bar == pytest.approx(1.5, rel=0.02)  # all 3 mL/min through the leak
    assert physics.flow_through_ml_min == pytest.approx(0.0, abs=1e-6)


def test_collection_vial_gets_the_outlet_composition():
    tau, equiv, c0, temp = 1.0, 2.0, 0.3, 90.0
    physics = ReactorPhysics(ReactorTwinConfig(reactor_volume_ml=VOLUME_ML))
    flows = _flows(tau, equiv, c0)
    _run(physics, flows, temp, 5 * 60)
    steady = physics.valve_inlet_m
    for _ in range(200):  # 10 s into vial position 2 = 0.5 mL
        physics.step(0.05, flows, temp, valve_position=2, collect_positions={2})
    vial = physics.vials[2]
    assert vial.volume_ml == pytest.approx(0.5, rel=1e-6)
    got = vial.concentrations_m()
    assert got["ortho"] == pytest.approx(steady[2], rel=1e-3)


def test_twin_reads_pump_and_thermostat_emulators_and_runs_far_faster_than_real_time():
    emulators = {name: SSIPumpEmulator(name) for name in ("pump_dfnb", "pump_pyrrolidine", "pump_ethanol")}
    emulators["thermostat"] = HuberThermostatEmulator("thermostat")
    twin = FlowReactorTwin(emulators, config=ReactorTwinConfig(reactor_volume_ml=VOLUME_ML),
                           valve=None, pressure_sensor=None, detector=None)
    lab = LabTwin({"flow_reactor": twin}, clock=SimClock(max_step=0.05))
    assert set(lab.emulators) == set(emulators)
    for name, flow in _flows(1.0, 2.0, 0.3).items():
        emulators[name].flow_setpoint_ml_min = round(flow, 3)
        emulators[name].running = True
    thermostat = emulators["thermostat"]
    thermostat.setpoint_c, thermostat.temp_control_on = 80.0, True
    wall = time.perf_counter()
    lab.advance(900.0)
    wall = time.perf_counter() - wall
    assert 900.0 / wall > 50
    assert thermostat.internal_temp_c == pytest.approx(80.0, abs=0.5)
    assert twin.physics.temp_c == thermostat.internal_temp_c
    for name in ("pump_dfnb", "pump_pyrrolidine", "pump_ethanol"):
        assert emulators[name].system_pressure_bar == pytest.approx(twin.physics.pressure_bar)
    want = snar.outlet_concentrations(1.0, 2.0, 0.3, 80.0)
    np.testing.assert_allclose(twin.physics.reactor_outlet_m, want, atol=0.005)
    # a pump that stops stops its feed
    emulators["pump_dfnb"].running = False
    lab.advance(300.0)
    assert twin.physics.reactor_outlet_m[0] == pytest.approx(0.0, abs=1e-4)
    assert twin.physics.reactor_outlet_m[2] == pytest.approx(0.0, abs=1e-3)


def test_a_new_collection_at_a_used_position_starts_a_fresh_vial():
    physics = ReactorPhysics(ReactorTwinConfig(reactor_volume_ml=VOLUME_ML))
    flows = _flows(1.0, 2.0, 0.3)
    _run(physics, flows, 90.0, 300.0)
    for _ in range(100):
        physics.step(0.05, flows, 90.0, valve_position=2, collect_positions={2})
    physics.step(0.05, flows, 90.0, valve_position=1, collect_positions={2})
    first = physics.vials[2].volume_ml
    for _ in range(40):
        physics.step(0.05, flows, 90.0, valve_position=2, collect_positions={2})
    assert first == pytest.approx(0.25) and physics.vials[2].volume_ml == pytest.approx(0.1)
