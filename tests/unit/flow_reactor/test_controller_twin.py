"""The controller against the reactor twin (in-process, SimClock lock-step, real drivers over
loopback transports to the emulators): a full experiment, and every interlock tripped for real.

Each interlock test checks that the rig ends in its safe state: every pump emulator stopped,
the thermostat's control off at its safe setpoint, and that the typed error names the interlock.
"""

from __future__ import annotations

import pytest

from aichemist.errors import EmergencyStop, InterlockTripped, ResultCode, ValidationError
from flow_reactor import interlocks as il
from flow_reactor.controller import FlowConditions
from sim.kinetics import snar

PUMPS = ("pump_dfnb", "pump_pyrrolidine", "pump_ethanol")
COND = FlowConditions(residence_time_min=0.5, temp_c=80.0, equivalents=2.0, conc_dfnb_m=0.3)


def _warm(rig, temp_c):
    """Start with the bath already at temperature (heating is tested in the full run)."""
    rig.emulators["thermostat"].internal_temp_c = temp_c


def _at(rig, t_s, action):
    """Run ``action(t)`` once, at simulated time ``t_s`` (a stepper on the clock)."""
    done = []

    def stepper(t, dt):
        if not done and t >= t_s:
            done.append(t)
            action(t)

    rig.clock.add_stepper(stepper)
    return done


class _StopWatch:
    """First simulated time, after ``since`` has happened, at which every pump emulator is stopped
    (watched at every physics step, and at the end: a safe state reached after the last step
    happened at ``clock.now()``)."""

    def __init__(self, rig, since):
        self.rig, self.since, self.t = rig, since, None
        rig.clock.add_stepper(self._step)

    def _step(self, t, dt):
        if self.since and self.t is None and not any(self.rig.emulators[p].running for p in PUMPS):
            self.t = t

    def __getitem__(self, _i):
        if self.t is None and not any(self.rig.emulators[p].running for p in PUMPS):
            self.t = self.rig.clock.now()
        assert self.t is not None, "pumps never stopped"
        return self.t


def _pumps_stopped_at(rig, since):
    return _StopWatch(rig, since)


def _assert_safe(rig):
    assert not any(rig.emulators[p].running for p in PUMPS)
    thermostat = rig.emulators["thermostat"]
    assert not thermostat.temp_control_on and thermostat.setpoint_c == pytest.approx(25.0)
    assert rig.controller.state.phase == "safe" and rig.controller.state.safe


def test_full_experiment_matches_kinetics_and_detects_steady_state_in_time(flow_rig):
    rig = flow_rig(seed=1)
    cond = FlowConditions(residence_time_min=1.0, temp_c=90.0, equivalents=2.0, conc_dfnb_m=0.3)
    feedback = []
    result = rig.controller.run_experiment(cond, experiment_id="e1", feedback=feedback.append)
    model = snar.evaluate(1.0, 2.0, 0.3, 90.0)
    assert result.yield_fraction == pytest.approx(model["yield_fraction"], abs=0.02)
    assert result.conc_m["ortho"] == pytest.approx(model["conc"][2], rel=0.03)
    assert result.sty_kg_m3_h == pytest.approx(model["sty_kg_m3_h"], rel=0.03)
    # steady state: after the transit, within 0.5-1.5 x three residence times
    tau_s = 60.0
    assert 1.5 * tau_s <= result.time_to_steady_state_s <= 4.5 * tau_s
    phases = [f.phase for f in feedback]
    order = ["validating", "priming", "heating", "equilibrating", "measuring", "collecting", "flushing", "idle"]
    assert [p for p in order if p in phases] == order
    assert [phases.index(p) for p in order] == sorted(phases.index(p) for p in order)
    assert any(f.time_to_steady_state_s > 0 for f in feedback if f.phase == "measuring")
    # the collection vial got steady-state product
    assert result.collected_vial == "vial_1"
    vial = rig.twin.vial_contents(2)
    assert vial["ortho"] == pytest.approx(model["conc"][2], rel=0.03)
    # consumption tracked against the stocks
    assert result.reagent_used_ml["dfnb"] == pytest.approx(
        rig.controller.params.stocks.dfnb_ml - rig.controller.stock_remaining_ml["dfnb"])
    delivered = rig.emulators["pump_dfnb"].volume_delivered_ml
    assert result.reagent_used_ml["dfnb"] == pytest.approx(delivered, rel=0.02)
    # and afterwards: pumps stopped, flushed with solvent, valve at waste
    assert not any(rig.emulators[p].running for p in PUMPS)
    assert rig.twin.physics.detector_m[2] < 0.05 * model["conc"][2]
    assert rig.emulators["valve_collect"].position == 1


