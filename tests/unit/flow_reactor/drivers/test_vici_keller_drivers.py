"""VICI universal actuator (valve) and KELLER Series 30 transmitter (pressure): bytes, errors, emulators."""

from __future__ import annotations

import struct

import pytest

from aichemist.clock import SimClock
from aichemist.errors import CommunicationTimeout, DeviceIdentityError, LimitError, ProtocolError
from flow_reactor.drivers.keller import KellerException, KellerPressureTransmitter, crc16, frame
from flow_reactor.drivers.vici_valco import ValvePositionError, ViciUniversalActuator
from flow_reactor.roles import PressureSensor, Valve
from flow_reactor.transport import SerialTransport
from sim.emulators.keller_transmitter import KellerTransmitterEmulator
from sim.emulators.loopback import LoopbackTransport
from sim.emulators.scripted import ScriptedTransport
from sim.emulators.vici_actuator import ViciActuatorEmulator
from sim.pty_host import PtyHost


# --- VICI ------------------------------------------------------------------------------------------
def test_vici_connect_checks_mode_and_positions_then_silences_action_replies():
    t = ScriptedTransport([b"AM3\r", b"NP6\r"])
    valve = ViciUniversalActuator("valve", t, num_positions=6)
    valve.connect()
    assert t.written == [b"AM\r", b"NP\r", b"IFM0\r"]
    assert isinstance(valve, Valve)


def test_vici_switch_sends_go_and_confirms_with_cp():
    t = ScriptedTransport(answers={b"CP\r": b"CP04\r"})
    ViciUniversalActuator("valve", t).switch_to(4)
    assert t.written == [b"GO04\r", b"CP\r"]


def test_vici_device_id_prefixes_every_command():
    t = ScriptedTransport(answers={b"3CP\r": b"CP02\r"})
    valve = ViciUniversalActuator("valve", t, device_id="3")
    assert valve.position() == 2
    assert t.written == [b"3CP\r"]


@pytest.mark.parametrize("position", [0, 7, -1, 2.5, True])
def test_vici_position_outside_valve_rejected_before_any_byte(position):
    t = ScriptedTransport()
    with pytest.raises(LimitError, match="valve: position"):
        ViciUniversalActuator("valve", t, num_positions=6).switch_to(position)
    assert t.written == []


def test_vici_wrong_valve_is_identity_error():
    with pytest.raises(DeviceIdentityError, match=r"multiposition actuator \(AM3\) with 6 positions.*AM3, NP10"):
        ViciUniversalActuator("valve", ScriptedTransport([b"AM3\r", b"NP10\r"])).connect()
    with pytest.raises(DeviceIdentityError, match="VICI universal actuator"):
        ViciUniversalActuator("valve", ScriptedTransport([b"{S0009C4\r"])).connect()


def test_vici_stuck_actuator_is_not_confirmed():
    emu = ViciActuatorEmulator(num_positions=6)
    clock = SimClock(max_step=0.05)
    clock.add_stepper(emu.step)
    valve = ViciUniversalActuator("valve", LoopbackTransport(emu), move_timeout_s=1.0, clock=clock)
    valve.connect()
    emu.inject("stuck")
    with pytest.raises(ValvePositionError, match="position 3 not confirmed within 1 s \\(actuator reports 1\\)"):
        valve.switch_to(3)
    assert clock.now() == pytest.approx(1.0, abs=0.06)


def test_vici_move_takes_simulated_time():
    emu = ViciActuatorEmulator(num_positions=6, move_time_per_position_s=0.1)
    clock = SimClock(max_step=0.01)
    clock.add_stepper(emu.step)
    valve = ViciUniversalActuator("valve", LoopbackTransport(emu), clock=clock, poll_s=0.01)
    valve.connect()
    valve.switch_to(4)    # 3 positions away
    assert emu.position == 4 and 0.29 <= clock.now() <= 0.35
    valve.switch_to(6)    # shortest route: 2 positions
    assert emu.cycle_count == 5


def test_vici_over_pty(tmp_path):
    emu = ViciActuatorEmulator(num_positions=6)
    with PtyHost(emu, tmp_path / "valve") as host:
        valve = ViciUniversalActuator("valve", SerialTransport(host.link_path, **ViciUniversalActuator.SERIAL_SETTINGS))
        valve.connect()
        valve.switch_to(5)
        assert emu.position == 5 and valve.position() == 5
        assert emu.interface_mode == 0
        valve.close()


# --- KELLER ----------------------------------------------------------------------------------------
def test_keller_crc_matches_the_manual_examples():
    # manual: read P1 from the transparent address: 250 73 1 161 167; initialise: 250 48 4 67
    assert frame(250, 73, bytes([1])) == bytes([250, 73, 1, 161, 167])
    assert frame(250, 48) == bytes([250, 48, 4, 67])


