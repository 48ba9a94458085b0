"""Property-based fuzzing of every operation in the OpenAPI spec (schemathesis): whatever it sends,
with a valid key or none, the bridge answers without a 5xx. Bounded examples keep it under a minute."""

from __future__ import annotations

import tempfile

import schemathesis
from hypothesis import HealthCheck, settings

from cloud_bridge import store
from cloud_bridge.api import create_app
from cloud_bridge.config import BridgeSettings

MAX_EXAMPLES = 20


# schemathesis' pytest fixture loader does not work with pytest 9, so the app is built at import,
# on a throwaway SQLite file removed when the interpreter exits.
_TMP = tempfile.TemporaryDirectory(prefix="aichemist-fuzz-")
fuzz_app = create_app(f"sqlite:///{_TMP.name}/fuzz.db",
                      BridgeSettings(rate_limit_per_s=100000, rate_limit_burst=100000))
FUZZ_KEY, _ = store.create_key(fuzz_app.state.db, lab="lab1", scopes=["submit", "read", "approve", "admin"])
# the lab-wide event stream never ends by design: it is tested in test_sse_results
schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app).exclude(path="/v1/events")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors_with_a_valid_key(case):
    response = case.call(headers={"Authorization": f"Bearer {FUZZ_KEY}"})
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"


@schema.parametrize()
@settings(max_examples=5, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors_without_a_key(case):
    response = case.call()
    assert response.status_code < 500
    if case.path not in ("/healthz", "/readyz"):
        assert response.status_code in (401, 404, 405, 422), f"{case.path}: {response.status_code}"


def test_fuzzing_reached_the_success_paths():
    """Runs after the fuzz tests (file order): the generated requests did create tasks, so the
    fuzzing covered the accepting path and not only rejections."""
    from sqlalchemy import func, select

    from cloud_bridge.models import Task

    with fuzz_app.state.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Task)) > 0
