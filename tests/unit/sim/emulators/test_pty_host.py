"""The pty host serves an emulator's bytes on a pseudo-terminal that pyserial opens like a port."""

from __future__ import annotations

import os

import pytest

from aichemist.errors import CommunicationTimeout, DeviceNotFoundError
from flow_reactor.transport import SerialTransport
from sim.emulators.base import EmulatorBase
from sim.pty_host import PtyHost


class UpperEcho(EmulatorBase):
    """Answers each CR-terminated line in upper case."""

    def handle(self, frame: bytes) -> bytes:
        return frame.upper()


@pytest.fixture
def served(tmp_path):
    emu = UpperEcho("echo")
    host = PtyHost(emu, tmp_path / "echo").start()
    yield emu, host
    host.stop()


def test_bytes_round_trip_over_pty(served):
    emu, host = served
    assert os.path.islink(host.link_path)
    with SerialTransport(host.link_path, 9600) as port:
        port.write(b"hello\r")
        assert port.read_until(b"\r", timeout=2.0) == b"HELLO\r"
        # two commands in one write, read back one at a time
        port.write(b"ab\rcd\r")
        assert port.read_until(b"\r", timeout=2.0) == b"AB\r"
        assert port.read(3, timeout=2.0) == b"CD\r"
    assert emu.received == [b"hello\r", b"ab\r", b"cd\r"]


def test_no_reply_fault_times_out_then_recovers(served):
    emu, host = served
    with SerialTransport(host.link_path) as port:
        emu.inject("no_reply", count=1)
        port.write(b"x\r")
        with pytest.raises(CommunicationTimeout, match="no b'\\\\r'-terminated reply"):
            port.read_until(b"\r", timeout=0.2)
        port.write(b"y\r")
        assert port.read_until(b"\r", timeout=2.0) == b"Y\r"


def test_garbled_fault_corrupts_payload_keeps_frame_end(served):
    emu, host = served
    with SerialTransport(host.link_path) as port:
        emu.inject("garbled")
        port.write(b"abc\r")
        reply = port.read_until(b"\r", timeout=2.0)
        assert reply != b"ABC\r" and reply.endswith(b"\r") and len(reply) == 4


def test_disconnect_removes_link_and_reconnect_restores_it(served):
    emu, host = served
    port = SerialTransport(host.link_path)
    emu.inject("disconnect")
    assert emu.disconnected
    with pytest.raises(CommunicationTimeout):
        port.write(b"a\r")
        port.read_until(b"\r", timeout=0.3)
    port.close()
    emu.clear_faults()
    assert host.wait_connected(timeout=2.0)
    port.reopen()
    port.write(b"back\r")
    assert port.read_until(b"\r", timeout=2.0) == b"BACK\r"
    port.close()


def test_missing_port_names_the_port(tmp_path):
    missing = str(tmp_path / "no-such-tty")
    with pytest.raises(DeviceNotFoundError, match="no-such-tty"):
        SerialTransport(missing)


def test_unknown_fault_is_rejected():
    with pytest.raises(ValueError, match="unknown fault 'stall'"):
        UpperEcho("echo").inject("stall")
