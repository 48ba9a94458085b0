"""Huber thermostats (Unistat, Ministat, CC, Petite Fleur with Pilot ONE / CC-Pilot controllers)
through Huber's "PB commands" over RS-232.

Protocol: Huber "Data Communication PB" manual (Peter Huber Kältemaschinenbau, "Manual Data
Communication PB", V1.2.0en/14.07.15; chapters 5 "General Description" and 6 "Special
Description"):

- RS-232 9600 baud, 8N1, no handshake (the Pilot ONE default);
- every PB command is 10 characters: ``{`` + ``M`` (master) + two hex digits (the variable
  address) + four hex digits (the value) + CR LF, e.g. ``{M0009C4\\r\\n`` writes 25.00 °C to the
  setpoint; ``****`` as the value reads the variable without changing it (``{M01****\\r\\n``);
- the thermostat answers every well-formed command with ``{S`` + the same address + the variable's
  value now + CR LF (a write is answered with the value the thermostat actually holds, so a refused
  setpoint shows up as a different echo); malformed commands get no answer at all;
- values are 16-bit two's complement; temperatures in 0.01 °C (-10.00 °C -> ``FC18``); ``7FFF``
  means "not available"; a missing/broken probe reads -151.00 °C (``C504``).

Variables used here: 0x00 temperature setpoint, 0x01 internal (bath) temperature, 0x02 return
temperature, 0x05 error report (0 = none), 0x06 warning report, 0x07 process (external probe)
temperature, 0x0A status bits (bit 0 temperature control active, bit 8 error, bit 9 warning),
0x14 temperature control on/off (1/0), 0x30 / 0x31 lowest / highest setpoint the unit accepts.
"""

from __future__ import annotations

import re

from aichemist.errors import DeviceError, ProtocolError

from ..roles import ThermostatLimits
from ..transport import Transport
from .base import SerialDevice, SerialDriver, check_range

SETPOINT = 0x00
INTERNAL_TEMP = 0x01
RETURN_TEMP = 0x02
ERROR_REPORT = 0x05
WARNING_REPORT = 0x06
PROCESS_TEMP = 0x07
STATUS = 0x0A
TEMP_CONTROL = 0x14
SETPOINT_MIN = 0x30
SETPOINT_MAX = 0x31

NOT_AVAILABLE = 0x7FFF
PROBE_BROKEN_C = -151.0

STATUS_TEMP_CONTROL_ACTIVE = 1 << 0
STATUS_ERROR = 1 << 8
STATUS_WARNING = 1 << 9

_REPLY = re.compile(rb"^\{S([0-9A-Fa-f]{2})([0-9A-Fa-f]{4})\r\n$")


def encode_value(value: int) -> str:
    """16-bit two's complement as four upper-case hex digits."""
    if not -0x8000 <= value <= 0x7FFF:
        raise ValueError(f"{value} does not fit a PB value (16-bit signed)")
    return f"{value & 0xFFFF:04X}"


def decode_value(text: str | bytes) -> int:
    raw = int(text, 16)
    return raw - 0x10000 if raw & 0x8000 else raw


def encode_temp_c(temp_c: float) -> str:
    return encode_value(int(round(temp_c * 100)))


def pb_command(address: int, value: str = "****") -> bytes:
    return f"{{M{address:02X}{value}\r\n".encode("ascii")


class HuberFault(DeviceError):
    """The thermostat reports an error, or did not take a setpoint."""


