"""Everything the bridge does to its database, without HTTP or ROS: API keys, tasks, the durable
queue (claim with a lease, heartbeat, takeover of expired leases, one terminal write), events,
audit log, lab status and inventory.

Every state change is a conditional UPDATE (compare-and-set on the current state and the lease
owner) whose row count says whether it happened. That is correct on SQLite and on PostgreSQL
under READ COMMITTED without table locks, and it is what makes the guarantees hold with several
API processes and several bridge nodes: a task is claimed by one owner at a time, and its
terminal state is written once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import orjson
from sqlalchemy import and_, bindparam, delete, func, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from aichemist.clock import Clock
from aichemist.errors import (AuthenticationError, ConflictError, NotFoundError, PermissionDeniedError,
                              ValidationError)
from cloud_bridge.config import BridgeSettings, EpochClock
from cloud_bridge.db import Database
from cloud_bridge.models import (ALL_STATES, AWAITING_APPROVAL, CANCELLED, FAILED, KEY_KINDS, LIVE_STATES,
                                 QUEUED, RUNNING, SCOPES, SUCCEEDED, TERMINAL_STATES, ApiKey, AuditEntry,
                                 InventoryItem, LabNode, Task, TaskEvent)
from cloud_bridge.validation import validate_task

KEY_PREFIX = "ak_"


# --- API keys ----------------------------------------------------------------------------------
def hash_secret(key: str) -> str:
    # Keys are 256-bit random tokens, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def split_key(key: str) -> str | None:
    """The public id of a presented key (``ak_<id>_<secret>``), or None if it is not one."""
    if not key.startswith(KEY_PREFIX):
        return None
    parts = key[len(KEY_PREFIX):].split("_", 1)
    if len(parts) != 2 or len(parts[0]) != 12 or not parts[1]:
        return None
    return parts[0]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller (never holds the secret)."""

    key_id: str
    lab: str
    kind: str
    scopes: frozenset[str]
    name: str = ""
    rate_limit_per_s: float | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def require(self, scope: str) -> None:
        if not self.has(scope):
            raise PermissionDeniedError(f"API key {self.key_id} lacks the '{scope}' scope",
                                        key_id=self.key_id, needed_scope=scope)


def _principal(row: ApiKey) -> Principal:
    return Principal(row.id, row.lab, row.kind, row.scope_set, row.name, row.rate_limit_per_s)


def create_key(db: Database, *, lab: str, scopes: Iterable[str], kind: str = "human", name: str = "",
               rate_limit_per_s: float | None = None, clock: Clock | None = None,
               secret: str | None = None) -> tuple[str, Principal]:
    """Create an API key; returns (the full key, shown once and stored only hashed; principal)."""
    scope_list = sorted(set(scopes))
    bad = [s for s in scope_list if s not in SCOPES]
    if bad or not scope_list:
        raise ValidationError(f"scopes must be a non-empty subset of {list(SCOPES)}, got {scope_list}",
                              problems=[{"field": "scopes", "value": scope_list, "limit": list(SCOPES)}])
    if kind not in KEY_KINDS:
        raise ValidationError(f"kind must be one of {list(KEY_KINDS)}, got {kind!r}",
                              problems=[{"field": "kind", "value": kind, "limit": list(KEY_KINDS)}])
    if not lab or len(lab) > 64:
        raise ValidationError(f"lab must be 1-64 characters, got {lab!r}",
                              problems=[{"field": "lab", "value": lab, "limit": "1-64 chars"}])
    if rate_limit_per_s is not None and rate_limit_per_s <= 0:
        raise ValidationError(f"rate_limit_per_s must be > 0, got {rate_limit_per_s}",
                              problems=[{"field": "rate_limit_per_s", "value": rate_limit_per_s, "limit": "> 0"}])
    clock = clock or EpochClock()
    if secret is not None:
        key_id = split_key(secret)
        if key_id is None:
            raise ValidationError("a supplied key must look like ak_<12 hex>_<secret>",
                                  problems=[{"field": "key", "value": "<redacted>", "limit": "ak_<12>_<secret>"}])
        full = secret
    else:
        key_id = secrets.token_hex(6)
        full = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    row = ApiKey(id=key_id, secret_hash=hash_secret(full), name=name, lab=lab, kind=kind,
                 scopes=" ".join(scope_list), rate_limit_per_s=rate_limit_per_s, created_at=clock.now())
    with db.write() as s:
        existing = s.get(ApiKey, key_id)
        if existing is not None:
            if secret is not None and existing.secret_hash == row.secret_hash and existing.revoked_at is None:
                return full, _principal(existing)  # bootstrap key already present
            raise ConflictError(f"API key id {key_id} already exists")
        s.add(row)
        _audit(s, key_id="", lab=lab, action="key.create", target=key_id, outcome="ok",
               detail=f"kind={kind} scopes={' '.join(scope_list)}", clock=clock)
    return full, _principal(row)


