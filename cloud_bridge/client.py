"""Python client of the bridge's HTTP API, for the cloud scheduler and the model service.

    with BridgeClient("http://127.0.0.1:8080", api_key) as bridge:
        task = bridge.submit(task_doc, idempotency_key="run-7/exp-3", campaign="snar-7")
        final = bridge.wait(task["id"], timeout_s=600)
        results = bridge.result(task["id"])

Errors come back as the typed errors of ``aichemist.errors`` (a 422 is a ValidationError with its
problems, 409 a ConflictError, 401 AuthenticationError, 403 PermissionDeniedError ...).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any, Callable, Iterator

import httpx

from aichemist import errors as E

TERMINAL = ("succeeded", "failed", "cancelled")
URL_ENV = "AICHEMIST_BRIDGE_URL"
KEY_ENV = "AICHEMIST_API_KEY"

_BY_STATUS: dict[int, type[E.AIChemistError]] = {
    401: E.AuthenticationError, 403: E.PermissionDeniedError, 404: E.NotFoundError, 409: E.ConflictError,
    422: E.ValidationError,
}


class BridgeHTTPError(E.AIChemistError):
    """An HTTP error without a more specific type (400, 413, 429, 5xx)."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.http_status = status
        self.retryable = status in (429, 502, 503, 504)


def _raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        body = resp.json().get("error", {})
    except ValueError:
        body = {"message": resp.text[:500]}
    message = body.get("message", f"HTTP {resp.status_code}")
    by_name = {c.__name__: c for c in E._all_subclasses(E.AIChemistError)}
    cls = by_name.get(body.get("error_type", "")) or _BY_STATUS.get(resp.status_code)
    if cls is not None and issubclass(cls, E.ValidationError) and cls is not E.LimitError:
        raise cls(message, problems=body.get("problems"))
    if cls in (E.AuthenticationError, E.PermissionDeniedError, E.NotFoundError, E.ConflictError):
        raise cls(message)
    raise BridgeHTTPError(resp.status_code, message)


class BridgeClient:
    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout_s: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        base_url = base_url or os.environ.get(URL_ENV, "http://127.0.0.1:8080")
        api_key = api_key or os.environ.get(KEY_ENV, "")
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, transport=transport,
                                  headers={"Authorization": f"Bearer {api_key}"} if api_key else {})

    def __enter__(self) -> "BridgeClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, **params: Any) -> Any:
        resp = self._http.get(path, params={k: v for k, v in params.items() if v is not None})
        _raise_for(resp)
        return resp.json()

    def me(self) -> dict[str, Any]:
        return self._get("/v1/me")

    def submit(self, task: dict[str, Any], *, idempotency_key: str | None = None, campaign: str = "",
               retries: int = 3) -> dict[str, Any]:
        """Submit a task. Network failures are retried with the same Idempotency-Key, so a retry never
        creates a second task."""
        key = idempotency_key or str(uuid.uuid4())
        params = {"campaign": campaign} if campaign else {}
        for attempt in range(retries + 1):
            try:
                resp = self._http.post("/v1/tasks", json=task, params=params, headers={"Idempotency-Key": key})
            except httpx.TransportError:
                if attempt == retries:
                    raise
                time.sleep(min(2.0, 0.2 * 2 ** attempt))
                continue
            _raise_for(resp)
            return resp.json()
        raise AssertionError("unreachable")

    def get(self, task_id: str) -> dict[str, Any]:
        return self._get(f"/v1/tasks/{task_id}")

    def list(self, *, status: list[str] | None = None, campaign: str | None = None, limit: int = 50,
             cursor: str | None = None) -> dict[str, Any]:
        return self._get("/v1/tasks", status=status, campaign=campaign, limit=limit, cursor=cursor)

    def approve(self, task_id: str) -> dict[str, Any]:
        resp = self._http.post(f"/v1/tasks/{task_id}/approve")
        _raise_for(resp)
        return resp.json()

    def cancel(self, task_id: str) -> dict[str, Any]:
        resp = self._http.post(f"/v1/tasks/{task_id}/cancel")
        _raise_for(resp)
        return resp.json()

    def result(self, task_id: str) -> dict[str, Any]:
        return self._get(f"/v1/tasks/{task_id}/result")

    def result_ord(self, task_id: str) -> dict[str, Any]:
        return self._get(f"/v1/tasks/{task_id}/result/ord")

    def lab_status(self) -> dict[str, Any]:
        return self._get("/v1/lab/status")

    def inventory(self) -> list[dict[str, Any]]:
        return self._get("/v1/lab/inventory")

    def campaign_objective(self, campaign: str) -> dict[str, Any]:
        return self._get(f"/v1/campaigns/{campaign}/objective")

    def events(self, task_id: str | None = None, *, after: int | None = None,
               timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield SSE events (dicts with 'event' and 'data') of one task, or of the lab."""
        path = f"/v1/tasks/{task_id}/events" if task_id else "/v1/events"
        params = {"after": after} if after is not None else {}
        with self._http.stream("GET", path, params=params,
                               timeout=httpx.Timeout(10.0, read=timeout_s)) as resp:
            if resp.status_code >= 400:
                resp.read()
                _raise_for(resp)
            event: dict[str, Any] = {}
            for line in resp.iter_lines():
                if not line:
                    if "data" in event:
                        try:
                            event["data"] = json.loads(event["data"])
                        except ValueError:
                            pass
                        yield event
                    event = {}
                    continue
                if line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "data":
                    event["data"] = event["data"] + "\n" + value if "data" in event else value
                elif field in ("event", "id"):
                    event[field] = value

    def wait(self, task_id: str, *, timeout_s: float = 600.0,
             on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Follow the task's event stream until it ends (``on_event`` sees each event);
        returns the final task."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                for ev in self.events(task_id, timeout_s=max(1.0, deadline - time.monotonic())):
                    if on_event is not None:
                        on_event(ev)
                    if ev.get("event") == "finished" or (ev.get("event") == "snapshot" and
                                                         ev["data"].get("status") in TERMINAL):
                        return self.get(task_id)
            except (httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ConnectError):
                pass  # the server restarted or the stream stalled: reconnect
            task = self.get(task_id)
            if task["status"] in TERMINAL:
                return task
            time.sleep(0.5)
        raise E.StepTimeout(f"task {task_id} did not finish within {timeout_s} s")
