"""New Era NE-1000 syringe pump driver: Basic-mode frames, alarms, limits, emulator over a pty."""

from __future__ import annotations

import math

import pytest

from aichemist.clock import SimClock
from aichemist.errors import CommunicationTimeout, DeviceIdentityError, LimitError, ProtocolError
from flow_reactor.drivers.new_era import NewEraAlarm, NewEraSyringePump, format_rate
from flow_reactor.roles import Pump
from flow_reactor.transport import SerialTransport
from sim.emulators.scripted import ScriptedTransport
from sim.emulators.loopback import LoopbackTransport
from sim.emulators.new_era_pump import NewEraPumpEmulator
from sim.pty_host import PtyHost


@pytest.mark.parametrize("flow, text", [(1.5, "1.5 MM"), (0.075, "75 UM"), (0.1234, "123.4 UM"),
                                        (12.345, "12.35 MM"), (0.001, "1 UM")])
def test_rate_argument_fits_four_digits(flow, text):
    assert format_rate(flow) == text


def test_connect_checks_version_sets_diameter_and_direction():
    t = ScriptedTransport([b"\x0200SNE1000V3.923\x03", b"\x0200S\x03", b"\x0200S\x03"])
    pump = NewEraSyringePump("syr", t, syringe_diameter_mm=14.43)
    pump.connect()
    assert t.written == [b"VER\r", b"DIA 14.43\r", b"DIR INF\r"]
    assert isinstance(pump, Pump)


def test_addressed_pump_prefixes_address_and_checks_reply_address():
    t = ScriptedTransport([b"\x0212I\x03", b"\x0203I\x03"])
    pump = NewEraSyringePump("syr", t, address=12)
    pump.start()
    assert t.written == [b"12 RUN\r"]
    with pytest.raises(ProtocolError, match="a reply from address 12"):
        pump.read_status()


def test_rate_query_and_run_stop_with_pause():
    t = ScriptedTransport([b"\x0200S\x03", b"\x0200I\x03", b"\x0200I0.500MM\x03",
                           b"\x0200P\x03", b"\x0200S\x03"])
    pump = NewEraSyringePump("syr", t)
    pump.set_flow_ml_min(0.5)
    pump.start()
    assert pump.read_flow_ml_min() == 0.5
    pump.stop()
    assert t.written == [b"RAT 500 UM\r", b"RUN\r", b"RAT\r", b"STP\r", b"STP\r"]
    assert math.isnan(pump.read_pressure_bar())


def test_refusal_and_alarm_raise_with_reason():
    t = ScriptedTransport([b"\x0200S?OOR\x03", b"\x0200A?S\x03"])
    pump = NewEraSyringePump("syr", t)
    with pytest.raises(NewEraAlarm, match="refused 'RAT 10 MM': command data out of range"):
        pump.set_flow_ml_min(10)
    with pytest.raises(NewEraAlarm, match="pump motor stalled"):
        pump.start()


@pytest.mark.parametrize("flow", [-0.5, 0.0001, 15.01, float("inf")])
def test_out_of_range_flow_rejected_before_any_byte(flow):
    t = ScriptedTransport()
    with pytest.raises(LimitError, match="syr: flow_ml_min"):
        NewEraSyringePump("syr", t).set_flow_ml_min(flow)
    assert t.written == []


def test_wrong_identity_and_garbage_and_silence():
    with pytest.raises(DeviceIdentityError, match="expected a New Era pump reporting 'NE1000'.*NE500"):
        NewEraSyringePump("syr", ScriptedTransport([b"\x0200SNE500V1.0\x03"])).connect()
    with pytest.raises(ProtocolError, match=r"syr .*expected '<STX><address><status>\[data\]<ETX>'"):
        NewEraSyringePump("syr", ScriptedTransport([b"hello\x03"])).read_status()
    with pytest.raises(CommunicationTimeout, match="syr"):
        NewEraSyringePump("syr", ScriptedTransport()).read_status()


def test_emulator_delivers_volume_and_stops_when_syringe_is_empty():
    emu = NewEraPumpEmulator(syringe_volume_ml=1.0)
    pump = NewEraSyringePump("syr", LoopbackTransport(emu))
    clock = SimClock(max_step=1.0)
    clock.add_stepper(emu.step)
    pump.connect()
    pump.set_flow_ml_min(0.5)
    pump.start()
    assert emu.delivered_flow_ml_min == 0.5 and pump.is_running()
    clock.sleep(60.0)
    infused, _ = pump.read_dispensed_ml()
    assert infused == pytest.approx(0.5, abs=1e-3)
    clock.sleep(90.0)
    assert not pump.is_running() and emu.volume_delivered_ml == pytest.approx(1.0)


def test_emulator_stall_alarm_is_reported_once_then_acknowledged():
    emu = NewEraPumpEmulator()
    pump = NewEraSyringePump("syr", LoopbackTransport(emu))
    pump.set_flow_ml_min(1.0)
    pump.start()
    emu.inject("stall")
    assert emu.delivered_flow_ml_min == 0.0
    with pytest.raises(NewEraAlarm, match="stalled"):
        pump.read_flow_ml_min()
    assert pump.read_status() == "S"  # acknowledged
    emu.clear_faults()
    pump.start()
    assert emu.delivered_flow_ml_min == 1.0
    emu.set_system_pressure_bar(30.0)  # beyond the drive's force: stalls
    assert emu.delivered_flow_ml_min == 0.0 and emu.alarm == "S"


def test_driver_against_emulator_over_pty(tmp_path):
    emu = NewEraPumpEmulator()
    with PtyHost(emu, tmp_path / "syringe") as host:
        pump = NewEraSyringePump("syr", SerialTransport(host.link_path, **NewEraSyringePump.SERIAL_SETTINGS))
        pump.connect()
        pump.set_flow_ml_min(0.25)
        pump.start()
        assert emu.status == "I" and emu.rate_ml_min == pytest.approx(0.25)
        assert pump.read_flow_ml_min() == pytest.approx(0.25)
        emu.inject("garbled", count=1)
        with pytest.raises(ProtocolError):
            pump.read_status()
        assert pump.is_running()
        pump.safe_state()
        assert emu.status == "S"
        pump.close()
