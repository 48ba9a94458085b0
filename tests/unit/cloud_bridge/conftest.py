from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cloud_bridge.testing import Keys
from cloud_bridge.api import create_app
from cloud_bridge.config import ApprovalPolicy, BridgeSettings


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'bridge.db'}"


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

