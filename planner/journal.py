"""The planner's persistent task journal (SQLite): each task id runs at most once.

``begin`` records a task as running (ConflictError if the id was ever seen); ``finish`` writes
its terminal state once. When a planner restarts, ``recover`` fails every task that was in
flight, with the reason, so a re-sent goal for it is refused rather than run twice.
"""

from __future__ import annotations

import json
import pathlib
import sqlite3
import threading
import time
from typing import Any, Optional

from aichemist.errors import ConflictError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id     TEXT PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    task_json   TEXT NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL,
    code        INTEGER,
    error_type  TEXT,
    message     TEXT,
    result_json TEXT
)
"""


class TaskJournal:
    def __init__(self, path: str | pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def recover(self, reason: str = "the planner restarted while the task was running") -> list[str]:
        """Fail every task left 'running' by a previous process; returns their ids."""
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT task_id FROM tasks WHERE state = 'running'")]
            self._db.execute("UPDATE tasks SET state='failed', finished_at=?, code=99, error_type='StepTimeout', "
                             "message=? WHERE state='running'", (time.time(), reason))
        return ids

    def begin(self, task_id: str, task_json: str) -> None:
        with self._lock:
            try:
                self._db.execute("INSERT INTO tasks (task_id, state, task_json, started_at) VALUES (?, 'running', ?, ?)",
                                 (task_id, task_json, time.time()))
            except sqlite3.IntegrityError:
                row = self._db.execute("SELECT state, message FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
                raise ConflictError(f"task {task_id} was already run by this planner (state {row[0]}"
                                    + (f": {row[1]}" if row[1] else "") + "); refusing to run it twice",
                                    task_id=task_id, state=row[0]) from None

    def finish(self, task_id: str, *, code: int, error_type: str = "", message: str = "",
               result: Optional[dict[str, Any]] = None) -> None:
        state = "succeeded" if code == 0 else "failed"
        with self._lock:
            cur = self._db.execute(
                "UPDATE tasks SET state=?, finished_at=?, code=?, error_type=?, message=?, result_json=? "
                "WHERE task_id=? AND state='running'",
                (state, time.time(), code, error_type, message, json.dumps(result) if result is not None else None,
                 task_id))
            if cur.rowcount != 1:
                raise ConflictError(f"task {task_id} is not running; its terminal state is written once")

    def get(self, task_id: str) -> Optional[dict[str, Any]]:
        with self._lock:
            row = self._db.execute("SELECT task_id, state, code, error_type, message, result_json FROM tasks "
                                   "WHERE task_id = ?", (task_id,)).fetchone()
        if row is None:
            return None
        return {"task_id": row[0], "state": row[1], "code": row[2], "error_type": row[3], "message": row[4],
                "result": json.loads(row[5]) if row[5] else None}

    def close(self) -> None:
        with self._lock:
            self._db.close()
