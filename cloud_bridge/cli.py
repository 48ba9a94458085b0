"""Command line of the bridge: ``submit``, ``status``, ``watch``, ``keys``, ``db``, ``serve``.

Mounted into the ``aichemist`` CLI by the lead; also runs alone as ``python -m cloud_bridge``.
HTTP commands read ``--url`` / ``AICHEMIST_BRIDGE_URL`` and ``--api-key`` / ``AICHEMIST_API_KEY``;
``keys`` and ``db`` work on the database directly (``--database-url`` / ``AICHEMIST_DATABASE_URL``).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import sys
from typing import Any, Optional

import typer

from aichemist.errors import AIChemistError

app = typer.Typer(help="aichemist cloud bridge: tasks, keys, database, server", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (stored hashed; the key is printed once)", no_args_is_help=True)
db_app = typer.Typer(help="the bridge database", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")

_SECRET_RE = re.compile(r"(ak_[0-9a-f]{12}_)[A-Za-z0-9_\-]+")


class RedactSecrets(logging.Filter):
    """Last line of defence: no API key secret reaches a log line, whoever logs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "ak_" in msg:
            record.msg = _SECRET_RE.sub(r"\1***", msg)
            record.args = ()
        return True


def install_log_redaction() -> None:
    for name in ("", "uvicorn", "uvicorn.access", "uvicorn.error", "cloud_bridge", "sqlalchemy"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
        for handler in logger.handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets())


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


def explain_unreachable(exc: BaseException) -> bool:
    """Print a clear error for a bridge that cannot be reached (instead of a traceback);
    returns False for any other exception."""
    import httpx

    if not isinstance(exc, httpx.TransportError):
        return False
    url = str(exc.request.url) if getattr(exc, "_request", None) is not None else (
        os.environ.get("AICHEMIST_BRIDGE_URL") or "http://127.0.0.1:8080")
    typer.echo(f"error: cannot reach the bridge at {url} ({type(exc).__name__}: {exc}); is it running? "
               "Set --url or AICHEMIST_BRIDGE_URL.", err=True)
    return True


def _client(url: Optional[str], api_key: Optional[str]) -> Any:
    from cloud_bridge.client import BridgeClient

    return BridgeClient(url, api_key)


UrlOpt = typer.Option(None, "--url", help="bridge URL (default $AICHEMIST_BRIDGE_URL or http://127.0.0.1:8080)")
KeyOpt = typer.Option(None, "--api-key", help="API key (default $AICHEMIST_API_KEY)")
DbOpt = typer.Option(None, "--database-url", help="SQLAlchemy URL (default $AICHEMIST_DATABASE_URL, then "
                                                  "the embedded SQLite file)")


class ProgressPrinter:
    """One stderr line per change of a task's phase, as its events arrive."""

    def __init__(self) -> None:
        self.last = ""

    def __call__(self, ev: dict[str, Any]) -> None:
        kind, envelope = ev.get("event"), ev.get("data") or {}
        if not isinstance(envelope, dict):
            return
        # stored task events arrive as {"id", "task_id", "type", "data": {...}, "at"}
        data = envelope.get("data") if isinstance(envelope.get("data"), dict) else envelope
        if kind == "progress":
            detail = data.get("detail") or {}
            parts = [str(detail[k]) for k in ("step_id", "device", "phase") if detail.get(k)]
            where = f" ({', '.join(parts)})" if parts else ""
            line = f"[{100 * float(data.get('progress') or 0):5.1f}%] {data.get('phase', '')}{where}"
        elif kind == "snapshot":
            line = f"status: {data.get('status', '')}"
        elif kind in ("claimed", "taken_over", "approved", "cancel_requested", "finished"):
            line = f"{kind}" + (f": {data['status']}" if data.get("status") else "")
        else:
            return
        if line != self.last:
            typer.echo(line, err=True)
            self.last = line


