"""VICI Valco universal electric actuator (EUH/EUD/EUT, multiposition mode) driving a selector
valve.

Protocol: VICI Valco Instruments "Universal Electric Actuator" instruction manual, section
"Optional Serial Interface" (command table and command reference):

- RS-232, 9600 baud 8N1 by default (``SB`` changes it); commands end with CR (``DEL`` can change
  the delimiter); with a device ID set (``ID`` 0-9 / A-Z) every command is prefixed with it;
- ``AM`` -> ``AMn`` actuator mode (3 = multiposition); ``NP`` -> ``NPnn`` number of positions;
- ``GOnn`` moves to position nn by the shortest route (multiposition); ``HM`` home (position 1);
- ``CP`` -> ``CPnn`` current position; ``VR`` firmware version; ``CNT`` actuation counter;
- action commands answer nothing when the interface response mode is ``IFM0`` (this driver
  sets it at connect, then confirms every move by reading ``CP``).
Answers end with CR.
"""

from __future__ import annotations

import re

from aichemist.clock import Clock, WallClock
from aichemist.errors import CommunicationTimeout, DeviceError, LimitError

from ..transport import Transport
from .base import SerialDevice, SerialDriver, check_range


class ValvePositionError(DeviceError):
    """The actuator did not reach (or does not report) the commanded position."""


class ViciUniversalActuator(SerialDevice):
    """Driver for a VICI universal electric actuator in multiposition mode (role: ``Valve``).

    ``num_positions`` is the valve's (checked against the actuator's NP at connect: a different
    valve on the port is an identity error). ``switch_to`` sends GOnn and polls CP on ``clock``
    until the position is confirmed or ``move_timeout_s`` passes (ValvePositionError).
    """

    SERIAL_SETTINGS = {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1}
    vendor = "VICI Valco"

    def __init__(self, name: str, transport: Transport, *, num_positions: int = 6, device_id: str = "",
                 move_timeout_s: float = 3.0, poll_s: float = 0.05, clock: Clock | None = None,
                 reply_timeout_s: float = 1.0) -> None:
        if not (2 <= num_positions <= 40):
            raise ValueError(f"{name}: num_positions must be 2..40, got {num_positions}")
        if device_id and not re.fullmatch(r"[0-9A-Z]", device_id):
            raise ValueError(f"{name}: device_id must be one of 0-9 or A-Z, got {device_id!r}")
        self._driver = SerialDriver(name, transport)
        self._driver.terminator = b"\r"
        self._driver.reply_timeout_s = reply_timeout_s
        self._driver.vendor, self._driver.model = self.vendor, "universal electric actuator"
        self.name = name
        self._num_positions = num_positions
        self.device_id = device_id
        self.move_timeout_s = move_timeout_s
        self.poll_s = poll_s
        self.clock = clock or WallClock()
        #: ``clock`` time at which the last move command went out (the valve starts moving then;
        #: the confirmation by ``CP`` can come much later on a busy host)
        self.commanded_at_s: float | None = None

    @property
    def transport(self) -> Transport:
        return self._driver.transport

    @property
    def num_positions(self) -> int:
        return self._num_positions

    # --- bytes -------------------------------------------------------------------------------
    def _frame(self, command: str) -> bytes:
        return f"{self.device_id}{command}\r".encode("ascii")

    def _send(self, command: str) -> None:
        """An action/setting command: no answer in IFM0."""
        with self._driver._lock:
            self.transport.reset_input()
            self.transport.write(self._frame(command))

    def _query(self, command: str, prefix: str) -> str:
        reply = self._driver._exchange(self._frame(command))
        text = reply.decode("ascii", errors="replace").strip()
        # the answer may be preceded by the device ID; it must carry the queried prefix
        idx = text.find(prefix)
        if idx < 0 or idx > 1:
            raise self._driver._protocol_error(f"'{prefix}...' in reply to {command!r}", reply)
        return text[idx + len(prefix):].strip().lstrip("=").strip()

    def _query_int(self, command: str, prefix: str) -> int:
        value = self._query(command, prefix)
        if not value.isdigit():
            raise self._driver._protocol_error(f"'{prefix}<number>' in reply to {command!r}", value)
        return int(value)

    # --- lifecycle ---------------------------------------------------------------------------
    def identify(self) -> str:
        mode = self._query_int("AM", "AM")
        positions = self._query_int("NP", "NP")
        return f"VICI universal actuator, mode {mode}, {positions} positions"

    def connect(self) -> None:
        try:
            mode = self._query_int("AM", "AM")
            positions = self._query_int("NP", "NP")
        except DeviceError as exc:
            if isinstance(exc, CommunicationTimeout):
                raise
            raise self._driver._identity_mismatch("a VICI universal actuator answering 'AMn'/'NPnn'",
                                                  str(exc.details.get("got", exc))) from exc
        if mode != 3 or positions != self._num_positions:
            raise self._driver._identity_mismatch(
                f"a multiposition actuator (AM3) with {self._num_positions} positions",
                f"AM{mode}, NP{positions}")
        self._send("IFM0")  # no answer to action commands: every move is confirmed with CP
        self._driver.connected = True

    def safe_state(self) -> None:
        """A valve holds its position: nothing to drive (moving could route flow unexpectedly)."""

    # --- role: Valve -------------------------------------------------------------------------
    def switch_to(self, position: int) -> None:
        if isinstance(position, bool) or not isinstance(position, int):
            raise LimitError("position", position, f"1..{self._num_positions}", device=self.name)
        check_range(self.name, "position", position, 1, self._num_positions)
        self._send(f"GO{position:02d}")
        self.commanded_at_s = self.clock.now()
        deadline = self.clock.now() + self.move_timeout_s
        reported = None
        while True:
            reported = self.position()
            if reported == position:
                return
            if self.clock.now() >= deadline:
                raise ValvePositionError(
                    f"{self.name}: position {position} not confirmed within {self.move_timeout_s:g} s "
                    f"(actuator reports {reported})", device=self.name, commanded=position, reported=reported)
            self.clock.sleep(self.poll_s)

    def position(self) -> int:
        return self._query_int("CP", "CP")

    def home(self) -> None:
        self.switch_to(1)

    def read_cycle_count(self) -> int:
        return self._query_int("CNT", "CNT")

    def __repr__(self) -> str:
        return f"ViciUniversalActuator({self.name!r}, positions={self._num_positions}, port={self.transport.port!r})"


