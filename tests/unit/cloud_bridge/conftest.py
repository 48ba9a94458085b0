"""Fixtures of the bridge's unit tests. Every database test runs on SQLite and, when the server
on 127.0.0.1:5432 answers, on PostgreSQL (a throwaway database per test run, dropped after)."""

from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient

from cloud_bridge import testing
from cloud_bridge.api import create_app
from cloud_bridge.config import ApprovalPolicy, BridgeSettings
from cloud_bridge.testing import Keys

_PG_REASON = testing.pg_unavailable_reason()
BACKENDS = [
    "sqlite",
    pytest.param("postgres", marks=[pytest.mark.postgres,
                                    pytest.mark.skipif(_PG_REASON is not None, reason=str(_PG_REASON))]),
]


@pytest.fixture(scope="session")
def pg_database_url():
    name = f"aichemist_test_{os.getpid()}"
    url = testing.create_pg_database(name)
    yield url
    testing.drop_pg_database(name)


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bridge.db'}"
        return
    url = request.getfixturevalue("pg_database_url")
    yield url
    testing.reset_pg_schema(url)


@pytest.fixture
def settings() -> BridgeSettings:
    return BridgeSettings(rate_limit_per_s=1000, rate_limit_burst=1000, sse_poll_s=0.05,
                          approval=ApprovalPolicy(), max_body_bytes=4096)


@pytest.fixture
def app(db_url, settings):
    application = create_app(db_url, settings)
    yield application
    application.state.db.dispose()


@pytest.fixture
def db(app):
    return app.state.db


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture
def keys(db) -> Keys:
    return Keys(db)
