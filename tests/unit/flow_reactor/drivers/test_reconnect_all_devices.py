"""Every driver over a real pty: the device disconnects (port gone), calls fail as communication
errors naming the device, the device comes back, reconnect() reopens and checks identity again."""

from __future__ import annotations

import pytest

from aichemist.errors import CommunicationTimeout
from flow_reactor.drivers.huber_pb import HuberPBThermostat
from flow_reactor.drivers.keller import KellerPressureTransmitter
from flow_reactor.drivers.new_era import NewEraSyringePump
from flow_reactor.drivers.ocean_obp import OceanOBPDetector
from flow_reactor.drivers.teledyne_ssi import SSIPump
from flow_reactor.drivers.vici_valco import ViciUniversalActuator
from flow_reactor.transport import ConnectionLost, SerialTransport
from sim.emulators.huber_thermostat import HuberThermostatEmulator
from sim.emulators.keller_transmitter import KellerTransmitterEmulator
from sim.emulators.new_era_pump import NewEraPumpEmulator
from sim.emulators.ocean_detector import OceanDetectorEmulator
from sim.emulators.ssi_pump import SSIPumpEmulator
from sim.emulators.vici_actuator import ViciActuatorEmulator
from sim.pty_host import PtyHost

CASES = {
    "ssi_pump": (SSIPumpEmulator, SSIPump, {}, lambda d: d.read_flow_ml_min()),
    "new_era": (NewEraPumpEmulator, NewEraSyringePump, {}, lambda d: d.read_flow_ml_min()),
    "huber": (HuberThermostatEmulator, HuberPBThermostat, {}, lambda d: d.read_temp_c()),
    "vici": (ViciActuatorEmulator, ViciUniversalActuator, {}, lambda d: d.position()),
    "keller": (KellerTransmitterEmulator, KellerPressureTransmitter, {}, lambda d: d.read_pressure_bar()),
    "ocean": (OceanDetectorEmulator, OceanOBPDetector, {}, lambda d: d.read_absorbance(300)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_disconnect_then_reconnect(case, tmp_path):
    emu_cls, drv_cls, kw, read = CASES[case]
    emu = emu_cls(case)
    with PtyHost(emu, tmp_path / case) as host:
        drv = drv_cls(case, SerialTransport(host.link_path, **drv_cls.SERIAL_SETTINGS), **kw)
        drv._driver.reply_timeout_s = 0.3
        drv.connect()
        first = read(drv)
        emu.inject("disconnect")
        with pytest.raises(CommunicationTimeout, match=case) as err:
            read(drv)
        assert isinstance(err.value, ConnectionLost) or "no reply" in str(err.value)
        emu.clear_faults()
        assert host.wait_connected(2.0)
        drv.reconnect()
        second = read(drv)
        assert type(second) is type(first)
        drv.close()
