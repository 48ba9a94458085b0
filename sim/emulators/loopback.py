"""In-process transport onto an emulator: the driver's bytes go to ``emulator.feed`` directly.

Same interface as ``flow_reactor.transport.SerialTransport`` (structurally; sim/ imports no
driver code), without a pty or a thread: used where the twin runs far faster than real time
(benchmarks, in-process controller tests). Replies are immediate, so a missing reply is a timeout
at once instead of after waiting.
"""

from __future__ import annotations

from aichemist.errors import CommunicationTimeout


class LoopbackTransport:
    def __init__(self, emulator, port: str = "") -> None:
        self.emulator = emulator
        self.port = port or f"loopback:{getattr(emulator, 'name', type(emulator).__name__)}"
        self._rx = bytearray()
        self.written = bytearray()  # everything the driver sent, for tests
        self.is_open = True

    def _check_connected(self) -> None:
        if getattr(self.emulator, "disconnected", False) or not self.is_open:
            self._rx.clear()
            raise CommunicationTimeout(f"{self.port}: device disconnected", port=self.port)

    def write(self, data: bytes) -> None:
        self._check_connected()
        self.written += data
        self._rx += self.emulator.feed(bytes(data))

    def read_until(self, terminator: bytes, timeout: float) -> bytes:
        self._check_connected()
        idx = self._rx.find(terminator)
        if idx < 0:
            partial = bytes(self._rx)
            raise CommunicationTimeout(
                f"{self.port}: no {terminator!r}-terminated reply" + (f" (got {partial!r})" if partial else ""),
                port=self.port, partial=partial)
        out = bytes(self._rx[: idx + len(terminator)])
        del self._rx[: idx + len(terminator)]
        return out

    def read(self, n: int, timeout: float) -> bytes:
        self._check_connected()
        if len(self._rx) < n:
            partial = bytes(self._rx)
            raise CommunicationTimeout(f"{self.port}: {len(partial)} of {n} bytes", port=self.port,
                                       partial=partial)
        out = bytes(self._rx[:n])
        del self._rx[:n]
        return out

    def reset_input(self) -> None:
        self._rx.clear()

    def reopen(self) -> None:
        self._rx.clear()
        self.is_open = True
        self._check_connected()

    def close(self) -> None:
        self.is_open = False
        self._rx.clear()
