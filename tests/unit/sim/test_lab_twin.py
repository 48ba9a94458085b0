"""LabTwin: plugin subsystems on one clock, links, emulator inventory, the real-time runner."""

from __future__ import annotations

import threading

import pytest

from aichemist.clock import SimClock
from aichemist.errors import ConfigurationError
from sim.lab_twin import LabTwin, RealTimeRunner, TwinParams, load_subsystem


class Counter:
    def __init__(self, name="c"):
        self.steps, self.t = 0, 0.0
        self.emulators = {f"{name}_dev": object()}
        self.partner = None

    def step(self, t, dt):
        self.steps += 1
        self.t = t + dt


def make_counter(name="c"):
    return Counter(name)


def test_subsystems_step_in_lock_step_with_the_clock():
    a, b = Counter("a"), Counter("b")
    lab = LabTwin({"a": a, "b": b}, clock=SimClock(max_step=0.05))
    lab.advance(1.0)
    assert a.steps == b.steps == 20 and a.t == pytest.approx(1.0) and lab.now() == pytest.approx(1.0)
    assert set(lab.emulators) == {"a_dev", "b_dev"}


def test_from_config_loads_plugins_and_wires_links():
    lab = LabTwin.from_config([
        {"name": "x", "plugin": f"{__name__}:make_counter", "params": {"name": "x"}, "links": {"partner": "y"}},
        {"name": "y", "plugin": f"{__name__}:make_counter", "params": {"name": "y"}},
    ])
    assert lab.subsystems["x"].partner is lab.subsystems["y"]
    with pytest.raises(ConfigurationError, match="unknown subsystem 'z'"):
        LabTwin.from_config([{"name": "x", "plugin": f"{__name__}:make_counter", "links": {"partner": "z"}}])
    with pytest.raises(ConfigurationError, match="cannot be loaded"):
        load_subsystem("sim.nothing_here:factory")
    with pytest.raises(ConfigurationError, match="module:factory"):
        load_subsystem("no_colon")
    with pytest.raises(ConfigurationError, match="two subsystems"):
        _ = LabTwin({"a": Counter("same"), "b": Counter("same")}).emulators


def test_default_twin_is_the_hplc_and_the_flow_reactor():
    lab = LabTwin.from_config(TwinParams().subsystems)
    assert {"pump_dfnb", "thermostat", "valve_collect", "pressure_sensor", "detector",
            "hplc_selector", "hplc_detector"} <= set(lab.emulators)
    assert lab.subsystems["flow_reactor"].chromatograph is lab.subsystems["hplc"]


def test_real_time_runner_keeps_the_factor():
    wall = [0.0]
    lab = LabTwin({"c": Counter()}, clock=SimClock(max_step=0.05))
    reached = threading.Event()

    def on_tick(sim_t):
        wall[0] += 0.01  # every tick, 10 ms of (fake) wall time pass
        if sim_t >= 5.0:
            reached.set()

    runner = RealTimeRunner(lab, real_time_factor=20.0, tick_s=0.001, on_tick=on_tick, wall=lambda: wall[0])
    runner.start()
    try:
        assert reached.wait(10.0)
    finally:
        runner.stop()
    # simulated time follows 20 x the (fake) wall time, never ahead of it
    assert lab.now() <= 20.0 * wall[0] + 1e-9
    assert lab.now() >= 20.0 * (wall[0] - 0.02) - 1.0


def test_inject_fault_by_device_or_subsystem_name():
    lab = LabTwin.from_config(TwinParams().subsystems)
    lab.inject_fault("pump_dfnb", "stall")
    assert lab.emulators["pump_dfnb"].has_fault("stall")
    lab.inject_fault("pump_dfnb", "")
    assert not lab.emulators["pump_dfnb"].has_fault("stall")
    lab.inject_fault("flow_reactor", "blockage", factor=50.0)
    assert lab.subsystems["flow_reactor"].physics.blockage_factor == 50.0
    with pytest.raises(ConfigurationError, match="no device or subsystem 'pump_x'"):
        lab.inject_fault("pump_x", "stall")
    with pytest.raises(ConfigurationError, match="unknown fault"):
        lab.inject_fault("thermostat", "meltdown")
