"""New Era Pump Systems NE-1000 family syringe pumps (NE-1000, NE-1002X, NE-1010, NE-300...).

Protocol: "RS-232 Basic mode" as documented in the New Era NE-1000 Multi-Phaser user manual
(Publication #1200-01, section "RS-232 Communications": "Basic and Safe Mode Common Syntax",
"Command Errors and Alarms", "RS-232 Command Set"):

- factory setting 19200 baud, 8N1, network address 0;
- command: ``[<address>] <command> [<data>] CR`` (spaces optional, upper case);
- response: ``STX <address: 2 digits> <status> [<data>] ETX`` where status is a prompt
  (``I`` infusing, ``W`` withdrawing, ``S`` stopped, ``P`` paused, ``T`` timed pause, ``U`` user
  wait, ``X`` purging) or an alarm ``A?<type>`` (``R`` reset, ``S`` motor stalled, ``T`` safe-mode
  timeout, ``E`` program error, ``O`` phase out of range);
- a refused command carries ``?<error>`` after the prompt: ``?`` not recognised, ``?NA`` not
  applicable, ``?OOR`` data out of range, ``?COM`` bad packet, ``?IGN`` ignored;
- ``DIA <mm>`` syringe inside diameter; ``RAT <rate> <units>`` pumping rate with units ``UM``
  (µL/min), ``MM`` (mL/min), ``UH`` (µL/h), ``MH`` (mL/h), at most 4 digits plus a decimal point;
  ``RAT`` alone answers e.g. ``1.500MM``; ``DIR INF|WDR``; ``RUN``; ``STP`` (pauses a running
  program; a second STP stops it); ``DIS`` dispensed volumes ``I<vol>W<vol><ML|UL>``; ``CLD INF``
  clears the infused volume; ``VER`` firmware version (e.g. ``NE1000V3.923``).
"""

from __future__ import annotations

import re

from aichemist.errors import DeviceError

from ..roles import PumpLimits
from ..transport import Transport
from .base import SerialDevice, SerialDriver, check_range

STX, ETX = b"\x02", b"\x03"
_RESPONSE = re.compile(rb"^\x02(\d{2})(A\?[A-Z]|[IWSPTUX])([^\x02\x03]*)\x03$")
_RATE = re.compile(r"^([0-9.]+)(UM|MM|UH|MH)$")
_TO_ML_MIN = {"UM": 1e-3, "MM": 1.0, "UH": 1e-3 / 60.0, "MH": 1.0 / 60.0}
ALARMS = {"R": "pump was reset (power interrupted)", "S": "pump motor stalled",
          "T": "safe mode communications time out", "E": "pumping program error",
          "O": "pumping program phase out of range"}
ERRORS = {"?": "command not recognised", "?NA": "command not applicable now",
          "?OOR": "command data out of range", "?COM": "invalid communications packet",
          "?IGN": "command ignored (new phase start)"}


def format_rate(flow_ml_min: float) -> str:
    """Rate argument with at most 4 digits: µL/min below 1 mL/min (resolution), else mL/min."""
    if flow_ml_min < 1.0:
        value, units = flow_ml_min * 1000.0, "UM"
    else:
        value, units = flow_ml_min, "MM"
    for decimals in (3, 2, 1, 0):
        text = f"{value:.{decimals}f}"
        if len(text.replace(".", "")) <= 4:
            return f"{text.rstrip('0').rstrip('.') if '.' in text else text} {units}"
    raise ValueError(f"rate {flow_ml_min} mL/min does not fit 4 digits")


class NewEraAlarm(DeviceError):
    """The pump reports an alarm (motor stall, reset...) or refused a command."""


