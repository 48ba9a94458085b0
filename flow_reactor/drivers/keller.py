"""KELLER Series 30 / Series 40 (X-Line) digital pressure transmitters over the KELLER bus.

Protocol: KELLER AG "Description of the Communication protocol for Series 30 and Series 40
pressure transmitters" (Class.Group 5.20 / 5.21, version 3.x), chapter 3 "Data-link layer" and
chapter 5 "Description of Keller bus functions":

- RS-485 half duplex, 9600 baud (or 115200), 8N1; binary frames;
- request ``<address> <function> [data] <CRC16 H> <CRC16 L>``: CRC-16 with polynomial 0xA001
  (reflected 0x8005) and initial value 0xFFFF over address, function and data, sent high byte
  first (the manual's example: read P1 from the "transparent" address 250 is ``250 73 1 161 167``;
  initialise is ``250 48 4 67``);
- F48 "initialise and release": answer ``<addr> 48 <class> <group> <year> <week> <buffer>
  <status> <CRC H> <CRC L>`` (Series 30: class 5, group 20);
- F73 "read value of a channel (floating point)": request data = channel (1 = P1, pressure in the
  device's unit, bar by default; 4 = TOB1 temperature), answer ``<addr> 73 <B3 B2 B1 B0: IEEE 754
  float, big-endian> <STAT> <CRC H> <CRC L>``;
- exceptions: ``<addr> <function | 0x80> <code> <CRC H> <CRC L>``, code 1 function not
  implemented, 2 bad parameter (channel), 3 bad value, 32 device not initialised: call F48 (after a
  power interruption).
"""

from __future__ import annotations

import struct

from aichemist.errors import CommunicationTimeout, DeviceError

from ..transport import Transport
from .base import SerialDevice, SerialDriver

TRANSPARENT_ADDRESS = 250
CHANNEL_P1 = 1
CHANNEL_TOB1 = 4
EXCEPTIONS = {1: "function not implemented", 2: "illegal data address (channel)", 3: "illegal data value",
              32: "device not initialised (power interruption): call F48"}


def crc16(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def frame(address: int, function: int, data: bytes = b"") -> bytes:
    body = bytes([address, function]) + data
    return body + crc16(body).to_bytes(2, "big")


class KellerException(DeviceError):
    def __init__(self, message: str, code: int, **details):
        super().__init__(message, code_number=code, **details)
        self.exception_code = code


class KellerPressureTransmitter(SerialDevice):
    """Driver for a KELLER Series 30/40 transmitter (role: ``PressureSensor``).

    ``expected_class_group`` is checked against F48 (a different device type on the bus is an
    identity error). P1 is read in bar (the transmitter's factory unit).
    """

    SERIAL_SETTINGS = {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1}
    vendor = "KELLER"

    def __init__(self, name: str, transport: Transport, *, address: int = 1,
                 expected_class_group: tuple[int, ...] = (5, 20), reply_timeout_s: float = 0.5) -> None:
        if not 1 <= address <= 255:
            raise ValueError(f"{name}: KELLER bus address must be 1..255, got {address}")
        self._driver = SerialDriver(name, transport)
        self._driver.reply_timeout_s = reply_timeout_s
        self._driver.vendor, self._driver.model = self.vendor, "Series 30 transmitter"
        self.name = name
        self.address = address
        self.expected_class_group = tuple(expected_class_group)
        self.firmware: tuple[int, int, int, int] | None = None

    @property
    def transport(self) -> Transport:
        return self._driver.transport

    # --- one exchange ------------------------------------------------------------------------
    def _exchange(self, function: int, data: bytes, reply_data_len: int) -> bytes:
        """Send one request; return the reply's data bytes (CRC and address checked)."""
        request = frame(self.address, function, data)
        d = self._driver
        with d._lock:
            try:
                self.transport.reset_input()
                self.transport.write(request)
                head = self.transport.read(2, d.reply_timeout_s)
                if head[1] == function | 0x80:
                    rest = self.transport.read(3, d.reply_timeout_s)
                else:
                    rest = self.transport.read(reply_data_len + 2, d.reply_timeout_s)
            except CommunicationTimeout as exc:
                raise type(exc)(f"{self.name} (KELLER): no reply to F{function} "
                                f"({request.hex(' ')}): {exc}", device=self.name) from exc
        reply = head + rest
        if crc16(reply[:-2]).to_bytes(2, "big") != reply[-2:]:
            raise d._protocol_error(f"a reply with a valid CRC16 to F{function}", reply)
        if reply[0] != self.address and self.address != TRANSPARENT_ADDRESS:
            raise d._protocol_error(f"a reply from address {self.address}", reply)
        if reply[1] == function | 0x80:
            code = reply[2]
            raise KellerException(f"{self.name}: F{function} exception {code}: {EXCEPTIONS.get(code, 'unknown')}",
                                  code, device=self.name, function=function)
        if reply[1] != function:
            raise d._protocol_error(f"an answer to function {function}", reply)
        return reply[2:-2]

    # --- lifecycle ---------------------------------------------------------------------------
    def initialise(self) -> tuple[int, int, int, int]:
        """F48: (class, group, year, week) of the firmware; also clears the power-on flag."""
        data = self._exchange(48, b"", 6)
        self.firmware = (data[0], data[1], data[2], data[3])
        return self.firmware

    def identify(self) -> str:
        cls, group, year, week = self.initialise()
        return f"KELLER class.group {cls}.{group}, firmware {year}/{week}"

    def connect(self) -> None:
        cls, group, year, week = self.initialise()
        if (cls, group)[: len(self.expected_class_group)] != self.expected_class_group:
            raise self._driver._identity_mismatch(
                f"a KELLER transmitter of class.group {'.'.join(map(str, self.expected_class_group))}",
                f"class.group {cls}.{group}")
        self._driver.connected = True

    def safe_state(self) -> None:
        """A sensor has nothing to make safe."""

    # --- role: PressureSensor ----------------------------------------------------------------
    def read_channel(self, channel: int) -> tuple[float, int]:
        """F73: (value, status byte) of ``channel``; re-initialises once after a power interruption."""
        try:
            data = self._exchange(73, bytes([channel]), 5)
        except KellerException as exc:
            if exc.exception_code != 32:
                raise
            self.initialise()
            data = self._exchange(73, bytes([channel]), 5)
        value = struct.unpack(">f", data[:4])[0]
        return value, data[4]

    def read_pressure_bar(self) -> float:
        value, status = self.read_channel(CHANNEL_P1)
        if status & 0b0000_0010:  # P1 measurement error flag
            raise DeviceError(f"{self.name}: the transmitter flags its P1 value invalid (STAT={status:#04x})",
                              device=self.name, status=status)
        return float(value)

    def read_temperature_c(self) -> float:
        value, _ = self.read_channel(CHANNEL_TOB1)
        return float(value)

    def __repr__(self) -> str:
        return f"KellerPressureTransmitter({self.name!r}, address={self.address}, port={self.transport.port!r})"
