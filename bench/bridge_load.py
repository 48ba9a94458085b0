"""Load benchmark of the bridge: task submissions (POST /v1/tasks with auth, validation, limits,
idempotency and the insert) at concurrency 32 against the real server process on SQLite and on
PostgreSQL, and a bare FastAPI endpoint (same request, no auth/validation/database) in the same run
as the baseline.

    .venv/bin/python bench/bridge_load.py [--requests 3000] [--concurrency 32] [--baseline DIR]

Progress goes to stderr; the last line on stdout is
    RESULT sqlite_rps=... sqlite_p99_ms=... pg_rps=... pg_p99_ms=... bare_rps=...
Goal: p99 < 50 ms on both databases and throughput >= 1/4 of the bare endpoint.
PostgreSQL is the server on 127.0.0.1:5432 ($AICHEMIST_TEST_PG_URL); a throwaway database is
created and dropped. If it is unreachable, pg_* are reported as nan and the reason printed.

CPU per request, on stderr: the server process's, and on PostgreSQL also that of the database's
backend processes. ``--baseline DIR`` (another checkout, e.g. ``git worktree add /tmp/base
HEAD~3``) adds a target ``pg-base``: the bridge of DIR's code on PostgreSQL, in the same
interleaved rounds, for an A/B of CPU per request in one run (not in the RESULT line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import psutil
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

ROOT = pathlib.Path(__file__).resolve().parents[1]
PY = sys.executable
KEY = "ak_0badc0ffee00_" + "b" * 43
TASK = {"kind": "flow_experiment", "conditions": {"residence_time_min": 1.0, "temp_c": 90.0,
                                                  "equivalents": 2.0, "conc_dfnb_m": 0.2}}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bare_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/tasks")
    async def bare(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        return JSONResponse({"id": "bare", "status": "queued", "task": body}, status_code=202)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    return app


def start_server(kind: str, port: int, db_url: str | None, tmp: pathlib.Path,
                 root: pathlib.Path = ROOT) -> subprocess.Popen:
    """The bare endpoint or the bridge (``python -m cloud_bridge serve`` run in ``root``, so
    ``root``'s code) on ``port``."""
    out = open(tmp / f"{kind}.log", "w")
    if kind == "bare":
        cmd = [PY, __file__, "--serve-bare", str(port)]
        env = dict(os.environ)
    else:
        params = tmp / "bridge.yaml"
        params.write_text("bridge:\n  rate_limit_per_s: 100000\n  rate_limit_burst: 100000\n")
        cmd = [PY, "-m", "cloud_bridge", "serve", "--host", "127.0.0.1", "--port", str(port), "--database-url",
               db_url or "", "--params-file", str(params), "--bootstrap-lab", "bench", "--log-level", "warning",
               "--no-access-log"]
        env = {**os.environ, "AICHEMIST_BOOTSTRAP_ADMIN_KEY": KEY}
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited: {(tmp / f'{kind}.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{kind} server did not start")


class Connection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams. httpx's async pool costs more CPU
    per request than the endpoint under test at concurrency 32, which would make the load
    generator, not the server, the thing measured."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n")
        self.writer.write(head.encode() + body)
        assert self.reader is not None
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def load(port: int, requests: int, concurrency: int, tag: str) -> tuple[list[float], float, int]:
    auth = f"Bearer {KEY}"
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))

    async def worker() -> None:
        nonlocal errors
        conn = Connection(port)
        try:
            for i in counter:
                body = json.dumps({**TASK, "name": f"{tag}-{i}"}).encode()
                t0 = time.perf_counter()
                status, payload = await conn.post("/v1/tasks", body, {"Authorization": auth,
                                                                      "Idempotency-Key": f"{tag}-{i}"})
                latencies.append(time.perf_counter() - t0)
                if status != 202:
                    errors += 1
                    if errors <= 3:
                        log(f"  {tag}: unexpected {status}: {payload[:200]!r}")
        finally:
            conn.close()

    t_start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - t_start, errors


def p99_ms(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(math.ceil(0.99 * len(ordered))) - 1)] * 1000


def pg_backend_cpu(database: str | None) -> float:
    """CPU seconds of the PostgreSQL backends now connected to ``database`` (0 for None)."""
    if database is None:
        return 0.0
    from sqlalchemy import create_engine, text

    from cloud_bridge import testing

    engine = create_engine(testing.pg_admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            pids = [row[0] for row in conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :d"),
                                                   {"d": database})]
    finally:
        engine.dispose()
    total = 0.0
    for pid in pids:
        try:
            total += sum(psutil.Process(pid).cpu_times()[:2])
        except psutil.Error:
            pass  # a backend that ended in between
    return total