def _reply(*body: int, data: bytes = b"") -> bytes:
    raw = bytes(body) + data
    return raw + crc16(raw).to_bytes(2, "big")


def test_keller_connect_and_read_pressure_bytes():
    t = ScriptedTransport([_reply(1, 48, 5, 20, 19, 40, 0, 0),
                           _reply(1, 73, data=struct.pack(">f", 7.25) + bytes([0]))])
    sensor = KellerPressureTransmitter("p_sensor", t, address=1)
    sensor.connect()
    assert sensor.read_pressure_bar() == pytest.approx(7.25)
    assert t.written == [frame(1, 48), frame(1, 73, b"\x01")]
    assert isinstance(sensor, PressureSensor)


def test_keller_reinitialises_after_power_interruption():
    t = ScriptedTransport([_reply(1, 73 | 0x80, 32), _reply(1, 48, 5, 20, 19, 40, 0, 0),
                           _reply(1, 73, data=struct.pack(">f", 3.0) + bytes([0]))])
    assert KellerPressureTransmitter("p", t).read_pressure_bar() == pytest.approx(3.0)
    assert [w[1] for w in t.written] == [73, 48, 73]


def test_keller_errors():
    with pytest.raises(DeviceIdentityError, match="class.group 5.20.*class.group 5.5"):
        KellerPressureTransmitter("p", ScriptedTransport([_reply(1, 48, 5, 5, 19, 40, 0, 0)])).connect()
    bad_crc = _reply(1, 73, data=struct.pack(">f", 3.0) + bytes([0]))[:-1] + b"\x00"
    with pytest.raises(ProtocolError, match="p .*valid CRC16"):
        KellerPressureTransmitter("p", ScriptedTransport([bad_crc])).read_pressure_bar()
    with pytest.raises(KellerException, match="exception 2"):
        KellerPressureTransmitter("p", ScriptedTransport([_reply(1, 73 | 0x80, 2)])).read_pressure_bar()
    with pytest.raises(CommunicationTimeout, match="no reply to F73"):
        KellerPressureTransmitter("p", ScriptedTransport()).read_pressure_bar()


def test_keller_emulator_reads_twin_pressure_spike_and_power_cycle():
    emu = KellerTransmitterEmulator(noise_bar=0.0)
    sensor = KellerPressureTransmitter("p", LoopbackTransport(emu))
    sensor.connect()
    emu.set_pressure_bar(8.5)
    assert sensor.read_pressure_bar() == pytest.approx(8.5)
    emu.inject("pressure_spike", bar=40.0)
    assert sensor.read_pressure_bar() == pytest.approx(48.5)
    emu.clear_faults()
    emu.inject("power_cycle")
    assert sensor.read_pressure_bar() == pytest.approx(8.5)  # driver re-initialised
    assert emu.feed(bytes([1, 73, 1, 0, 0])) == b""  # wrong CRC: silence


def test_keller_over_pty_with_garbled_reply(tmp_path):
    emu = KellerTransmitterEmulator(noise_bar=0.0)
    emu.set_pressure_bar(6.9)
    with PtyHost(emu, tmp_path / "pressure") as host:
        sensor = KellerPressureTransmitter("p", SerialTransport(host.link_path, **KellerPressureTransmitter.SERIAL_SETTINGS))
        sensor.connect()
        assert sensor.read_pressure_bar() == pytest.approx(6.9, abs=1e-5)
        emu.inject("garbled", count=1)
        with pytest.raises((ProtocolError, CommunicationTimeout)):
            sensor.read_pressure_bar()
        assert sensor.read_pressure_bar() == pytest.approx(6.9, abs=1e-5)
        sensor.close()


def test_vici_two_position_injection_valve():
    from flow_reactor.drivers.vici_valco import ViciTwoPositionValve

    t = ScriptedTransport([b"AM1\r"], answers={b"CP\r": b"CPB\r"})
    inj = ViciTwoPositionValve("injector", t)
    inj.connect()
    inj.inject()
    assert t.written == [b"AM\r", b"IFM0\r", b"GOB\r", b"CP\r"]
    with pytest.raises(LimitError):
        inj.switch_to(3)
    emu = ViciActuatorEmulator(mode=1)
    inj = ViciTwoPositionValve("injector", LoopbackTransport(emu))
    inj.connect()
    inj.inject()
    assert emu.position == 2 and emu.feed(b"CP\r") == b"CPB\r"
    inj.load()
    assert emu.position == 1
    with pytest.raises(DeviceIdentityError, match="two-position actuator"):
        ViciTwoPositionValve("injector", LoopbackTransport(ViciActuatorEmulator(mode=3))).connect()
