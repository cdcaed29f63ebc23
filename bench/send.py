"""Throughput of the real delivery path, ``deliver()``, against the Resend emulator at its real limit (not a test).

N sequences (default 3,000) are created and planned with the store functions enrollment uses; each
signed up two days ago, so its email 2 is due now (email 1 went out from the website). The timed part
is one ``deliver()`` call over everything owed: claims, rendering, ledger writes, the provider calls,
the write-back. The emulator runs in its own process (Resend is not in ours) and allows 2 requests/s
per key, so the ceiling is 2 x 100 = 200 emails/s. SQLite (a file) always; PostgreSQL too when its server
is reachable. The last line printed is JSON (SQLite's figures, plus ``postgres_*`` when measured).

Measured on a quiet 2-core box (2026-12-03): 0.969 SQLite, 0.968 PostgreSQL (0.947 and 0.950 on a
shared one, load ~2); the same bench on the per-row, unpipelined path gave 0.865 and 0.818. What is
left is fixed cost: ``prepare`` and the first batch, which goes alone before the pipeline starts.

    .venv/bin/python bench/send.py [N] [--postgres URL|none]   (default: bench_send on 127.0.0.1:5432)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

# The emulator lives in the test package, which is not installed: import it from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import pgdb  # noqa: E402
from xmas_pipeline.backends import delivery_context  # noqa: E402
from xmas_pipeline.campaign.segments import classify  # noqa: E402
from xmas_pipeline.campaign.timetable import campaign_day, day_bounds  # noqa: E402
from xmas_pipeline.crm.base import SequenceRecord  # noqa: E402
from xmas_pipeline.delivery import DeliveryRun  # noqa: E402
from xmas_pipeline.planning import plan_rows  # noqa: E402
from xmas_pipeline.settings import load_settings  # noqa: E402
from xmas_pipeline.store import db, ledger, mirror  # noqa: E402
from xmas_pipeline.campaign.tokens import sequence_key  # noqa: E402

PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/bench_send"
NOW = "2026-11-05T10:00:00-05:00"
LIMIT = 2  # Resend's default: 2 requests per second per API key
BATCH = 100  # emails per /emails/batch call


def _emulator(conn) -> None:
    """Child process: serve the emulator until told to stop, then report what it saw."""
    from xmas_pipeline_tests.fakes.resend import ResendEmulator

    with ResendEmulator(rate_limit=LIMIT) as emu:
        conn.send((emu.api_url, emu.api_key))
        conn.recv()
        conn.send({"sent": len(emu.sent), "distinct": len({m["to"][0] for m in emu.sent}), "requests": emu.requests,
                   "rate_limited": emu.rate_limited})


def _settings(database_url: str, home: Path, api_url: str, api_key: str):
    return load_settings({
        "XMAS_HOME": str(home), "XMAS_DATABASE_URL": database_url, "XMAS_NOW": NOW,
        "XMAS_UNSUBSCRIBE_SECRET": "bench-secret", "XMAS_MAILER": "resend", "RESEND_API_KEY": api_key,
        "XMAS_RESEND_API_URL": api_url,
    })


def populate(settings, count: int) -> None:
    """``count`` signups from two days and five minutes ago, stored and planned as enrollment does."""
    engine = db.reset_for_tests(settings.database_url)
    journey = settings.journeys().home
    now = settings.clock.now()
    signup_at = now - dt.timedelta(days=2, minutes=5)
    external = []
    with engine.begin() as conn:
        for i in range(count):
            email = f"lead{i:06d}@example.com"
            red, orange = i % 3, (i // 3) % 4
            key = sequence_key(email, journey.name)
            record = SequenceRecord(
                sequence_key=key, email=email, campaign=journey.name, first_name=f"Lead{i}",
                business_name=f"Shop {i}", segment=classify(red, orange).value, signup_at=signup_at,
                assessment_score=40 + i % 60, red_systems=red, orange_systems=orange, yellow_systems=2,
                green_systems=max(0, 8 - red - orange - 2),
            )
            profile = {"email": email, "first_name": f"Lead{i}", "business_name": f"Shop {i}"}
            mirror.insert_sequence(conn, record, profile, now)
            plan_rows(conn, journey, sequence_key=key, email=email, trigger_at=signup_at, day_seconds=86400, now=now)
            external.append((journey.name, key, 1, signup_at, signup_at, "website"))
    ledger.record_external(engine, external)


def owed_now(ctx) -> list[ledger.Due]:
    start, end = day_bounds(ctx.campaign, campaign_day(ctx.campaign, ctx.clock.now()))
    return ledger.dues(ledger.owed(ctx.engine, ctx.campaign.name, start, end, carry_over=True))


def measure(label: str, database_url: str, count: int) -> dict:
    parent, child = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(target=_emulator, args=(child,), daemon=True)
    proc.start()
    api_url, api_key = parent.recv()
    with tempfile.TemporaryDirectory() as home:
        settings = _settings(database_url, Path(home), api_url, api_key)
        t0 = time.monotonic()
        populate(settings, count)
        setup_s = time.monotonic() - t0
        ctx = delivery_context(settings, run_id=f"bench-{label}")
        ctx.templates  # loading the campaign's templates is a run's fixed cost, not per message
        t0 = time.monotonic()
        due = owed_now(ctx)
        owed_s = time.monotonic() - t0
        assert len(due) == count, (len(due), count)

        run = DeliveryRun(ctx, due)
        started = time.monotonic()
        report = run.run()
        wall = time.monotonic() - started
        # The provider's rate budget is held until its last window resets; count that pacing time, or a
        # run of k windows would be credited with k-1 windows' worth of time.
        pending = ctx.sender.pacing_delay_s
        elapsed = wall + pending
    parent.send("stop")
    seen = parent.recv()
    proc.join(5)
    counts = ledger.counts(ctx.engine)
    db.dispose_all()
    ceiling = LIMIT * BATCH
    rate = len(report.sent) / elapsed
    phases = {k: round(v, 2) for k, v in sorted(run.timings.items(), key=lambda kv: -kv[1])}
    print(f"[{label}] setup {setup_s:.1f} s, owed() {owed_s:.2f} s; deliver(): {len(report.sent)}/{count} sent, "
          f"{len(report.failed)} failed, {len(report.in_doubt)} in doubt, stopped={report.stopped!r}; "
          f"emulator got {seen['sent']} emails ({seen['distinct']} distinct) in {seen['requests']} requests, "
          f"{seen['rate_limited']} answered 429; ledger {counts}")
    print(f"[{label}] wall {wall:.2f} s + {pending:.2f} s pending pacing = {elapsed:.2f} s -> {rate:.1f} emails/s "
          f"vs ceiling {ceiling}/s (ratio {rate / ceiling:.3f})")
    print(f"[{label}] main thread, seconds per phase: {phases}")
    assert seen["sent"] == seen["distinct"] == len(report.sent) == count
    return {"emails_per_s": round(rate, 1), "ceiling_per_s": ceiling, "ratio": round(rate / ceiling, 3),
            "phases_s": phases}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("count", nargs="?", type=int, default=3000)
    parser.add_argument("--postgres", default=os.environ.get("XMAS_BENCH_POSTGRES_URL", PG_URL),
                        help="Postgres URL (its database is created when missing), or 'none'")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as folder:
        result = measure("sqlite", f"sqlite:///{folder}/bench.db", args.count)
    out = {"sequences": args.count, **{k: v for k, v in result.items() if k != "phases_s"}}
    why = "--postgres none" if args.postgres == "none" else pgdb.unavailable(args.postgres)
    if why is not None:
        print(f"PostgreSQL not measured: {why}")
    else:
        pg = measure("postgres", args.postgres, args.count)
        out.update({f"postgres_{k}": v for k, v in pg.items() if k in ("emails_per_s", "ratio")})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
