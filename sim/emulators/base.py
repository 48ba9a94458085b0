"""Shared machinery of the device emulators: framing, fault injection, thread safety."""

from __future__ import annotations

import abc
import threading
from typing import Any

import numpy as np

#: Faults every emulator understands; devices add their own (stall, pressure_spike, ...).
COMMON_FAULTS = ("garbled", "no_reply", "disconnect")


class EmulatorBase(abc.ABC):
    """Base class: split the incoming byte stream into frames, answer each, apply faults.

    Subclasses set ``terminator`` (or override ``_next_frame`` for binary framing), implement
    ``handle(frame) -> bytes`` and, for physics, ``step(t, dt)``. ``feed`` and ``step`` hold one
    lock, so the pty thread and the twin's stepping thread never interleave.

    Faults (``inject(name, **kw)``; ``clear_faults()``):
    - ``garbled``: replies are corrupted (bytes replaced), ``count`` replies or until cleared;
    - ``no_reply``: commands are read but never answered;
    - ``disconnect``: the device goes away (``disconnected`` is true: the pty host closes the port;
      in-process transports raise); clearing it reconnects.
    """

    terminator: bytes = b"\r"
    reply_terminator: bytes | None = None  # end of the device's answers, if not ``terminator``
    device_faults: tuple[str, ...] = ()

    def __init__(self, name: str = "", *, seed: int = 0) -> None:
        self.name = name or type(self).__name__
        self.rng = np.random.default_rng(seed)
        self._buf = bytearray()
        self._lock = threading.RLock()
        self.faults: dict[str, dict[str, Any]] = {}
        self.received: list[bytes] = []  # every complete frame, for tests and logs
        self.t_s = 0.0

    # --- faults ------------------------------------------------------------------------------
    @property
    def supported_faults(self) -> tuple[str, ...]:
        return COMMON_FAULTS + self.device_faults

    def inject(self, fault: str, **kw: Any) -> None:
        if fault not in self.supported_faults:
            raise ValueError(f"{self.name}: unknown fault {fault!r}; supported: {', '.join(self.supported_faults)}")
        with self._lock:
            self.faults[fault] = dict(kw)
            self._on_fault(fault, kw)

    def clear_faults(self, fault: str | None = None) -> None:
        with self._lock:
            names = list(self.faults) if fault is None else [fault]
            for name in names:
                if self.faults.pop(name, None) is not None:
                    self._on_fault_cleared(name)
            if "disconnect" in names:
                self._buf.clear()

    def has_fault(self, fault: str) -> bool:
        return fault in self.faults

    def _on_fault(self, fault: str, kw: dict[str, Any]) -> None:
        """Hook for device faults that change physics at once."""

    def _on_fault_cleared(self, fault: str) -> None:
        """Hook for undoing a device fault."""

    @property
    def disconnected(self) -> bool:
        return "disconnect" in self.faults

    def _consume_counted(self, fault: str) -> bool:
        """True if ``fault`` applies to this reply; counts down ``count`` if one was given."""
        spec = self.faults.get(fault)
        if spec is None:
            return False
        count = spec.get("count")
        if count is not None:
            if count <= 1:
                self.faults.pop(fault, None)
            else:
                spec["count"] = count - 1
        return True

    # --- bytes -------------------------------------------------------------------------------
    def _next_frame(self) -> bytes | None:
        idx = self._buf.find(self.terminator)
        if idx < 0:
            return None
        frame = bytes(self._buf[: idx + len(self.terminator)])
        del self._buf[: idx + len(self.terminator)]
        return frame

    def feed(self, data: bytes) -> bytes:
        """What the device answers to ``data`` (possibly several or partial commands)."""
        with self._lock:
            if self.disconnected:
                return b""
            self._buf += data
            out = bytearray()
            while (frame := self._next_frame()) is not None:
                self.received.append(frame)
                reply = self.handle(frame)
                if not reply:
                    continue
                if self._consume_counted("no_reply"):
                    continue
                if self._consume_counted("garbled"):
                    reply = self._garble(reply)
                out += reply
            return bytes(out)

    def _garble(self, reply: bytes) -> bytes:
        """Replace the payload with noise but keep the length and the frame end, the way line
        noise corrupts a reply without hiding that one arrived."""
        end = self.reply_terminator or self.terminator
        keep = len(end) if reply.endswith(end) else 0
        body = len(reply) - keep
        if body <= 0:
            return bytes([0xFF]) + reply
        noise = self.rng.integers(0x80, 0x100, size=body, dtype=np.uint8).tobytes()
        return noise + reply[body:]

    @abc.abstractmethod
    def handle(self, frame: bytes) -> bytes:
        """The device's reply to one complete command frame (b"" for none)."""

    # --- physics -----------------------------------------------------------------------------
    def step(self, t: float, dt: float) -> None:
        """Advance the device's physics by ``dt`` seconds (simulated)."""
        with self._lock:
            self.t_s = t + dt
            self._step(t, dt)

    def _step(self, t: float, dt: float) -> None:
        """Override for devices with dynamics."""