def test_over_pressure_stops_pumps_within_100_ms(flow_rig):
    rig = flow_rig(params_overrides={"interlocks.max_pressure_bar": 15.0})
    _warm(rig, COND.temp_c)
    injected = _at(rig, 60.0, lambda t: rig.emulators["pressure_sensor"].inject("pressure_spike", bar=20.0))
    stopped = _pumps_stopped_at(rig, injected)
    with pytest.raises(InterlockTripped) as info:
        rig.controller.run_experiment(COND)
    assert info.value.interlock == il.OVER_PRESSURE and info.value.code == ResultCode.INTERLOCK
    assert stopped and stopped[0] - injected[0] <= 0.1 + 1e-9
    _assert_safe(rig)


def test_over_pressure_from_a_real_blockage_within_100_ms_of_crossing(flow_rig):
    # rate and margin checks off: only the absolute limit guards this run
    rig = flow_rig(params_overrides={"interlocks.max_pressure_rise_bar_s": 1e6,
                                      "interlocks.blockage_margin_bar": 1e6})
    _warm(rig, COND.temp_c)
    injected = _at(rig, 60.0, lambda t: rig.twin.inject("blockage"))
    stopped = _pumps_stopped_at(rig, injected)
    with pytest.raises(InterlockTripped) as info:
        rig.controller.run_experiment(COND)
    assert info.value.interlock == il.OVER_PRESSURE
    limit = rig.controller.params.interlocks.max_pressure_bar
    crossed = next(t for t, p in rig.twin.pressure_history if p > limit)
    assert stopped[0] - crossed <= 0.1 + 1e-9
    _assert_safe(rig)


def test_blockage_trips_on_rising_pressure_before_the_limit(flow_rig):
    rig = flow_rig()
    _warm(rig, COND.temp_c)
    _at(rig, 60.0, lambda t: rig.twin.inject("blockage"))
    with pytest.raises(InterlockTripped) as info:
        rig.controller.run_experiment(COND)
    assert info.value.interlock == il.BLOCKAGE
    assert max(p for _, p in rig.twin.pressure_history) < rig.controller.params.interlocks.max_pressure_bar
    _assert_safe(rig)


def test_leak_trips_when_pressure_is_below_what_the_flow_implies(flow_rig):
    rig = flow_rig()
    _warm(rig, COND.temp_c)
    _at(rig, 60.0, lambda t: rig.twin.inject("leak", resistance_bar_per_ml_min=0.3))
    with pytest.raises(InterlockTripped) as info:
        rig.controller.run_experiment(COND)
    assert info.value.interlock == il.LEAK
    _assert_safe(rig)


def test_pump_stall(flow_rig):
    rig = flow_rig()
    _warm(rig, COND.temp_c)
    _at(rig, 70.0, lambda t: rig.emulators["pump_ethanol"].inject("stall"))
    with pytest.raises(InterlockTripped) as info:
        rig.controller.run_experiment(COND)
    assert info.value.interlock == il.PUMP_STALL and "pump_ethanol" in info.value.message
    _assert_safe(rig)


def test_temperature_out_of_band_after_thermostat_failure(flow_rig):
    rig = flow_rig()
    _warm(rig, COND.temp_c)
    _at(rig, 45.0, lambda t: rig.emulators["thermostat"].inject("thermostat_failure"))
    with pytest.raises(InterlockTripped) as info:
        rig.controller.run_experiment(COND)
    assert info.value.interlock == il.TEMPERATURE
    assert abs(rig.emulators["thermostat"].internal_temp_c - COND.temp_c) > 3.0
    _assert_safe(rig)


def test_valve_position_not_confirmed(flow_rig):
    rig = flow_rig()
    _warm(rig, COND.temp_c)
    # stuck after the first (waste) move: the switch to the collection vial is never confirmed
    _at(rig, 25.0, lambda t: rig.emulators["valve_collect"].inject("stuck"))
    with pytest.raises(InterlockTripped) as info:
        rig.controller.run_experiment(COND)
    assert info.value.interlock == il.VALVE
    assert rig.emulators["valve_collect"].position == 1
    _assert_safe(rig)


