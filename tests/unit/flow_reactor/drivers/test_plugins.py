"""Vendor plugin registry: configuration picks the driver; bad configuration fails clearly."""

from __future__ import annotations

import pytest

from aichemist.errors import ConfigurationError, DeviceNotFoundError
from flow_reactor import plugins
from flow_reactor.roles import ROLES
from sim.emulators.ssi_pump import SSIPumpEmulator
from sim.pty_host import PtyHost


def test_every_role_has_a_vendor_and_every_registered_driver_implements_its_role():
    for role in ROLES:
        assert plugins.vendors(role), f"no driver for role {role}"
        for vendor in plugins.vendors(role):
            cls = plugins.driver_class(role, vendor)
            assert cls.__name__


def test_unknown_vendor_and_role_name_what_exists():
    with pytest.raises(ConfigurationError, match="no pump driver for vendor 'acme'; available: new_era, teledyne_ssi"):
        plugins.driver_class("pump", "acme")
    with pytest.raises(ConfigurationError, match="unknown device role 'laser'"):
        plugins.driver_class("laser", "x")
    with pytest.raises(ConfigurationError, match="package.module:Class"):
        plugins.register("pump", "acme", "no_colon_here")


def test_create_device_opens_the_port_with_documented_settings(tmp_path):
    emu = SSIPumpEmulator()
    with PtyHost(emu, tmp_path / "pump_a") as host:
        pump = plugins.create_device("pump", "teledyne_ssi", name="pump_a", port=host.link_path,
                                     head="10ml", max_pressure_bar=50)
        assert pump.transport.baudrate == 9600
        pump.connect()
        pump.set_flow_ml_min(0.5)
        assert emu.flow_setpoint_ml_min == 0.5
        pump.close()


def test_wrong_port_names_the_port(tmp_path):
    with pytest.raises(DeviceNotFoundError, match="ttyNOPE"):
        plugins.create_device("thermostat", "huber_pb", name="thermo", port=str(tmp_path / "ttyNOPE"))
    with pytest.raises(ConfigurationError, match="thermo: a port"):
        plugins.create_device("thermostat", "huber_pb", name="thermo")
