"""Serve a device emulator on a pseudo-terminal, the way the real device sits on a serial port.

``PtyHost(emulator, link_path)`` opens a pty pair, puts the slave side in raw mode, points a stable
symlink (``link_path``) at the slave device and runs a background thread that reads the bytes a
driver writes to that port, hands them to ``emulator.feed(data)`` and writes back what the device
would answer. A driver opens ``link_path`` with an ordinary serial transport: the same code as on
hardware.

Disconnect/reconnect: when the emulator reports ``disconnected`` (fault ``disconnect``), the host
closes the pty and removes the symlink, as if the cable were pulled (a driver's open port reads
EOF/EIO); when the fault is cleared it opens a fresh pty and points the symlink at it again, so a
driver that reopens ``link_path`` reconnects.

Emulators only need ``feed(data: bytes) -> bytes`` and optionally a ``disconnected`` attribute.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import tty
from typing import Protocol

log = logging.getLogger(__name__)


class ByteEmulator(Protocol):
    def feed(self, data: bytes) -> bytes: ...


class PtyHost:
    def __init__(self, emulator: ByteEmulator, link_path: str | os.PathLike[str], *,
                 poll_s: float = 0.02) -> None:
        self.emulator = emulator
        self.link_path = os.fspath(link_path)
        self.poll_s = poll_s
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._linked = threading.Event()  # set while the port is served (link present)
        self.bytes_in = 0
        self.bytes_out = 0

    # --- pty pair ----------------------------------------------------------------------------
    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: bytes pass unchanged
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        slave_name = os.ttyname(slave)
        os.makedirs(os.path.dirname(os.path.abspath(self.link_path)), exist_ok=True)
        tmp = f"{self.link_path}.tmp{os.getpid()}"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(slave_name, tmp)
        os.replace(tmp, self.link_path)  # atomic: a reader never sees a missing link while swapping
        self._linked.set()

    def _close_pty(self) -> None:
        self._linked.clear()
        if os.path.islink(self.link_path):
            try:
                os.unlink(self.link_path)
            except FileNotFoundError:
                pass
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None

    def wait_connected(self, timeout: float) -> bool:
        """Block until the port is served (e.g. after a reconnect); False on timeout."""
        return self._linked.wait(timeout)

    @property
    def slave_name(self) -> str | None:
        return os.ttyname(self._slave) if self._slave is not None else None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "PtyHost":
        self._open_pty()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"pty:{os.path.basename(self.link_path)}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        with self._lock:
            self._close_pty()

    def __enter__(self) -> "PtyHost":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- serving loop ------------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            disconnected = bool(getattr(self.emulator, "disconnected", False))
            with self._lock:
                if disconnected and self._master is not None:
                    log.info("%s: emulated disconnect", self.link_path)
                    self._close_pty()
                elif not disconnected and self._master is None:
                    log.info("%s: emulated reconnect", self.link_path)
                    self._open_pty()
                master = self._master
            if master is None:
                self._stop.wait(self.poll_s)
                continue
            try:
                ready, _, _ = select.select([master], [], [], self.poll_s)
            except (OSError, ValueError):
                continue  # fd closed under us by a disconnect
            if not ready:
                continue
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EBADF):
                    self._stop.wait(self.poll_s)
                    continue
                raise
            if not data:
                continue
            self.bytes_in += len(data)
            try:
                reply = self.emulator.feed(data)
            except Exception:  # an emulator bug must not kill the port silently
                log.exception("%s: emulator raised", self.link_path)
                continue
            if reply:
                self._write_all(master, reply)

    def _write_all(self, master: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(master, view)
            except BlockingIOError:
                select.select([], [master], [], self.poll_s)
                continue
            except OSError:
                return
            self.bytes_out += n
            view = view[n:]
