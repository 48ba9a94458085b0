"""Teledyne SSI (Scientific Systems Inc.) Series I/II/III and LabAlliance HPLC piston pumps.

Protocol: the pump's RS-232 "high-level command interpreter" as documented by Scientific
Systems Inc. in the pump's operator manual, Appendix A "Remote Operation" (e.g. SSI manual
90-2581 rev B, section A.1.3 "Command Interpreter"; the same command set is in the Series I/II/III
and LabAlliance Series manuals and, extended, in Teledyne SSI's Next Generation pump manual):

- 9600 baud, 8 data bits, no parity, 1 stop bit, no handshake;
- one two-letter command per line, case-insensitive, ended by CR; the pump answers every valid
  command and never speaks unprompted; every answer ends with ``/``; an invalid command gets
  ``Er/``; ``#`` clears the pump's command buffer (no answer);
- ``RU`` run -> ``OK/``; ``ST`` stop -> ``OK/``;
- ``FLxxx`` / ``FOxxxx`` / ``FMxxxx`` set the flow: FL three digits (0.01 mL/min steps on a
  10 mL/min head, 0.1 mL/min on a 40 mL/min head), FO four digits (same steps, up to 10.00 /
  40.0), FM four digits in 0.001 mL/min (x.xxx, up to 9.999);
- ``PR`` -> ``OK,<psi>/``; ``CC`` (current conditions) -> ``OK,<psi>,<flow mL/min>/``;
- ``CS`` (current setup) -> ``OK,<flow>,<upper limit>,<lower limit>,<units>,<head 0/1>,
  <run 0/1>,<pressure board 0/1>/``;
- ``ID`` -> ``OK,v<x.xx> <model> firmware/`` (model ``SR3O`` on a Series III);
- ``UPxxxx`` / ``LPxxxx`` upper / lower pressure limit in psi, always four digits (upper at most
  5000 psi for a plastic head, 6000 for steel; lower at most upper - 100). The pump stops itself
  when the pressure crosses either limit;
- ``RF`` (read faults) -> ``OK,<motor stall>,<upper limit>,<lower limit>/`` (0/1 each);
- ``SF`` puts the pump in fault mode (stops at once).

This driver uses FM on 5 and 10 mL/min heads (0.001 mL/min resolution, the one a microreactor
needs) and FO on 40 mL/min heads.
"""

from __future__ import annotations

import re

from aichemist.errors import DeviceError

from ..roles import PumpLimits
from ..transport import Transport
from .base import SerialDevice, SerialDriver, check_range

PSI_PER_BAR = 14.503773773
BAR_PER_PSI = 1.0 / PSI_PER_BAR

# head -> (flow command, mL/min per count, digits, max flow mL/min)
HEADS: dict[str, tuple[str, float, int, float]] = {
    "5ml": ("FM", 0.001, 4, 5.0),
    "10ml": ("FM", 0.001, 4, 9.999),
    "40ml": ("FO", 0.1, 4, 40.0),
}
# head material -> highest upper pressure limit the pump accepts (psi)
MAX_UPPER_LIMIT_PSI = {"steel": 6000, "plastic": 5000}

_OK_VALUES = re.compile(r"^OK(?:,([^/]*))?/$")


class SSIPumpFault(DeviceError):
    """The pump reports a fault (motor stall, pressure limit) or refused a command (``Er/``)."""


