"""A port that vanishes mid-read is a typed ConnectionLost, whichever pyserial call notices it."""

from __future__ import annotations

import termios

import pytest

from flow_reactor.transport import ConnectionLost, SerialTransport


class _VanishedPort:
    """pyserial reconfigures the port when its timeout is set: on a vanished pty that is EIO."""

    in_waiting = 0

    @property
    def timeout(self) -> float:
        return 0.05

    @timeout.setter
    def timeout(self, _value: float) -> None:
        raise termios.error(5, "Input/output error")

    def read(self, _n: int) -> bytes:
        raise AssertionError("not reached")

    def close(self) -> None:
        pass


def test_eio_while_setting_the_read_timeout_is_connection_lost():


    transport = SerialTransport("/dev/pts/vanished", open_now=False)
    transport._serial = _VanishedPort()
    with pytest.raises(ConnectionLost, match="/dev/pts/vanished"):
        transport.read(4, timeout=0.5)
