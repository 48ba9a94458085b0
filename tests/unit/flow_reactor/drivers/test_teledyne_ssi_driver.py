"""SSI Series III pump driver: bytes against the manual's command table, errors, emulator over a pty."""

from __future__ import annotations

import pytest

from aichemist.errors import (CommunicationTimeout, DeviceIdentityError, LimitError, ProtocolError)
from flow_reactor.drivers.teledyne_ssi import SSIPump, SSIPumpFault
from flow_reactor.roles import Pump
from flow_reactor.transport import SerialTransport
from sim.emulators.scripted import ScriptedTransport
from sim.emulators.loopback import LoopbackTransport
from sim.emulators.ssi_pump import SSIPumpEmulator
from sim.pty_host import PtyHost


# --- bytes, from the manual's command table (Appendix A.1.3) --------------------------------
def test_connect_checks_id_and_sets_upper_pressure_limit_in_four_digit_psi():
    # manual: "ID  OK,vx.xx SR3O firmware/"; "UPxxxx ... for 900 PSI xxxx = 0900"
    t = ScriptedTransport([b"OK,v3.10 SR3O firmware/", b"OK/"])
    pump = SSIPump("pump_a", t, max_pressure_bar=900 / 14.503773773)
    pump.connect()
    assert t.written == [b"ID\r", b"UP0900\r"]
    assert isinstance(pump, Pump)


def test_flow_uses_fm_with_thousandths_on_a_10ml_head_and_fo_on_40ml():
    t = ScriptedTransport([b"OK/"])
    SSIPump("p", t, head="10ml").set_flow_ml_min(0.125)   # FMxxxx: x.xxx mL/min
    assert t.written == [b"FM0125\r"]
    t = ScriptedTransport([b"OK/"])
    SSIPump("p", t, head="40ml").set_flow_ml_min(12.3)    # FOxxxx: 0.1 mL/min steps up to 40.0
    assert t.written == [b"FO0123\r"]


def test_current_conditions_and_pressure_parse_psi_to_bar():
    t = ScriptedTransport([b"OK,145,2.500/", b"OK,1450/"])
    pump = SSIPump("p", t)
    assert pump.read_conditions() == (pytest.approx(145 / 14.503773773), 2.5)
    assert pump.read_pressure_bar() == pytest.approx(100.0, rel=1e-3)
    assert t.written == [b"CC\r", b"PR\r"]


def test_run_stop_setup_and_faults():
    t = ScriptedTransport([b"OK/", b"OK/", b"OK/", b"OK,1.000,1450,0,PSI,0,1,1/", b"OK,1,0,0/"])
    pump = SSIPump("p", t)
    pump.set_flow_ml_min(1.0)
    pump.start()
    pump.stop()
    setup = pump.read_setup()
    assert setup["running"] and setup["upper_limit_bar"] == pytest.approx(100.0, rel=1e-3)
    assert pump.read_faults() == {"motor_stall": True, "upper_pressure_limit": False,
                                  "lower_pressure_limit": False}
    assert t.written == [b"FM1000\r", b"RU\r", b"ST\r", b"CS\r", b"RF\r"]


def test_zero_flow_stops_instead_of_sending_an_invalid_setpoint():
    t = ScriptedTransport([b"OK/"])
    SSIPump("p", t).set_flow_ml_min(0)
    assert t.written == [b"ST\r"]


# --- bad input and bad replies ----------------------------------------------------------------
@pytest.mark.parametrize("flow", [-1.0, 0.0005, 10.5, float("nan"), "fast"])
def test_out_of_range_flow_is_rejected_before_any_byte(flow):
    t = ScriptedTransport()
    pump = SSIPump("pump_dfnb", t)
    with pytest.raises(LimitError) as err:
        pump.set_flow_ml_min(flow)
    assert t.written == []
    assert "pump_dfnb" in str(err.value) and "flow_ml_min" in str(err.value)


def test_limit_error_names_the_limit():
    with pytest.raises(LimitError, match=r"pump_x: flow_ml_min=10.5 mL/min is above the maximum 9.999"):
        SSIPump("pump_x", ScriptedTransport()).set_flow_ml_min(10.5)


