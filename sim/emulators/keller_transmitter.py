"""Emulator of a KELLER Series 30 digital pressure transmitter on the KELLER bus.

Written from KELLER's "Description of the Communication protocol for Series 30 and Series 40
pressure transmitters" (Class.Group 5.20): binary frames ``<address> <function> [data] <CRC16 H>
<CRC16 L>`` (CRC-16, polynomial 0xA001, init 0xFFFF, high byte first); F48 initialise (answers
class 5, group 20, firmware year/week, buffer, status); F73 read channel as IEEE 754 float
(big-endian) + status byte; exception answers ``function | 0x80`` with a code (2: bad channel,
32: not initialised since power-on). Address 250 is "transparent": every transmitter answers it.
Frames with a wrong CRC or for another address get no answer.

Physics: the twin sets the line pressure (``set_pressure_bar``); the reading adds a small seeded
noise (``noise_bar``) and the fault ``pressure_spike`` (``bar``, default 50). Faults also:
``garbled``, ``no_reply``, ``disconnect``, ``power_cycle`` (the transmitter restarts and answers
exception 32 until initialised again).
"""

from __future__ import annotations

import struct

from .base import EmulatorBase

_REQUEST_LEN = {48: 4, 73: 5, 69: 4, 30: 5, 32: 5, 95: 5}


def _crc16(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _with_crc(body: bytes) -> bytes:
    return body + _crc16(body).to_bytes(2, "big")


class KellerTransmitterEmulator(EmulatorBase):
    device_faults = ("pressure_spike", "power_cycle")

    def __init__(self, name: str = "keller", *, address: int = 1, device_class: int = 5, group: int = 20,
                 firmware_year: int = 19, firmware_week: int = 40, noise_bar: float = 0.002,
                 temperature_c: float = 22.5, seed: int = 0) -> None:
        super().__init__(name, seed=seed)
        self.address = address
        self.device_class, self.group = device_class, group
        self.firmware_year, self.firmware_week = firmware_year, firmware_week
        self.noise_bar = noise_bar
        self.temperature_c = temperature_c
        self.pressure_bar = 1.013  # open to air
        self.initialised = False  # a freshly powered transmitter wants F48 first

    # --- physical side -----------------------------------------------------------------------
    def set_pressure_bar(self, bar: float) -> None:
        with self._lock:
            self.pressure_bar = float(bar)

    @property
    def reading_bar(self) -> float:
        spike = self.faults["pressure_spike"].get("bar", 50.0) if "pressure_spike" in self.faults else 0.0
        return self.pressure_bar + spike + float(self.rng.normal(0.0, self.noise_bar))

    def _on_fault(self, fault: str, kw: dict) -> None:
        if fault == "power_cycle":
            self.initialised = False
            self.faults.pop("power_cycle", None)  # a one-off event, not a lasting state

    # --- bytes -------------------------------------------------------------------------------
    def _next_frame(self) -> bytes | None:
        while len(self._buf) >= 2:
            length = _REQUEST_LEN.get(self._buf[1])
            if length is None:  # not a request we know: resynchronise one byte later
                del self._buf[0]
                continue
            if len(self._buf) < length:
                return None
            frame = bytes(self._buf[:length])
            if _crc16(frame[:-2]).to_bytes(2, "big") != frame[-2:]:
                del self._buf[0]
                continue
            del self._buf[:length]
            return frame
        return None

    def handle(self, frame: bytes) -> bytes:
        address, function, data = frame[0], frame[1], frame[2:-2]
        if address not in (self.address, 250):
            return b""
        me = bytes([address])
        if function == 48:
            self.initialised = True
            return _with_crc(me + bytes([48, self.device_class, self.group, self.firmware_year,
                                         self.firmware_week, 0, 0]))
        if not self.initialised:
            return _with_crc(me + bytes([function | 0x80, 32]))
        if function == 73:
            channel = data[0]
            if channel == 1:
                value = self.reading_bar
            elif channel == 4:
                value = self.temperature_c
            else:
                return _with_crc(me + bytes([function | 0x80, 2]))
            return _with_crc(me + bytes([73]) + struct.pack(">f", value) + bytes([0]))
        return _with_crc(me + bytes([function | 0x80, 1]))
