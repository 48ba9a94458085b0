"""Interlock rules on numbers (the twin tests in test_controller_twin.py trip them for real)."""

from __future__ import annotations

import pytest

from aichemist.errors import EmergencyStop, InterlockTripped, ResultCode, error_from_result
from flow_reactor import interlocks as il

LIMITS = il.InterlockLimits(max_pressure_bar=20.0, bpr_pressure_bar=6.9, blockage_margin_bar=5.0,
                            max_pressure_rise_bar_s=4.0, rise_window_s=0.3, leak_margin_bar=2.5,
                            settle_s=5.0, temp_band_c=3.0, watchdog_s=1.0)
PUMPS = ("pump_dfnb", "pump_pyrrolidine", "pump_ethanol")


def _monitor():
    m = il.InterlockMonitor(LIMITS)
    m.intent = il.ProcessIntent(pumps_should_run={p: True for p in PUMPS}, total_flow_ml_min=3.0,
                                flow_changed_at_s=0.0, expected_pressure_bar=7.5, temp_setpoint_c=90.0,
                                temp_reached=True, valve_position=1)
    return m


def _sample(t, p=7.5, temp=90.0, valve=1, running=True, last_ok=None):
    return il.ReactorSample(t_s=t, pressures_bar={"pressure_sensor": p}, pumps_running={n: running for n in PUMPS},
                            temp_c=temp, valve_position=valve,
                            last_ok_s=last_ok or {"pressure_sensor": t, **{n: t for n in PUMPS}})


def _trip(m, s):
    with pytest.raises(InterlockTripped) as info:
        m.check(s)
    return info.value


def test_healthy_samples_pass():
    m = _monitor()
    for i in range(200):
        m.check(_sample(10.0 + 0.05 * i))


def test_over_pressure():
    err = _trip(_monitor(), _sample(10.0, p=20.5))
    assert err.interlock == il.OVER_PRESSURE and err.code == ResultCode.INTERLOCK
    assert "20.50 bar" in err.message


def test_blockage_by_rise_rate_and_by_margin():
    m = _monitor()
    t, p = 10.0, 7.5
    with pytest.raises(InterlockTripped) as info:
        for _ in range(20):
            m.check(_sample(t, p=p))
            t += 0.05
            p += 0.5  # 10 bar/s
    assert info.value.interlock == il.BLOCKAGE and p < 20.0  # before over-pressure
    assert _trip(_monitor(), _sample(10.0, p=13.0)).interlock == il.BLOCKAGE


def test_pressure_rise_right_after_a_flow_change_is_not_a_blockage():
    m = _monitor()
    m.intent.flow_changed_at_s = 9.0
    p = 0.0
    for i in range(40):  # pressurising from 0 to 7.5 bar in 2 s after the pumps started
        p = min(7.5, p + 0.2)
        m.check(_sample(9.0 + 0.05 * i, p=p))


def test_leak_after_settling_only():
    m = _monitor()
    m.intent.flow_changed_at_s = 8.0
    m.check(_sample(9.0, p=2.0))  # still pressurising
    assert _trip(m, _sample(13.5, p=2.0)).interlock == il.LEAK


def test_pump_stall():
    err = _trip(_monitor(), _sample(10.0, running=False))
    assert err.interlock == il.PUMP_STALL and "pump_dfnb" in err.message


def test_temperature_band_only_once_reached():
    m = _monitor()
    assert _trip(m, _sample(10.0, temp=86.5)).interlock == il.TEMPERATURE
    m.intent.temp_reached = False
    m.check(_sample(10.0, temp=40.0))


def test_valve_position_not_confirmed():
    err = _trip(_monitor(), _sample(10.0, valve=3))
    assert err.interlock == il.VALVE and "commanded 1" in err.message


def test_watchdog():
    m = _monitor()
    s = _sample(10.0, last_ok={"pressure_sensor": 10.0, "pump_dfnb": 8.7})
    err = _trip(m, s)
    assert err.interlock == il.COMMUNICATION and "pump_dfnb" in err.message


def test_estop_latches_and_survives_the_ros_boundary():
    m = _monitor()
    m.trigger_estop("operator")
    with pytest.raises(EmergencyStop):
        m.check(_sample(10.0))
    m.clear_estop()
    m.check(_sample(10.0))
    err = _trip(_monitor(), _sample(10.0, p=25.0))
    back = error_from_result(int(err.code), err.error_type, err.message)
    assert isinstance(back, InterlockTripped) and back.interlock == il.OVER_PRESSURE
