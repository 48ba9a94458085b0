"""The bridge's API and its node start together and both migrate the same SQLite file: neither
may fail ("database is locked" made the API exit at start-up and be respawned)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading


def test_migrating_while_another_process_holds_the_write_lock_waits_instead_of_failing(tmp_path):
    path = tmp_path / "bridge.db"
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN EXCLUSIVE")  # the other process, mid-migration
    url = f"sqlite:///{path}"
    code = f"from cloud_bridge.db import Database; Database({url!r}).upgrade(); print('migrated')"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = threading.Event()
    # release the lock once the migrating process has met it (it prints nothing until done)
    threading.Timer(3.0, started.set).start()
    started.wait(10.0)
    holder.execute("COMMIT")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "migrated" in out, err[-800:]
    holder.close()
    from cloud_bridge.db import Database

    assert Database(url).at_head()


def test_processes_migrating_one_sqlite_file_at_once_all_succeed(tmp_path):
    url = f"sqlite:///{tmp_path / 'bridge.db'}"
    code = f"from cloud_bridge.db import Database; Database({url!r}).upgrade(); print('ok')"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-500:] for _, err in outs]