def revoke_key(db: Database, key_id: str, *, clock: Clock | None = None) -> None:
    clock = clock or EpochClock()
    with db.write() as s:
        row = s.get(ApiKey, key_id)
        if row is None:
            raise NotFoundError(f"no API key with id {key_id}")
        if row.revoked_at is None:
            row.revoked_at = clock.now()
        _audit(s, key_id="", lab=row.lab, action="key.revoke", target=key_id, outcome="ok", clock=clock)
    _forget_key(db, key_id)


def list_keys(db: Database, lab: str | None = None) -> list[dict[str, Any]]:
    with db.read() as s:
        q = select(ApiKey).order_by(ApiKey.created_at)
        if lab:
            q = q.where(ApiKey.lab == lab)
        return [{"id": k.id, "name": k.name, "lab": k.lab, "kind": k.kind, "scopes": k.scopes.split(),
                 "rate_limit_per_s": k.rate_limit_per_s, "created_at": k.created_at,
                 "revoked": k.revoked_at is not None} for k in s.scalars(q)]


# Successful authentications, kept for a short time: (database url, sha256 of the key) ->
# (expires at, principal). Revocation in this process clears the entry at once; a revocation from
# another process (the CLI) takes effect within the cache time.
_auth_cache: dict[tuple[str, str], tuple[float, Principal]] = {}
_auth_cache_lock = threading.Lock()


def _forget_key(db: Database, key_id: str) -> None:
    with _auth_cache_lock:
        for k in [k for k, (_, p) in _auth_cache.items() if k[0] == db.url and p.key_id == key_id]:
            del _auth_cache[k]


def _presented_key(presented: str | None) -> str:
    if not presented:
        raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
    key_id = split_key(presented)
    if key_id is None:
        raise AuthenticationError("malformed API key")
    return key_id


def cached_principal(db: Database, presented: str | None) -> Principal | None:
    """The principal of a key authenticated within the cache time, without touching the database;
    None when it must be looked up (``authenticate``). A missing or malformed key is a 401 here."""
    _presented_key(presented)
    hit = _auth_cache.get((db.url, hash_secret(presented)))  # type: ignore[arg-type]
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    return None


def authenticate(db: Database, presented: str | None, *, cache_s: float = 0.0) -> Principal:
    """Resolve a bearer key to a principal; AuthenticationError (401) otherwise."""
    key_id = _presented_key(presented)
    digest = hash_secret(presented)  # type: ignore[arg-type]
    if cache_s > 0:
        now = time.monotonic()
        with _auth_cache_lock:
            hit = _auth_cache.get((db.url, digest))
        if hit is not None and hit[0] > now:
            return hit[1]
        who = _authenticate_db(db, key_id, digest)
        with _auth_cache_lock:
            if len(_auth_cache) > 10000:
                _auth_cache.clear()
            _auth_cache[(db.url, digest)] = (now + cache_s, who)
        return who
    return _authenticate_db(db, key_id, digest)


def _authenticate_db(db: Database, key_id: str, digest: str) -> Principal:
    with db.engine.connect() as conn:
        row = conn.execute(select(ApiKey.id, ApiKey.secret_hash, ApiKey.lab, ApiKey.kind, ApiKey.scopes,
                                  ApiKey.name, ApiKey.rate_limit_per_s, ApiKey.revoked_at)
                           .where(ApiKey.id == key_id)).first()
    if row is None or not hmac.compare_digest(row.secret_hash, digest):
        raise AuthenticationError("unknown API key", key_id=key_id)
    if row.revoked_at is not None:
        raise AuthenticationError("revoked API key", key_id=key_id)
    return Principal(row.id, row.lab, row.kind, frozenset(row.scopes.split()), row.name, row.rate_limit_per_s)


# --- audit -------------------------------------------------------------------------------------
def _audit(s: Session, *, key_id: str, lab: str, action: str, target: str = "", outcome: str,
           detail: str = "", client: str = "", clock: Clock) -> None:
    s.add(AuditEntry(at=clock.now(), key_id=key_id, lab=lab, action=action, target=target[:200],
                     outcome=outcome, detail=detail[:2000], client=client[:64]))


def audit(db: Database, *, key_id: str, lab: str, action: str, target: str = "", outcome: str,
          detail: str = "", client: str = "", clock: Clock | None = None) -> None:
    with db.write() as s:
        _audit(s, key_id=key_id, lab=lab, action=action, target=target, outcome=outcome, detail=detail,
               client=client, clock=clock or EpochClock())


def list_audit(db: Database, lab: str, *, limit: int = 100, before_id: int | None = None) -> list[dict[str, Any]]:
    with db.read() as s:
        q = select(AuditEntry).where(AuditEntry.lab == lab).order_by(AuditEntry.id.desc()).limit(limit)
        if before_id is not None:
            q = q.where(AuditEntry.id < before_id)
        return [{"id": a.id, "at": a.at, "key_id": a.key_id, "action": a.action, "target": a.target,
                 "outcome": a.outcome, "detail": a.detail, "client": a.client} for a in s.scalars(q)]


