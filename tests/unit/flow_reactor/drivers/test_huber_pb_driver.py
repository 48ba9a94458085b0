"""Huber PB thermostat driver: frames from the PB manual, limits, errors, emulator over a pty."""

from __future__ import annotations

import pytest

from aichemist.clock import SimClock
from aichemist.errors import CommunicationTimeout, DeviceIdentityError, LimitError, ProtocolError
from flow_reactor.drivers.huber_pb import (HuberFault, HuberPBThermostat, decode_value, encode_temp_c,
                                           pb_command)
from flow_reactor.roles import Thermostat
from flow_reactor.transport import SerialTransport
from sim.emulators.scripted import ScriptedTransport
from sim.emulators.huber_thermostat import HuberThermostatEmulator
from sim.emulators.loopback import LoopbackTransport
from sim.pty_host import PtyHost


# --- encoding (PB manual: 16-bit two's complement, 0.01 °C) ----------------------------------
@pytest.mark.parametrize("temp_c, word", [(25.0, "09C4"), (-10.0, "FC18"), (20.0, "07D0"),
                                          (-20.0, "F830"), (-151.0, "C504"), (-23.15, "F6F5")])
def test_temperature_words(temp_c, word):
    assert encode_temp_c(temp_c) == word
    assert decode_value(word) / 100 == pytest.approx(temp_c)


def test_command_frames():
    assert pb_command(0x00) == b"{M00****\r\n"
    assert pb_command(0x14, "0001") == b"{M140001\r\n"


# --- driver bytes ------------------------------------------------------------------------------
def test_connect_reads_setpoint_range_and_narrows_limits():
    t = ScriptedTransport([b"{S30F060\r\n", b"{S314E20\r\n"])   # -40.00 .. 200.00 °C
    th = HuberPBThermostat("thermo", t, min_temp_c=-60, max_temp_c=150)
    th.connect()
    assert t.written == [b"{M30****\r\n", b"{M31****\r\n"]
    assert (th.limits.min_temp_c, th.limits.max_temp_c) == (-40.0, 150.0)
    assert isinstance(th, Thermostat)


def test_set_temp_writes_setpoint_and_checks_the_echo():
    t = ScriptedTransport([b"{S0009C4\r\n"])
    HuberPBThermostat("thermo", t).set_temp_c(25.0)
    assert t.written == [b"{M0009C4\r\n"]


def test_setpoint_not_taken_is_a_fault():
    t = ScriptedTransport([b"{S0007D0\r\n"])  # the unit kept 20.00 °C
    with pytest.raises(HuberFault, match="setpoint 25.00 °C not taken; the unit holds 20.00 °C"):
        HuberPBThermostat("thermo", t).set_temp_c(25.0)


def test_start_stop_read_temperatures():
    t = ScriptedTransport([b"{S140001\r\n", b"{S011F40\r\n", b"{S140000\r\n", b"{S0A0101\r\n", b"{S05FFFF\r\n"])
    th = HuberPBThermostat("thermo", t)
    th.start()
    assert th.read_temp_c() == 80.0
    th.stop()
    with pytest.raises(HuberFault, match="reports error -1"):
        th.check_ok()
    assert t.written == [b"{M140001\r\n", b"{M01****\r\n", b"{M140000\r\n", b"{M0A****\r\n", b"{M05****\r\n"]


@pytest.mark.parametrize("temp", [150.01, -20.5, float("nan"), None])
def test_out_of_range_setpoint_rejected_before_any_byte(temp):
    t = ScriptedTransport()
    with pytest.raises(LimitError, match="thermo: temp_c"):
        HuberPBThermostat("thermo", t, min_temp_c=-20, max_temp_c=150).set_temp_c(temp)
    assert t.written == []


def test_broken_probe_and_unavailable_variable():
    th = HuberPBThermostat("thermo", ScriptedTransport([b"{S01C504\r\n", b"{S077FFF\r\n"]))
    with pytest.raises(HuberFault, match="broken or missing probe"):
        th.read_temp_c()
    with pytest.raises(HuberFault, match="not available"):
        th.read_process_temp_c()


