"""Each emulator answers the bytes its maker's manual documents (no driver involved)."""

from __future__ import annotations

import hashlib
import struct

import pytest

from sim.emulators.huber_thermostat import HuberThermostatEmulator
from sim.emulators.keller_transmitter import KellerTransmitterEmulator
from sim.emulators.new_era_pump import NewEraPumpEmulator
from sim.emulators.ocean_detector import OceanDetectorEmulator
from sim.emulators.ssi_pump import SSIPumpEmulator
from sim.emulators.vici_actuator import ViciActuatorEmulator


def test_ssi_command_interpreter():
    emu = SSIPumpEmulator()
    assert emu.feed(b"ID\r") == b"OK,v3.10 SR3O firmware/"
    assert emu.feed(b"UP0900\r") == b"OK/"            # "for 900 PSI xxxx = 0900"
    assert emu.feed(b"LP0100\r") == b"OK/"            # "for 100 PSI xxxx = 0100"
    assert emu.feed(b"LP0850\r") == b"Er/"            # lower limit at most upper - 100
    assert emu.feed(b"FL150\r") == b"OK/"             # 1.50 mL/min on a 10 mL/min head
    assert emu.feed(b"CS\r") == b"OK,1.500,900,100,PSI,0,0,1/"
    assert emu.feed(b"RU\r") == b"OK/" and emu.running
    emu.set_system_pressure_bar(10.0)
    assert emu.feed(b"CC\r") == b"OK,145,1.500/"
    assert emu.feed(b"RF\r") == b"OK,0,0,0/"
    emu.set_system_pressure_bar(1.0)                      # 15 psi: below the lower limit (a leak)
    for _ in range(40):
        emu.step(0.0, 1.0)
    assert not emu.running and emu.feed(b"RF\r") == b"OK,0,0,1/"
    assert emu.feed(b"ST\r") == b"OK/"


def test_ssi_partial_command_across_reads():
    emu = SSIPumpEmulator()
    assert emu.feed(b"P") == b""
    assert emu.feed(b"R\r") == b"OK,0/"


def test_huber_pb_frames():
    emu = HuberThermostatEmulator(ambient_c=22.0)
    assert emu.feed(b"{M01****\r\n") == b"{S010898\r\n"      # 22.00 C
    assert emu.feed(b"{M00FC18\r\n") == b"{S00FC18\r\n"      # -10.00 C taken
    assert emu.feed(b"{M140001\r\n") == b"{S140001\r\n"
    assert emu.feed(b"{M0A****\r\n") == b"{S0A0001\r\n"      # bit 0: temperature control active
    assert emu.feed(b"{M30****\r\n") == b"{S30F060\r\n"      # -40.00 C lowest setpoint
    assert emu.feed(b"{M0a****\r\n") == b"{S0A0001\r\n"      # hex digits in either case


def test_vici_multiposition_and_id_prefix():
    emu = ViciActuatorEmulator(num_positions=10)
    assert emu.feed(b"AM\r") == b"AM3\r"
    assert emu.feed(b"NP\r") == b"NP10\r"
    assert emu.feed(b"GO3\r") == b"CP03\r"                 # IFM1: basic response
    assert emu.feed(b"IFM0\r") == b""
    assert emu.feed(b"GO7\r") == b"" and emu.position == 7
    assert emu.feed(b"CP\r") == b"CP07\r"
    assert emu.feed(b"CNT\r") == b"CNT6\r"                 # 1->3 (2) then 3->7 (4)
    assert emu.feed(b"ID5\r") == b""
    assert emu.feed(b"CP\r") == b""                        # now needs the prefix
    assert emu.feed(b"5CP\r") == b"5CP07\r"


def test_keller_f48_and_f73_frames():
    emu = KellerTransmitterEmulator(noise_bar=0.0)
    emu.set_pressure_bar(2.5)
    assert emu.feed(bytes([250, 73, 1, 161, 167]))[:3] == bytes([250, 73 | 0x80, 32])  # not initialised
    reply = emu.feed(bytes([250, 48, 4, 67]))
    assert reply[:4] == bytes([250, 48, 5, 20]) and len(reply) == 10
    reply = emu.feed(bytes([250, 73, 1, 161, 167]))
    assert reply[:2] == bytes([250, 73]) and struct.unpack(">f", reply[2:6])[0] == pytest.approx(2.5)


def test_new_era_basic_mode():
    emu = NewEraPumpEmulator()
    assert emu.feed(b"VER\r") == b"\x0200SNE1000V3.923\x03"
    assert emu.feed(b"DIA 14.43\r") == b"\x0200S\x03"
    assert emu.feed(b"RAT 1.5 MM\r") == b"\x0200S\x03"
    assert emu.feed(b"RAT\r") == b"\x0200S1.500MM\x03"
    assert emu.feed(b"RAT 99 MM\r") == b"\x0200S?OOR\x03"
    assert emu.feed(b"RUN\r") == b"\x0200I\x03"
    assert emu.feed(b"STP\r") == b"\x0200P\x03"
    assert emu.feed(b"XYZ\r") == b"\x0200P?\x03"
    assert emu.feed(b"3 RUN\r") == b""                     # another pump's address


def test_ocean_obp_serial_number_and_nack():
    emu = OceanDetectorEmulator(serial_number="STUV0042")

    def message(mtype, immediate=b""):
        header = struct.pack("<2sHHHII6sBB16sI", b"\xC1\xC0", 0x1100, 0x04, 0, mtype, 9, b"\0" * 6, 1,
                             len(immediate), immediate.ljust(16, b"\0"), 20)
        return header + hashlib.md5(header).digest() + b"\xC5\xC4\xC3\xC2"

    reply = emu.feed(message(0x00000100))
    assert reply[:2] == b"\xC1\xC0" and reply[-4:] == b"\xC5\xC4\xC3\xC2"
    flags, error, mtype, regarding = struct.unpack("<HHII", reply[4:16])
    assert flags == 0x03 and error == 0 and mtype == 0x100 and regarding == 9
    assert reply[24:24 + reply[23]] == b"STUV0042"
    nack = emu.feed(message(0x00FFFFFF))
    flags, error = struct.unpack("<HH", nack[4:8])
    assert flags & 0x08 and error == 2                     # unknown message type
    bad = bytearray(message(0x00000100))
    bad[50] ^= 0xFF                                        # corrupt the checksum
    assert struct.unpack("<H", emu.feed(bytes(bad))[6:8])[0] == 3
