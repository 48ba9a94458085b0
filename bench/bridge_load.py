"""Load benchmark of the bridge: task submissions (POST /v1/tasks with auth, validation, limits,
idempotency and the insert) at concurrency 32 against the real server process on SQLite and on
PostgreSQL, and a bare FastAPI endpoint (same request, no auth/validation/database) in the same run
as the baseline.

    .venv/bin/python bench/bridge_load.py [--requests 3000] [--concurrency 32]

Progress goes to stderr; the last line on stdout is
    RESULT sqlite_rps=... sqlite_p99_ms=... pg_rps=... pg_p99_ms=... bare_rps=...
Goal: p99 < 50 ms on both databases and throughput >= 1/4 of the bare endpoint.
PostgreSQL is the server on 127.0.0.1:5432 ($AICHEMIST_TEST_PG_URL); a throwaway database is
created and dropped. If it is unreachable, pg_* are reported as nan and the reason printed.
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


def start_server(kind: str, port: int, db_url: str | None, tmp: pathlib.Path) -> subprocess.Popen:
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
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
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


async def load(port: int, requests: int, concurrency: int, tag: str) -> tuple[float, float, int]:
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
    elapsed = time.perf_counter() - t_start
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(math.ceil(0.99 * len(latencies))) - 1)] * 1000
    return len(latencies) / elapsed, p99, errors


def run_target(kind: str, db_url: str | None, args: argparse.Namespace, tmp: pathlib.Path) -> tuple[float, float]:
    port = free_port()
    proc = start_server(kind, port, db_url, tmp)
    try:
        asyncio.run(load(port, args.warmup, args.concurrency, f"warm-{kind}"))
        rps, p99, errors = asyncio.run(load(port, args.requests, args.concurrency, f"run-{kind}"))
        log(f"{kind:>6}: {rps:8.1f} req/s  p99 {p99:6.1f} ms  errors {errors}  ({args.requests} requests, "
            f"concurrency {args.concurrency})")
        if errors:
            raise RuntimeError(f"{kind}: {errors} requests failed")
        return rps, p99
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serve-bare", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare is not None:
        import uvicorn

        uvicorn.run(bare_app(), host="127.0.0.1", port=args.serve_bare, log_level="warning", access_log=False)
        return

    sys.path.insert(0, str(ROOT))
    from cloud_bridge import testing

    with tempfile.TemporaryDirectory(prefix="aichemist-bench-") as tmp_s:
        tmp = pathlib.Path(tmp_s)
        bare_rps, bare_p99 = run_target("bare", None, args, tmp)
        sqlite_rps, sqlite_p99 = run_target("sqlite", f"sqlite:///{tmp / 'bench.db'}", args, tmp)
        reason = testing.pg_unavailable_reason()
        if reason:
            log(f"PostgreSQL skipped: {reason}")
            pg_rps = pg_p99 = float("nan")
        else:
            name = f"aichemist_bench_{os.getpid()}"
            url = testing.create_pg_database(name)
            try:
                pg_rps, pg_p99 = run_target("pg", url, args, tmp)
            finally:
                testing.drop_pg_database(name)
    for kind, rps, p99 in (("sqlite", sqlite_rps, sqlite_p99), ("pg", pg_rps, pg_p99)):
        ok = p99 < 50 and rps >= bare_rps / 4
        log(f"{kind}: p99 {'<' if p99 < 50 else '>='} 50 ms, throughput {rps / bare_rps:.2f} of bare "
            f"-> {'goal met' if ok else 'goal NOT met'}")
    print(f"RESULT sqlite_rps={sqlite_rps:.1f} sqlite_p99_ms={sqlite_p99:.1f} pg_rps={pg_rps:.1f} "
          f"pg_p99_ms={pg_p99:.1f} bare_rps={bare_rps:.1f}")


if __name__ == "__main__":
    main()
