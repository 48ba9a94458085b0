"""Ocean OBP detector driver: message framing, errors, Beer-Lambert spectra from the emulator."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from aichemist.errors import CommunicationTimeout, DeviceError, DeviceIdentityError, LimitError, ProtocolError
from flow_reactor.drivers.ocean_obp import (GET_RAW_SPECTRUM_NOW, GET_SERIAL_NUMBER, HEADER, OBPError,
                                            OceanOBPDetector, build_message)
from flow_reactor.roles import Detector
from flow_reactor.transport import SerialTransport
from sim.emulators.loopback import LoopbackTransport
from sim.emulators.ocean_detector import OceanDetectorEmulator, molar_absorptivity_l_mol_cm
from sim.emulators.scripted import ScriptedTransport
from sim.pty_host import PtyHost


def test_request_layout_matches_obp_header_definition():
    msg = build_message(GET_SERIAL_NUMBER, regarding=7)
    assert len(msg) == 64                       # 44 header + 16 checksum + 4 footer, no payload
    assert msg[:2] == b"\xC1\xC0" and msg[-4:] == b"\xC5\xC4\xC3\xC2"
    assert msg[2:4] == b"\x00\x11"              # protocol version 0x1100, little-endian
    assert msg[4:6] == b"\x04\x00"              # flags: ACK requested
    assert msg[8:12] == b"\x00\x01\x00\x00"     # message type 0x00000100 little-endian
    assert msg[12:16] == struct.pack("<I", 7)   # regarding
    assert msg[22] == 1 and msg[23] == 0        # MD5 checksum, no immediate data
    assert msg[40:44] == struct.pack("<I", 20)  # bytes remaining: checksum + footer
    assert msg[44:60] == hashlib.md5(msg[:44]).digest()


def test_serial_number_reply_is_parsed_and_identity_checked():
    reply = build_message(GET_SERIAL_NUMBER, b"STUV0042", flags=0x03)
    det = OceanOBPDetector("uv", ScriptedTransport([reply]), expected_serial_prefix="XYZ")
    with pytest.raises(DeviceIdentityError, match="serial number XYZ.*STUV0042"):
        det.connect()


def test_non_obp_device_is_identity_error():
    with pytest.raises(DeviceIdentityError, match="Ocean Insight spectrometer answering OBP"):
        OceanOBPDetector("uv", ScriptedTransport([b"OK,v3.10 SR3O firmware/" + b"\0" * 40])).identify()


def test_nack_raises_obp_error_with_reason():
    reply = build_message(GET_RAW_SPECTRUM_NOW, flags=0x09, error=7)
    det = OceanOBPDetector("uv", ScriptedTransport([reply]))
    with pytest.raises(OBPError, match="device not ready"):
        det.read_raw_counts()


def test_corrupt_checksum_is_protocol_error_and_silence_is_timeout():
    reply = bytearray(build_message(GET_RAW_SPECTRUM_NOW, payload=b"\x01\x00" * 4, flags=0x03))
    reply[HEADER.size] ^= 0xFF
    with pytest.raises(ProtocolError, match="valid MD5"):
        OceanOBPDetector("uv", ScriptedTransport([bytes(reply)])).read_raw_counts()
    with pytest.raises(CommunicationTimeout, match="uv .*no reply to message 0x00101100"):
        OceanOBPDetector("uv", ScriptedTransport()).read_raw_counts()


@pytest.mark.parametrize("kw", [{"integration_time_us": 5}, {"scans_to_average": 0},
                                {"integration_time_us": 2e7}])
def test_settings_outside_limits_rejected(kw):
    with pytest.raises(LimitError):
        OceanOBPDetector("uv", ScriptedTransport(), **kw)


def test_wavelength_outside_range_rejected_before_any_byte():
    emu = OceanDetectorEmulator()
    t = LoopbackTransport(emu)
    det = OceanOBPDetector("uv", t)
    det.connect()
    sent = len(t.written)
    with pytest.raises(LimitError, match="uv: wavelength_nm=900"):
        det.read_absorbance(900)
    assert len(t.written) == sent


def test_beer_lambert_spectrum_from_twin_concentrations():
    emu = OceanDetectorEmulator(seed=3)
    det = OceanOBPDetector("uv", LoopbackTransport(emu), scans_to_average=16)
    det.connect()                       # dark + reference with solvent only
    assert isinstance(det, Detector)
    blank = det.read_spectrum()
    assert np.abs(blank.absorbance_au[(blank.wavelengths_nm > 250) & (blank.wavelengths_nm < 450)]).max() < 0.02
    emu.set_concentrations_m({"ortho": 0.2})
    s = det.read_spectrum()
    expected = emu.effective_path_cm * molar_absorptivity_l_mol_cm("ortho", [415.0])[0] * 0.2
    assert s.at(415.0) == pytest.approx(expected, rel=0.03)
    # ortho and para are told apart: ortho's long-wave band peaks red of para's
    band = (s.wavelengths_nm > 340) & (s.wavelengths_nm < 480)
    ortho_peak = s.wavelengths_nm[band][np.argmax(s.absorbance_au[band])]
    emu.set_concentrations_m({"ortho": 0.0, "para": 0.05})
    p = det.read_spectrum()
    para_peak = p.wavelengths_nm[band][np.argmax(p.absorbance_au[band])]
    assert ortho_peak - para_peak > 15
    # linear in concentration (Beer-Lambert)
    emu.set_concentrations_m({"para": 0.10})
    assert det.read_absorbance(385) == pytest.approx(2 * p.at(385), rel=0.05)


def test_lamp_failure_and_missing_reference():
    emu = OceanDetectorEmulator()
    det = OceanOBPDetector("uv", LoopbackTransport(emu), reference_on_connect=False)
    det.connect()
    with pytest.raises(DeviceError, match="no reference spectrum"):
        det.read_spectrum()
    det.capture_dark()
    det.capture_reference()
    emu.inject("lamp_failure")
    assert det.read_absorbance(300) > 3.0


def test_detector_over_pty_with_garbled_reply(tmp_path):
    emu = OceanDetectorEmulator()
    with PtyHost(emu, tmp_path / "detector") as host:
        det = OceanOBPDetector("uv", SerialTransport(host.link_path, **OceanOBPDetector.SERIAL_SETTINGS))
        det.connect()
        emu.set_concentrations_m({"dfnb": 0.3})
        a = det.read_absorbance(258)
        assert a == pytest.approx(emu.effective_path_cm * 9000 * 0.3, rel=0.05)
        emu.inject("garbled", count=1)
        with pytest.raises((ProtocolError, CommunicationTimeout)):
            det.read_spectrum()
        assert det.read_absorbance(258) == pytest.approx(a, rel=0.05)
        det.close()
