"""Intake throughput: our signup webhook versus a bare Starlette endpoint, same machine, same load.

    .venv/bin/python bench/intake.py [--seconds 6] [--rounds 2] [--concurrency 64]

Starts two real uvicorn servers (one worker each, loopback): our app on a temp XMAS_HOME with SQLite,
and a bare Starlette endpoint that answers 202 with a small JSON body. A load generator in its own
process (raw HTTP/1.1 keep-alive on asyncio protocols, uvloop when present, so it is much cheaper per
request than either server) drives each for a fixed time, alternating rounds. Every signup carries a
unique email, so each 202 is a durable insert; afterwards the rows in the database must equal the 202s.
The last line printed is JSON: signups_per_s, bare_per_s, ratio, p50_ms, p99_ms (signup latencies).
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

# --- the peer: a bare Starlette endpoint (uvicorn imports this module as `intake`) ---------------


def _bare_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def signup(request):
        return JSONResponse({"event_id": 1, "duplicate": False}, status_code=202)

    async def healthz(request):
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route(SIGNUP_PATH, signup, methods=["POST"]), Route("/healthz", healthz)])


bare_app = _bare_app() if os.environ.get("XMAS_BENCH_BARE") == "1" else None

# --- the load generator (runs in its own process) ---------------------------------------------

BODY = (
    '{"email":"%s","first_name":"Bench","business_name":"Bench Ltd","assessment_score":42,'
    '"red_systems":2,"orange_systems":3,"yellow_systems":2,"green_systems":1,"gps_score":4.5,'
    '"money_score":3.25,"weakest_system_1":"Cash flow","weakest_system_2":"Hiring",'
    '"revenue_leak_total":125000,"utm_source":"bench","page":"/assessment/results"}'
)


class _Load:
    """Shared state of one load run: what to send, when to stop, what came back."""

    def __init__(self, port: int, prefix: str, seconds: float, warmup: float) -> None:
        self.head = (
            f"POST {SIGNUP_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: xmas-bench\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        ).encode()
        self.prefix = prefix
        self.counter = 0
        self.started = time.perf_counter()
        self.measure_from = self.started + warmup
        self.stop_at = self.measure_from + seconds
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.duplicates = 0
        self.measured = 0

    def next_request(self) -> bytes:
        self.counter += 1
        body = (BODY % f"b{self.counter}-{self.prefix}@bench.example.com").encode()
        return self.head % len(body) + body


class _Conn(asyncio.Protocol):
    """One keep-alive connection sending a request as soon as the previous answer is complete."""

    def __init__(self, load: _Load, done: asyncio.Future) -> None:
        self.load, self.done = load, done
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
        self.transport.write(self.load.next_request())

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
        now = time.perf_counter()
        status = int(self.buf[9:12])
        body = self.buf[end + 4 : total]
        self.buf = self.buf[total:]
        load = self.load
        load.statuses[status] = load.statuses.get(status, 0) + 1
        if b'"duplicate":true' in body:
            load.duplicates += 1
        if now >= load.measure_from and self.sent_at >= load.measure_from:
            load.latencies.append(now - self.sent_at)
        if load.measure_from <= now < load.stop_at:
            load.measured += 1
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _drive(port: int, concurrency: int, seconds: float, warmup: float, prefix: str) -> dict:
    loop = asyncio.get_running_loop()
    load = _Load(port, prefix, seconds, warmup)
    waits = []
    cpu0 = None
    for _ in range(concurrency):
        done = loop.create_future()
        await loop.create_connection(lambda d=done: _Conn(load, d), "127.0.0.1", port)
        waits.append(done)

    async def cpu_mark() -> float:
        await asyncio.sleep(max(load.measure_from - time.perf_counter(), 0))
        return time.process_time()

    cpu0 = await cpu_mark()
    await asyncio.gather(*waits)
    cpu1 = time.process_time()
    lat = sorted(load.latencies)
    return {
        "measured": load.measured,
        "seconds": seconds,
        "statuses": load.statuses,
        "duplicates": load.duplicates,
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
        "p99_ms": 1000 * lat[min(int(len(lat) * 0.99), len(lat) - 1)] if lat else None,
        "loadgen_cpu": (cpu1 - cpu0) / seconds,
    }


def loadgen_main(args: argparse.Namespace) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_drive(args.port, args.concurrency, args.seconds, args.warmup, args.prefix))
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
    # Identical server settings for both: one worker, loopback, no access log, default (uvloop/httptools).
    cmd = [PYTHON, "-m", "uvicorn", *app_args, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", "1", "--no-access-log", "--log-level", "warning"]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)


def _run_load(port: int, args: argparse.Namespace, prefix: str, server: subprocess.Popen) -> dict:
    cmd = [PYTHON, __file__, "--loadgen", "--port", str(port), "--concurrency", str(args.concurrency)]
    cmd += ["--seconds", str(args.seconds), "--warmup", str(args.warmup), "--prefix", prefix]
    cpu0, t0 = _cpu_seconds(server.pid), time.monotonic()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    cpu1, t1 = _cpu_seconds(server.pid), time.monotonic()
    result = json.loads(out.strip().splitlines()[-1])
    result["server_cpu"] = (cpu1 - cpu0) / (t1 - t0)
    return result


def _describe(name: str, r: dict) -> str:
    rate = r["measured"] / r["seconds"]
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))
    return (
        f"  {name:<8} {rate:8.0f} req/s   p50 {r['p50_ms']:6.2f} ms   p99 {r['p99_ms']:6.2f} ms   "
        f"server CPU {100 * r['server_cpu']:4.0f}% ({1e6 * r['server_cpu'] / rate:4.0f} us/req)   "
        f"loadgen CPU {100 * r['loadgen_cpu']:4.0f}%   [{codes}]"
    )


def main(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="xmas-bench-"))
    try:
        run(args, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(args: argparse.Namespace, home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XMAS_")}
    ours_env = {**env, "XMAS_HOME": str(home), "PYTHONPATH": str(ROOT)}
    bare_env = {**env, "XMAS_BENCH_BARE": "1"}
    ours_port, bare_port = _free_port(), _free_port()
    ours = _uvicorn(["--factory", "xmas_pipeline.web.app:create_app"], ours_port, ours_env)
    bare = _uvicorn(["--app-dir", str(Path(__file__).parent), "intake:bare_app"], bare_port, bare_env)
    print(f"cpus: {os.cpu_count()}   concurrency: {args.concurrency}   {args.rounds} round(s) of {args.seconds}s "
          f"(+{args.warmup}s warm-up) each   database: {home / 'xmas.db'} (WAL, synchronous=FULL)")
    runs: dict[str, list[dict]] = {"bare": [], "signups": []}
    try:
        _wait_ready(ours_port, ours)
        _wait_ready(bare_port, bare)
        for n in range(args.rounds):
            # Alternate so drift on the machine affects both sides alike.
            for name, port, proc in (("bare", bare_port, bare), ("signups", ours_port, ours)):
                r = _run_load(port, args, f"r{n}", proc)
                runs[name].append(r)
                print(_describe(name, r), flush=True)
    finally:
        for proc in (ours, bare):
            proc.terminate()
        for proc in (ours, bare):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    with sqlite3.connect(home / "xmas.db") as db:
        rows = db.execute("SELECT count(*) FROM inbound_events").fetchone()[0]
    accepted = sum(r["statuses"].get("202", 0) for r in runs["signups"])
    duplicates = sum(r["duplicates"] for r in runs["signups"])
    other = sum(v for r in runs["signups"] for k, v in r["statuses"].items() if k != "202")
    print(f"durability: {rows} rows in inbound_events, {accepted} answered 202 "
          f"({duplicates} duplicates, {other} other statuses)")
    if rows != accepted - duplicates or other or duplicates:
        raise SystemExit("MISMATCH: every 202 must be exactly one committed row")

    def rate(name: str) -> float:
        return sum(r["measured"] for r in runs[name]) / sum(r["seconds"] for r in runs[name])

    lat50 = statistics.median(r["p50_ms"] for r in runs["signups"])
    lat99 = max(r["p99_ms"] for r in runs["signups"])
    signups, bare_rate = rate("signups"), rate("bare")
    print(f"signups {signups:.0f}/s vs bare Starlette {bare_rate:.0f}/s: ratio {signups / bare_rate:.2f} (target 0.80)")
    print(json.dumps({
        "signups_per_s": round(signups, 1),
        "bare_per_s": round(bare_rate, 1),
        "ratio": round(signups / bare_rate, 3),
        "p50_ms": round(lat50, 2),
        "p99_ms": round(lat99, 2),
    }))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per round and server")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="x", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    loadgen_main(parsed) if parsed.loadgen else main(parsed)