@app.command()
def submit(task_file: pathlib.Path = typer.Argument(..., help="task JSON file, or - for stdin"),
           idempotency_key: Optional[str] = typer.Option(None, help="default: a new UUID"),
           campaign: str = typer.Option("", help="campaign name"),
           wait: bool = typer.Option(False, help="wait until the task ends"),
           url: Optional[str] = UrlOpt, api_key: Optional[str] = KeyOpt) -> None:
    """Submit a task; prints the stored task as JSON."""
    try:
        text = sys.stdin.read() if str(task_file) == "-" else task_file.read_text()
        document = json.loads(text)
    except (OSError, ValueError) as exc:
        _fail(exc)
    try:
        with _client(url, api_key) as bridge:
            task = bridge.submit(document, idempotency_key=idempotency_key, campaign=campaign)
            if wait:
                typer.echo(f"task {task['id']} {task['status']}; waiting (Ctrl-C stops waiting, not the task)", err=True)
                task = bridge.wait(task["id"], on_event=ProgressPrinter())
    except AIChemistError as exc:
        _fail(exc)
    typer.echo(json.dumps(task, indent=2))
    if wait and task["status"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def status(task_id: Optional[str] = typer.Argument(None, help="a task id; without it: list recent tasks"),
           state: Optional[list[str]] = typer.Option(None, "--status", help="filter the list by status"),
           campaign: Optional[str] = typer.Option(None), limit: int = typer.Option(20),
           url: Optional[str] = UrlOpt, api_key: Optional[str] = KeyOpt) -> None:
    """Show one task (JSON) or a table of recent tasks."""
    try:
        with _client(url, api_key) as bridge:
            if task_id:
                typer.echo(json.dumps(bridge.get(task_id), indent=2))
                return
            page = bridge.list(status=state, campaign=campaign, limit=limit)
    except AIChemistError as exc:
        _fail(exc)
    for t in page["items"]:
        typer.echo(f"{t['id']}  {t['status']:<17} {t['kind']:<16} {t['campaign'] or '-':<12} {t['message'][:60]}")


@app.command()
def watch(task_id: Optional[str] = typer.Argument(None, help="a task id; without it: the whole lab"),
          url: Optional[str] = UrlOpt, api_key: Optional[str] = KeyOpt) -> None:
    """Print live events (one JSON line each) until the task ends (or forever for the lab)."""
    try:
        with _client(url, api_key) as bridge:
            after: Optional[int] = None
            while True:  # a stream the server closes (a restart, a time limit) is resumed after the last event
                resumed = after is not None
                for ev in bridge.events(task_id, after=after):
                    if str(ev.get("id", "")).isdigit():
                        after = int(ev["id"])
                    terminal = (ev.get("event") == "snapshot" and isinstance(ev.get("data"), dict)
                                and ev["data"].get("status") in ("succeeded", "failed", "cancelled"))
                    if ev.get("event") == "snapshot" and resumed and task_id and not terminal:
                        continue  # a resumed stream's snapshot: its state was printed already
                    typer.echo(json.dumps({"event": ev.get("event"), "data": ev.get("data")}))
                    if task_id and (ev.get("event") == "finished" or terminal):
                        return
    except AIChemistError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        return


def _db(database_url: Optional[str]) -> Any:
    from cloud_bridge.config import resolve_database_url
    from cloud_bridge.db import Database

    db = Database(resolve_database_url(database_url))
    db.upgrade()
    return db


@keys_app.command("create")
def keys_create(lab: str = typer.Option(..., help="the lab the key is bound to"),
                scopes: str = typer.Option(..., help="comma-separated: submit,read,approve,admin"),
                kind: str = typer.Option("human", help="human | model_service | scheduler | service"),
                name: str = typer.Option("", help="who or what holds it"),
                rate_limit_per_s: Optional[float] = typer.Option(None, help="default: the server's"),
                database_url: Optional[str] = DbOpt) -> None:
    """Create an API key and print it ONCE on stdout (only its hash is stored)."""
    from cloud_bridge import store

    try:
        key, who = store.create_key(_db(database_url), lab=lab, scopes=[s.strip() for s in scopes.split(",") if s.strip()],
                                    kind=kind, name=name, rate_limit_per_s=rate_limit_per_s)
    except AIChemistError as exc:
        _fail(exc)
    typer.echo(f"created key id {who.key_id} for lab {who.lab} ({who.kind}; {' '.join(sorted(who.scopes))}); "
               "store it now, it is not shown again:", err=True)
    typer.echo(key)


@keys_app.command("list")
def keys_list(lab: Optional[str] = typer.Option(None), database_url: Optional[str] = DbOpt) -> None:
    """List keys (ids, never secrets)."""
    from cloud_bridge import store

    for k in store.list_keys(_db(database_url), lab):
        typer.echo(f"{k['id']}  lab={k['lab']:<12} kind={k['kind']:<14} scopes={','.join(k['scopes']):<28} "
                   f"{'REVOKED' if k['revoked'] else 'active'}  {k['name']}")


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="the key id (the part after ak_)"),
                database_url: Optional[str] = DbOpt) -> None:
    """Revoke a key: it is refused (401) from the next request on."""
    from cloud_bridge import store

    try:
        store.revoke_key(_db(database_url), key_id)
    except AIChemistError as exc:
        _fail(exc)
    typer.echo(f"revoked {key_id}")


