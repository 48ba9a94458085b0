"""Emulator of a Huber thermostat (e.g. Ministat 230 / Unistat with Pilot ONE) speaking PB commands.

Written from Huber's "Manual Data Communication PB" (V1.2.0en/14.07.15): a PB command is
``{M`` + two hex digits (address) + four hex digits (value, or ``****`` to read) + CR LF; the
thermostat answers ``{S`` + address + the variable's current value + CR LF; malformed commands are
not answered; values are 16-bit two's complement, temperatures in 0.01 °C, ``7FFF`` = not
available. A setpoint outside the unit's range is not taken: the answer carries the old one.

Variables emulated: 0x00 setpoint (rw), 0x01 internal temperature, 0x02 return temperature,
0x05 error report, 0x06 warning report, 0x07 process temperature (no probe: 7FFF), 0x0A status
bits (0 temperature control active, 8 error, 9 warning), 0x14 temperature control (rw),
0x30 / 0x31 setpoint range. Any other address answers 7FFF.

Physics: with control on, the bath approaches the setpoint as a first-order lag (time constant
``tau_s``) whose rate is limited by heating / cooling power (``max_heat_k_per_min``,
``max_cool_k_per_min``): tens of degrees take minutes, as on a real benchtop unit with a coil
attached. With control off (or failed) the bath relaxes to ambient slowly.

Faults: ``garbled``, ``no_reply``, ``disconnect``; ``thermostat_failure`` (heater/compressor
fails: control drops out, the error bit and an error number are reported, the bath drifts to
ambient).
"""

from __future__ import annotations

import re

import numpy as np

from .base import EmulatorBase

_FRAME = re.compile(r"^\{M([0-9A-F]{2})([0-9A-F]{4}|\*{4})\r\n$")
NOT_AVAILABLE = 0x7FFF


def _to_word(value: int) -> str:
    return f"{int(value) & 0xFFFF:04X}"


def _from_word(text: str) -> int:
    raw = int(text, 16)
    return raw - 0x10000 if raw & 0x8000 else raw


class HuberThermostatEmulator(EmulatorBase):
    terminator = b"\r\n"
    device_faults = ("thermostat_failure",)

    def __init__(self, name: str = "huber", *, min_setpoint_c: float = -40.0, max_setpoint_c: float = 200.0,
                 ambient_c: float = 22.0, tau_s: float = 90.0, max_heat_k_per_min: float = 8.0,
                 max_cool_k_per_min: float = 4.0, ambient_tau_s: float = 1800.0,
                 failure_error_number: int = -1, seed: int = 0) -> None:
        super().__init__(name, seed=seed)
        self.min_setpoint_c = min_setpoint_c
        self.max_setpoint_c = max_setpoint_c
        self.ambient_c = ambient_c
        self.tau_s = tau_s
        self.max_heat_k_per_s = max_heat_k_per_min / 60.0
        self.max_cool_k_per_s = max_cool_k_per_min / 60.0
        self.ambient_tau_s = ambient_tau_s
        self.failure_error_number = failure_error_number
        self.setpoint_c = 20.0
        self.internal_temp_c = ambient_c
        self.temp_control_on = False
        self.error_number = 0
        self.warning_number = 0

    # --- physical side -----------------------------------------------------------------------
    @property
    def failed(self) -> bool:
        return "thermostat_failure" in self.faults

    @property
    def return_temp_c(self) -> float:
        # the fluid comes back from the coil a little closer to ambient
        return self.internal_temp_c + 0.03 * (self.ambient_c - self.internal_temp_c)

    def _step(self, t: float, dt: float) -> None:
        if self.temp_control_on and not self.failed:
            # first-order lag, with the rate capped by heating / cooling power
            rate = (self.setpoint_c - self.internal_temp_c) / self.tau_s
            rate = float(np.clip(rate, -self.max_cool_k_per_s, self.max_heat_k_per_s))
            step = rate * dt
            # never overshoot within one step
            if abs(step) > abs(self.setpoint_c - self.internal_temp_c):
                step = self.setpoint_c - self.internal_temp_c
            self.internal_temp_c += step
        else:
            alpha = min(1.0, dt / self.ambient_tau_s)
            self.internal_temp_c += alpha * (self.ambient_c - self.internal_temp_c)

    def _on_fault(self, fault: str, kw: dict) -> None:
        if fault == "thermostat_failure":
            self.temp_control_on = False
            self.error_number = int(kw.get("error_number", self.failure_error_number))

    def _on_fault_cleared(self, fault: str) -> None:
        if fault == "thermostat_failure":
            self.error_number = 0

    # --- bytes -------------------------------------------------------------------------------
    def _next_frame(self) -> bytes | None:
        frame = super()._next_frame()
        if frame is None and len(self._buf) > 64:  # garbage without a line end: drop it
            self._buf.clear()
        return frame

    def handle(self, frame: bytes) -> bytes:
        # a frame may carry leading line noise: find the command start
        start = frame.rfind(b"{M")
        if start < 0:
            return b""
        text = frame[start:].decode("ascii", errors="replace").upper()
        match = _FRAME.match(text)
        if match is None:
            return b""  # the PB manual: malformed commands get no answer
        address = int(match.group(1), 16)
        value = match.group(2)
        if value != "****":
            self._write(address, _from_word(value))
        return f"{{S{address:02X}{_to_word(self._read(address))}\r\n".encode("ascii")

    def _write(self, address: int, value: int) -> None:
        if address == 0x00:
            temp_c = value / 100.0
            if self.min_setpoint_c <= temp_c <= self.max_setpoint_c:
                self.setpoint_c = temp_c
        elif address == 0x14:
            if value == 0:
                self.temp_control_on = False
            elif value == 1 and not self.failed:
                self.temp_control_on = True

    def _read(self, address: int) -> int:
        if address == 0x00:
            return round(self.setpoint_c * 100)
        if address == 0x01:
            return round(self.internal_temp_c * 100)
        if address == 0x02:
            return round(self.return_temp_c * 100)
        if address == 0x05:
            return self.error_number
        if address == 0x06:
            return self.warning_number
        if address == 0x0A:
            bits = 0
            if self.temp_control_on:
                bits |= 1 << 0
            if self.error_number:
                bits |= 1 << 8
            if self.warning_number:
                bits |= 1 << 9
            return bits
        if address == 0x14:
            return int(self.temp_control_on)
        if address == 0x30:
            return round(self.min_setpoint_c * 100)
        if address == 0x31:
            return round(self.max_setpoint_c * 100)
        return NOT_AVAILABLE