class SSIPump(SerialDevice):
    """Driver for one SSI Series I/II/III / LabAlliance pump (role: ``Pump``).

    ``head`` is the pump head size ("5ml", "10ml", "40ml"), ``head_material`` "steel" or
    "plastic"; ``max_pressure_bar`` becomes the pump's own upper pressure limit (UP) at connect,
    so the pump itself stops on over-pressure even if the host dies. ``expected_model`` is
    matched against the ID reply.
    """

    SERIAL_SETTINGS = {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1}

    vendor = "Teledyne SSI"

    def __init__(self, name: str, transport: Transport, *, head: str = "10ml",
                 head_material: str = "steel", max_pressure_bar: float = 100.0,
                 expected_model: str = "SR3", reply_timeout_s: float = 1.0) -> None:
        if head not in HEADS:
            raise ValueError(f"{name}: unknown SSI pump head {head!r}; known: {sorted(HEADS)}")
        if head_material not in MAX_UPPER_LIMIT_PSI:
            raise ValueError(f"{name}: head_material must be one of {sorted(MAX_UPPER_LIMIT_PSI)}")
        self._driver = SerialDriver(name, transport)
        self._driver.terminator = b"/"
        self._driver.reply_timeout_s = reply_timeout_s
        self._driver.vendor, self._driver.model = self.vendor, f"pump ({head} head)"
        self.name = name
        self.head = head
        self.head_material = head_material
        self.expected_model = expected_model
        self._flow_cmd, self._ml_per_count, self._digits, max_flow = HEADS[head]
        max_bar = MAX_UPPER_LIMIT_PSI[head_material] * BAR_PER_PSI
        check_range(name, "max_pressure_bar", max_pressure_bar, 100 * BAR_PER_PSI, max_bar, "bar")
        self._limits = PumpLimits(min_flow_ml_min=self._ml_per_count, max_flow_ml_min=max_flow,
                                  max_pressure_bar=float(max_pressure_bar))
        self._flow_setpoint_ml_min = 0.0
        self._run_requested = False

    # --- plumbing ----------------------------------------------------------------------------
    @property
    def transport(self) -> Transport:
        return self._driver.transport

    @property
    def limits(self) -> PumpLimits:
        return self._limits

    def _command(self, cmd: str) -> list[str]:
        """Send ``cmd`` + CR, return the comma-separated values of the ``OK,...`` answer."""
        reply = self._driver._exchange(cmd.encode("ascii") + b"\r")
        text = reply.decode("ascii", errors="replace").strip()
        if text.endswith("Er/"):
            # clear whatever the pump still holds of a bad command
            self.transport.write(b"#")
            raise SSIPumpFault(f"{self.name}: the pump rejected {cmd!r} (Er/)", device=self.name, command=cmd)
        match = _OK_VALUES.match(text)
        if match is None:
            raise self._driver._protocol_error(f"'OK[,values]/' in reply to {cmd!r}", reply)
        return [] if match.group(1) is None else match.group(1).split(",")

    def _number(self, cmd: str, values: list[str], index: int) -> float:
        try:
            return float(values[index])
        except (IndexError, ValueError):
            raise self._driver._protocol_error(f"a number at field {index} of the reply to {cmd!r}",
                                               ",".join(values)) from None

    # --- lifecycle ---------------------------------------------------------------------------
    def identify(self) -> str:
        values = self._command("ID")
        if not values:
            raise self._driver._protocol_error("'OK,<firmware id>/' in reply to 'ID'", "OK/")
        return ",".join(values).strip()

    def connect(self) -> None:
        ident = self.identify()
        if self.expected_model.upper() not in ident.upper():
            raise self._driver._identity_mismatch(f"an SSI pump with model {self.expected_model!r}", ident)
        # the pump's own over-pressure stop, independent of the host
        self._command(f"UP{round(self._limits.max_pressure_bar * PSI_PER_BAR):04d}")
        self._driver.connected = True

    def safe_state(self) -> None:
        if not self._driver._best_effort("stop", self.stop):
            self._driver._best_effort("fault stop", lambda: self._command("SF"))

    # --- role: Pump --------------------------------------------------------------------------
    def _flow_command(self, flow_ml_min: float) -> str:
        counts = int(round(flow_ml_min / self._ml_per_count))
        return f"{self._flow_cmd}{counts:0{self._digits}d}"

    def set_flow_ml_min(self, flow_ml_min: float) -> None:
        """Set the flow. 0 means no flow: the pump is stopped (SSI pumps take no zero setpoint)."""
        if flow_ml_min == 0:
            self._flow_setpoint_ml_min = 0.0
            self._command("ST")
            return
        flow = check_range(self.name, "flow_ml_min", flow_ml_min, self._limits.min_flow_ml_min,
                           self._limits.max_flow_ml_min, "mL/min")
        was_zero = self._flow_setpoint_ml_min == 0
        self._command(self._flow_command(flow))
        self._flow_setpoint_ml_min = flow
        if self._run_requested and was_zero:  # it was stopped by a zero setpoint
            self._command("RU")

    def start(self) -> None:
        self._run_requested = True
        if self._flow_setpoint_ml_min > 0:
            self._command("RU")

    def stop(self) -> None:
        self._run_requested = False
        self._command("ST")

    def read_flow_ml_min(self) -> float:
        values = self._command("CC")
        return self._number("CC", values, 1)

    def read_pressure_bar(self) -> float:
        values = self._command("PR")
        return self._number("PR", values, 0) * BAR_PER_PSI

    def read_conditions(self) -> tuple[float, float]:
        """(pressure_bar, flow_ml_min) in one exchange (CC)."""
        values = self._command("CC")
        return self._number("CC", values, 0) * BAR_PER_PSI, self._number("CC", values, 1)

    def is_running(self) -> bool:
        values = self._command("CS")
        run = self._number("CS", values, 5)
        return run == 1

    def read_setup(self) -> dict:
        """Current setup (CS): flow, pressure limits (bar), units, head, running, pressure board."""
        values = self._command("CS")
        if len(values) < 7:
            raise self._driver._protocol_error("7 fields in reply to 'CS'", ",".join(values))
        units = values[3].strip().upper()
        to_bar = {"PSI": BAR_PER_PSI, "BAR": 1.0, "MPA": 10.0, "ATM": 1.01325, "KGC": 0.980665}.get(units)
        if to_bar is None:
            raise self._driver._protocol_error("pressure units PSI/BAR/MPA/ATM/KGC in 'CS'", values[3])
        return {
            "flow_ml_min": self._number("CS", values, 0),
            "upper_limit_bar": self._number("CS", values, 1) * to_bar,
            "lower_limit_bar": self._number("CS", values, 2) * to_bar,
            "units": units,
            "macro_head": values[4].strip() == "1",
            "running": values[5].strip() == "1",
            "pressure_board": values[6].strip() == "1",
        }

    def read_faults(self) -> dict[str, bool]:
        """Fault flags (RF): motor stall, upper and lower pressure limit."""
        values = self._command("RF")
        if len(values) < 3 or any(v.strip() not in ("0", "1") for v in values[:3]):
            raise self._driver._protocol_error("'OK,<0|1>,<0|1>,<0|1>/' in reply to 'RF'", ",".join(values))
        stall, upper, lower = (v.strip() == "1" for v in values[:3])
        return {"motor_stall": stall, "upper_pressure_limit": upper, "lower_pressure_limit": lower}

    def set_lower_pressure_limit_bar(self, bar: float) -> None:
        """The pump stops itself if the pressure falls below this (leak); 0 disables."""
        upper_psi = round(self._limits.max_pressure_bar * PSI_PER_BAR)
        check_range(self.name, "lower_pressure_limit_bar", bar, 0.0, (upper_psi - 100) * BAR_PER_PSI, "bar")
        self._command(f"LP{round(bar * PSI_PER_BAR):04d}")

    def __repr__(self) -> str:
        return f"SSIPump({self.name!r}, head={self.head!r}, port={self.transport.port!r})"

