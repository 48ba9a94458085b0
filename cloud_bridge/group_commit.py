"""Group commit of task submissions: one writer thread stores every submission that is waiting
when it becomes free, in one transaction, and only then answers each of them.

Under load this replaces N transactions (N commits, N trips through the thread pool, N waits for
SQLite's single write lock) by one per batch; a lone request is written at once (no timer, no
waiting for company). Each request's answer still comes after the commit that holds its task.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any

from cloud_bridge import store
from cloud_bridge.db import Database

log = logging.getLogger("cloud_bridge.group_commit")
_STOP = object()


class GroupCommitter:
    """Writer thread for ``store.store_submissions``; ``await submit(sub)`` from any event loop.

    One thread for both databases: SQLite has one writer at a time anyway, and on PostgreSQL a
    second writer thread (sending the next batch while the first waits for its commit) made no
    difference we could measure on the 2-core host."""

    def __init__(self, db: Database, *, max_batch: int = 256) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0  # statistics, for tests and the benchmark's log
        self.stored = 0

    async def submit(self, sub: store.Submission) -> tuple[dict[str, Any], bool]:
        """(task view, created) once the transaction holding ``sub`` is committed; ConflictError
        for a reused Idempotency-Key with another body; the database's error if the commit failed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._ensure_running()
        self._queue.put((sub, loop, future))
        return await future

    def _ensure_running(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
                self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Store what is queued, then end the thread (a later ``submit`` starts it again)."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None or not thread.is_alive():
                return
            self._queue.put(_STOP)
        thread.join(timeout_s)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            try:
                outcomes: list[Any] = store.store_submissions(self.db, [sub for sub, _, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every request of the batch gets the database's error
                outcomes = [exc] * len(batch)
            else:
                self.batches += 1
                self.stored += len(batch)
            by_loop: dict[Any, list[tuple[asyncio.Future[Any], Any]]] = {}
            for (_, loop, future), outcome in zip(batch, outcomes):
                by_loop.setdefault(loop, []).append((future, outcome))
            for loop, settled in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle, settled)  # one wake-up of the loop per batch
                except RuntimeError:
                    log.warning("event loop closed before %d stored submissions were answered", len(settled))


def _settle(settled: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, outcome in settled:
        if future.done():  # the request was cancelled (client gone); its task is stored all the same
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
