"""Emulator of a New Era NE-1000 syringe pump in RS-232 Basic mode.

Written from the NE-1000 user manual (Publication #1200-01, "RS-232 Communications"): commands
``[<address>] <command> [<data>] CR``; responses ``STX <2-digit address> <status> [<data>] ETX``
with status I/W/S/P (infusing, withdrawing, stopped, paused) or an alarm ``A?<type>``; refused
commands add ``?``, ``?NA``, ``?OOR`` after the status. An alarm is reported in the response to
the next command and is thereby acknowledged. STP pauses a running pump (P); STP again stops (S).

Physics: while infusing, ``delivered_flow_ml_min`` is the rate; ``volume_delivered_ml``
integrates it; an empty syringe stops the pump. Syringe pumps have no pressure sensor, but the
twin sets the line pressure (``set_system_pressure_bar``) and a pressure above ``stall_pressure_bar``
(the drive's force limit) stalls the motor.

Faults: ``garbled``, ``no_reply``, ``disconnect``; ``stall`` (motor stall alarm, no flow).
"""

from __future__ import annotations

import math
import re

from .base import EmulatorBase

STX, ETX = "\x02", "\x03"
_UNITS_ML_MIN = {"UM": 1e-3, "MM": 1.0, "UH": 1e-3 / 60.0, "MH": 1.0 / 60.0}
_NUMBER = re.compile(r"^(?=.*\d)\d{0,4}(\.\d{0,4})?$")


class NewEraPumpEmulator(EmulatorBase):
    terminator = b"\r"
    reply_terminator = b"\x03"
    device_faults = ("stall",)

    def __init__(self, name: str = "new_era", *, address: int = 0, firmware: str = "NE1000V3.923",
                 syringe_volume_ml: float = 10.0, stall_pressure_bar: float = 20.0, seed: int = 0) -> None:
        super().__init__(name, seed=seed)
        self.address = address
        self.firmware = firmware
        self.diameter_mm = 14.43
        self.rate_value = 1.0
        self.rate_units = "MM"
        self.direction = "INF"
        self.status = "S"
        self.alarm: str | None = None
        self.syringe_volume_ml = syringe_volume_ml
        self.volume_delivered_ml = 0.0
        self.volume_withdrawn_ml = 0.0
        self.stall_pressure_bar = stall_pressure_bar
        self.system_pressure_bar = 0.0

    # --- physical side -----------------------------------------------------------------------
    @property
    def rate_ml_min(self) -> float:
        return self.rate_value * _UNITS_ML_MIN[self.rate_units]

    @property
    def running(self) -> bool:
        return self.status in ("I", "W")

    @property
    def delivered_flow_ml_min(self) -> float:
        return self.rate_ml_min if self.status == "I" else 0.0

    @property
    def remaining_ml(self) -> float:
        return max(0.0, self.syringe_volume_ml - self.volume_delivered_ml + self.volume_withdrawn_ml)

    def set_system_pressure_bar(self, bar: float) -> None:
        with self._lock:
            self.system_pressure_bar = float(bar)
            if self.running and self.system_pressure_bar > self.stall_pressure_bar:
                self._stall()

    def refill(self, volume_ml: float | None = None) -> None:
        with self._lock:
            self.volume_delivered_ml = self.volume_withdrawn_ml = 0.0
            if volume_ml is not None:
                self.syringe_volume_ml = volume_ml

    def _stall(self) -> None:
        self.status = "S"
        self.alarm = "S"

    def _on_fault(self, fault: str, kw: dict) -> None:
        if fault == "stall":
            self._stall()

    def _step(self, t: float, dt: float) -> None:
        if self.status == "I":
            dv = self.rate_ml_min * dt / 60.0
            if dv >= self.remaining_ml:  # syringe empty: the pusher block stops
                self.volume_delivered_ml += self.remaining_ml
                self.status = "S"
            else:
                self.volume_delivered_ml += dv
        elif self.status == "W":
            self.volume_withdrawn_ml += self.rate_ml_min * dt / 60.0

    # --- bytes -------------------------------------------------------------------------------
    def handle(self, frame: bytes) -> bytes:
        text = frame.decode("ascii", errors="replace").strip().upper()
        match = re.match(r"^(\d{1,2})?\s*(.*)$", text)
        addr = int(match.group(1)) if match and match.group(1) else 0
        if addr != self.address:
            return b""  # another pump on the chain
        body = match.group(2).strip() if match else ""
        data = self._execute(body)
        status = f"A?{self.alarm}" if self.alarm else self.status
        self.alarm = None  # reporting the alarm acknowledges it
        return f"{STX}{self.address:02d}{status}{data}{ETX}".encode("ascii")

    def _execute(self, body: str) -> str:
        if not body:
            return ""
        cmd, _, arg = body.partition(" ")
        cmd = cmd[:3]
        arg = arg.replace(" ", "")
        if cmd == "VER":
            return self.firmware
        if cmd == "DIA":
            if not arg:
                return f"{self.diameter_mm:g}"
            if self.running:
                return "?NA"
            if not _NUMBER.match(arg) or not 0.1 <= float(arg) <= 80.0:
                return "?OOR"
            self.diameter_mm = float(arg)
            return ""
        if cmd == "RAT":
            if not arg:
                return f"{self._rate_text()}{self.rate_units}"
            m = re.match(r"^([0-9.]+)(UM|MM|UH|MH)?$", arg)
            if not m or not _NUMBER.match(m.group(1)):
                return "?OOR"
            value = float(m.group(1))
            units = m.group(2) or self.rate_units
            ml_min = value * _UNITS_ML_MIN[units]
            if not self.min_rate_ml_min <= ml_min <= self.max_rate_ml_min:
                return "?OOR"
            self.rate_value, self.rate_units = value, units
            return ""
        if cmd == "DIR":
            if not arg:
                return self.direction
            if arg not in ("INF", "WDR", "REV"):
                return "?"
            if arg == "REV":
                arg = "WDR" if self.direction == "INF" else "INF"
            self.direction = arg
            if self.running:
                self.status = "I" if arg == "INF" else "W"
            return ""
        if cmd == "RUN":
            if "stall" in self.faults:
                self._stall()
                return ""
            if self.direction == "INF" and self.remaining_ml <= 0:
                return "?NA"
            self.status = "I" if self.direction == "INF" else "W"
            return ""
        if cmd == "STP":
            self.status = "P" if self.running else "S"
            return ""
        if cmd == "DIS":
            return f"I{self._vol_text(self.volume_delivered_ml)}W{self._vol_text(self.volume_withdrawn_ml)}ML"
        if cmd == "CLD":
            if arg == "INF":
                self.volume_delivered_ml = 0.0
            elif arg == "WDR":
                self.volume_withdrawn_ml = 0.0
            else:
                return "?"
            return ""
        return "?"

    @property
    def max_rate_ml_min(self) -> float:
        # drive speed limit scales with the syringe's cross-section (about 1.7 mm/s of travel)
        area_mm2 = math.pi * (self.diameter_mm / 2.0) ** 2
        return area_mm2 * 1.7 * 60.0 / 1000.0

    @property
    def min_rate_ml_min(self) -> float:
        return self.max_rate_ml_min * 1e-5

    def _rate_text(self) -> str:
        for decimals in (3, 2, 1, 0):
            text = f"{self.rate_value:.{decimals}f}"
            if len(text.replace(".", "")) <= 4:
                return text
        return f"{self.rate_value:.0f}"

    @staticmethod
    def _vol_text(volume_ml: float) -> str:
        return f"{volume_ml:.3f}" if volume_ml < 10 else f"{volume_ml:.2f}"