# --- tasks -------------------------------------------------------------------------------------
def task_view(t: Task) -> dict[str, Any]:
    return {
        "id": t.id, "lab": t.lab, "kind": t.kind, "campaign": t.campaign, "status": t.status,
        "task": json.loads(t.task_json), "submitted_by": t.submitted_by,
        "requires_approval": t.requires_approval, "approved_by": t.approved_by, "approved_at": t.approved_at,
        "cancel_requested": t.cancel_requested, "created_at": t.created_at, "updated_at": t.updated_at,
        "started_at": t.started_at, "finished_at": t.finished_at, "attempts": t.attempts,
        "phase": t.phase, "progress": t.progress, "result_code": t.result_code,
        "error_type": t.error_type, "message": t.message, "has_result": bool(t.result_json),
    }


def _event(s: Session, task: Task | str, lab: str, type_: str, data: dict[str, Any], clock: Clock) -> None:
    task_id = task if isinstance(task, str) else task.id
    s.add(TaskEvent(task_id=task_id, lab=lab, type=type_, data_json=json.dumps(data, default=str),
                    created_at=clock.now()))


# The look-up of a batch's Idempotency-Keys (compiled once, cached by SQLAlchemy); the inserts
# are driver SQL, see _insert.
_SELECT_BY_KEYS = select(Task.__table__).where(Task.lab == bindparam("lab"),
                                               Task.idempotency_key.in_(bindparam("keys", expanding=True)))


