"""Emulator of a VICI Valco universal electric actuator (multiposition mode) on a selector valve.

Written from VICI's "Universal Electric Actuator" instruction manual, "Optional Serial
Interface": CR-terminated commands, optionally prefixed with the device ID; ``AM`` -> ``AMn``,
``NP`` -> ``NPnn``, ``CP`` -> ``CPnn``, ``CNT`` -> ``CNTnnnnn``, ``VR`` -> firmware text,
``GOnn`` / ``HM`` / ``CWnn`` / ``CCnn`` move (no answer in IFM0; in IFM1 the basic response is the
new position), ``IFMn`` response mode, ``IDx`` sets the device ID. Unknown commands are ignored
(no answer) as on the device.

Two-position modes (``mode`` 1 or 2, e.g. a Cheminert injection valve): positions are A and B
(``position`` 1 and 2 here); ``GOA`` / ``GOB`` / ``CW`` (to A) / ``CC`` (to B) / ``TO`` (toggle)
move, ``CP`` answers ``CPA`` or ``CPB``.

Physics: a move takes ``move_time_per_position_s`` per position passed (simulated time, advanced by
``step``); ``0`` moves at once. ``position`` is the port the common outlet is connected to now.

Faults: ``garbled``, ``no_reply``, ``disconnect``; ``stuck`` (the actuator does not move: the valve
stays where it is, so the position is never confirmed).
"""

from __future__ import annotations

import re

from .base import EmulatorBase


class ViciActuatorEmulator(EmulatorBase):
    terminator = b"\r"
    device_faults = ("stuck",)

    def __init__(self, name: str = "vici", *, num_positions: int = 6, position: int = 1,
                 move_time_per_position_s: float = 0.0, firmware: str = "UA Main PCB 1.07",
                 device_id: str = "", mode: int = 3, seed: int = 0) -> None:
        super().__init__(name, seed=seed)
        self.mode = mode
        self.num_positions = num_positions if mode == 3 else 2
        self.position = position
        self.target = position
        self.interface_mode = 1
        self.move_time_per_position_s = move_time_per_position_s
        self.firmware = firmware
        self.device_id = device_id
        self.cycle_count = 0
        self._move_left_s = 0.0

    # --- physics -----------------------------------------------------------------------------
    def _distance(self, a: int, b: int) -> int:
        d = abs(a - b)
        return min(d, self.num_positions - d)

    def _start_move(self, target: int) -> None:
        if "stuck" in self.faults:
            return
        self.target = target
        distance = self._distance(self.position, target)
        self.cycle_count += distance
        self._move_left_s = distance * self.move_time_per_position_s
        if self._move_left_s <= 0:
            self.position = target

    def _step(self, t: float, dt: float) -> None:
        if self.position != self.target and "stuck" not in self.faults:
            self._move_left_s -= dt
            if self._move_left_s <= 0:
                self.position = self.target

    # --- bytes -------------------------------------------------------------------------------
    def handle(self, frame: bytes) -> bytes:
        text = frame.decode("ascii", errors="replace").strip().upper()
        if self.device_id:
            if not text.startswith(self.device_id):
                return b""  # addressed to another actuator
            text = text[len(self.device_id):]
        reply = self._answer(text)
        if reply is None:
            return b""
        return f"{self.device_id}{reply}\r".encode("ascii")

    def _answer(self, cmd: str) -> str | None:
        if self.mode in (1, 2):
            two = self._answer_two_position(cmd)
            if two is not False:
                return two
        if cmd == "AM":
            return f"AM{self.mode}"
        if cmd == "NP":
            return f"NP{self.num_positions}"
        if cmd == "CP":
            return f"CP{self.position:02d}"
        if cmd == "CNT":
            return f"CNT{self.cycle_count}"
        if cmd == "VR":
            return self.firmware
        if m := re.fullmatch(r"IFM([0-2])", cmd):
            self.interface_mode = int(m.group(1))
            return None
        if m := re.fullmatch(r"(GO|CW|CC)(\d{1,2})", cmd):
            target = int(m.group(2))
            if 1 <= target <= self.num_positions:
                self._start_move(target)
                return f"CP{self.target:02d}" if self.interface_mode >= 1 else None
            return None
        if cmd == "HM":
            self._start_move(1)
            return f"CP{self.target:02d}" if self.interface_mode >= 1 else None
        if m := re.fullmatch(r"NP(\d{1,2})", cmd):
            n = int(m.group(1))
            if 2 <= n <= 40 and n % 2 == 0:
                self.num_positions = n
            return None
        if m := re.fullmatch(r"AM([1-3])", cmd):
            self.mode = int(m.group(1))
            self.num_positions = self.num_positions if self.mode == 3 else 2
            return None
        if m := re.fullmatch(r"ID([0-9A-Z])", cmd):
            self.device_id = m.group(1)
            return None
        return None

    def _answer_two_position(self, cmd: str) -> str | None | bool:
        """Commands that differ in the two-position modes; False: not one of them."""
        letter = {1: "A", 2: "B"}
        moves = {"GOA": 1, "GOB": 2, "CW": 1, "CC": 2, "TO": 3 - self.target}
        if cmd == "CP":
            return f"CP{letter[self.position]}"
        if cmd == "GO":
            cmd = "TO"
            moves["TO"] = 3 - self.target
        if cmd in moves:
            self._start_move(moves[cmd])
            return f"CP{letter[self.target]}" if self.interface_mode >= 1 else None
        if re.fullmatch(r"(GO|CW|CC)\d{1,2}", cmd):
            return None  # numbered positions do not exist in the two-position modes
        return False