def test_wrong_identity_names_expected_and_got():
    t = ScriptedTransport([b"OK,v1.2 SOMETHING ELSE/"])
    with pytest.raises(DeviceIdentityError, match=r"expected an SSI pump with model 'SR3'.*SOMETHING ELSE"):
        SSIPump("pump_a", t).connect()
    assert t.written == [b"ID\r"]  # no limit written to a device that is not ours


def test_unparseable_reply_is_a_protocol_error_naming_device_and_expectation():
    t = ScriptedTransport([b"HELLO/"])
    with pytest.raises(ProtocolError, match=r"pump_a .*expected 'OK\[,values\]/' in reply to 'PR'"):
        SSIPump("pump_a", t).read_pressure_bar()


def test_er_reply_raises_and_clears_the_pump_buffer():
    t = ScriptedTransport([b"Er/"])
    with pytest.raises(SSIPumpFault, match="rejected 'RU'"):
        pump = SSIPump("p", t)
        pump._flow_setpoint_ml_min = 1.0
        pump.start()
    assert t.written == [b"RU\r", b"#"]


def test_no_reply_is_a_timeout_naming_the_device():
    with pytest.raises(CommunicationTimeout, match="pump_a .*no reply to b'CC"):
        SSIPump("pump_a", ScriptedTransport()).read_flow_ml_min()


# --- against the emulator ---------------------------------------------------------------------
def test_driver_against_emulator_in_process():
    emu = SSIPumpEmulator()
    pump = SSIPump("p", LoopbackTransport(emu), max_pressure_bar=50)
    pump.connect()
    assert emu.upper_limit_psi == round(50 * 14.503773773)
    pump.set_flow_ml_min(0.25)
    pump.start()
    assert emu.running and emu.delivered_flow_ml_min == pytest.approx(0.25)
    emu.set_system_pressure_bar(12.0)
    p, f = pump.read_conditions()
    assert p == pytest.approx(12.0, abs=0.05) and f == pytest.approx(0.25)
    # a blockage: the pump's own upper limit stops it; RF says why
    emu.inject("pressure_spike", bar=60.0)
    assert not emu.running and pump.read_faults()["upper_pressure_limit"]
    assert not pump.is_running()


def test_stall_is_reported_and_pump_delivers_nothing():
    emu = SSIPumpEmulator()
    pump = SSIPump("p", LoopbackTransport(emu))
    pump.set_flow_ml_min(1.0)
    pump.start()
    emu.inject("stall")
    assert emu.delivered_flow_ml_min == 0.0
    assert pump.read_faults()["motor_stall"] and not pump.is_running()
    emu.clear_faults()
    pump.start()
    assert emu.delivered_flow_ml_min == 1.0


def test_driver_against_emulator_over_pty_with_garbled_reply_and_reconnect(tmp_path):
    emu = SSIPumpEmulator()
    with PtyHost(emu, tmp_path / "pump_a") as host:
        pump = SSIPump("pump_a", SerialTransport(host.link_path, **{k: v for k, v in
                                                                  SSIPump.SERIAL_SETTINGS.items()}))
        pump.connect()
        pump.set_flow_ml_min(1.5)
        pump.start()
        assert emu.running and emu.flow_setpoint_ml_min == 1.5
        assert pump.read_flow_ml_min() == 1.5
        emu.inject("garbled", count=1)
        with pytest.raises((ProtocolError, CommunicationTimeout)):
            pump.read_flow_ml_min()
        assert pump.read_flow_ml_min() == 1.5  # next exchange is clean again
        emu.inject("disconnect")
        with pytest.raises(CommunicationTimeout):
            pump.read_pressure_bar()
        emu.clear_faults()
        assert host.wait_connected(2.0)
        pump.reconnect()
        assert pump.read_flow_ml_min() == 1.5
        pump.safe_state()
        assert not emu.running
        pump.close()


def test_emulator_rejects_out_of_range_and_malformed_commands():
    emu = SSIPumpEmulator()
    assert emu.feed(b"FM0000\r") == b"Er/"
    assert emu.feed(b"FL1000\r") == b"Er/"   # FL takes three digits
    assert emu.feed(b"UP7000\r") == b"Er/"   # steel head: at most 6000 psi
    assert emu.feed(b"pr\r") == b"OK,0/"     # case does not matter
    assert emu.feed(b"XX\r") == b"Er/"
    assert emu.feed(b"F#CC\r") == b"OK,0,1.000/"  # '#' clears a half-sent command