class ViciTwoPositionValve(ViciUniversalActuator):
    """A VICI universal actuator in a two-position mode (AM1 with stops / AM2), e.g. a Cheminert
    injection valve: position A (= 1, "load") and B (= 2, "inject"). ``GOA`` / ``GOB`` move,
    ``CP`` answers ``CPA`` / ``CPB`` (same manual, two-position examples)."""

    LETTERS = {1: "A", 2: "B"}

    def __init__(self, name: str, transport: Transport, **kw) -> None:
        kw.pop("num_positions", None)
        super().__init__(name, transport, num_positions=2, **kw)

    def connect(self) -> None:
        try:
            mode = self._query_int("AM", "AM")
        except DeviceError as exc:
            if isinstance(exc, CommunicationTimeout):
                raise
            raise self._driver._identity_mismatch("a VICI universal actuator answering 'AMn'",
                                                  str(exc.details.get("got", exc))) from exc
        if mode not in (1, 2):
            raise self._driver._identity_mismatch("a two-position actuator (AM1 or AM2)", f"AM{mode}")
        self._send("IFM0")
        self._driver.connected = True

    def identify(self) -> str:
        return f"VICI universal actuator, mode {self._query_int('AM', 'AM')}, two positions"

    def switch_to(self, position: int) -> None:
        if isinstance(position, bool) or not isinstance(position, int):
            raise LimitError("position", position, "1..2", device=self.name)
        check_range(self.name, "position", position, 1, 2)
        self._send(f"GO{self.LETTERS[position]}")
        self.commanded_at_s = self.clock.now()
        deadline = self.clock.now() + self.move_timeout_s
        while True:
            reported = self.position()
            if reported == position:
                return
            if self.clock.now() >= deadline:
                raise ValvePositionError(
                    f"{self.name}: position {self.LETTERS[position]} not confirmed within "
                    f"{self.move_timeout_s:g} s (actuator reports {self.LETTERS.get(reported, reported)})",
                    device=self.name, commanded=position, reported=reported)
            self.clock.sleep(self.poll_s)

    def position(self) -> int:
        value = self._query("CP", "CP")
        if value not in ("A", "B"):
            raise self._driver._protocol_error("'CPA' or 'CPB' in reply to 'CP'", value)
        return 1 if value == "A" else 2

    def load(self) -> None:
        self.switch_to(1)

    def inject(self) -> None:
        self.switch_to(2)
