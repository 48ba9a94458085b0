"""Emulator of an Ocean Insight OBP spectrometer (STS-UV class) on an inline UV-vis flow cell.

Bytes: written from Ocean Insight's OBP description (firmware/advanced communications manuals;
message type table of the maker's SeaBreeze): 44-byte little-endian header starting ``C1 C0``,
payload, 16-byte checksum (MD5 when the checksum type is 1), footer ``C5 C4 C3 C2``. Answers
(flag bit 0 set; bit 1 ACK when the request asked for one; bit 3 NACK with an error number):
get serial number, set integration time (µs), set scans to average, set lamp enable, get
wavelength coefficient count / coefficient i (float32), get raw spectrum now (uint16 per pixel).

Physics (Beer-Lambert): the twin sets the concentrations in the flow cell
(``set_concentrations_m``); absorbance A(λ) = (path / dilution) Σ ε_i(λ) c_i with each species'
molar absorptivity a sum of gaussian bands (``SPECIES_BANDS``: nitroaromatic and nitroaniline
charge-transfer bands in 250-450 nm; the ortho product's band is red-shifted and weaker than the
para isomer's, so the two are told apart). Raw counts = dark offset + lamp(λ) · 10^-A · (integration
time / 10 ms), with shot and read noise (seeded), averaged over the scans, clipped at 65535.

Faults: ``garbled``, ``no_reply``, ``disconnect``; ``lamp_failure`` (no light: every pixel reads
dark, absorbance saturates).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Mapping

import numpy as np

from .base import EmulatorBase

START, FOOTER = b"\xC1\xC0", b"\xC5\xC4\xC3\xC2"
_HEADER = struct.Struct("<2sHHHII6sBB16sI")
_LN10 = float(np.log(10.0))

#: species -> gaussian bands (centre nm, peak molar absorptivity L mol^-1 cm^-1, sigma nm)
SPECIES_BANDS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "dfnb": ((258.0, 9000.0, 16.0), (310.0, 1500.0, 20.0)),           # nitroarene
    "pyrrolidine": ((235.0, 400.0, 10.0),),                           # aliphatic amine: UV edge only
    "ortho": ((275.0, 7000.0, 20.0), (415.0, 6000.0, 38.0)),          # o-nitroaniline type, yellow
    "para": ((245.0, 9000.0, 18.0), (385.0, 18000.0, 30.0)),          # p-nitroaniline CT band
    "bis": ((300.0, 11000.0, 22.0), (435.0, 9500.0, 42.0)),           # bis-amino nitroarene
}


def molar_absorptivity_l_mol_cm(species: str, wavelengths_nm) -> np.ndarray:
    """ε(λ) of ``species`` from its gaussian bands (the emulator's ground truth)."""
    wl = np.asarray(wavelengths_nm, dtype=float)
    eps = np.zeros_like(wl)
    for centre, peak, sigma in SPECIES_BANDS[species]:
        eps += peak * np.exp(-0.5 * ((wl - centre) / sigma) ** 2)
    return eps


class OceanDetectorEmulator(EmulatorBase):
    device_faults = ("lamp_failure",)

    def __init__(self, name: str = "detector", *, serial_number: str = "STUV0042", num_pixels: int = 1024,
                 wavelength_coeffs: tuple[float, ...] = (200.0, 0.35, -1.5e-5), path_length_cm: float = 0.01,
                 dilution_factor: float = 50.0, dark_counts: float = 1500.0, lamp_peak_counts: float = 42000.0,
                 read_noise_counts: float = 6.0, seed: int = 0) -> None:
        super().__init__(name, seed=seed)
        self.serial_number = serial_number
        self.num_pixels = num_pixels
        self.wavelength_coeffs = tuple(wavelength_coeffs)
        self.wavelengths_nm = np.polynomial.polynomial.polyval(np.arange(num_pixels, dtype=float),
                                                               self.wavelength_coeffs)
        self.path_length_cm = path_length_cm
        self.dilution_factor = dilution_factor
        self.dark_counts = dark_counts
        self.lamp_peak_counts = lamp_peak_counts
        self.read_noise_counts = read_noise_counts
        self.integration_time_us = 10_000
        self.scans_to_average = 1
        self.lamp_on = True
        self.concentrations_m: dict[str, float] = {s: 0.0 for s in SPECIES_BANDS}
        self.baseline_au = 0.0  # flat offset (e.g. baseline drift of a chromatographic run)
        self._eps = {s: molar_absorptivity_l_mol_cm(s, self.wavelengths_nm) for s in SPECIES_BANDS}
        # deuterium-halogen source through the optics: broad, never dark in 220-550 nm
        wl = self.wavelengths_nm
        self._lamp_shape = 0.35 + 0.45 * np.exp(-0.5 * ((wl - 250.0) / 40.0) ** 2) \
            + 0.55 * np.exp(-0.5 * ((wl - 480.0) / 90.0) ** 2)
        self._lamp_shape /= self._lamp_shape.max()
        self._lamp_counts = self.lamp_peak_counts * self._lamp_shape
        self._species = tuple(SPECIES_BANDS)
        self._eps_matrix = np.vstack([self._eps[s] for s in self._species])

    # --- physical side -----------------------------------------------------------------------
    def set_concentrations_m(self, conc: Mapping[str, float]) -> None:
        with self._lock:
            for species, c in conc.items():
                if species in self.concentrations_m:
                    self.concentrations_m[species] = max(0.0, float(c))

    @property
    def effective_path_cm(self) -> float:
        return self.path_length_cm / self.dilution_factor

    def true_absorbance(self) -> np.ndarray:
        conc = np.array([self.concentrations_m[s] for s in self._species])
        return (conc @ self._eps_matrix) * self.effective_path_cm + self.baseline_au

    def raw_counts(self) -> np.ndarray:
        scale = self.integration_time_us / 10_000.0
        if not self.lamp_on or "lamp_failure" in self.faults:
            light = np.zeros(self.num_pixels)
        else:
            light = self._lamp_counts * scale * np.exp(-_LN10 * self.true_absorbance())
        n = max(1, self.scans_to_average)
        noise_sd = np.sqrt(light + self.read_noise_counts ** 2) * (1.0 / np.sqrt(n))
        counts = self.dark_counts + light + self.rng.standard_normal(self.num_pixels) * noise_sd
        return np.clip(np.rint(counts), 0, 65535)

    # --- bytes -------------------------------------------------------------------------------
    def _next_frame(self) -> bytes | None:
        while True:
            start = self._buf.find(START)
            if start < 0:
                if len(self._buf) > 1:
                    del self._buf[:-1]
                return None
            if start:
                del self._buf[:start]
            if len(self._buf) < _HEADER.size:
                return None
            remaining = _HEADER.unpack(bytes(self._buf[:_HEADER.size]))[10]
            total = _HEADER.size + remaining
            if remaining < 20 or remaining > 1 << 16:
                del self._buf[:2]
                continue
            if len(self._buf) < total:
                return None
            frame = bytes(self._buf[:total])
            del self._buf[:total]
            return frame

    def _reply(self, request_fields, immediate: bytes = b"", payload: bytes = b"", error: int = 0) -> bytes:
        _, _, flags, _, mtype, regarding, *_ = request_fields
        reply_flags = 0x01 | (0x08 if error else (0x02 if flags & 0x04 else 0))
        header = _HEADER.pack(START, 0x1100, reply_flags, error, mtype, regarding, b"\0" * 6, 1,
                              len(immediate), immediate.ljust(16, b"\0"), len(payload) + 20)
        body = header + payload
        return body + hashlib.md5(body).digest() + FOOTER

    def handle(self, frame: bytes) -> bytes:
        fields = _HEADER.unpack(frame[:_HEADER.size])
        _, _, _, _, mtype, _, _, checksum_type, imm_len, immediate, remaining = fields
        payload = frame[_HEADER.size:_HEADER.size + remaining - 20]
        checksum, footer = frame[-20:-4], frame[-4:]
        if footer != FOOTER:
            return self._reply(fields, error=6)
        if checksum_type == 1 and hashlib.md5(frame[:-20]).digest() != checksum:
            return self._reply(fields, error=3)
        data = immediate[:imm_len] or payload
        if mtype == 0x00000100:
            return self._reply(fields, immediate=self.serial_number.encode("ascii")[:16])
        if mtype == 0x00110010:
            if len(data) != 4:
                return self._reply(fields, error=5)
            value = struct.unpack("<I", data)[0]
            if not 10 <= value <= 10_000_000:
                return self._reply(fields, error=6)
            self.integration_time_us = value
            return self._reply(fields)
        if mtype == 0x00120010:
            if len(data) != 2:
                return self._reply(fields, error=5)
            value = struct.unpack("<H", data)[0]
            if not 1 <= value <= 5000:
                return self._reply(fields, error=6)
            self.scans_to_average = value
            return self._reply(fields)
        if mtype == 0x00110410:
            if len(data) != 1:
                return self._reply(fields, error=5)
            self.lamp_on = bool(data[0])
            return self._reply(fields)
        if mtype == 0x00180100:
            return self._reply(fields, immediate=bytes([len(self.wavelength_coeffs)]))
        if mtype == 0x00180101:
            if len(data) != 1 or data[0] >= len(self.wavelength_coeffs):
                return self._reply(fields, error=6)
            return self._reply(fields, immediate=struct.pack("<f", self.wavelength_coeffs[data[0]]))
        if mtype == 0x00101100:
            return self._reply(fields, payload=self.raw_counts().astype("<u2").tobytes())
        return self._reply(fields, error=2)
