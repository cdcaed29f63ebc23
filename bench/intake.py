"""Intake throughput: our signup webhook next to a bare Starlette endpoint, same machine, same run.

    .venv/bin/python bench/intake.py [--loadgen httpx|raw] [--seconds 4] [--rounds 3] [--concurrency 32]

Three real uvicorn servers (one worker each, loopback, same settings) answer POST /webhook/christmas-signup:

* ``bare``    - a bare Starlette endpoint answering 202 with a small JSON body: it reads no body, validates
                and stores nothing.
* ``naive``   - the reference's naive FastAPI endpoint: a pydantic body parameter (SignupPayload) and a
                synchronous ``def`` handler that opens SQLite, INSERTs, commits and closes per request.
* ``signups`` - our app (xmas_pipeline.web.app) on a temp XMAS_HOME: validation, then the group-commit
                writer; the 202 is sent only after the transaction holding the row has committed.

Both databases are WAL with synchronous=FULL and every signup carries a unique email, so each 202 is a
durable insert; at the end the rows in each database must equal the 202s that server answered.

Two load regimes, because a ratio to ``bare`` means little without saying under which load:

1. ``httpx`` (the default, and the headline): a conventional Python HTTP client, the kind the issue's
   reference numbers imply. A process of its own runs ``--concurrency`` workers (default 32), each with
   its own ``httpx.AsyncClient`` holding one keep-alive connection, on the default asyncio loop. Such a
   client spends ~450 us of CPU per request on a 2-CPU test machine, far more than bare Starlette
   (~30-60 us), so ``bare`` measures the client's ceiling (~2,200 req/s there, client at ~100% of a
   CPU) and a server shows up below it only when it is slow or adds latency. The issue's reference
   (naive = 0.31x bare) can only have come from such a regime: under the raw load below the naive
   endpoint is ~0.04x. The run proves which regime it is in by measuring ``naive`` under the same
   client and printing its ratio as a calibration line next to ours. On the 2-CPU machine it came out
   at 0.42-0.51x when the machine was otherwise quiet (0.25-0.57x with other jobs running), whatever
   the concurrency from 16 to 96: the same client-bound regime as the reference, though somewhat more
   client-bound than its 0.31x (a relatively slower client flatters every server under test, ours
   included; read the calibration line next to the headline).
   Why this is the headline: the 0.8x target was set against that reference, so it is only meaningful
   in the regime the reference was measured in. What it says is whether the intake keeps up with
   realistic senders while making every signup durable, not that it is as cheap per request as bare
   Starlette; the raw regime says that. Note that httpx writes the headers and the body of a request
   separately and yields to its event loop in between; bare answers on the headers alone, while naive
   and ours must wait for the body, part of why even a server with spare CPU stays below 1.0x.
   Two fixes keep the client from being absurdly slow (~200 req/s): one AsyncClient per worker,
   because httpcore 1.0's pool bookkeeping loops over its connections inside a loop over its
   connections (and over queued requests) on every request, so one shared pool of 64 runs at ~200
   req/s even with httpx.Limits(64, 64) (with the default Limits only 20 connections stay alive and the
   rest reconnect: ~500 req/s); and a cached miss for ``sniffio``, which httpcore 1.0.x otherwise
   re-imports (a full sys.path scan) several times per request when it is not installed (anyio >= 4.11
   no longer pulls it in; see encode/httpcore#1103).

2. ``raw`` (server-saturated): raw HTTP/1.1 keep-alive on asyncio protocols with uvloop, 64 connections,
   much cheaper per request than any server, so each server runs at ~100% of a CPU and the ratio is
   the ratio of server CPU per request. Bare Starlette does ~25-35k req/s here (~30 us/req), the naive
   endpoint ~0.04x of it, ours ~0.3x (~105-115 us/req). This is the strict test of our per-request
   cost, and it is far below 0.8x: the email validation alone (email_validator via pydantic's
   EmailStr) costs ~20 us, and the durable insert ~20 us per row even when batched.

The default run measures all three servers under the httpx client (``--rounds`` alternating rounds),
then once more under the raw one (``--raw-seconds`` each), printed on its own human-readable line.
``--loadgen raw`` makes the raw regime the headline and skips the httpx one.

The last line is JSON for the headline regime: signups_per_s, bare_per_s, ratio, p50_ms, p99_ms
(signup latencies as the client saw them, client queueing included), naive_ratio and loadgen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SIGNUP_PATH = "/webhook/christmas-signup"
SERVERS = ("bare", "naive", "signups")

# --- the peers (uvicorn imports this module as `intake`) ---------------------------------------


def _bare_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def signup(request):
        return JSONResponse({"event_id": 1, "duplicate": False}, status_code=202)

    async def healthz(request):
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route(SIGNUP_PATH, signup, methods=["POST"]), Route("/healthz", healthz)])


def _naive_app():
    """FastAPI as a tutorial would write it: validate the body, insert and commit, per request, in a thread."""
    from fastapi import FastAPI

    from xmas_pipeline.campaign.models import SignupPayload

    path = os.environ["XMAS_BENCH_NAIVE_DB"]
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS signups (id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL, payload TEXT)"
        )

    app = FastAPI()

    def signup(payload: SignupPayload) -> dict:
        db = sqlite3.connect(path, timeout=30)
        try:
            db.execute("PRAGMA synchronous=FULL")  # the same durability as ours: the commit is fsynced
            cur = db.execute(
                "INSERT INTO signups (email, payload) VALUES (?, ?)", (payload.email.lower(), payload.model_dump_json())
            )
            db.commit()
            return {"event_id": cur.lastrowid, "duplicate": False}
        finally:
            db.close()

    # This module's annotations are strings (PEP 563) and SignupPayload is local: resolve them for FastAPI.
    signup.__annotations__ = {"payload": SignupPayload, "return": dict}
    app.post(SIGNUP_PATH, status_code=202)(signup)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    return app


bare_app = _bare_app() if os.environ.get("XMAS_BENCH_BARE") == "1" else None
naive_app = _naive_app() if os.environ.get("XMAS_BENCH_NAIVE_DB") else None

# --- the load generators (each run in a process of its own) --------------------------------------

BODY = (
    '{"email":"%s","first_name":"Bench","business_name":"Bench Ltd","assessment_score":42,'
    '"red_systems":2,"orange_systems":3,"yellow_systems":2,"green_systems":1,"gps_score":4.5,'
    '"money_score":3.25,"weakest_system_1":"Cash flow","weakest_system_2":"Hiring",'
    '"revenue_leak_total":125000,"utm_source":"bench","page":"/assessment/results"}'
)


class _Load:
    """Shared state of one load run: what to send, when to stop, what came back."""

    def __init__(self, prefix: str, seconds: float, warmup: float) -> None:
        self.prefix = prefix
        self.counter = 0
        self.started = time.perf_counter()
        self.measure_from = self.started + warmup
        self.stop_at = self.measure_from + seconds
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.duplicates = 0
        self.measured = 0

    def next_body(self) -> bytes:
        self.counter += 1
        return (BODY % f"b{self.counter}-{self.prefix}@bench.example.com").encode()

    def record(self, sent_at: float, status: int, body: bytes) -> None:
        now = time.perf_counter()
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if b'"duplicate":true' in body:
            self.duplicates += 1
        if now >= self.measure_from and sent_at >= self.measure_from:
            self.latencies.append(now - sent_at)
        if self.measure_from <= now < self.stop_at:
            self.measured += 1

    def summary(self, seconds: float, cpu: float) -> dict:
        lat = sorted(self.latencies)
        return {
            "measured": self.measured,
            "seconds": seconds,
            "statuses": self.statuses,
            "duplicates": self.duplicates,
            "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
            "p99_ms": 1000 * lat[min(int(len(lat) * 0.99), len(lat) - 1)] if lat else None,
            "loadgen_cpu": cpu / seconds,
        }


async def _cpu_at(when: float) -> float:
    await asyncio.sleep(max(when - time.perf_counter(), 0))
    return time.process_time()


async def _drive_httpx(port: int, concurrency: int, seconds: float, warmup: float, prefix: str) -> dict:
    import httpx

    load = _Load(prefix, seconds, warmup)
    headers = {"content-type": "application/json", "user-agent": "xmas-bench"}
    # One client (one keep-alive connection) per worker: see the module docstring for why not one pool.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60) for _ in range(concurrency)
    ]

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < load.stop_at:
            sent_at = time.perf_counter()
            response = await client.post(SIGNUP_PATH, content=load.next_body(), headers=headers)
            load.record(sent_at, response.status_code, response.content)

    try:
        measure = asyncio.ensure_future(_cpu_at(load.measure_from))
        await asyncio.gather(*(worker(c) for c in clients))
        cpu = time.process_time() - await measure
    finally:
        for client in clients:
            await client.aclose()
    return load.summary(seconds, cpu)


class _Conn(asyncio.Protocol):
    """One raw keep-alive connection sending a request as soon as the previous answer is complete."""

    def __init__(self, load: _Load, head: bytes, done: asyncio.Future) -> None:
        self.load, self.head, self.done = load, head, done
        self.buf = b""
        self.sent_at = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        if time.perf_counter() >= self.load.stop_at:
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)
            return
        self.sent_at = time.perf_counter()
        body = self.load.next_body()
        self.transport.write(self.head % len(body) + body)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
        total = end + 4 + length
        if len(self.buf) < total:
            return
        status = int(self.buf[9:12])
        body = self.buf[end + 4 : total]
        self.buf = self.buf[total:]
        self.load.record(self.sent_at, status, body)
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _drive_raw(port: int, concurrency: int, seconds: float, warmup: float, prefix: str) -> dict:
    loop = asyncio.get_running_loop()
    load = _Load(prefix, seconds, warmup)
    head = (
        f"POST {SIGNUP_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: xmas-bench\r\n"
        "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    ).encode()
    waits = []
    for _ in range(concurrency):
        done = loop.create_future()
        await loop.create_connection(lambda d=done: _Conn(load, head, d), "127.0.0.1", port)
        waits.append(done)
    cpu0 = await _cpu_at(load.measure_from)
    await asyncio.gather(*waits)
    return load.summary(seconds, time.process_time() - cpu0)


def child_main(args: argparse.Namespace) -> None:
    if args.child == "raw":
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        drive = _drive_raw
    else:
        try:
            import sniffio  # noqa: F401
        except ImportError:
            # httpcore 1.0.x imports sniffio inside a per-request helper; Python does not cache a failed
            # import, so each call re-scans sys.path. Caching the miss keeps its fallback ("asyncio").
            sys.modules["sniffio"] = None
        drive = _drive_httpx
    result = asyncio.run(drive(args.port, args.concurrency, args.seconds, args.warmup, args.prefix))
    print(json.dumps(result))


# --- the orchestration ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not become ready")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _uvicorn(app_args: list[str], port: int, env: dict[str, str]) -> subprocess.Popen:
    # Identical server settings for all: one worker, loopback, no access log, default (uvloop/httptools).
    cmd = [PYTHON, "-m", "uvicorn", *app_args, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", "1", "--no-access-log", "--log-level", "warning"]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)


def _run_load(
    kind: str, port: int, server: subprocess.Popen, args: argparse.Namespace, seconds: float, prefix: str
) -> dict:
    concurrency = args.concurrency if kind == "httpx" else args.raw_concurrency
    cmd = [PYTHON, __file__, "--child", kind, "--port", str(port), "--concurrency", str(concurrency)]
    cmd += ["--seconds", str(seconds), "--warmup", str(args.warmup), "--prefix", prefix]
    cpu0, t0 = _cpu_seconds(server.pid), time.monotonic()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    cpu1, t1 = _cpu_seconds(server.pid), time.monotonic()
    result = json.loads(out.strip().splitlines()[-1])
    result["server_cpu"] = (cpu1 - cpu0) / (t1 - t0)  # share of one CPU over the whole run, client start included
    result["server_us_per_req"] = 1e6 * (cpu1 - cpu0) / max(sum(result["statuses"].values()), 1)  # warm-up included
    return result


def _rate(runs: list[dict]) -> float:
    return sum(r["measured"] for r in runs) / sum(r["seconds"] for r in runs)


def _describe(name: str, r: dict) -> str:
    rate = r["measured"] / r["seconds"]
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))
    return (
        f"  {name:<8} {rate:8.0f} req/s   p50 {r['p50_ms']:6.2f} ms   p99 {r['p99_ms']:6.2f} ms   "
        f"server CPU {100 * r['server_cpu']:4.0f}% ({r['server_us_per_req']:4.0f} us/req)   "
        f"loadgen CPU {100 * r['loadgen_cpu']:4.0f}%   [{codes}]"
    )


def _regime(kind: str, rounds: int, seconds: float, args, servers: dict) -> dict[str, list[dict]]:
    client = f"httpx, {args.concurrency} workers" if kind == "httpx" else f"raw, {args.raw_concurrency} connections"
    print(f"{kind} regime ({client}): {rounds} round(s) of {seconds}s (+{args.warmup}s warm-up) per server", flush=True)
    runs: dict[str, list[dict]] = {name: [] for name in SERVERS}
    for n in range(rounds):
        for name in SERVERS:  # alternate, so drift on the machine affects every server alike
            port, proc = servers[name]
            r = _run_load(kind, port, proc, args, seconds, f"{kind}{n}")
            runs[name].append(r)
            print(_describe(name, r), flush=True)
    return runs


def _ratios(runs: dict[str, list[dict]]) -> tuple[float, float, float, float]:
    bare, naive, ours = (_rate(runs[name]) for name in SERVERS)
    return bare, naive, ours, ours / bare


def main(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="xmas-bench-"))
    try:
        run(args, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(args: argparse.Namespace, home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XMAS_")}
    naive_db = home / "naive.db"
    envs = {
        "bare": {**env, "XMAS_BENCH_BARE": "1"},
        "naive": {**env, "XMAS_BENCH_NAIVE_DB": str(naive_db), "PYTHONPATH": str(ROOT)},
        "signups": {**env, "XMAS_HOME": str(home), "PYTHONPATH": str(ROOT)},
    }
    apps = {
        "bare": ["--app-dir", str(Path(__file__).parent), "intake:bare_app"],
        "naive": ["--app-dir", str(Path(__file__).parent), "intake:naive_app"],
        "signups": ["--factory", "xmas_pipeline.web.app:create_app"],
    }
    servers = {}
    for name in SERVERS:
        port = _free_port()
        servers[name] = (port, _uvicorn(apps[name], port, envs[name]))
    print(f"cpus: {os.cpu_count()}   databases: {home / 'xmas.db'} and {naive_db} (WAL, synchronous=FULL)", flush=True)
    headline = args.loadgen
    results: dict[str, dict[str, list[dict]]] = {}
    try:
        for name, (port, proc) in servers.items():
            _wait_ready(port, proc)
        if headline == "httpx":
            results["httpx"] = _regime("httpx", args.rounds, args.seconds, args, servers)
            if args.raw_seconds > 0:
                results["raw"] = _regime("raw", 1, args.raw_seconds, args, servers)
        else:
            results["raw"] = _regime("raw", args.rounds, args.seconds, args, servers)
    finally:
        for _, proc in servers.values():
            proc.terminate()
        for _, proc in servers.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    # Durability: every 202 answered must be exactly one committed row, in both databases.
    with sqlite3.connect(home / "xmas.db") as db:
        ours_rows = db.execute("SELECT count(*) FROM inbound_events").fetchone()[0]
    with sqlite3.connect(naive_db) as db:
        naive_rows = db.execute("SELECT count(*) FROM signups").fetchone()[0]
    failed = False
    for name, rows in (("signups", ours_rows), ("naive", naive_rows)):
        all_runs = [r for regime in results.values() for r in regime[name]]
        accepted = sum(r["statuses"].get("202", 0) for r in all_runs)
        duplicates = sum(r["duplicates"] for r in all_runs)
        other = sum(v for r in all_runs for k, v in r["statuses"].items() if k != "202")
        print(f"durability ({name}): {rows} rows committed, {accepted} answered 202 "
              f"({duplicates} duplicates, {other} other statuses)")
        failed |= rows != accepted or bool(other) or bool(duplicates)
    if failed:
        raise SystemExit("MISMATCH: every 202 must be exactly one committed row")

    if "raw" in results and headline != "raw":
        bare, naive, ours, ratio = _ratios(results["raw"])
        print(f"raw (server-saturated) regime: signups {ours:.0f}/s vs bare Starlette {bare:.0f}/s: ratio {ratio:.2f}; "
              f"naive FastAPI+sync SQLite {naive:.0f}/s: ratio {naive / bare:.2f}")
    runs = results[headline]
    bare, naive, ours, ratio = _ratios(runs)
    lat50 = statistics.median(r["p50_ms"] for r in runs["signups"])
    lat99 = max(r["p99_ms"] for r in runs["signups"])
    print(f"{headline} regime, calibration: naive FastAPI+sync SQLite {naive:.0f}/s vs bare {bare:.0f}/s: "
          f"ratio {naive / bare:.2f} (the issue's reference measured 0.31)")
    print(f"{headline} regime, headline: signups {ours:.0f}/s vs bare Starlette {bare:.0f}/s: "
          f"ratio {ratio:.2f} (target 0.80)")
    print(json.dumps({
        "signups_per_s": round(ours, 1),
        "bare_per_s": round(bare, 1),
        "ratio": round(ratio, 3),
        "p50_ms": round(lat50, 2),
        "p99_ms": round(lat99, 2),
        "naive_ratio": round(naive / bare, 3),
        "loadgen": headline,
    }))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loadgen", choices=("httpx", "raw"), default="httpx",
                        help="the headline regime: a conventional httpx client (default) or raw uvloop sockets")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per round and server (headline)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds in the headline regime")
    parser.add_argument("--concurrency", type=int, default=32, help="httpx workers (one connection each)")
    parser.add_argument("--raw-concurrency", type=int, default=64, help="raw connections")
    parser.add_argument("--raw-seconds", type=float, default=3.0,
                        help="measured seconds per server of the secondary raw regime (0 skips it)")
    parser.add_argument("--child", choices=("httpx", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="x", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.child:
        child_main(parsed)
    else:
        main(parsed)