@db_app.command("upgrade")
def db_upgrade(database_url: Optional[str] = DbOpt, revision: str = typer.Option("head")) -> None:
    """Run the Alembic migrations up to REVISION."""
    from cloud_bridge.config import resolve_database_url
    from cloud_bridge.db import Database

    url = resolve_database_url(database_url)
    Database(url).upgrade(revision)
    typer.echo(f"database at {revision}: {_safe_url(url)}")


def _safe_url(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


@app.command()
def serve(host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8080),
          database_url: Optional[str] = DbOpt,
          params_file: Optional[pathlib.Path] = typer.Option(None, help="YAML with a 'bridge:' section"),
          bootstrap_lab: str = typer.Option("default", help="lab of the key from $AICHEMIST_BOOTSTRAP_ADMIN_KEY"),
          log_level: str = typer.Option("info"),
          access_log: bool = typer.Option(True, help="log one line per request (never headers)")) -> None:
    """Run the HTTP API (migrates the database first).

    Dev / twin bootstrap: when $AICHEMIST_BOOTSTRAP_ADMIN_KEY holds a key of the form
    ak_<12 hex>_<secret>, an admin key with exactly that value is created for --bootstrap-lab
    (if not present), so a twin can start with a known key and never print it.
    """
    from cloud_bridge import store
    from cloud_bridge.api import create_app
    from cloud_bridge.config import BOOTSTRAP_ADMIN_KEY_ENV, load_settings, resolve_database_url

    settings = load_settings(params_file)
    url = resolve_database_url(database_url, settings)
    app_ = create_app(url, settings)
    bootstrap = os.environ.get(BOOTSTRAP_ADMIN_KEY_ENV)
    if bootstrap:
        try:
            _, who = store.create_key(app_.state.db, lab=bootstrap_lab, scopes=["submit", "read", "approve", "admin"],
                                      kind="human", name="bootstrap admin", secret=bootstrap)
        except AIChemistError as exc:
            _fail(exc)
        typer.echo(f"bootstrap admin key id {who.key_id} for lab {bootstrap_lab}", err=True)
    logging.basicConfig(level=log_level.upper())
    install_log_redaction()
    typer.echo(f"bridge serving on http://{host}:{port} with {_safe_url(url)}", err=True)
    run_server(app_, host=host, port=port, log_level=log_level, access_log=access_log)


def run_server(app_: Any, *, host: str, port: int, log_level: str = "info", access_log: bool = True) -> None:
    """uvicorn with the bridge's process settings (also used by bench/bridge_load.py for its bare
    endpoint, so that both are served alike)."""
    import gc

    import uvicorn

    # The event loop thread gives up the GIL on every socket call and must get it back from the
    # worker threads doing database work; with the default 5 ms switch interval that hand-back
    # dominates latency under load (a GIL convoy). 0.5 ms keeps the loop responsive.
    sys.setswitchinterval(0.0005)
    # Everything imported and built so far (FastAPI, SQLAlchemy, pydantic models, the planner's
    # task language) lives as long as the process: move it out of the collector's reach. Otherwise
    # each full collection walks that whole heap, stopping every request for 60-90 ms (measured
    # under the load benchmark: 7 such pauses in 6000 submissions made the p99).
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(app_, host=host, port=port, log_level=log_level, access_log=access_log)
    server = uvicorn.Server(config)
    install_log_redaction()
    server.run()


def main() -> None:
    try:
        app()
    except Exception as exc:
        if not explain_unreachable(exc):
            raise
        sys.exit(2)
