"""Device roles of the flow reactor: what the controller and the planner see.

A role is a ``typing.Protocol``: the controller codes against ``Pump``, ``Thermostat``, ``Valve``,
``PressureSensor``, ``Detector`` and ``Chromatograph``; the configuration names the vendor driver
that implements it (see ``flow_reactor.plugins``). Every role has ``name``, ``connect()``,
``close()``, ``identify()`` and ``safe_state()``.

Conventions every driver keeps:
- setpoints outside the device's limits raise ``LimitError`` (device, field, value, limit) before
  a single byte is sent; nothing is clamped;
- a device answering with another identity raises ``DeviceIdentityError``; a reply that does not
  parse raises ``ProtocolError``; no reply raises ``CommunicationTimeout``;
- ``safe_state()`` makes the device harmless (pumps stopped, heater/circulation off, valve left
  where it is) and does its best even when communication is failing.
Units are in the names: ``flow_ml_min``, ``pressure_bar``, ``temp_c``, ``wavelength_nm``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


# --- limits and data records --------------------------------------------------------------
@dataclass(frozen=True)
class PumpLimits:
    min_flow_ml_min: float
    max_flow_ml_min: float
    max_pressure_bar: float


@dataclass(frozen=True)
class ThermostatLimits:
    min_temp_c: float
    max_temp_c: float


@dataclass(frozen=True)
class Spectrum:
    """Absorbance (AU) against wavelength (nm), one value per detector pixel/channel."""

    wavelengths_nm: np.ndarray
    absorbance_au: np.ndarray

    def at(self, wavelength_nm: float) -> float:
        """Absorbance interpolated at ``wavelength_nm``."""
        return float(np.interp(wavelength_nm, self.wavelengths_nm, self.absorbance_au))


@dataclass(frozen=True)
class Chromatogram:
    """Detector signal (mAU) against retention time (min) of one injection."""

    sample_id: str
    times_min: np.ndarray
    signal_mau: np.ndarray
    detection_wavelength_nm: float = 254.0
    metadata: dict = field(default_factory=dict)


# --- roles --------------------------------------------------------------------------------
@runtime_checkable
class Device(Protocol):
    name: str

    def connect(self) -> None:
        """Open the transport and check the device's identity (DeviceIdentityError if wrong)."""

    def close(self) -> None:
        """Release the transport. Does not change the device's state."""

    def identify(self) -> str:
        """The identity string the device reports (model, firmware)."""

    def safe_state(self) -> None:
        """Drive the device to its harmless state; best effort even when communication fails."""


@runtime_checkable
class Pump(Device, Protocol):
    """Syringe or HPLC piston pump delivering one reagent stream."""

    @property
    def limits(self) -> PumpLimits: ...

    def set_flow_ml_min(self, flow_ml_min: float) -> None:
        """Set the flow setpoint (LimitError outside ``limits``)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def read_flow_ml_min(self) -> float:
        """The flow setpoint the pump reports (0 when stopped for pumps that report actual flow)."""

    def read_pressure_bar(self) -> float:
        """Head pressure the pump reports (pumps without a sensor return ``nan``)."""

    def is_running(self) -> bool: ...


@runtime_checkable
class Thermostat(Device, Protocol):
    """Circulating thermostat (heater/chiller) tempering the reactor coil."""

    @property
    def limits(self) -> ThermostatLimits: ...

    def set_temp_c(self, temp_c: float) -> None: ...

    def start(self) -> None:
        """Start temperature control (and circulation)."""

    def stop(self) -> None:
        """Stop temperature control."""

    def read_temp_c(self) -> float:
        """Internal (bath) temperature now."""

    def read_setpoint_c(self) -> float: ...


@runtime_checkable
class Valve(Device, Protocol):
    """Multi-position selection or switching valve. Positions are numbered from 1."""

    @property
    def num_positions(self) -> int: ...

    def switch_to(self, position: int) -> None:
        """Move to ``position`` (LimitError outside 1..num_positions) and confirm it."""

    def position(self) -> int:
        """The position the actuator reports."""


@runtime_checkable
class PressureSensor(Device, Protocol):
    def read_pressure_bar(self) -> float: ...


@runtime_checkable
class Detector(Device, Protocol):
    """Inline UV-vis detector (flow cell)."""

    def read_spectrum(self) -> Spectrum: ...

    def read_absorbance(self, wavelength_nm: float) -> float: ...


@runtime_checkable
class Chromatograph(Device, Protocol):
    """HPLC with autosampler: inject a vial, run the method, read the chromatogram back."""

    def inject(self, vial: str, volume_ul: float = 5.0) -> None:
        """Inject ``volume_ul`` from autosampler position ``vial`` (starts the run)."""

    def run(self, run_time_min: float | None = None) -> None:
        """Wait until the current run has finished (``run_time_min`` overrides the method)."""

    def read_chromatogram(self) -> Chromatogram:
        """The chromatogram of the last finished run."""

    def is_running(self) -> bool: ...


ROLES: dict[str, type] = {
    "pump": Pump,
    "thermostat": Thermostat,
    "valve": Valve,
    "pressure_sensor": PressureSensor,
    "detector": Detector,
    "chromatograph": Chromatograph,
}