class NewEraSyringePump(SerialDevice):
    """Driver for a New Era NE-1000 family syringe pump (role: ``Pump``) in Basic mode.

    ``syringe_diameter_mm`` is sent at connect; ``min_flow_ml_min``/``max_flow_ml_min`` are the
    installation's limits for that syringe (the pump's own range depends on the diameter).
    Syringe pumps have no pressure sensor: ``read_pressure_bar`` returns ``nan``.
    """

    SERIAL_SETTINGS = {"baudrate": 19200, "bytesize": 8, "parity": "N", "stopbits": 1}
    vendor = "New Era"

    def __init__(self, name: str, transport: Transport, *, address: int = 0,
                 syringe_diameter_mm: float = 14.43, min_flow_ml_min: float = 0.001,
                 max_flow_ml_min: float = 15.0, expected_model: str = "NE1000",
                 reply_timeout_s: float = 1.0) -> None:
        if not 0 <= address <= 99:
            raise ValueError(f"{name}: address must be 0..99, got {address}")
        self._driver = SerialDriver(name, transport)
        self._driver.terminator = ETX
        self._driver.reply_timeout_s = reply_timeout_s
        self._driver.vendor, self._driver.model = self.vendor, "syringe pump"
        self.name = name
        self.address = address
        self.syringe_diameter_mm = check_range(name, "syringe_diameter_mm", syringe_diameter_mm, 0.1, 80.0, "mm")
        self.expected_model = expected_model
        self._limits = PumpLimits(min_flow_ml_min=float(min_flow_ml_min), max_flow_ml_min=float(max_flow_ml_min),
                                  max_pressure_bar=float("nan"))
        self.last_status = ""

    @property
    def transport(self) -> Transport:
        return self._driver.transport

    @property
    def limits(self) -> PumpLimits:
        return self._limits

    # --- one exchange ------------------------------------------------------------------------
    def _command(self, command: str, *, allow_alarm: bool = False) -> tuple[str, str]:
        """Send ``command``; return (status, data). Alarms and refusals raise NewEraAlarm."""
        prefix = f"{self.address} " if self.address else ""
        raw = self._driver._exchange(f"{prefix}{command}\r".encode("ascii"))
        # the reply ends at ETX; anything before STX is line noise from an earlier exchange
        start = raw.rfind(STX)
        match = _RESPONSE.match(raw[start:]) if start >= 0 else None
        if match is None:
            raise self._driver._protocol_error(f"'<STX><address><status>[data]<ETX>' in reply to {command!r}", raw)
        address, status, data = int(match.group(1)), match.group(2).decode(), match.group(3).decode("ascii", "replace")
        if address != self.address:
            raise self._driver._protocol_error(f"a reply from address {self.address:02d}", raw)
        self.last_status = status
        if data.startswith("?"):
            reason = ERRORS.get(data, data)
            raise NewEraAlarm(f"{self.name}: pump refused {command!r}: {reason}", device=self.name,
                              command=command, error=data)
        if status.startswith("A?") and not allow_alarm:
            raise NewEraAlarm(f"{self.name}: pump alarm: {ALARMS.get(status[2:], status)}", device=self.name,
                              alarm=status[2:])
        return status, data

    # --- lifecycle ---------------------------------------------------------------------------
    def identify(self) -> str:
        _, data = self._command("VER", allow_alarm=True)
        return data.strip()

    def connect(self) -> None:
        ident = self.identify()
        if self.expected_model.upper() not in ident.upper():
            raise self._driver._identity_mismatch(f"a New Era pump reporting {self.expected_model!r}", ident)
        self._command(f"DIA {self.syringe_diameter_mm:g}", allow_alarm=True)
        self._command("DIR INF", allow_alarm=True)
        self._driver.connected = True

    def safe_state(self) -> None:
        self._driver._best_effort("stop", self.stop)

    # --- role: Pump --------------------------------------------------------------------------
    def set_flow_ml_min(self, flow_ml_min: float) -> None:
        """Set the infusion rate. 0 means no flow: the pump is stopped."""
        if flow_ml_min == 0:
            self.stop()
            return
        flow = check_range(self.name, "flow_ml_min", flow_ml_min, self._limits.min_flow_ml_min,
                           self._limits.max_flow_ml_min, "mL/min")
        self._command(f"RAT {format_rate(flow)}")

    def start(self) -> None:
        self._command("RUN")

    def stop(self) -> None:
        status, _ = self._command("STP", allow_alarm=True)
        if status == "P":  # STP pauses a running program; a second STP stops it
            self._command("STP", allow_alarm=True)

    def read_flow_ml_min(self) -> float:
        _, data = self._command("RAT")
        match = _RATE.match(data.strip())
        if match is None:
            raise self._driver._protocol_error("'<rate><UM|MM|UH|MH>' in reply to 'RAT'", data)
        return float(match.group(1)) * _TO_ML_MIN[match.group(2)]

    def read_pressure_bar(self) -> float:
        return float("nan")

    def read_status(self) -> str:
        """The prompt (I, W, S, P, ...) or alarm (A?S ...) without changing anything."""
        status, _ = self._command("", allow_alarm=True)
        return status

    def is_running(self) -> bool:
        return self.read_status() in ("I", "W", "X")

    def set_direction(self, direction: str) -> None:
        """``INF`` (infuse) or ``WDR`` (withdraw)."""
        if direction not in ("INF", "WDR"):
            raise ValueError(f"{self.name}: direction must be 'INF' or 'WDR', got {direction!r}")
        self._command(f"DIR {direction}")

    def read_dispensed_ml(self) -> tuple[float, float]:
        """(infused, withdrawn) volume in mL since the last clear."""
        _, data = self._command("DIS")
        match = re.match(r"^I([0-9.]+)W([0-9.]+)(ML|UL)$", data.strip())
        if match is None:
            raise self._driver._protocol_error("'I<vol>W<vol><ML|UL>' in reply to 'DIS'", data)
        scale = 1.0 if match.group(3) == "ML" else 1e-3
        return float(match.group(1)) * scale, float(match.group(2)) * scale

    def clear_dispensed(self) -> None:
        self._command("CLD INF")

    def __repr__(self) -> str:
        return f"NewEraSyringePump({self.name!r}, address={self.address}, port={self.transport.port!r})"
