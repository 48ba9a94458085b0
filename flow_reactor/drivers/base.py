"""Shared driver machinery: one exchange (write, read reply, map errors), limit checks, identity."""

from __future__ import annotations

import logging
import threading
from typing import Callable

from aichemist.errors import (CommunicationTimeout, DeviceIdentityError, LimitError, ProtocolError)

from ..transport import Transport

log = logging.getLogger(__name__)


def check_range(device: str, field: str, value: float, lo: float, hi: float, unit: str = "") -> float:
    """Return ``value`` if lo <= value <= hi, else raise LimitError naming device, field and limit.

    NaN and non-numbers are rejected too: a setpoint that cannot be compared is out of range.
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise LimitError(field, value, f"{lo}..{hi}", unit=unit, device=device) from None
    if v != v:  # NaN
        raise LimitError(field, value, f"{lo}..{hi}", unit=unit, device=device)
    if v < lo:
        raise LimitError(field, value, lo, bound="min", unit=unit, device=device)
    if v > hi:
        raise LimitError(field, value, hi, bound="max", unit=unit, device=device)
    return v


class SerialDriver:
    """Base of the line-oriented drivers: ``_exchange(command) -> reply`` over the transport.

    Subclasses set ``terminator`` (end of a reply) and ``reply_timeout_s``; ``connect()`` calls
    ``identify()`` and checks it with ``_check_identity``. A lock serialises exchanges so a state
    publisher thread and a controller thread never interleave bytes on one port.
    """

    terminator: bytes = b"\r"
    reply_timeout_s: float = 1.0
    vendor: str = ""
    model: str = ""

    def __init__(self, name: str, transport: Transport) -> None:
        self.name = name
        self.transport = transport
        self._lock = threading.RLock()
        self.connected = False

    # --- lifecycle ---------------------------------------------------------------------------
    def connect(self) -> None:
        ident = self.identify()
        self._check_identity(ident)
        self.connected = True
        log.info("%s: connected to %s", self.name, ident)

    def close(self) -> None:
        self.connected = False
        self.transport.close()

    def reconnect(self) -> None:
        """Reopen the port (after a disconnect) and check the identity again."""
        with self._lock:
            self.transport.reopen()
            self.connect()

    def _check_identity(self, ident: str) -> None:
        """Default: nothing to compare. Drivers with an identity command override."""

    def _identity_mismatch(self, expected: str, got: str) -> DeviceIdentityError:
        return DeviceIdentityError(
            f"{self.name}: expected {expected} on {self.transport.port}, but the device identified as {got!r}",
            device=self.name, expected=expected, got=got, port=self.transport.port)

    def drain_input(self, quiet_s: float = 0.05, max_bytes: int = 1 << 16) -> int:
        """Read and drop whatever still arrives (the tail of a garbled frame) until the line has
        been quiet for ``quiet_s``; returns the number of bytes dropped."""
        dropped = 0
        while dropped < max_bytes:
            try:
                dropped += len(self.transport.read(1, quiet_s))
            except CommunicationTimeout:
                break
            except Exception:  # a port that fails here fails again on the next exchange
                break
        return dropped

    def _protocol_error(self, expected: str, got: bytes | str) -> ProtocolError:
        """The error for an unparseable reply; drains the rest of the bad frame first so the next
        exchange starts clean."""
        self.drain_input()
        return ProtocolError(f"{self.name} ({self.vendor} {self.model}): expected {expected}, got {got!r}",
                             device=self.name, expected=expected, got=repr(got))

    # --- one command -------------------------------------------------------------------------
    def _exchange(self, command: bytes, *, terminator: bytes | None = None,
                  timeout: float | None = None) -> bytes:
        term = terminator or self.terminator
        with self._lock:
            try:
                self.transport.reset_input()  # stale bytes from an earlier garbled reply
                self.transport.write(command)
                return self.transport.read_until(term, timeout if timeout is not None else self.reply_timeout_s)
            except CommunicationTimeout as exc:  # keep the type (ConnectionLost: reopen the port)
                raise type(exc)(f"{self.name} ({self.vendor} {self.model}): no reply to "
                                f"{command!r}: {exc}", device=self.name,
                                command=command.decode("latin-1")) from exc

    def _best_effort(self, what: str, action: Callable[[], object]) -> bool:
        """Run ``action`` for safe_state: log and continue on failure, report success."""
        try:
            action()
            return True
        except Exception as exc:  # safe_state must try every step even when one fails
            log.error("%s: safe state step %r failed: %s", self.name, what, exc)
            return False


class SerialDevice:
    """What every device class built on a ``SerialDriver`` (held as ``_driver``, with its
    ``transport``) shares: closing through the driver, and reconnecting after a disconnect
    (reopen the port, then the device's own ``connect()`` checks the identity again), with the
    driver's lock held so no exchange interleaves."""

    _driver: SerialDriver
    transport: Transport
    connect: Callable[[], None]  # each device class checks its own identity

    def close(self) -> None:
        self._driver.close()

    def reconnect(self) -> None:
        with self._driver._lock:
            self.transport.reopen()
            self.connect()