def request_hash(document: Any, campaign: str) -> str:
    canonical = json.dumps({"task": document, "campaign": campaign}, sort_keys=True, separators=(",", ":"),
                           default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Submission:
    """A validated task, ready to store: its ``tasks`` row, ``submitted`` event and audit entry, and
    the answer (the row as ``task_view`` shows it once stored)."""

    row: dict[str, Any]
    event: dict[str, Any]
    audit: dict[str, Any]
    view: dict[str, Any]


def prepare_submission(who: Principal, document: Any, *, idempotency_key: str, campaign: str = "",
                       settings: BridgeSettings, clock: Clock | None = None, client: str = "") -> Submission:
    """Check the scope, validate the task and build what ``store_submissions`` writes. No database
    access: bad input raises here (403, 422) and stores nothing."""
    clock = clock or EpochClock()
    who.require("submit")
    task = validate_task(document, settings.limits_for(who.lab))
    now = clock.now()
    needs_approval = who.kind in settings.approval.require_approval_for_kinds
    status = AWAITING_APPROVAL if needs_approval else QUEUED
    task_json = task.model_dump_json()
    row = dict(id=str(uuid.uuid4()), lab=who.lab, kind=task.kind, campaign=campaign, task_json=task_json,
               idempotency_key=idempotency_key, request_hash=request_hash(document, campaign),
               submitted_by=who.key_id, status=status, requires_approval=needs_approval, cancel_requested=False,
               created_at=now, updated_at=now, attempts=0, phase="", progress=0.0, error_type="", message="",
               result_json="")
    view = {k: row[k] for k in _VIEW_FROM_ROW}
    view.update(task=json.loads(task_json), approved_by=None, approved_at=None, started_at=None, finished_at=None,
                result_code=None, has_result=False)
    return Submission(
        row=row, view=view,
        event=dict(task_id=row["id"], lab=who.lab, type="submitted", created_at=now,
                   data_json=json.dumps({"status": status, "by": who.key_id})),
        audit=dict(at=now, key_id=who.key_id, lab=who.lab, action="task.submit", target=row["id"], outcome="ok",
                   detail=f"status={status}", client=client[:64]))


_VIEW_FROM_ROW = ("id", "lab", "kind", "campaign", "status", "submitted_by", "requires_approval", "cancel_requested",
                  "created_at", "updated_at", "attempts", "phase", "progress", "error_type", "message")
Outcome = tuple[dict[str, Any], bool] | ConflictError | DBAPIError


def store_submissions(db: Database, subs: Sequence[Submission]) -> list[Outcome]:
    """Store prepared submissions in ONE transaction (group commit) and return, for each in order,
    (task view, created) or the ConflictError of an Idempotency-Key reused with another body.

    A key already stored (or used earlier in the same batch) with the same request is a replay: the
    stored task, created=False. Nothing is answered before the commit; a database error other
    than a broken constraint fails the whole batch (nothing of it is stored).

    Keys are nearly always new, so the batch is first inserted without looking them up (on
    PostgreSQL in one statement, see ``_pg_batch_insert``); the unique constraint on (lab,
    Idempotency-Key) catches a reused one, and the batch is then stored again after looking its
    keys up. If another process inserts one of the keys between that look-up and our insert, or a
    submission's row breaks another constraint, each submission is stored on its own, where the
    look-up then finds that row; a submission that still fails then gets its own error as its
    outcome, and the others are stored and answered."""
    try:
        return _store_batch(db, subs, look_up=False)
    except IntegrityError:
        pass
    try:
        return _store_batch(db, subs, look_up=True)
    except IntegrityError:
        pass
    outcomes: list[Outcome] = []
    for sub in subs:
        try:
            outcomes += _store_batch(db, [sub], look_up=True)
        except IntegrityError as exc:  # this submission's own row: the others keep their outcome
            outcomes.append(exc)
    return outcomes


def _store_batch(db: Database, subs: Sequence[Submission], *, look_up: bool) -> list[Outcome]:
    if not look_up:
        # the keys are taken to be new: one write, whose unique constraint checks them
        outcomes, new = _resolve(subs, {})
        if new:
            with db.write_statement() as conn:
                _insert(conn, new)
        return outcomes
    with db.write_core() as conn:
        stored: dict[tuple[str, str], Any] = {}
        keys_by_lab: dict[str, set[str]] = {}
        for sub in subs:
            keys_by_lab.setdefault(sub.row["lab"], set()).add(sub.row["idempotency_key"])
        for lab, keys in keys_by_lab.items():
            for r in conn.execute(_SELECT_BY_KEYS, {"lab": lab, "keys": list(keys)}):
                stored[(lab, r.idempotency_key)] = r
        outcomes, new = _resolve(subs, stored)
        if new:
            _insert(conn, new)
    return outcomes


def _resolve(subs: Sequence[Submission], stored: dict[tuple[str, str], Any]) -> tuple[list[Outcome], list[Submission]]:
    """Each submission's outcome, and the submissions to insert: the first of each key that is not
    ``stored``; a later one with the same key (in ``stored`` or earlier in the batch) is a replay
    or a conflict."""
    outcomes: list[Outcome] = []
    first: dict[tuple[str, str], Submission] = {}
    new: list[Submission] = []
    for sub in subs:
        key = (sub.row["lab"], sub.row["idempotency_key"])
        if key in stored:
            earlier = stored[key]
            outcomes.append(_replay(sub, earlier.id, earlier.request_hash, lambda: task_view(earlier)))
        elif key in first:
            earlier_sub = first[key]
            outcomes.append(_replay(sub, earlier_sub.row["id"], earlier_sub.row["request_hash"],
                                    lambda: dict(earlier_sub.view)))
        else:
            first[key] = sub
            new.append(sub)
            outcomes.append((sub.view, True))
    return outcomes, new


def _insert(conn: Any, new: Sequence[Submission]) -> None:
    """Insert the rows of ``new`` (tasks, their events, their audit entries): in ONE statement on
    PostgreSQL (``_pg_batch_insert``), an executemany per table on SQLite
    (``_sqlite_batch_inserts``)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(_pg_batch_insert(conn.dialect, new[0]),
                             (orjson.dumps([s.row for s in new]).decode(),
                              orjson.dumps([s.event for s in new]).decode(),
                              orjson.dumps([s.audit for s in new]).decode()))
        return
    for sql, part in zip(_sqlite_batch_inserts(conn.dialect, new[0]), ("row", "event", "audit")):
        conn.exec_driver_sql(sql, [tuple(getattr(s, part).values()) for s in new])


_sqlite_inserts: dict[tuple[tuple[str, ...], ...], tuple[str, str, str]] = {}


def _sqlite_batch_inserts(dialect: Any, sub: Submission) -> tuple[str, str, str]:
    """The INSERT of each table for an executemany of plain tuples (the dicts' values, in their
    keys' order): sqlite3 gets the rows as they are, without SQLAlchemy turning each dict into a
    tuple (10-20 % of the store's CPU on SQLite)."""
    shape = (tuple(sub.row), tuple(sub.event), tuple(sub.audit))
    sqls = _sqlite_inserts.get(shape)
    if sqls is None:
        quote = dialect.identifier_preparer.quote
        sqls = _sqlite_inserts[shape] = tuple(  # type: ignore[assignment]
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) "
            f"VALUES ({', '.join('?' for _ in names)})"
            for table, names in zip((Task.__table__, TaskEvent.__table__, AuditEntry.__table__), shape))
    return sqls


_PG_TYPES = {str: "text", float: "float8", bool: "boolean", int: "bigint"}
_pg_batch_inserts: dict[tuple[tuple[str, ...], ...], str] = {}


def _pg_batch_insert(dialect: Any, sub: Submission) -> str:
    """The statement that inserts a batch's tasks, events and audit entries at once. Its three
    parameters are JSON arrays of the batch's rows, events and audit entries (``orjson``).

    ``INSERT INTO t (<columns>) SELECT <columns> FROM json_to_recordset(<rows>) AS x(<columns with
    types>)`` for each table, the first two as data-modifying WITH clauses: one statement of fixed
    text whatever the batch size, so psycopg prepares it once per connection, and PostgreSQL runs
    one insert per table instead of one per row (the events' foreign key is checked at the end of
    the statement, when the tasks are in). Measured against one array parameter per column
    (``unnest``, binary): the same PostgreSQL CPU, half the client CPU (one C call per table
    instead of psycopg's Python array dumper per column). Strings are read as ``text``, not
    ``varchar(n)``: the assignment to the column refuses an over-long value as a plain insert does,
    where a cast to varchar(n) would cut it. Floats: orjson writes the shortest representation
    that reads back as the same double."""
    shape = (tuple(sub.row), tuple(sub.event), tuple(sub.audit))
    sql = _pg_batch_inserts.get(shape)
    if sql is None:
        quote = dialect.identifier_preparer.quote
        inserts = []
        for table, names in zip((Task.__table__, TaskEvent.__table__, AuditEntry.__table__), shape):
            columns = ", ".join(quote(name) for name in names)
            typed = ", ".join(f"{quote(name)} {_PG_TYPES[table.c[name].type.python_type]}" for name in names)
            inserts.append(f"INSERT INTO {quote(table.name)} ({columns}) SELECT {columns} "
                           f"FROM json_to_recordset(%s::json) AS x({typed})")
        sql = _pg_batch_inserts[shape] = f"WITH t AS ({inserts[0]}), e AS ({inserts[1]}) {inserts[2]}"
    return sql


def _replay(sub: Submission, task_id: str, stored_hash: str, view: Callable[[], dict[str, Any]]) -> Outcome:
    """A submission whose key is taken: the earlier task if the request is the same, else 409."""
    if stored_hash != sub.row["request_hash"]:
        return ConflictError(f"Idempotency-Key {sub.row['idempotency_key']!r} was used for a different request "
                             f"(task {task_id})", task_id=task_id)
    return view(), False


def submit_task(db: Database, who: Principal, document: Any, *, idempotency_key: str, campaign: str = "",
                settings: BridgeSettings, clock: Clock | None = None, client: str = "") -> tuple[dict[str, Any], bool]:
    """Validate and store a task. Returns (task view, created). Bad input stores nothing."""
    sub = prepare_submission(who, document, idempotency_key=idempotency_key, campaign=campaign, settings=settings,
                             clock=clock, client=client)
    outcome = store_submissions(db, [sub])[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def _own_task(s: Session, who: Principal, task_id: str) -> Task:
    row = s.get(Task, task_id)
    if row is None or row.lab != who.lab:
        # Another lab's task is reported as missing: do not confirm it exists.
        raise NotFoundError(f"no task {task_id}", task_id=task_id)
    return row


def get_task(db: Database, who: Principal, task_id: str) -> dict[str, Any]:
    who.require("read")
    with db.read() as s:
        return task_view(_own_task(s, who, task_id))


def get_result(db: Database, who: Principal, task_id: str) -> dict[str, Any]:
    who.require("read")
    with db.read() as s:
        row = _own_task(s, who, task_id)
        if row.status not in TERMINAL_STATES:
            raise ConflictError(f"task {task_id} has no result yet (status {row.status})", status=row.status)
        result = json.loads(row.result_json) if row.result_json else {}
        return {"task_id": row.id, "status": row.status, "task": json.loads(row.task_json),
                "campaign": row.campaign, "finished_at": row.finished_at, "result_code": row.result_code,
                "error_type": row.error_type, "message": row.message,
                "experiments": result.get("experiments", []) if isinstance(result, dict) else [],
                "raw": result}


def list_tasks(db: Database, who: Principal, *, status: list[str] | None = None, campaign: str | None = None,
               kind: str | None = None, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    """Newest first; ``cursor`` is the opaque ``next_cursor`` of the previous page."""
    who.require("read")
    for st in status or []:
        if st not in ALL_STATES:
            raise ValidationError(f"status={st!r} is not one of {list(ALL_STATES)}",
                                  problems=[{"field": "status", "value": st, "limit": list(ALL_STATES)}])
    q = select(Task).where(Task.lab == who.lab)
    if status:
        q = q.where(Task.status.in_(status))
    if campaign:
        q = q.where(Task.campaign == campaign)
    if kind:
        q = q.where(Task.kind == kind)
    if cursor:
        try:
            created_s, after_id = cursor.split("~", 1)
            created = float(created_s)
        except ValueError:
            raise ValidationError("malformed cursor", problems=[{"field": "cursor", "value": cursor,
                                                                  "limit": "a next_cursor value"}]) from None
        q = q.where(or_(Task.created_at < created, and_(Task.created_at == created, Task.id < after_id)))
    q = q.order_by(Task.created_at.desc(), Task.id.desc()).limit(limit + 1)
    with db.read() as s:
        rows = list(s.scalars(q))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = f"{rows[-1].created_at!r}~{rows[-1].id}" if more and rows else None
    return {"items": [task_view(r) for r in rows], "next_cursor": next_cursor}


def approve_task(db: Database, who: Principal, task_id: str, *, settings: BridgeSettings,
                 clock: Clock | None = None, client: str = "") -> dict[str, Any]:
    clock = clock or EpochClock()
    who.require("approve")
    if who.kind not in settings.approval.approver_kinds:
        raise PermissionDeniedError(f"API key {who.key_id} is a {who.kind} key; approvals need a "
                                    f"{'/'.join(settings.approval.approver_kinds)} key", key_id=who.key_id)
    now = clock.now()
    with db.write() as s:
        row = _own_task(s, who, task_id)
        done = s.execute(update(Task).where(Task.id == task_id, Task.status == AWAITING_APPROVAL)
                         .values(status=QUEUED, approved_by=who.key_id, approved_at=now, updated_at=now)
                         .execution_options(synchronize_session=False)).rowcount
        if not done:
            raise ConflictError(f"task {task_id} is not awaiting approval (status {row.status})",
                                status=row.status)
        _event(s, task_id, who.lab, "approved", {"status": QUEUED, "by": who.key_id}, clock)
        _audit(s, key_id=who.key_id, lab=who.lab, action="task.approve", target=task_id, outcome="ok",
               client=client, clock=clock)
        s.expire_all()
        return task_view(s.get(Task, task_id))  # type: ignore[arg-type]


def cancel_task(db: Database, who: Principal, task_id: str, *, clock: Clock | None = None,
                client: str = "") -> dict[str, Any]:
    """Cancel a task not yet running at once; ask the bridge node to cancel a running one."""
    clock = clock or EpochClock()
    now = clock.now()
    with db.write() as s:
        row = _own_task(s, who, task_id)
        if not (who.has("approve") or (who.has("submit") and row.submitted_by == who.key_id)):
            raise PermissionDeniedError(f"API key {who.key_id} may not cancel task {task_id}: needs the "
                                        "approve scope, or submit scope on its own task", key_id=who.key_id)
        done = s.execute(update(Task).where(Task.id == task_id, Task.status.in_((AWAITING_APPROVAL, QUEUED)))
                         .values(status=CANCELLED, cancel_requested=True, cancel_requested_by=who.key_id,
                                 finished_at=now, updated_at=now, error_type="Cancelled",
                                 message=f"cancelled by {who.key_id} before it ran")
                         .execution_options(synchronize_session=False)).rowcount
        if done:
            _event(s, task_id, who.lab, "finished", {"status": CANCELLED, "by": who.key_id}, clock)
        else:
            done = s.execute(update(Task).where(Task.id == task_id, Task.status == RUNNING)
                             .values(cancel_requested=True, cancel_requested_by=who.key_id, updated_at=now)
                             .execution_options(synchronize_session=False)).rowcount
            if not done:
                raise ConflictError(f"task {task_id} already ended (status {row.status})", status=row.status)
            _event(s, task_id, who.lab, "cancel_requested", {"by": who.key_id}, clock)
        _audit(s, key_id=who.key_id, lab=who.lab, action="task.cancel", target=task_id, outcome="ok",
               client=client, clock=clock)
        s.expire_all()
        return task_view(s.get(Task, task_id))  # type: ignore[arg-type]


def campaign_objective(db: Database, who: Principal, campaign: str) -> dict[str, Any]:
    """Every experiment of a campaign's finished tasks, in the order they finished."""
    who.require("read")
    with db.read() as s:
        rows = list(s.scalars(select(Task).where(Task.lab == who.lab, Task.campaign == campaign,
                                                 Task.status == SUCCEEDED).order_by(Task.finished_at, Task.id)))
    points = []
    for row in rows:
        try:
            experiments = json.loads(row.result_json or "{}").get("experiments", [])
        except (ValueError, AttributeError):
            experiments = []
        for exp in experiments if isinstance(experiments, list) else []:
            if not isinstance(exp, dict):
                continue
            points.append({"index": len(points) + 1, "task_id": row.id, "finished_at": row.finished_at,
                           "conditions": exp.get("conditions", {}),
                           **{k: exp.get(k) for k in ("yield_fraction", "sty_kg_m3_h", "e_factor")}})
    return {"campaign": campaign, "points": points}


# --- events ------------------------------------------------------------------------------------
def events_since(db: Database, lab: str, after_id: int, *, task_id: str | None = None,
                 limit: int = 200) -> list[dict[str, Any]]:
    q = select(TaskEvent).where(TaskEvent.lab == lab, TaskEvent.id > after_id).order_by(TaskEvent.id).limit(limit)
    if task_id:
        q = q.where(TaskEvent.task_id == task_id)
    with db.read() as s:
        return [{"id": e.id, "task_id": e.task_id, "type": e.type, "data": json.loads(e.data_json),
                 "at": e.created_at} for e in s.scalars(q)]


def last_event_id(db: Database, lab: str) -> int:
    with db.read() as s:
        return s.scalar(select(func.max(TaskEvent.id)).where(TaskEvent.lab == lab)) or 0


# --- the durable queue (used by the bridge node) -----------------------------------------------
@dataclass
class Claim:
    id: str
    lab: str
    task_json: str
    attempts: int
    goal_uuid: str | None
    previous_owner: str | None
    cancel_requested: bool


def claim_next(db: Database, *, lab: str, owner: str, lease_s: float, max_attempts: int,
               clock: Clock | None = None) -> Claim | None:
    """Claim the oldest queued task, or one whose lease expired (its owner died)."""
    clock = clock or EpochClock()
    now = clock.now()
    claimable = or_(Task.status == QUEUED, and_(Task.status == RUNNING, Task.lease_expires_at < now))
    with db.read() as s:
        candidates = list(s.execute(select(Task.id, Task.lease_owner).where(Task.lab == lab, claimable)
                                    .order_by(Task.created_at, Task.id).limit(8)))
    for task_id, previous_owner in candidates:
        with db.write() as s:
            got = s.execute(update(Task).where(Task.id == task_id, claimable)
                            .values(status=RUNNING, lease_owner=owner, lease_expires_at=now + lease_s,
                                    attempts=Task.attempts + 1, started_at=func.coalesce(Task.started_at, now),
                                    updated_at=now)
                            .execution_options(synchronize_session=False)).rowcount
            if not got:
                continue  # another bridge node was faster
            row = s.get(Task, task_id)
            assert row is not None
            if row.attempts > max_attempts:
                _finish(s, row, owner, FAILED, code=99, error_type="StepTimeout",
                        message=f"abandoned: claimed {row.attempts - 1} times and its bridge node died each "
                                f"time (last owner {previous_owner})", result_json="", clock=clock)
                continue
            _event(s, row, lab, "claimed" if previous_owner is None else "taken_over",
                   {"status": RUNNING, "owner": owner, "attempt": row.attempts,
                    **({"previous_owner": previous_owner} if previous_owner else {})}, clock)
            return Claim(row.id, row.lab, row.task_json, row.attempts, row.goal_uuid, previous_owner,
                         row.cancel_requested)
    return None


def _held(task_id: str, owner: str) -> Any:
    return and_(Task.id == task_id, Task.lease_owner == owner, Task.status == RUNNING)


def record_goal(db: Database, task_id: str, owner: str, goal_uuid: str, *, clock: Clock | None = None) -> bool:
    """Remember the ROS goal id before sending it, so a successor can ask the planner for its result."""
    clock = clock or EpochClock()
    with db.write() as s:
        return bool(s.execute(update(Task).where(_held(task_id, owner))
                              .values(goal_uuid=goal_uuid, updated_at=clock.now())
                              .execution_options(synchronize_session=False)).rowcount)


def heartbeat(db: Database, task_id: str, owner: str, lease_s: float, *,
              clock: Clock | None = None) -> tuple[bool, bool]:
    """Extend the lease. Returns (still held, cancel requested)."""
    clock = clock or EpochClock()
    now = clock.now()
    with db.write() as s:
        held = s.execute(update(Task).where(_held(task_id, owner)).values(lease_expires_at=now + lease_s)
                         .execution_options(synchronize_session=False)).rowcount
        if not held:
            return False, False
        return True, bool(s.scalar(select(Task.cancel_requested).where(Task.id == task_id)))


def record_progress(db: Database, task_id: str, owner: str, *, phase: str, progress: float,
                    detail: Any = None, clock: Clock | None = None) -> bool:
    clock = clock or EpochClock()
    with db.write() as s:
        row = s.get(Task, task_id)
        held = s.execute(update(Task).where(_held(task_id, owner))
                         .values(phase=phase[:64], progress=float(progress), updated_at=clock.now())
                         .execution_options(synchronize_session=False)).rowcount
        if held and row is not None:
            _event(s, task_id, row.lab, "progress", {"phase": phase, "progress": progress, "detail": detail}, clock)
        return bool(held)


def _finish(s: Session, row: Task, owner: str, status: str, *, code: int, error_type: str, message: str,
            result_json: str, clock: Clock) -> bool:
    now = clock.now()
    done = s.execute(update(Task).where(_held(row.id, owner))
                     .values(status=status, result_code=code, error_type=error_type[:128], message=message,
                             result_json=result_json, finished_at=now, updated_at=now, lease_expires_at=None,
                             progress=1.0 if status == SUCCEEDED else Task.progress)
                     .execution_options(synchronize_session=False)).rowcount
    if done:
        _event(s, row.id, row.lab, "finished", {"status": status, "code": code, "error_type": error_type,
                                                "message": message}, clock)
    return bool(done)


def finish_task(db: Database, task_id: str, owner: str, *, status: str, code: int, error_type: str = "",
                message: str = "", result_json: str = "", clock: Clock | None = None) -> bool:
    """Write the terminal state once: only the lease holder of a running task can, and only once."""
    if status not in TERMINAL_STATES:
        raise ValidationError(f"status={status!r} is not terminal", problems=[{"field": "status", "value": status,
                                                                               "limit": list(TERMINAL_STATES)}])
    with db.write() as s:
        row = s.get(Task, task_id)
        if row is None:
            raise NotFoundError(f"no task {task_id}")
        return _finish(s, row, owner, status, code=code, error_type=error_type, message=message,
                       result_json=result_json, clock=clock or EpochClock())


def release_task(db: Database, task_id: str, owner: str, *, clock: Clock | None = None) -> bool:
    """Give a claimed task back to the queue (clean shutdown before the goal was sent)."""
    clock = clock or EpochClock()
    with db.write() as s:
        return bool(s.execute(update(Task).where(_held(task_id, owner), Task.goal_uuid.is_(None))
                              .values(status=QUEUED, lease_owner=None, lease_expires_at=None,
                                      attempts=Task.attempts - 1, updated_at=clock.now())
                              .execution_options(synchronize_session=False)).rowcount)


# --- lab status and inventory ------------------------------------------------------------------
def report_lab_status(db: Database, lab: str, reporter: str, report: dict[str, Any], *,
                      clock: Clock | None = None) -> None:
    clock = clock or EpochClock()
    with db.write() as s:
        row = s.get(LabNode, (lab, reporter))
        if row is None:
            s.add(LabNode(lab=lab, reporter=reporter, report_json=json.dumps(report, default=str),
                          reported_at=clock.now()))
        else:
            row.report_json = json.dumps(report, default=str)
            row.reported_at = clock.now()


def lab_status(db: Database, who: Principal, *, stale_s: float, clock: Clock | None = None) -> dict[str, Any]:
    who.require("read")
    clock = clock or EpochClock()
    now = clock.now()
    with db.read() as s:
        rows = list(s.scalars(select(LabNode).where(LabNode.lab == who.lab).order_by(LabNode.reporter)))
        counts = dict(s.execute(select(Task.status, func.count()).where(Task.lab == who.lab,
                                                                          Task.status.in_(LIVE_STATES))
                                .group_by(Task.status)).all())
    reporters = []
    nodes: set[str] = set()
    devices: dict[str, Any] = {}
    safety: dict[str, Any] | None = None
    for r in rows:
        report = json.loads(r.report_json)
        age = now - r.reported_at
        stale = age > stale_s
        reporters.append({"reporter": r.reporter, "age_s": round(age, 3), "stale": stale})
        if stale:
            continue
        nodes.update(report.get("nodes", []))
        devices.update(report.get("devices", {}))
        if report.get("safety") is not None:
            safety = report["safety"]
    return {"lab": who.lab, "reporters": reporters, "nodes": sorted(nodes), "devices": devices,
            "safety": safety if safety is not None else {"estop": None, "reason": "no live report"},
            "queue": {st: int(counts.get(st, 0)) for st in LIVE_STATES}}


def list_inventory(db: Database, who: Principal) -> list[dict[str, Any]]:
    who.require("read")
    with db.read() as s:
        return [{"item_id": i.item_id, "kind": i.kind, "location": i.location, "description": i.description,
                 "amount": i.amount, "unit": i.unit, "updated_at": i.updated_at}
                for i in s.scalars(select(InventoryItem).where(InventoryItem.lab == who.lab)
                                   .order_by(InventoryItem.item_id))]


def put_inventory_item(db: Database, who: Principal, item_id: str, item: dict[str, Any], *,
                       clock: Clock | None = None, client: str = "") -> dict[str, Any]:
    who.require("admin")
    clock = clock or EpochClock()
    with db.write() as s:
        row = s.get(InventoryItem, (who.lab, item_id))
        if row is None:
            row = InventoryItem(lab=who.lab, item_id=item_id)
            s.add(row)
        row.kind = str(item.get("kind") or "item")
        row.location = str(item.get("location") or "")
        row.description = str(item.get("description") or "")
        row.amount = item.get("amount")
        row.unit = str(item.get("unit") or "")
        row.updated_at = clock.now()
        _audit(s, key_id=who.key_id, lab=who.lab, action="inventory.put", target=item_id, outcome="ok",
               client=client, clock=clock)
    return {"item_id": item_id, **{k: getattr(row, k) for k in ("kind", "location", "description", "amount", "unit",
                                                                  "updated_at")}}


def delete_inventory_item(db: Database, who: Principal, item_id: str, *, clock: Clock | None = None,
                          client: str = "") -> None:
    who.require("admin")
    clock = clock or EpochClock()
    with db.write() as s:
        if not s.execute(delete(InventoryItem).where(InventoryItem.lab == who.lab, InventoryItem.item_id == item_id)
                         .execution_options(synchronize_session=False)).rowcount:
            raise NotFoundError(f"no inventory item {item_id}")
        _audit(s, key_id=who.key_id, lab=who.lab, action="inventory.delete", target=item_id, outcome="ok",
               client=client, clock=clock)


def expire_lease(db: Database, task_id: str, owner: str, *, clock: Clock | None = None) -> bool:
    """End our lease now (clean shutdown after the goal was sent): a successor resumes at once."""
    clock = clock or EpochClock()
    with db.write() as s:
        return bool(s.execute(update(Task).where(_held(task_id, owner))
                              .values(lease_expires_at=clock.now() - 1e-3, updated_at=clock.now())
                              .execution_options(synchronize_session=False)).rowcount)
