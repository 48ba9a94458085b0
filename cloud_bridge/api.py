"""The bridge's HTTP API (FastAPI), version 1.

Errors are answered as ``{"error": {"error_type", "code", "message", "problems"?...}}`` with the
HTTP status of the typed error (aichemist.errors): 400 malformed body, 401 no or bad key, 403 key
without the scope or approval right, 404 unknown id, 409 conflicting state or reused
Idempotency-Key, 413 oversized body, 422 invalid task (naming field, value and limit), 429 rate
limit. Database work runs in the thread pool; SSE streams poll the append-only event table, so
they see what the bridge node (another process) writes.
"""



import asyncio
import contextlib
import datetime
import json
import logging
import pathlib
import re
import threading
import time
from typing import Any, Annotated

import anyio.to_thread
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
import orjson
from pydantic import BaseModel, Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from aichemist.errors import (AIChemistError, AuthenticationError, PermissionDeniedError, ValidationError)
from aichemist.params import describe_pydantic_errors
from cloud_bridge import store
from cloud_bridge.config import BridgeSettings, EpochClock
from cloud_bridge.db import Database
from cloud_bridge.group_commit import GroupCommitter
from cloud_bridge.models import ALL_STATES, TERMINAL_STATES
from planner.tasks import task_json_schema

log = logging.getLogger("cloud_bridge.api")
WEB_DIR = pathlib.Path(__file__).with_name("web")
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
_ID_RE = re.compile(ID_PATTERN)

EXAMPLE_TASK = {"kind": "flow_experiment", "version": "1", "name": "snar-001",
                "conditions": {"residence_time_min": 1.0, "temp_c": 90.0, "equivalents": 2.0, "conc_dfnb_m": 0.2},
                "proposed_by": "sobo-v1"}


EXAMPLE_CAMPAIGN = {"kind": "campaign", "name": "snar-sty", "budget": 20, "batch_size": 1,
                    "variables": [{"name": "residence_time_min", "type": "continuous", "low": 0.5, "high": 2.0},
                                  {"name": "temp_c", "type": "continuous", "low": 30, "high": 120},
                                  {"name": "equivalents", "type": "continuous", "low": 1, "high": 5}],
                    "fixed": {"conc_dfnb_m": 0.2},
                    "objectives": [{"name": "sty_kg_m3_h", "direction": "max"},
                                   {"name": "e_factor", "direction": "min", "transform": "log"}]}
EXAMPLE_PROCEDURE = {"kind": "procedure", "name": "one-run-and-hplc", "steps": [
    {"id": "run", "op": "run_flow_experiment", "conditions": EXAMPLE_TASK["conditions"], "collect_vial": "v1"},
    {"id": "hplc", "op": "measure", "vial_id": "v1", "after": ["run"]}]}


class ErrorBody(BaseModel):
    error_type: str
    code: int
    message: str
    retryable: bool = False
    problems: list[dict[str, Any]] | None = None
    details: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class TaskOut(BaseModel):
    id: str
    lab: str
    kind: str
    campaign: str
    status: str = Field(description="awaiting_approval | queued | running | succeeded | failed | cancelled")
    task: dict[str, Any]
    submitted_by: str
    requires_approval: bool
    approved_by: str | None
    approved_at: float | None
    cancel_requested: bool
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    phase: str
    progress: float
    result_code: int | None
    error_type: str
    message: str
    has_result: bool


class TaskPage(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at the end")


class ResultOut(BaseModel):
    task_id: str
    status: str
    task: dict[str, Any]
    campaign: str
    finished_at: float | None
    result_code: int | None
    error_type: str
    message: str
    experiments: list[dict[str, Any]]
    raw: Any = None


class InventoryIn(BaseModel):
    kind: str = Field(min_length=1, max_length=32, examples=["vial"])
    location: str = Field(default="", max_length=128, examples=["rack_a/3"])
    description: str = Field(default="", max_length=2000)
    amount: float | None = Field(default=None, ge=0, le=1e9)
    unit: str = Field(default="", max_length=16, examples=["mL"])


ERRORS = {s: {"model": ErrorResponse} for s in (401, 403, 404, 409, 422, 429)}


class RateLimiter:
    """Token bucket per API key (in this process)."""

    def __init__(self, clock: Any) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def take(self, key_id: str, rate_per_s: float, burst: float) -> float:
        """0 when allowed, else the seconds to wait."""
        now = self._clock.now()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate_per_s)
            if tokens >= 1.0:
                self._buckets[key_id] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (1.0 - tokens) / rate_per_s


