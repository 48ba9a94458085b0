"""Vendor plugins: (role, vendor name) -> driver class, so the configuration picks the device.

A params file names each device's role, vendor plugin and port, e.g.::

    pump_dfnb: {role: pump, vendor: teledyne_ssi, port: /dev/ttyUSB0}

and ``create_device("pump", "teledyne_ssi", name="pump_dfnb", port="/dev/ttyUSB0")`` opens the
port with the serial settings the maker documents for that device (``SERIAL_SETTINGS`` on the
driver class) and returns the driver. In the twin, ``port`` is the emulator's pty symlink: same
code path. Third parties add vendors with ``register()``. Drivers are imported lazily, by path.
"""

from __future__ import annotations

import importlib
from typing import Any

from aichemist.errors import ConfigurationError

from .roles import ROLES
from .transport import SerialTransport, Transport

# role -> vendor -> "module:Class"
_REGISTRY: dict[str, dict[str, str]] = {role: {} for role in ROLES}


def register(role: str, vendor: str, target: str) -> None:
    """Register ``target`` ("package.module:Class") as the driver for ``vendor`` in ``role``."""
    if role not in _REGISTRY:
        raise ConfigurationError(f"unknown device role {role!r}; roles: {', '.join(sorted(_REGISTRY))}",
                                 problems=[{"field": "role", "value": role}])
    if ":" not in target:
        raise ConfigurationError(f"driver target {target!r} must look like 'package.module:Class'")
    _REGISTRY[role][vendor] = target


def vendors(role: str) -> list[str]:
    return sorted(_REGISTRY.get(role, {}))


def driver_class(role: str, vendor: str) -> type:
    """The driver class of ``vendor`` for ``role`` (ConfigurationError naming what exists)."""
    if role not in _REGISTRY:
        raise ConfigurationError(f"unknown device role {role!r}; roles: {', '.join(sorted(_REGISTRY))}",
                                 problems=[{"field": "role", "value": role}])
    target = _REGISTRY[role].get(vendor)
    if target is None:
        raise ConfigurationError(
            f"no {role} driver for vendor {vendor!r}; available: {', '.join(vendors(role)) or 'none'}",
            problems=[{"field": "vendor", "value": vendor, "limit": vendors(role)}])
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    role_protocol = ROLES[role]
    missing = [m for m in dir(role_protocol) if not m.startswith("_") and not hasattr(cls, m)
               and m != "name"]
    if missing:
        raise ConfigurationError(f"{target} does not implement role {role}: missing {missing}")
    return cls


def create_device(role: str, vendor: str, *, name: str, port: str | None = None,
                  transport: Transport | None = None, **options: Any):
    """Build the driver for (role, vendor) on ``transport`` or on a serial ``port``.

    ``options`` go to the driver's constructor (limits, model, address...); a ``baudrate`` option
    overrides the documented default.
    """
    cls = driver_class(role, vendor)
    if hasattr(cls, "from_components"):  # an instrument assembled from several devices
        return cls.from_components(name, **options)
    if transport is None:
        if not port:
            raise ConfigurationError(f"{name}: a port (or a transport) is required",
                                     problems=[{"field": "port", "value": port}])
        settings = dict(getattr(cls, "SERIAL_SETTINGS", {}))
        if "baudrate" in options:
            settings["baudrate"] = options.pop("baudrate")
        transport = SerialTransport(port, **settings)
    return cls(name, transport, **options)


# --- built-in vendors -------------------------------------------------------------------------
for _role, _vendor, _target in (
    ("pump", "teledyne_ssi", "flow_reactor.drivers.teledyne_ssi:SSIPump"),
    ("pump", "new_era", "flow_reactor.drivers.new_era:NewEraSyringePump"),
    ("thermostat", "huber_pb", "flow_reactor.drivers.huber_pb:HuberPBThermostat"),
    ("valve", "vici_universal", "flow_reactor.drivers.vici_valco:ViciUniversalActuator"),
    ("valve", "vici_two_position", "flow_reactor.drivers.vici_valco:ViciTwoPositionValve"),
    ("pressure_sensor", "keller_series30", "flow_reactor.drivers.keller:KellerPressureTransmitter"),
    ("detector", "ocean_obp", "flow_reactor.drivers.ocean_obp:OceanOBPDetector"),
    ("chromatograph", "online_hplc", "flow_reactor.drivers.online_hplc:OnlineHPLC"),
):
    register(_role, _vendor, _target)