def measure(ports: dict[str, int], args: argparse.Namespace, pids: dict[str, int],
            databases: dict[str, str] | None = None) -> dict[str, tuple[float, float]]:
    """Interleaved rounds (bare, sqlite, pg, bare, ...) so that a change in the machine's load
    during the run affects every target alike. Returns {target: (requests/s, p99 ms)}.
    ``databases``: the PostgreSQL database of a target, whose backends' CPU is counted too."""
    databases = databases or {}
    for kind, port in ports.items():
        asyncio.run(load(port, args.warmup, args.concurrency, f"warm-{kind}"))
    lat: dict[str, list[float]] = {k: [] for k in ports}
    busy: dict[str, float] = {k: 0.0 for k in ports}
    cpu: dict[str, float] = {k: 0.0 for k in ports}
    db_cpu: dict[str, float] = {k: 0.0 for k in ports}
    per_round = max(1, args.requests // args.rounds)
    for r in range(args.rounds):
        for kind, port in ports.items():
            server = psutil.Process(pids[kind])
            before = sum(server.cpu_times()[:2])
            db_before = pg_backend_cpu(databases.get(kind))
            latencies, elapsed, errors = asyncio.run(load(port, per_round, args.concurrency, f"r{r}-{kind}"))
            cpu[kind] += sum(server.cpu_times()[:2]) - before
            db_cpu[kind] += pg_backend_cpu(databases.get(kind)) - db_before
            if errors:
                raise RuntimeError(f"{kind}: {errors} requests failed")
            lat[kind] += latencies
            busy[kind] += elapsed
            log(f"round {r + 1}/{args.rounds} {kind:>6}: {len(latencies) / elapsed:8.1f} req/s  "
                f"p99 {p99_ms(latencies):6.1f} ms")
    for k in ports:
        # CPU time of the server process per request: unlike wall-clock rates it does not depend
        # on what else the machine is running
        backends = f" + {1000 * db_cpu[k] / len(lat[k]):.3f} ms PostgreSQL backends" if k in databases else ""
        log(f"{k:>7}: {1000 * cpu[k] / len(lat[k]):.3f} ms server CPU per request{backends}")
    return {k: (len(lat[k]) / busy[k], p99_ms(lat[k])) for k in ports}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=pathlib.Path, default=None,
                        help="another checkout of the project: its bridge on PostgreSQL is the extra target pg-base")
    parser.add_argument("--serve-bare", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare is not None:
        sys.path.insert(0, str(ROOT))
        from cloud_bridge.cli import run_server

        # the bridge's own server settings (uvicorn options, GIL switch interval, frozen heap)
        run_server(bare_app(), host="127.0.0.1", port=args.serve_bare, log_level="warning", access_log=False)
        return

    sys.path.insert(0, str(ROOT))
    from cloud_bridge import testing

    procs: list[subprocess.Popen] = []
    databases: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="aichemist-bench-") as tmp_s:
        tmp = pathlib.Path(tmp_s)
        try:
            ports = {"bare": free_port(), "sqlite": free_port()}
            procs.append(start_server("bare", ports["bare"], None, tmp))
            procs.append(start_server("sqlite", ports["sqlite"], f"sqlite:///{tmp / 'bench.db'}", tmp))
            reason = testing.pg_unavailable_reason()
            if reason:
                log(f"PostgreSQL skipped: {reason}")
            else:
                pg_targets = {"pg": ROOT, **({"pg-base": args.baseline.resolve()} if args.baseline else {})}
                for kind, root in pg_targets.items():
                    databases[kind] = f"aichemist_bench_{kind.replace('-', '_')}_{os.getpid()}"
                    ports[kind] = free_port()
                    procs.append(start_server(kind, ports[kind], testing.create_pg_database(databases[kind]), tmp,
                                              root))
            results = measure(ports, args, {k: p.pid for k, p in zip(ports, procs)}, databases)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGINT)
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            for name in databases.values():
                testing.drop_pg_database(name)
    nan = (float("nan"), float("nan"))
    bare_rps = results["bare"][0]
    sqlite_rps, sqlite_p99 = results["sqlite"]
    pg_rps, pg_p99 = results.get("pg", nan)
    log(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    log(f"bare: {bare_rps:.1f} req/s p99 {results['bare'][1]:.1f} ms ({args.requests} requests per target, "
        f"concurrency {args.concurrency}, {args.rounds} interleaved rounds)")
    for kind, rps, p99 in (("sqlite", sqlite_rps, sqlite_p99), ("pg", pg_rps, pg_p99)):
        if math.isnan(rps):
            continue
        ok = p99 < 50 and rps >= bare_rps / 4
        log(f"{kind}: {rps:.1f} req/s, p99 {'<' if p99 < 50 else '>='} 50 ms, throughput {rps / bare_rps:.2f} of bare "
            f"-> {'goal met' if ok else 'goal NOT met'}")
    if "pg-base" in results:
        base_rps, base_p99 = results["pg-base"]
        log(f"pg-base ({args.baseline}): {base_rps:.1f} req/s, p99 {base_p99:.1f} ms, throughput "
            f"{base_rps / bare_rps:.2f} of bare")
    print(f"RESULT sqlite_rps={sqlite_rps:.1f} sqlite_p99_ms={sqlite_p99:.1f} pg_rps={pg_rps:.1f} "
          f"pg_p99_ms={pg_p99:.1f} bare_rps={bare_rps:.1f}")


if __name__ == "__main__":
    main()