class RateLimited(AIChemistError):
    http_status = 429
    retryable = True


class BodyTooLarge(AIChemistError):
    http_status = 413


class MalformedBody(AIChemistError):
    http_status = 400


class BodySizeLimit:
    """Refuse bodies above the limit before they are read into memory (413)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    return await _send_error(send, BodyTooLarge(f"body larger than {self.max_bytes} bytes",
                                                                limit_bytes=self.max_bytes))
        seen = 0

        async def counted_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _Oversize()
            return message

        try:
            await self.app(scope, counted_receive, send)
        except _Oversize:
            await _send_error(send, BodyTooLarge(f"body larger than {self.max_bytes} bytes",
                                                 limit_bytes=self.max_bytes))


class _Oversize(Exception):
    pass


async def _send_error(send: Any, err: AIChemistError) -> None:
    body = json.dumps({"error": err.to_dict()}).encode()
    await send({"type": "http.response.start", "status": err.http_status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _error_response(err: AIChemistError) -> JSONResponse:
    headers = {}
    if isinstance(err, AuthenticationError):
        headers["WWW-Authenticate"] = 'Bearer realm="aichemist"'
    if isinstance(err, RateLimited):
        headers["Retry-After"] = str(max(1, int(err.details.get("retry_after_s", 1) + 0.999)))
    return JSONResponse({"error": err.to_dict()}, status_code=err.http_status, headers=headers)


def _check_id(value: str, field: str) -> str:
    if not _ID_RE.match(value):
        raise ValidationError(f"{field}={value[:80]!r} is not a valid id",
                              problems=[{"field": field, "value": value[:80], "limit": ID_PATTERN}])
    return value


# The submission's Idempotency-Key header and campaign query parameter, checked by hand on the hot
# path (FastAPI's per-request parameter solving cost more than the rest of the route's framework
# work). Documented in OpenAPI exactly as FastAPI documented the declared parameters; anything the
# quick check refuses is validated by pydantic with the same constraints, so a 422 is unchanged
# (tests/unit/cloud_bridge/test_group_commit.py compares both with a declared route).
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]+$"
CAMPAIGN_PATTERN = r"^[A-Za-z0-9_.:-]*$"
_IDEMPOTENCY_KEY_OK = re.compile(r"[\x21-\x7e]{1,200}").fullmatch
_CAMPAIGN_OK = re.compile(r"[A-Za-z0-9_.:-]{0,128}").fullmatch
_IDEMPOTENCY_KEY = TypeAdapter(Annotated[str, Field(min_length=1, max_length=200, pattern=IDEMPOTENCY_KEY_PATTERN)])
_CAMPAIGN = TypeAdapter(Annotated[str, Field(max_length=128, pattern=CAMPAIGN_PATTERN)])
SUBMIT_PARAMETERS = [
    {"name": "campaign", "in": "query", "required": False, "description": "campaign this task belongs to",
     "schema": {"type": "string", "maxLength": 128, "pattern": CAMPAIGN_PATTERN, "default": "",
                "description": "campaign this task belongs to", "title": "Campaign"}},
    {"name": "idempotency-key", "in": "header", "required": True,
     "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": IDEMPOTENCY_KEY_PATTERN,
                "examples": ["snar-2026-11-21-001"], "title": "Idempotency-Key"}},
]


def _submit_params(request: Request) -> tuple[str, str]:
    """(Idempotency-Key, campaign) of a submission, or RequestValidationError as FastAPI raises it."""
    key = request.headers.get("idempotency-key")
    campaign = request.query_params.get("campaign", "") if request.scope.get("query_string") else ""
    if key is not None and _IDEMPOTENCY_KEY_OK(key) and _CAMPAIGN_OK(campaign):
        return key, campaign
    errors: list[dict[str, Any]] = []
    for loc, adapter, value in ((("query", "campaign"), _CAMPAIGN, campaign),
                                (("header", "idempotency-key"), _IDEMPOTENCY_KEY, key)):
        if value is None:
            errors.append({"type": "missing", "loc": loc, "msg": "Field required", "input": None})
            continue
        try:
            adapter.validate_python(value)
        except PydanticValidationError as exc:
            errors.extend({**e, "loc": loc + tuple(e["loc"])} for e in exc.errors(include_url=False))
    raise RequestValidationError(errors)


def create_app(database_url: str, settings: BridgeSettings | None = None, *, migrate: bool = True,
               clock: Any = None) -> FastAPI:
    settings = settings or BridgeSettings()
    clock = clock or EpochClock()
    # one pooled connection per worker thread, so connections are reused rather than opened and
    # closed under load
    db = Database(database_url, pool_size=settings.worker_threads)
    if migrate:
        db.upgrade()
    limiter = RateLimiter(clock)
    committer = GroupCommitter(db)
    bearer = HTTPBearer(auto_error=False, bearerFormat="ak_<id>_<secret>",
                        description="API key created with `aichemist keys create`")

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        # Database work runs on this many threads. More threads than the database can use at once
        # only add lock and GIL hand-offs (SQLite has one writer); fewer would idle PostgreSQL.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        try:
            yield
        finally:
            await run_in_threadpool(committer.stop)

    app = FastAPI(
        lifespan=lifespan,
        title="aichemist cloud bridge",
        version="1.0.0",
        description="Tasks in, results out: the HTTP side of the aichemist lab. Authenticate with "
                    "`Authorization: Bearer <API key>`. See docs/api.md.",
    )
    app.state.db = db
    app.state.committer = committer
    app.state.settings = settings
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(AIChemistError)
    async def _typed_error(request: Request, err: AIChemistError) -> JSONResponse:
        if isinstance(err, (AuthenticationError, PermissionDeniedError)):
            who = getattr(request.state, "principal", None)
            key_id = who.key_id if who else str(err.details.get("key_id", ""))
            lab = who.lab if who else ""
            try:
                await run_in_threadpool(store.audit, db, key_id=key_id, lab=lab,
                                        action=f"{request.method} {request.url.path}"[:64],
                                        outcome="unauthenticated" if isinstance(err, AuthenticationError) else "denied",
                                        detail=err.message, client=_client(request), clock=clock)
            except Exception:  # an audit failure must not turn a 401 into a 500
                log.exception("could not write the audit entry")
        return _error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            value = e.get("input")
            if not isinstance(value, (str, int, float, bool, type(None))):
                value = "<" + type(value).__name__ + ">"
            problems.append({"field": ".".join(str(p) for p in e.get("loc", ())), "value": value,
                             "limit": (e.get("ctx") or {}).get("pattern") or (e.get("ctx") or {}).get("le")
                             or (e.get("ctx") or {}).get("ge"), "message": e.get("msg")})
        err = ValidationError("invalid request: " + "; ".join(f"{p['field']}: {p['message']}" for p in problems),
                              problems=problems)
        return JSONResponse({"error": json.loads(json.dumps(err.to_dict(), default=str))}, status_code=422)

    @app.exception_handler(DBAPIError)
    async def _database_unavailable(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated or isinstance(exc, OperationalError):
            log.error("database unavailable on %s %s: %s", request.method, request.url.path, type(exc.orig).__name__)
            return JSONResponse({"error": {"error_type": "DatabaseUnavailable", "code": 11, "retryable": True,
                                           "message": "database unavailable; retry"}},
                                status_code=503, headers={"Retry-After": "1"})
        return await _unexpected(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return JSONResponse({"error": {"error_type": "InternalError", "code": 99, "retryable": True,
                                       "message": "internal error; see the server log"}}, status_code=500)

    async def principal(request: Request,
                        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None,
                        ) -> store.Principal:
        if credentials is None and request.headers.get("authorization"):
            raise AuthenticationError("use 'Authorization: Bearer <key>'")
        presented = credentials.credentials.strip() if credentials else None
        # a key verified within auth_cache_s is resolved here, on the event loop; otherwise the
        # database is asked in the thread pool
        who = store.cached_principal(db, presented) if settings.auth_cache_s > 0 else None
        if who is None:
            who = await run_in_threadpool(store.authenticate, db, presented, cache_s=settings.auth_cache_s)
        request.state.principal = who
        if who.rate_limit_per_s:  # a key's own limit: burst of about two seconds' worth
            rate = who.rate_limit_per_s
            burst = max(1.0, min(float(settings.rate_limit_burst), 2.0 * rate))
        else:
            rate, burst = settings.rate_limit_per_s, float(settings.rate_limit_burst)
        wait = limiter.take(who.key_id, rate, burst)
        if wait > 0:
            raise RateLimited(f"rate limit of {rate:g} requests/s for key {who.key_id} exceeded",
                              retry_after_s=round(wait, 3), key_id=who.key_id)
        return who

    Who = Annotated[store.Principal, Depends(principal)]
    TaskId = Annotated[str, Path(pattern=ID_PATTERN, max_length=128, description="task id",
                                 examples=["0f3c8a9e-1d2b-4c5d-9e8f-0a1b2c3d4e5f"])]

    # --- health ---------------------------------------------------------------------------
    @app.get("/healthz", tags=["health"], summary="Process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Database reachable and migrated",
             responses={503: {"model": ErrorResponse}})
    def readyz() -> JSONResponse:
        try:
            db.ping()
            at_head = db.at_head()
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "reason": f"database: {type(exc).__name__}"},
                                status_code=503)
        if not at_head:
            return JSONResponse({"status": "unavailable", "reason": "database schema not at head: run "
                                 "'aichemist db upgrade'"}, status_code=503)
        return JSONResponse({"status": "ready", "database": db.engine.dialect.name})

    @app.get("/v1/me", tags=["auth"], summary="Who am I (key id, lab, kind, scopes)", responses=ERRORS)
    def me(who: Who) -> dict[str, Any]:
        return {"key_id": who.key_id, "lab": who.lab, "kind": who.kind, "scopes": sorted(who.scopes),
                "name": who.name}

    # --- tasks ------------------------------------------------------------------------------
    task_schema = task_json_schema()
    task_defs = task_schema.pop("$defs", {})
    task_schema.pop("$id", None)
    task_schema = _rewrite_refs(task_schema)
    # the route declares no FastAPI parameters (see _submit_params): its security entry and
    # parameters are written into the OpenAPI operation here, as FastAPI wrote them before
    task_body = {"security": [{"HTTPBearer": []}], "parameters": SUBMIT_PARAMETERS,
                 "requestBody": {"required": True, "content": {"application/json": {
        "schema": task_schema,
        "examples": {"flow_experiment": {"summary": "one SnAr flow experiment", "value": EXAMPLE_TASK},
                     "campaign": {"summary": "a closed-loop optimisation", "value": EXAMPLE_CAMPAIGN},
                     "procedure": {"summary": "unit operations in order", "value": EXAMPLE_PROCEDURE}}}}}}

    @app.post("/v1/tasks", tags=["tasks"], status_code=202, response_model=TaskOut, openapi_extra=task_body,
              summary="Submit a task",
              description="Validates the task (schema, then the lab's limits: a 422 names field, value and "
                          "limit and stores nothing), stores it and answers 202. Repeating a request with the "
                          "same Idempotency-Key returns the same task (200); the same key with a different "
                          "body is a 409. Tasks from model-service keys wait for approval.",
              responses={200: {"model": TaskOut, "description": "replay of an earlier identical request"},
                         400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, **ERRORS})
    async def submit(request: Request) -> JSONResponse:
        idempotency_key, campaign = _submit_params(request)
        raw = await request.body()
        # the bearer scheme is called here rather than declared as a dependency: FastAPI's
        # dependency solving for it cost more than the call (the OpenAPI security entry is in
        # openapi_extra, so the schema is unchanged)
        credentials = await bearer(request)
        # The hot path: authentication (cached), validation and the task's rows are prepared on
        # the event loop; the group-commit writer stores them with whatever else is waiting and
        # answers after the commit (docs/bridge.md, "Submissions under load").
        who = await principal(request, credentials)
        who.require("submit")
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedBody(f"body is not valid JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
        sub = store.prepare_submission(who, document, idempotency_key=idempotency_key, campaign=campaign,
                                       settings=settings, clock=clock, client=_client(request))
        view, created = await committer.submit(sub)
        # orjson: the answer's JSON was 7 % of a submission's CPU with the standard library's
        return Response(orjson.dumps(view), status_code=202 if created else 200, media_type="application/json",
                        headers={"Location": f"/v1/tasks/{view['id']}"})

    @app.get("/v1/tasks", tags=["tasks"], response_model=TaskPage, summary="List tasks (newest first)",
             responses=ERRORS)
    def list_tasks(who: Who,
                   status: Annotated[list[str] | None, Query(description=f"any of {list(ALL_STATES)}")] = None,
                   campaign: Annotated[str | None, Query(max_length=128)] = None,
                   kind: Annotated[str | None, Query(max_length=64)] = None,
                   limit: Annotated[int, Query(ge=1, le=settings.page_size_max)] = 50,
                   cursor: Annotated[str | None, Query(max_length=256)] = None) -> dict[str, Any]:
        return store.list_tasks(db, who, status=status, campaign=campaign, kind=kind, limit=limit, cursor=cursor)

    @app.get("/v1/tasks/{task_id}", tags=["tasks"], response_model=TaskOut, summary="Get a task",
             responses=ERRORS)
    def get_task(who: Who, task_id: TaskId) -> dict[str, Any]:
        return store.get_task(db, who, task_id)

    @app.post("/v1/tasks/{task_id}/approve", tags=["tasks"], response_model=TaskOut,
              summary="Approve a task waiting for a human (approve scope, human key)", responses=ERRORS)
    def approve(request: Request, who: Who, task_id: TaskId) -> dict[str, Any]:
        return store.approve_task(db, who, task_id, settings=settings, clock=clock, client=_client(request))

    @app.post("/v1/tasks/{task_id}/cancel", tags=["tasks"], response_model=TaskOut, status_code=202,
              summary="Cancel a task (at once if not running; a running one is cancelled by the lab)",
              responses=ERRORS)
    def cancel(request: Request, who: Who, task_id: TaskId) -> dict[str, Any]:
        return store.cancel_task(db, who, task_id, clock=clock, client=_client(request))

    @app.get("/v1/tasks/{task_id}/result", tags=["results"], response_model=ResultOut,
             summary="Experiment results of a finished task", responses=ERRORS)
    def result(who: Who, task_id: TaskId) -> dict[str, Any]:
        return store.get_result(db, who, task_id)

    @app.get("/v1/tasks/{task_id}/result/ord", tags=["results"],
             summary="The results as an Open Reaction Database Dataset (ORD JSON)", responses=ERRORS)
    def result_ord(who: Who, task_id: TaskId) -> dict[str, Any]:
        from cloud_bridge.ord_export import dataset_for_result

        res = store.get_result(db, who, task_id)
        finished = datetime.datetime.fromtimestamp(res["finished_at"] or 0, tz=datetime.timezone.utc)
        return dataset_for_result(res, finished_at_iso=finished.strftime("%Y-%m-%dT%H:%M:%SZ"))

    @app.get("/v1/campaigns/{campaign}/objective", tags=["results"],
             summary="Each experiment of a campaign in order, with its objectives", responses=ERRORS)
    def campaign_objective(who: Who, campaign: Annotated[str, Path(pattern=ID_PATTERN, max_length=128)]
                           ) -> dict[str, Any]:
        return store.campaign_objective(db, who, campaign)

    # --- live events --------------------------------------------------------------------------
    async def _stream(request: Request, who: store.Principal, after: int, task_id: str | None) -> Any:
        last = after
        if task_id is not None:
            view = await run_in_threadpool(store.get_task, db, who, task_id)
            yield {"event": "snapshot", "data": json.dumps(view)}
        while True:
            events = await run_in_threadpool(store.events_since, db, who.lab, last, task_id=task_id)
            for ev in events:
                last = ev["id"]
                yield {"id": str(ev["id"]), "event": ev["type"], "data": json.dumps(ev)}
                if task_id is not None and ev["type"] == "finished":
                    return
            if task_id is not None and not events:
                view = await run_in_threadpool(store.get_task, db, who, task_id)
                if view["status"] in TERMINAL_STATES:
                    return  # ended before the events asked for (resumed after its end)
            if await request.is_disconnected():
                return
            await asyncio.sleep(settings.sse_poll_s)

    def _after(last_event_id: str | None, after: int | None) -> int:
        if after is not None:
            return after
        if last_event_id and last_event_id.isdigit():
            return int(last_event_id)
        return 0

    sse_doc = {"content": {"text/event-stream": {"schema": {"type": "string"}}},
               "description": "Server-Sent Events: submitted, approved, claimed, taken_over, progress, "
                              "cancel_requested, finished (data: the event as JSON)"}

    @app.get("/v1/tasks/{task_id}/events", tags=["events"], summary="Live events of one task (SSE)",
             responses={200: sse_doc, **ERRORS}, response_class=Response)
    async def task_events(request: Request, who: Who, task_id: TaskId,
                          last_event_id: Annotated[str | None, Header(max_length=32)] = None,
                          after: Annotated[int | None, Query(ge=0, le=2**62)] = None) -> EventSourceResponse:
        await run_in_threadpool(store.get_task, db, who, task_id)  # 404 before the stream starts
        return EventSourceResponse(_stream(request, who, _after(last_event_id, after), task_id),
                                   ping=int(settings.sse_keepalive_s))

    @app.get("/v1/events", tags=["events"], summary="Live events of the whole lab (SSE)",
             responses={200: sse_doc, **ERRORS}, response_class=Response)
    async def lab_events(request: Request, who: Who,
                         last_event_id: Annotated[str | None, Header(max_length=32)] = None,
                         after: Annotated[int | None, Query(ge=0, le=2**62, description="event id; "
                                                            "default: only new events")] = None,
                         ) -> EventSourceResponse:
        who.require("read")
        start = _after(last_event_id, after)
        if last_event_id is None and after is None:
            start = await run_in_threadpool(store.last_event_id, db, who.lab)
        return EventSourceResponse(_stream(request, who, start, None), ping=int(settings.sse_keepalive_s))

    # --- lab ----------------------------------------------------------------------------------
    @app.get("/v1/lab/status", tags=["lab"], summary="Nodes, devices and safety state as the lab reports them",
             responses=ERRORS)
    def lab_status(who: Who) -> dict[str, Any]:
        return store.lab_status(db, who, stale_s=settings.lab_status_stale_s, clock=clock)

    @app.get("/v1/lab/inventory", tags=["lab"], summary="The lab's inventory", responses=ERRORS)
    def inventory(who: Who) -> list[dict[str, Any]]:
        return store.list_inventory(db, who)

    @app.put("/v1/lab/inventory/{item_id}", tags=["lab"], summary="Create or replace an inventory item (admin)",
             responses=ERRORS)
    def put_inventory(request: Request, who: Who, item_id: Annotated[str, Path(pattern=ID_PATTERN, max_length=64)],
                      item: InventoryIn) -> dict[str, Any]:
        return store.put_inventory_item(db, who, item_id, item.model_dump(), clock=clock, client=_client(request))

    @app.delete("/v1/lab/inventory/{item_id}", tags=["lab"], status_code=204, response_class=Response,
                summary="Remove an inventory item (admin)", responses=ERRORS)
    def delete_inventory(request: Request, who: Who,
                         item_id: Annotated[str, Path(pattern=ID_PATTERN, max_length=64)]) -> Response:
        store.delete_inventory_item(db, who, item_id, clock=clock, client=_client(request))
        return Response(status_code=204)

    @app.get("/v1/audit", tags=["auth"], summary="Audit log of the lab (admin)", responses=ERRORS)
    def audit_log(who: Who, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  before_id: Annotated[int | None, Query(ge=0, le=2**62)] = None) -> list[dict[str, Any]]:
        who.require("admin")
        return store.list_audit(db, who.lab, limit=limit, before_id=before_id)

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {}).update(_rewrite_refs(task_defs))
        app.openapi_schema = schema
        return schema

    app.openapi = custom_openapi  # type: ignore[method-assign]

    # --- web page -------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> Response:
        page = WEB_DIR / "index.html"
        if not page.exists():
            return HTMLResponse("<p>web page not installed</p>")
        return FileResponse(page, media_type="text/html")

    @app.get("/web/{name}", include_in_schema=False)
    def web_asset(name: Annotated[str, Path(pattern=r"^[a-z0-9_-]+\.(js|css)$")]) -> Response:
        path = WEB_DIR / name
        if not path.is_file():
            return JSONResponse({"error": {"error_type": "NotFoundError", "code": 3, "message": "no such asset"}},
                                status_code=404)
        return FileResponse(path, media_type="text/javascript" if name.endswith(".js") else "text/css")

    return app


def _rewrite_refs(node: Any) -> Any:
    """JSON-schema ``#/$defs/X`` references -> OpenAPI ``#/components/schemas/X``."""
    if isinstance(node, dict):
        return {k: _rewrite_refs(v) for k, v in node.items()}
    if isinstance(node, str) and node.startswith("#/$defs/"):
        return "#/components/schemas/" + node[len("#/$defs/"):]
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


_ = (time, _check_id, describe_pydantic_errors)