def test_lost_communication_watchdog(flow_rig):
    rig = flow_rig()
    _warm(rig, COND.temp_c)
    injected = _at(rig, 60.0, lambda t: rig.emulators["pressure_sensor"].inject("disconnect"))
    stopped = _pumps_stopped_at(rig, injected)
    with pytest.raises(InterlockTripped) as info:
        rig.controller.run_experiment(COND)
    assert info.value.interlock == il.COMMUNICATION and "pressure_sensor" in info.value.message
    assert stopped[0] - injected[0] <= rig.controller.params.interlocks.watchdog_s + 0.2
    _assert_safe(rig)


def test_estop_during_run(flow_rig):
    rig = flow_rig()
    _warm(rig, COND.temp_c)
    injected = _at(rig, 50.0, lambda t: rig.controller.estop("operator pressed the button"))
    stopped = _pumps_stopped_at(rig, injected)
    with pytest.raises(EmergencyStop, match="operator"):
        rig.controller.run_experiment(COND)
    assert stopped[0] - injected[0] <= 0.1
    _assert_safe(rig)
    # latched: no new run until cleared
    with pytest.raises(EmergencyStop):
        rig.controller.run_experiment(COND)
    rig.controller.clear_estop()
    assert rig.controller.plan(COND).total_flow_ml_min == pytest.approx(6.0)


def test_no_steady_state_within_the_maximum_wait_is_a_typed_timeout(flow_rig):
    from aichemist.errors import StepTimeout
    from flow_reactor.controller import SteadyStateTimeout

    # a tolerance far below the detector's noise: the signal never counts as flat, so the wait
    # must end in a timeout after max_residence_times, never in a reading
    rig = flow_rig(params_overrides={"steady_state.rel_tol": 1e-5, "steady_state.abs_tol_au": 0.0,
                                     "steady_state.max_residence_times": 3.0})
    _warm(rig, COND.temp_c)
    with pytest.raises(SteadyStateTimeout) as info:
        rig.controller.run_experiment(COND)
    assert isinstance(info.value, StepTimeout) and info.value.code == ResultCode.TIMEOUT
    assert rig.clock.now() > 3.0 * 30.0
    _assert_safe(rig)


def test_heating_timeout_and_cancel_leave_the_rig_safe(flow_rig):
    from aichemist.errors import Cancelled, StepTimeout

    rig = flow_rig(params_overrides={"operation.heat_timeout_s": 60.0})
    with pytest.raises(StepTimeout, match="thermostat"):
        rig.controller.run_experiment(COND)  # a cold bath cannot reach 80 C in a minute
    _assert_safe(rig)
    rig = flow_rig()
    _warm(rig, COND.temp_c)
    _at(rig, 40.0, lambda t: rig.controller.cancel())
    with pytest.raises(Cancelled):
        rig.controller.run_experiment(COND)
    _assert_safe(rig)


def test_a_named_collection_vial_is_filled_and_an_unknown_one_refused_before_anything_moves(flow_rig):
    rig = flow_rig(seed=3)
    cond = FlowConditions(residence_time_min=0.5, temp_c=60.0, equivalents=2.0, conc_dfnb_m=0.2)
    with pytest.raises(ValidationError) as err:
        rig.controller.run_experiment(cond, collect_vial="vial_9")
    assert err.value.problems[0]["field"] == "collect_vial" and err.value.problems[0]["value"] == "vial_9"
    assert not any(rig.emulators[p].running for p in PUMPS) and rig.controller.state.phase == "idle"
    result = rig.controller.run_experiment(cond, collect_vial="vial_2")
    assert result.collected_vial == "vial_2"
    assert rig.twin.vial_contents(3)["ortho"] > 0 and rig.twin.vial_contents(2)["ortho"] == 0


def test_a_stalled_host_is_not_lost_communication(flow_rig):
    """The controller itself stalls (a loaded host; at 50x real time the 10 s watchdog of the twin's
    params is 0.2 s of wall time) for 3 watchdog periods while every device keeps answering: no
    device was silent, so no communication interlock; the run completes."""
    rig = flow_rig()
    _warm(rig, COND.temp_c)
    watchdog_s = rig.controller.params.interlocks.watchdog_s
    sensor = rig.controller.pressure_sensor
    read, stalled = sensor.read_pressure_bar, []

    def read_after_a_stall():
        if not stalled and rig.clock.now() >= 60.0:
            stalled.append(rig.clock.now())
            rig.clock.sleep(3 * watchdog_s)  # the twin runs on while the controller is descheduled
        return read()

    sensor.read_pressure_bar = read_after_a_stall
    result = rig.controller.run_experiment(COND)
    assert stalled and result.yield_fraction > 0.0
