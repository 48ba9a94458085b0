"""A scripted transport: canned device replies for byte-level driver tests (a test double shipped
with the twin, like the emulators). Each ``write`` queues the next canned reply (or the reply mapped
to exactly those bytes); everything written is recorded; a missing reply is a CommunicationTimeout."""

from __future__ import annotations

from aichemist.errors import CommunicationTimeout


class ScriptedTransport:
    """Plays back canned replies: each write() queues the next reply of ``replies`` (or the value
    of ``answers[written bytes]``); records everything written. No reply -> CommunicationTimeout."""

    def __init__(self, replies: list[bytes] | None = None, answers: dict[bytes, bytes] | None = None,
                 port: str = "scripted") -> None:
        self.port = port
        self.replies = list(replies or [])
        self.answers = dict(answers or {})
        self.written: list[bytes] = []
        self._rx = bytearray()
        self.reopened = 0

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))
        if data in self.answers:
            self._rx += self.answers[data]
        elif self.replies and data != b"#":
            self._rx += self.replies.pop(0)

    def read_until(self, terminator: bytes, timeout: float) -> bytes:
        idx = self._rx.find(terminator)
        if idx < 0:
            raise CommunicationTimeout(f"{self.port}: no reply", port=self.port)
        out = bytes(self._rx[: idx + len(terminator)])
        del self._rx[: idx + len(terminator)]
        return out

    def read(self, n: int, timeout: float) -> bytes:
        if len(self._rx) < n:
            raise CommunicationTimeout(f"{self.port}: short reply", port=self.port)
        out = bytes(self._rx[:n])
        del self._rx[:n]
        return out

    def reset_input(self) -> None:
        pass

    def reopen(self) -> None:
        self.reopened += 1

    def close(self) -> None:
        pass
