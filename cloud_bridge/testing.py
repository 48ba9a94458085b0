"""Test helpers shipped with the bridge (principle: test doubles live in the packages): a settable
clock, a valid task document, a set of API keys covering the scopes and kinds, auth headers."""

from __future__ import annotations

from cloud_bridge import store


class FakeClock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


TASK = {"kind": "flow_experiment", "conditions": {"residence_time_min": 1.0, "temp_c": 90.0,
                                                  "equivalents": 2.0, "conc_dfnb_m": 0.2}}


def task(**conditions: float) -> dict:
    return {"kind": "flow_experiment", "conditions": {**TASK["conditions"], **conditions}}



class Keys:
    def __init__(self, db) -> None:
        self.admin, _ = store.create_key(db, lab="lab1", scopes=["submit", "read", "approve", "admin"],
                                         kind="human", name="alice")
        self.model, _ = store.create_key(db, lab="lab1", scopes=["submit", "read"], kind="model_service",
                                         name="brain")
        self.scheduler, _ = store.create_key(db, lab="lab1", scopes=["submit", "read"], kind="scheduler")
        self.reader, _ = store.create_key(db, lab="lab1", scopes=["read"], kind="human")
        self.model_approver, _ = store.create_key(db, lab="lab1", scopes=["read", "approve"], kind="model_service")
        self.other_lab, _ = store.create_key(db, lab="lab2", scopes=["submit", "read", "approve", "admin"])



def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


# --- PostgreSQL for tests and benchmarks ------------------------------------------------------
PG_ENV = "AICHEMIST_TEST_PG_URL"
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def pg_admin_url() -> str:
    import os

    return os.environ.get(PG_ENV, PG_DEFAULT)


def pg_unavailable_reason() -> str | None:
    """None when the test PostgreSQL answers; otherwise why not (used as the skip reason)."""
    import socket

    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    url = make_url(pg_admin_url())
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=1.0):
            pass
    except OSError as exc:
        return f"PostgreSQL not reachable at {url.host}:{url.port or 5432} ({exc})"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL at {url.host}:{url.port or 5432} refused the test login ({type(exc).__name__}: {exc})"
    finally:
        engine.dispose()
    return None


def create_pg_database(name: str) -> str:
    """Create (or re-create) a throwaway database; returns its URL."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    admin = make_url(pg_admin_url())
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        engine.dispose()
    return admin.set(database=name).render_as_string(hide_password=False)


def drop_pg_database(name: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(pg_admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        engine.dispose()


def reset_pg_schema(url: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
    finally:
        engine.dispose()
