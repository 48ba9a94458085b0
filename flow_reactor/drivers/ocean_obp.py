"""Ocean Insight (Ocean Optics) spectrometers speaking the Ocean Binary Protocol (OBP) over RS-232,
used as an inline UV-vis detector on a flow cell (e.g. STS-UV, Ocean ST, Ocean FX/HDX with a
deuterium-halogen source).

Protocol: Ocean Insight's OBP as documented in the spectrometers' firmware/communication manuals
(e.g. "STS Series Firmware and Advanced Communications", "Ocean FX / HDX Firmware and Advanced
Communications") and in the maker's SeaBreeze sources (OBPMessage / OBPMessageTypes):

- every message is a 44-byte header, an optional payload, a 16-byte checksum and the 4-byte
  footer ``C5 C4 C3 C2``; all integers little-endian;
- header: start bytes ``C1 C0``, protocol version (0x1100), flags (bit 0 response, bit 1 ACK,
  bit 2 ACK requested, bit 3 NACK, bit 4 exception), error number, message type (uint32),
  "regarding" (echoed), 6 reserved bytes, checksum type (0 none, 1 MD5 over header+payload),
  immediate data length and 16 bytes of immediate data, bytes remaining (payload + 20);
- message types used: 0x00000100 get serial number, 0x00110010 set integration time (µs),
  0x00120010 set scans to average, 0x00110410 set lamp enable, 0x00180100 / 0x00180101 get the
  wavelength calibration coefficients (count; coefficient i as float32), 0x00101100 get raw
  spectrum now (payload: one uint16 per pixel).

Absorbance is computed here from raw counts: A = -log10((S - D) / (R - D)) with a dark spectrum D
(lamp off) and a reference R (solvent in the flow cell).
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from aichemist.errors import CommunicationTimeout, DeviceError

from ..roles import Spectrum
from ..transport import Transport
from .base import SerialDevice, SerialDriver, check_range

START = b"\xC1\xC0"
FOOTER = b"\xC5\xC4\xC3\xC2"
PROTOCOL_VERSION = 0x1100
HEADER = struct.Struct("<2sHHHII6sBB16sI")  # 44 bytes
FLAG_RESPONSE, FLAG_ACK, FLAG_ACK_REQUESTED, FLAG_NACK, FLAG_EXCEPTION = 0x01, 0x02, 0x04, 0x08, 0x10

GET_SERIAL_NUMBER = 0x00000100
SET_INTEGRATION_TIME_US = 0x00110010
SET_LAMP_ENABLE = 0x00110410
SET_SCANS_TO_AVERAGE = 0x00120010
GET_WL_COEFF_COUNT = 0x00180100
GET_WL_COEFF = 0x00180101
GET_RAW_SPECTRUM_NOW = 0x00101100

OBP_ERRORS = {1: "unsupported protocol version", 2: "unknown message type", 3: "bad checksum",
              4: "message too large", 5: "payload length does not match message type",
              6: "payload data invalid", 7: "device not ready", 8: "unknown checksum type",
              9: "device reset unexpectedly", 100: "command failed"}


def build_message(message_type: int, immediate: bytes = b"", payload: bytes = b"", *, flags: int = FLAG_ACK_REQUESTED,
                  regarding: int = 0, md5: bool = True, error: int = 0) -> bytes:
    """One OBP message (request or, with response flags, reply)."""
    if len(immediate) > 16:
        raise ValueError("OBP immediate data is at most 16 bytes")
    header = HEADER.pack(START, PROTOCOL_VERSION, flags, error, message_type, regarding, b"\0" * 6,
                         1 if md5 else 0, len(immediate), immediate.ljust(16, b"\0"), len(payload) + 20)
    body = header + payload
    checksum = hashlib.md5(body).digest() if md5 else b"\0" * 16
    return body + checksum + FOOTER


class OBPError(DeviceError):
    """The spectrometer NACKed a message (error number from the OBP error table)."""


class OceanOBPDetector(SerialDevice):
    """Driver for an Ocean Insight OBP spectrometer on an inline flow cell (role: ``Detector``).

    ``integration_time_us`` and ``scans_to_average`` are set at connect (LimitError outside the
    spectrometer's range before any byte is sent). ``reference_on_connect``: capture the dark
    (lamp off) and reference (lamp on, solvent in the cell) spectra when connecting; otherwise call
    ``capture_dark()`` / ``capture_reference()`` after priming with solvent.
    """

    SERIAL_SETTINGS = {"baudrate": 115200, "bytesize": 8, "parity": "N", "stopbits": 1}
    vendor = "Ocean Insight"
    MIN_INTEGRATION_US, MAX_INTEGRATION_US = 10, 10_000_000

    def __init__(self, name: str, transport: Transport, *, integration_time_us: int = 10_000,
                 scans_to_average: int = 4, expected_serial_prefix: str = "", reference_on_connect: bool = True,
                 reply_timeout_s: float = 2.0) -> None:
        self._driver = SerialDriver(name, transport)
        self._driver.reply_timeout_s = reply_timeout_s
        self._driver.vendor, self._driver.model = self.vendor, "OBP spectrometer"
        self.name = name
        self.integration_time_us = int(check_range(name, "integration_time_us", integration_time_us,
                                                    self.MIN_INTEGRATION_US, self.MAX_INTEGRATION_US, "µs"))
        self.scans_to_average = int(check_range(name, "scans_to_average", scans_to_average, 1, 5000))
        self.expected_serial_prefix = expected_serial_prefix
        self.reference_on_connect = reference_on_connect
        self.serial_number = ""
        self.wavelengths_nm: np.ndarray | None = None
        self.dark_counts: np.ndarray | None = None
        self.reference_counts: np.ndarray | None = None
        self._regarding = 0

    @property
    def transport(self) -> Transport:
        return self._driver.transport

    # --- one OBP exchange --------------------------------------------------------------------
    def _request(self, message_type: int, immediate: bytes = b"") -> tuple[bytes, bytes]:
        """Send one message with ACK requested; return (immediate data, payload) of the reply."""
        self._regarding = (self._regarding + 1) & 0xFFFFFFFF
        request = build_message(message_type, immediate, regarding=self._regarding)
        d = self._driver
        with d._lock:
            try:
                self.transport.reset_input()
                self.transport.write(request)
                raw_header = self.transport.read(HEADER.size, d.reply_timeout_s)
                fields = HEADER.unpack(raw_header)
                if fields[0] != START:
                    raise d._protocol_error("an OBP header starting C1 C0", raw_header[:8])
                remaining = fields[10]
                if not 20 <= remaining <= 1 << 20:
                    raise d._protocol_error("an OBP 'bytes remaining' of 20 .. 1 MiB", remaining)
                rest = self.transport.read(remaining, d.reply_timeout_s)
            except CommunicationTimeout as exc:
                raise type(exc)(f"{self.name} (Ocean OBP): no reply to message 0x{message_type:08X}: {exc}",
                                device=self.name) from exc
        _, _, flags, error, mtype, regarding, _, checksum_type, imm_len, immediate_raw, _ = fields
        payload, checksum, footer = rest[:-20], rest[-20:-4], rest[-4:]
        if footer != FOOTER:
            raise d._protocol_error("the OBP footer C5 C4 C3 C2", footer)
        if checksum_type == 1 and hashlib.md5(raw_header + payload).digest() != checksum:
            raise d._protocol_error("a reply with a valid MD5 checksum", checksum.hex())
        if mtype != message_type:
            raise d._protocol_error(f"a reply to message 0x{message_type:08X}", f"0x{mtype:08X}")
        if flags & (FLAG_NACK | FLAG_EXCEPTION):
            raise OBPError(f"{self.name}: message 0x{message_type:08X} refused: "
                           f"{OBP_ERRORS.get(error, f'error {error}')}", device=self.name, error=error)
        return immediate_raw[:imm_len], payload

    # --- lifecycle ---------------------------------------------------------------------------
    def identify(self) -> str:
        try:
            immediate, payload = self._request(GET_SERIAL_NUMBER)
        except DeviceError as exc:
            if isinstance(exc, CommunicationTimeout) or isinstance(exc, OBPError):
                raise
            raise self._driver._identity_mismatch("an Ocean Insight spectrometer answering OBP",
                                                  str(exc.details.get("got", exc))) from exc
        self.serial_number = (immediate or payload).rstrip(b"\0").decode("ascii", errors="replace")
        return f"Ocean Insight spectrometer {self.serial_number}"

    def connect(self) -> None:
        ident = self.identify()
        if self.expected_serial_prefix and not self.serial_number.startswith(self.expected_serial_prefix):
            raise self._driver._identity_mismatch(
                f"a spectrometer with serial number {self.expected_serial_prefix}...", ident)
        self._request(SET_INTEGRATION_TIME_US, struct.pack("<I", self.integration_time_us))
        self._request(SET_SCANS_TO_AVERAGE, struct.pack("<H", self.scans_to_average))
        self.wavelengths_nm = self._read_wavelengths()
        if self.reference_on_connect:
            self.capture_dark()
            self.capture_reference()
        self._driver.connected = True

    def reconnect(self) -> None:
        self.transport.reopen()
        dark, ref = self.dark_counts, self.reference_counts
        self.reference_on_connect, keep = False, self.reference_on_connect
        try:
            self.connect()
        finally:
            self.reference_on_connect = keep
        self.dark_counts, self.reference_counts = dark, ref

    def safe_state(self) -> None:
        """A detector has nothing to make safe (the lamp may stay on)."""

    # --- acquisition -------------------------------------------------------------------------
    def _read_wavelengths(self) -> np.ndarray:
        count_imm, _ = self._request(GET_WL_COEFF_COUNT)
        if len(count_imm) < 1 or not 1 <= count_imm[0] <= 8:
            raise self._driver._protocol_error("a wavelength coefficient count of 1..8", count_imm)
        coeffs = []
        for i in range(count_imm[0]):
            imm, _ = self._request(GET_WL_COEFF, bytes([i]))
            if len(imm) != 4:
                raise self._driver._protocol_error("a float32 wavelength coefficient", imm)
            coeffs.append(struct.unpack("<f", imm)[0])
        counts = self.read_raw_counts(wavelengths_known=False)
        pixels = np.arange(len(counts), dtype=float)
        return np.polynomial.polynomial.polyval(pixels, coeffs)

    def read_raw_counts(self, *, wavelengths_known: bool = True) -> np.ndarray:
        _, payload = self._request(GET_RAW_SPECTRUM_NOW)
        if len(payload) < 2 or len(payload) % 2:
            raise self._driver._protocol_error("a spectrum payload of uint16 pixels", f"{len(payload)} bytes")
        counts = np.frombuffer(payload, dtype="<u2").astype(float)
        if wavelengths_known and self.wavelengths_nm is not None and len(counts) != len(self.wavelengths_nm):
            raise self._driver._protocol_error(f"{len(self.wavelengths_nm)} pixels", f"{len(counts)} pixels")
        return counts

    def set_lamp(self, on: bool) -> None:
        self._request(SET_LAMP_ENABLE, bytes([1 if on else 0]))

    def capture_dark(self) -> np.ndarray:
        self.set_lamp(False)
        try:
            self.dark_counts = self.read_raw_counts()
        finally:
            self.set_lamp(True)
        return self.dark_counts

    def capture_reference(self) -> np.ndarray:
        """Reference spectrum: call with only solvent in the flow cell."""
        self.reference_counts = self.read_raw_counts()
        return self.reference_counts

    # --- role: Detector ----------------------------------------------------------------------
    def read_spectrum(self) -> Spectrum:
        if self.reference_counts is None or self.wavelengths_nm is None:
            raise DeviceError(f"{self.name}: no reference spectrum yet: connect, or flush the cell with solvent "
                              "and call capture_reference()", device=self.name)
        sample = self.read_raw_counts()
        dark = self.dark_counts if self.dark_counts is not None else np.zeros_like(sample)
        signal = np.maximum(sample - dark, 1.0)
        reference = np.maximum(self.reference_counts - dark, 1.0)
        absorbance = -np.log10(signal / reference)
        return Spectrum(wavelengths_nm=self.wavelengths_nm.copy(), absorbance_au=absorbance)

    def read_absorbance(self, wavelength_nm: float) -> float:
        if self.wavelengths_nm is not None:  # checked before any byte goes out
            check_range(self.name, "wavelength_nm", wavelength_nm, float(self.wavelengths_nm[0]),
                        float(self.wavelengths_nm[-1]), "nm")
        return self.read_spectrum().at(wavelength_nm)

    def __repr__(self) -> str:
        return f"OceanOBPDetector({self.name!r}, port={self.transport.port!r})"
