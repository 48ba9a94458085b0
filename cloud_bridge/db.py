"""Engines, sessions and migrations.

SQLite is the embedded default, in WAL mode (readers never block the writer) with a busy timeout
so several processes (API server, bridge nodes) share one file. Write transactions on SQLite
start with ``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes can fail at once
with "database is locked" when another process committed in between, while an immediate one waits
for the lock (busy timeout). Read-only sessions stay deferred so they never queue behind writers.

Migrations are Alembic scripts shipped inside this package (``cloud_bridge/migrations``); they
run on server start-up and with ``aichemist db upgrade``.
"""

from __future__ import annotations

import contextlib
import pathlib
import threading
import time
from typing import Any, Iterator

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import OperationalError
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = pathlib.Path(__file__).with_name("migrations")
_IMMEDIATE = "aichemist_sqlite_immediate"


def _normalise_url(url: str) -> str:
    # "postgresql://" means psycopg 3 here (the only PostgreSQL driver installed).
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://"):]
    return url


def is_sqlite(url: str) -> bool:
    return make_url(_normalise_url(url)).get_backend_name() == "sqlite"


def make_engine(url: str, *, pool_size: int = 10, **options: Any) -> Engine:
    """``options`` (e.g. ``isolation_level``) are passed to ``create_engine`` on PostgreSQL only."""
    url = _normalise_url(url)
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            pathlib.Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               pool_size=pool_size, max_overflow=10)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see module doc)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            # checkpoints run in Database's background thread, not inside a request's commit
            cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # type: ignore[no-untyped-def]
            if conn.get_execution_options().get(_IMMEDIATE):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

        return engine
    # No pre-ping: it would add a round trip to every request. A connection broken by a database
    # restart fails one request (503, retryable) and the pool is then refreshed.
    return create_engine(url, pool_size=pool_size, max_overflow=10, pool_recycle=3600, **options)


class Database:
    """One engine and two session factories: ``read()`` and ``write()`` transactions."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = _normalise_url(url)
        self.engine = make_engine(self.url, pool_size=pool_size)
        self.sqlite = is_sqlite(self.url)
        write_engine = self.engine.execution_options(**{_IMMEDIATE: True}) if self.sqlite else self.engine
        self._write_engine = write_engine
        # SQLite has one writer at a time. Threads of this process queue on a lock instead of in
        # SQLite's busy handler, whose sleeps (up to 100 ms each) would make the latency tail.
        self._write_lock = threading.RLock() if self.sqlite else contextlib.nullcontext()
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        database = make_url(self.url).database if self.sqlite else None
        if database and database != ":memory:":
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, args=(database,),
                                                  name="sqlite-checkpoint", daemon=True)
            self._checkpointer.start()
        self._write = sessionmaker(write_engine, expire_on_commit=False)
        # PostgreSQL: connections in autocommit mode for writes made of ONE statement (see
        # write_statement); their own small pool, so the main pool's connections never change mode
        self._autocommit_engine = None if self.sqlite else make_engine(self.url, pool_size=2,
                                                                       isolation_level="AUTOCOMMIT")

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        with self._write_lock, self._write() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def write_core(self) -> Iterator[Any]:
        """A Core connection in a write transaction (no ORM session): for the hot path."""
        with self._write_lock, self._write_engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def write_statement(self) -> Iterator[Any]:
        """A Core connection for a write made of ONE statement, which is its own transaction.

        PostgreSQL: an autocommit connection, so the statement is committed when it returns
        (durable: ``synchronous_commit``) and costs one round trip instead of three (no separate
        BEGIN and COMMIT). Run a single statement on it: two would be two transactions.
        SQLite: a write transaction (``write_core``), committed at the end of the block."""
        if self._autocommit_engine is None:
            with self.write_core() as conn:
                yield conn
            return
        with self._autocommit_engine.connect() as conn:
            yield conn

    def upgrade(self, revision: str = "head") -> None:
        upgrade(self.url, revision, engine=self.engine)

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return True

    def at_head(self) -> bool:
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        heads = set(ScriptDirectory.from_config(alembic_config(self.url)).get_heads())
        with self.engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
        return current == heads

    def _checkpoint_loop(self, database: str, period_s: float = 1.0) -> None:
        """Copy the WAL back into the database file once a second (PASSIVE: never blocks readers or
        the writer). Doing it here keeps the copy and its fsync out of the write lock: SQLite's
        automatic checkpoint would run inside whichever request's commit crossed the threshold."""
        import sqlite3

        conn = None
        while not self._stop.wait(period_s):
            try:
                if conn is None:
                    conn = sqlite3.connect(database, timeout=5, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass  # busy or not yet created: try again next period
        if conn is not None:
            conn.close()

    def dispose(self) -> None:
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=5)
        self.engine.dispose()
        if self._autocommit_engine is not None:
            self._autocommit_engine.dispose()


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", _normalise_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head", *, engine: Engine | None = None) -> None:
    """Bring the database at ``url`` to ``revision`` (idempotent; safe with several processes on
    PostgreSQL thanks to an advisory lock, and on SQLite thanks to the immediate transaction)."""
    own = engine is None
    engine = engine or make_engine(url)
    try:
        for attempt in range(20):
            try:
                return _upgrade_once(url, revision, engine)
            except OperationalError as exc:
                # two processes starting together (the API and the bridge node) on one SQLite
                # file: the loser's DDL meets the winner's write lock; wait and look again
                if engine.dialect.name != "sqlite" or "locked" not in str(exc) or attempt == 19:
                    raise
                time.sleep(0.1 * (attempt + 1))
    finally:
        if own:
            engine.dispose()


def _upgrade_once(url: str, revision: str, engine: Engine) -> None:
    cfg = alembic_config(url)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_lock(424242)")
        cfg.attributes["connection"] = conn
        try:
            command.upgrade(cfg, revision)
        finally:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_unlock(424242)")
            conn.commit()


def table_names(engine: Engine) -> list[str]:
    return sorted(inspect(engine).get_table_names())