def test_wrong_device_is_an_identity_error():
    t = ScriptedTransport([b"OK,v3.10 SR3O firmware/\r\n"])  # a pump on the thermostat's port
    with pytest.raises(DeviceIdentityError, match="expected a Huber thermostat answering PB commands"):
        HuberPBThermostat("thermo", t).connect()


def test_reply_for_another_address_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="thermo .*an answer for address 01"):
        HuberPBThermostat("thermo", ScriptedTransport([b"{S0009C4\r\n"])).read_temp_c()


def test_no_reply_is_a_timeout():
    with pytest.raises(CommunicationTimeout, match="thermo"):
        HuberPBThermostat("thermo", ScriptedTransport()).read_temp_c()


# --- emulator -----------------------------------------------------------------------------------
def test_emulator_answers_manual_frames_and_ignores_malformed_ones():
    emu = HuberThermostatEmulator()
    assert emu.feed(b"{M0009C4\r\n") == b"{S0009C4\r\n"
    assert emu.feed(b"{M00****\r\n") == b"{S0009C4\r\n"
    assert emu.feed(b"{M00 9C4\r\n") == b""          # malformed: no answer
    assert emu.feed(b"{M007FFF\r\n") == b"{S0009C4\r\n"  # 327.67 °C: out of range, not taken
    assert emu.feed(b"{M99****\r\n") == b"{S997FFF\r\n"  # unknown variable: not available


def test_emulator_lag_takes_minutes_for_tens_of_degrees():
    emu = HuberThermostatEmulator(ambient_c=20.0)
    clock = SimClock(max_step=1.0)
    clock.add_stepper(emu.step)
    th = HuberPBThermostat("thermo", LoopbackTransport(emu))
    th.connect()
    th.set_temp_c(80.0)
    th.start()
    clock.sleep(60.0)
    after_1_min = th.read_temp_c()
    assert 22.0 < after_1_min < 35.0          # rate-limited heating, not a jump
    t_reach = None
    for _ in range(60 * 30):
        clock.sleep(1.0)
        if abs(emu.internal_temp_c - 80.0) < 0.5:
            t_reach = clock.now()
            break
    assert t_reach is not None and 6 * 60 < t_reach < 20 * 60
    assert th.read_temp_c() == pytest.approx(80.0, abs=0.5)


def test_thermostat_failure_drops_control_and_reports_error():
    emu = HuberThermostatEmulator(ambient_c=20.0)
    emu.internal_temp_c = 80.0
    th = HuberPBThermostat("thermo", LoopbackTransport(emu))
    th.set_temp_c(80.0)
    th.start()
    emu.inject("thermostat_failure")
    with pytest.raises(HuberFault, match="reports error"):
        th.check_ok()
    assert not th.is_controlling()
    for _ in range(600):
        emu.step(0, 1.0)
    assert emu.internal_temp_c < 75.0


def test_driver_against_emulator_over_pty(tmp_path):
    emu = HuberThermostatEmulator()
    with PtyHost(emu, tmp_path / "thermostat") as host:
        th = HuberPBThermostat("thermo", SerialTransport(host.link_path, **HuberPBThermostat.SERIAL_SETTINGS))
        th.connect()
        assert "setpoint range -40.00..200.00" in th.identify()
        th.set_temp_c(65.5)
        th.start()
        assert emu.setpoint_c == 65.5 and emu.temp_control_on
        assert th.read_setpoint_c() == 65.5
        emu.inject("garbled", count=1)
        with pytest.raises(ProtocolError):
            th.read_temp_c()
        assert th.read_temp_c() == pytest.approx(emu.internal_temp_c, abs=0.01)
        emu.inject("no_reply", count=1)
        th._driver.reply_timeout_s = 0.2
        with pytest.raises(CommunicationTimeout):
            th.read_temp_c()
        th.safe_state()
        assert not emu.temp_control_on and emu.setpoint_c == 25.0
        th.close()
