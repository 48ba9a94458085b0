"""The one seam between a driver and its device: a byte transport.

Drivers take a ``Transport``. On hardware it is ``SerialTransport`` (pyserial); in the twin it is
the same ``SerialTransport`` opened on the pseudo-terminal an emulator is served on
(``sim.pty_host``), or, for fast in-process runs, any object with the same methods. A transport
knows nothing about any protocol: it moves bytes and enforces timeouts.

Errors: a port that does not exist -> ``DeviceNotFoundError`` naming the port; no (complete)
reply within the timeout -> ``CommunicationTimeout``; a port that disappears while in use ->
``ConnectionLost`` (a ``CommunicationTimeout``: retry after ``reopen()``). ``link_lost()`` tells,
without reading or writing, whether the port has hung up (its device, or the twin serving it,
went away): a node can watch its links while nothing is being exchanged.
"""

from __future__ import annotations

import os
import time

try:
    import termios

    _TTY_ERRORS: tuple[type[BaseException], ...] = (OSError, termios.error)
except ImportError:  # not a POSIX system
    _TTY_ERRORS = (OSError,)
from typing import Protocol, runtime_checkable

from aichemist.errors import CommunicationTimeout, DeviceNotFoundError


class ConnectionLost(CommunicationTimeout):
    """The port went away while in use (cable pulled, emulator disconnected).

    Across a ROS boundary it travels as a ``CommunicationTimeout`` (same code, retryable): the
    receiving side rebuilds errors from ``aichemist.errors`` and need not import this module."""

    @property
    def error_type(self) -> str:
        return "CommunicationTimeout"


@runtime_checkable
class Transport(Protocol):
    port: str

    def write(self, data: bytes) -> None: ...

    def read_until(self, terminator: bytes, timeout: float) -> bytes:
        """Bytes up to and including ``terminator``; CommunicationTimeout if it does not come."""

    def read(self, n: int, timeout: float) -> bytes:
        """Exactly ``n`` bytes; CommunicationTimeout if fewer arrive in time."""

    def reset_input(self) -> None:
        """Drop whatever is waiting in the input buffer (stale or garbled bytes)."""

    def reopen(self) -> None:
        """Close and open the port again (after a disconnect)."""

    def close(self) -> None: ...


class SerialTransport:
    """A serial port through pyserial. Opened by ``open()`` (or on construction if ``open_now``)."""

    def __init__(self, port: str, baudrate: int = 9600, *, bytesize: int = 8, parity: str = "N",
                 stopbits: float = 1, rtscts: bool = False, xonxoff: bool = False,
                 open_now: bool = True) -> None:
        self.port = port
        self.baudrate = baudrate
        self._settings = dict(bytesize=bytesize, parity=parity, stopbits=stopbits, rtscts=rtscts,
                              xonxoff=xonxoff)
        self._serial = None
        if open_now:
            self.open()

    # --- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        import serial  # pyserial; imported here so the module imports without it

        if not os.path.exists(self.port) and not self.port.startswith(("socket://", "loop://", "rfc2217://")):
            raise DeviceNotFoundError(f"serial port {self.port!r} does not exist", port=self.port)
        try:
            self._serial = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0,
                                                 exclusive=None, **self._settings)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DeviceNotFoundError(f"cannot open serial port {self.port!r}: {exc}", port=self.port) from exc

    @property
    def is_open(self) -> bool:
        return self._serial is not None and self._serial.is_open

    def reopen(self) -> None:
        self.close()
        self.open()

    def close(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except Exception:  # closing a port that vanished must not hide the original error
                pass
            self._serial = None

    def link_lost(self) -> bool:
        """True when the port is closed or has hung up (poll reports POLLHUP/POLLERR/POLLNVAL):
        the other end is gone, e.g. an unplugged USB adapter or the pty of a twin that died.
        Nothing is read. False for ports that cannot be polled (URLs without a file descriptor)."""
        import select

        ser = self._serial
        if ser is None or not ser.is_open:
            return True
        try:
            fd = ser.fileno()
        except Exception:  # socket:// and other URL ports: no descriptor to poll
            return False
        poller = select.poll()
        poller.register(fd, select.POLLPRI)  # not POLLIN: waiting input is no sign of trouble
        try:
            events = poller.poll(0)
        except OSError:
            return True
        return any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _fd, ev in events)

    def __enter__(self) -> "SerialTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- bytes -------------------------------------------------------------------------------
    def _port(self):
        if self._serial is None:
            raise ConnectionLost(f"serial port {self.port!r} is not open", port=self.port)
        return self._serial

    def write(self, data: bytes) -> None:
        import serial

        try:
            self._port().write(data)
            self._port().flush()
        except (serial.SerialException, *_TTY_ERRORS) as exc:
            raise ConnectionLost(f"serial port {self.port!r}: write failed: {exc}", port=self.port) from exc

    def _read_some(self, max_bytes: int, deadline: float) -> bytes:
        import serial

        ser = self._port()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b""
        try:
            # pyserial's own timeout drives the wait, so no polling loop here. Setting it
            # reconfigures the port, which fails too (EIO) when the port has just vanished.
            ser.timeout = min(remaining, 0.05)
            return ser.read(max(1, min(max_bytes, ser.in_waiting or 1)))
        except (serial.SerialException, *_TTY_ERRORS) as exc:
            raise ConnectionLost(f"serial port {self.port!r}: read failed: {exc}", port=self.port) from exc

    def read_until(self, terminator: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        buf = bytearray()
        while True:
            idx = buf.find(terminator)
            if idx >= 0:
                end = idx + len(terminator)
                if end < len(buf):  # keep bytes after the terminator for the next read
                    self._pushback = bytes(buf[end:]) + getattr(self, "_pushback", b"")
                return bytes(buf[:end])
            chunk = self._take_pushback() or self._read_some(4096, deadline)
            if chunk:
                buf += chunk
            elif time.monotonic() >= deadline:
                raise CommunicationTimeout(
                    f"serial port {self.port!r}: no {terminator!r}-terminated reply within {timeout:.3g} s"
                    + (f" (got {bytes(buf)!r})" if buf else ""), port=self.port, partial=bytes(buf))

    def read(self, n: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        buf = bytearray(self._take_pushback(n))
        while len(buf) < n:
            chunk = self._read_some(n - len(buf), deadline)
            if chunk:
                buf += chunk
            elif time.monotonic() >= deadline:
                raise CommunicationTimeout(
                    f"serial port {self.port!r}: {len(buf)} of {n} bytes within {timeout:.3g} s",
                    port=self.port, partial=bytes(buf))
        return bytes(buf)

    def _take_pushback(self, n: int | None = None) -> bytes:
        pb = getattr(self, "_pushback", b"")
        if not pb:
            return b""
        n = len(pb) if n is None else n
        self._pushback = pb[n:]
        return pb[:n]

    def reset_input(self) -> None:
        import serial

        self._pushback = b""
        try:
            self._port().reset_input_buffer()
        except (serial.SerialException, *_TTY_ERRORS) as exc:
            raise ConnectionLost(f"serial port {self.port!r}: {exc}", port=self.port) from exc