class HuberPBThermostat(SerialDevice):
    """Driver for a Huber thermostat speaking PB commands (role: ``Thermostat``).

    ``limits`` are the process limits for this installation (the reactor's, e.g. 20-150 °C);
    on connect they are narrowed to the setpoint range the unit itself reports (0x30/0x31).
    ``safe_temp_c`` is where ``safe_state`` leaves the setpoint before switching control off.
    """

    SERIAL_SETTINGS = {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1}
    vendor = "Huber"

    def __init__(self, name: str, transport: Transport, *, min_temp_c: float = -20.0,
                 max_temp_c: float = 150.0, safe_temp_c: float = 25.0, model: str = "Pilot ONE",
                 reply_timeout_s: float = 1.0) -> None:
        if min_temp_c >= max_temp_c:
            raise ValueError(f"{name}: min_temp_c {min_temp_c} must be below max_temp_c {max_temp_c}")
        self._driver = SerialDriver(name, transport)
        self._driver.terminator = b"\r\n"
        self._driver.reply_timeout_s = reply_timeout_s
        self._driver.vendor, self._driver.model = self.vendor, f"{model} (PB)"
        self.name = name
        self.model = model
        self._limits = ThermostatLimits(min_temp_c=float(min_temp_c), max_temp_c=float(max_temp_c))
        self.safe_temp_c = float(safe_temp_c)
        self.device_range_c: tuple[float, float] | None = None

    @property
    def transport(self) -> Transport:
        return self._driver.transport

    @property
    def limits(self) -> ThermostatLimits:
        return self._limits

    # --- one PB exchange ---------------------------------------------------------------------
    def _pb(self, address: int, value: str = "****") -> int:
        """Send one PB command; return the value the thermostat answers (checked address)."""
        command = pb_command(address, value)
        reply = self._driver._exchange(command)
        match = _REPLY.match(reply)
        if match is None:
            raise self._driver._protocol_error(f"'{{S{address:02X}xxxx\\r\\n' in reply to {command!r}", reply)
        if int(match.group(1), 16) != address:
            raise self._driver._protocol_error(f"an answer for address {address:02X}", reply)
        return decode_value(match.group(2))

    def _read_temp(self, address: int, what: str) -> float:
        raw = self._pb(address)
        if raw == NOT_AVAILABLE:
            raise HuberFault(f"{self.name}: {what} (PB 0x{address:02X}) is not available on this unit",
                             device=self.name, address=address)
        temp_c = raw / 100.0
        if temp_c <= PROBE_BROKEN_C:
            raise HuberFault(f"{self.name}: {what} probe reads {temp_c} °C (broken or missing probe)",
                             device=self.name, address=address)
        return temp_c

    # --- lifecycle ---------------------------------------------------------------------------
    def identify(self) -> str:
        """PB has no identity command: a Huber answers PB frames, and reports its setpoint range."""
        try:
            lo = self._pb(SETPOINT_MIN) / 100.0
            hi = self._pb(SETPOINT_MAX) / 100.0
        except ProtocolError as exc:
            raise self._driver._identity_mismatch("a Huber thermostat answering PB commands",
                                                  str(exc.details.get("got", exc))) from exc
        self.device_range_c = (lo, hi)
        return f"Huber {self.model} (PB), setpoint range {lo:.2f}..{hi:.2f} °C"

    def connect(self) -> None:
        self.identify()
        lo, hi = self.device_range_c  # type: ignore[misc]
        new_lo, new_hi = max(self._limits.min_temp_c, lo), min(self._limits.max_temp_c, hi)
        if new_lo >= new_hi:
            raise HuberFault(f"{self.name}: the unit's setpoint range {lo}..{hi} °C does not overlap the "
                             f"configured {self._limits.min_temp_c}..{self._limits.max_temp_c} °C",
                             device=self.name)
        self._limits = ThermostatLimits(min_temp_c=new_lo, max_temp_c=new_hi)
        self._driver.connected = True

    def safe_state(self) -> None:
        """Setpoint to ``safe_temp_c`` (if allowed), then temperature control off."""
        if self._limits.min_temp_c <= self.safe_temp_c <= self._limits.max_temp_c:
            self._driver._best_effort("safe setpoint", lambda: self.set_temp_c(self.safe_temp_c))
        self._driver._best_effort("temperature control off", self.stop)

    # --- role: Thermostat --------------------------------------------------------------------
    def set_temp_c(self, temp_c: float) -> None:
        temp = check_range(self.name, "temp_c", temp_c, self._limits.min_temp_c, self._limits.max_temp_c, "°C")
        value = encode_temp_c(temp)
        echoed = self._pb(SETPOINT, value) / 100.0
        if abs(echoed - round(temp, 2)) > 0.005:
            raise HuberFault(f"{self.name}: setpoint {temp:.2f} °C not taken; the unit holds {echoed:.2f} °C",
                             device=self.name, requested_c=temp, holds_c=echoed)

    def read_setpoint_c(self) -> float:
        return self._pb(SETPOINT) / 100.0

    def read_temp_c(self) -> float:
        return self._read_temp(INTERNAL_TEMP, "internal temperature")

    def read_process_temp_c(self) -> float:
        return self._read_temp(PROCESS_TEMP, "process temperature")

    def start(self) -> None:
        if self._pb(TEMP_CONTROL, encode_value(1)) != 1:
            raise HuberFault(f"{self.name}: temperature control did not switch on", device=self.name)

    def stop(self) -> None:
        if self._pb(TEMP_CONTROL, encode_value(0)) != 0:
            raise HuberFault(f"{self.name}: temperature control did not switch off", device=self.name)

    def is_controlling(self) -> bool:
        return bool(self._pb(STATUS) & STATUS_TEMP_CONTROL_ACTIVE)

    def read_status(self) -> dict:
        bits = self._pb(STATUS) & 0xFFFF
        return {
            "temp_control_active": bool(bits & STATUS_TEMP_CONTROL_ACTIVE),
            "error": bool(bits & STATUS_ERROR),
            "warning": bool(bits & STATUS_WARNING),
            "bits": bits,
        }

    def read_error(self) -> int:
        """The error number the unit reports (0: none)."""
        return self._pb(ERROR_REPORT)

    def check_ok(self) -> None:
        """Raise HuberFault if the unit reports an error."""
        status = self.read_status()
        if status["error"]:
            raise HuberFault(f"{self.name}: the thermostat reports error {self.read_error()}",
                             device=self.name)

    def __repr__(self) -> str:
        return f"HuberPBThermostat({self.name!r}, port={self.transport.port!r})"
