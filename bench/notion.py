"""Notion economy of enrollment: calls per signup, calls per email, 429s and use of the rate budget (not a test).

A NotionEmulator limits the integration to 3 requests/s (Notion's documented average; Retry-After 1 on
every 429) and the pipeline runs with its own budget at 3/s (XMAS_NOTION_RATE, the default). 200 signups
are enqueued, then enrolled the way the signup sensor's runs do it: 100 event ids per
``enroll_events(delivery_context(settings), ids)``, each batch with a fresh context. Enrollment sends
email 1 (outbox) and writes "Email 1 Sent" back to Notion at the end of each batch.

Where calls go, read from the emulator's request history:

* per signup: the contact create and the sequence create (``pages.create``);
* per run (fixed): data-source resolution (``databases.retrieve``), the schema check
  (``data_sources.retrieve``) and the contact sync (``data_sources.query``); the first two are cached
  per process, so with ``--cold`` (the caches cleared before every batch, as in a fresh process per
  run, Dagster's default) every batch pays them;
* per email: the write-back, one ``pages.update`` of the sequence page (delivery's share, kept apart).

Then the two at once, as a deployment runs them: two days later an enrollment run (``--concurrent-signups``
new signups, a fresh process) and a delivery run (``xmas send-due``: email 2 for everyone enrolled above,
and its write-back) start together, each in its own process with its own notion-client, against the same
emulator limit of 3 requests/s for the integration as a whole. They share one budget through the local
database (store/ratelimit.py); ``concurrent_rate_limited`` counts the 429s the emulator answered them.

    .venv/bin/python bench/notion.py [--signups 200] [--batch 100] [--rate 3] [--cold] [--concurrent-signups 60]

Targets: calls_per_signup <= 2, calls_per_email <= 1, rate_limited == 0, budget_use >= 0.9,
concurrent_rate_limited == 0. The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The emulator lives in the test package, which is not installed: import it from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xmas_pipeline.backends import delivery_context  # noqa: E402
from xmas_pipeline.crm import notion as notion_module  # noqa: E402
from xmas_pipeline.enrollment import enroll_events  # noqa: E402
from xmas_pipeline.settings import load_settings  # noqa: E402
from xmas_pipeline.store import inbound  # noqa: E402
from xmas_pipeline.store.db import engine_for  # noqa: E402
from xmas_pipeline_tests.fakes.notion import NotionEmulator  # noqa: E402
from xmas_pipeline_tests.fakes.notion_setup import data_source, xmas_databases  # noqa: E402

PINNED_NOW = "2026-11-05T10:00:00-05:00"
TWO_DAYS_LATER = "2026-11-07T12:00:00-05:00"  # email 2 (day offset 2) is due for the first signups
REPO = Path(__file__).resolve().parent.parent
PER_RUN = ("databases.retrieve", "data_sources.retrieve", "data_sources.query")


def signups(count: int, received_at: dt.datetime, first: int = 0) -> list[inbound.NewEvent]:
    events = []
    for i in range(first, first + count):
        email = f"lead{i:04d}@example.com"
        payload = {
            "email": email, "first_name": f"Lead {i}", "business_name": f"Shop {i}",
            "assessment_score": (i * 7) % 101, "red_systems": i % 4, "orange_systems": (i // 4) % 4,
            "yellow_systems": 2, "green_systems": 1, "weakest_system_1": "FUEL", "revenue_leak_total": 1000 + i,
        }
        events.append(inbound.NewEvent(
            idempotency_key=f"bench|{email}", kind="signup", email=email, payload=payload,
            received_at=received_at, client_ip="203.0.113.9", user_agent="bench/notion.py",
        ))
    return events


def page_id(path: str) -> str:
    return path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]


def enroll_worker(first: int, last: int, batch: int) -> None:
    """The concurrent enrollment run, in its own process (fresh caches, its own notion-client)."""
    settings = load_settings()
    ids = list(range(first, last + 1))
    calls = rate_limited = enrolled = 0
    for start in range(0, len(ids), batch):
        # A run id as a Dagster run has one: without it the run would also write back the concurrent
        # delivery run's sends (run_id None means "every unsynced send"), doubling those Notion writes.
        ctx = delivery_context(settings, run_id=f"bench-enroll-{os.getpid()}-{start}")
        report = enroll_events(ctx, ids[start:start + batch])
        enrolled += len(report.enrolled)
        calls += sum(ctx.crm.api.calls.values())
        rate_limited += ctx.crm.api.rate_limited
        if report.failed or report.delivery.failed or report.delivery.crm_errors:
            print(f"  enrollment failures: {report.failed[:3]} {report.delivery.failed[:3]} {report.delivery.crm_errors}")
    print(json.dumps({"enrolled": enrolled, "calls": calls, "rate_limited": rate_limited}), flush=True)


def concurrent_runs(env: dict[str, str], emulator: NotionEmulator, engine, count: int, first: int, batch: int) -> dict:
    """An enrollment run and a delivery run at the same time, two processes against one Notion limit."""
    env = {**os.environ, **env, "XMAS_NOW": TWO_DAYS_LATER, "PYTHONPATH": str(REPO)}
    later = load_settings(env).clock.now()
    new_ids = [e.event_id for e in inbound.enqueue_many(engine, signups(count, later, first=first))]
    emulator.reset_counts()
    started = time.monotonic()
    enrolling = subprocess.Popen(
        [sys.executable, __file__, "--enroll-worker", f"{new_ids[0]}-{new_ids[-1]}", "--batch", str(batch)],
        env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    delivering = subprocess.Popen([sys.executable, "-m", "xmas_pipeline.cli", "send-due"],
                                  env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    delivery_out, _ = delivering.communicate(timeout=3600)
    delivery_done = time.monotonic() - started
    enroll_out, _ = enrolling.communicate(timeout=3600)
    wall = time.monotonic() - started
    if enrolling.returncode or delivering.returncode:
        raise SystemExit(f"a concurrent run failed:\n{enroll_out}\n{delivery_out}")
    enrolled = json.loads(enroll_out.strip().splitlines()[-1])
    total = emulator.total_requests
    print(f"concurrent: enrollment of {enrolled['enrolled']} signups ({enrolled['calls']} Notion calls) and "
          f"delivery `{delivery_out.strip().splitlines()[-1]}` in two processes, {wall:.1f} s "
          f"(delivery done after {delivery_done:.1f} s)")
    print(f"concurrent: {total} Notion requests = {total / wall:.3f} req/s of {emulator.rate_limit:g} for the "
          f"integration; busiest second {emulator.busiest(1.0)} requests; 429s answered: {emulator.rate_limited}")
    return {"concurrent_rate_limited": emulator.rate_limited, "concurrent_requests": total,
            "concurrent_budget_use": round(total / wall / emulator.rate_limit, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signups", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rate", type=float, default=3.0, help="the emulator's limit and our budget (req/s)")
    parser.add_argument("--cold", action="store_true", help="clear the per-process caches before each batch")
    parser.add_argument("--concurrent-signups", type=int, default=60,
                        help="signups the enrollment run enrolls while the delivery run sends email 2")
    parser.add_argument("--enroll-worker", metavar="FIRST-LAST", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.enroll_worker:
        first, last = map(int, args.enroll_worker.split("-"))
        return enroll_worker(first, last, args.batch)

    with tempfile.TemporaryDirectory(prefix="xmas-bench-notion-") as home, \
            NotionEmulator(rate_limit=None, retry_after=1, seed=7) as emulator:
        env = {
            **xmas_databases(emulator),  # setup (3 databases.create) before the limit is switched on
            "XMAS_HOME": home,
            "XMAS_NOW": PINNED_NOW,
            "XMAS_UNSUBSCRIBE_SECRET": "bench-unsubscribe-secret",
            "XMAS_MAILER": "outbox",
            "XMAS_NOTION_RATE": str(args.rate),  # the project's budget (3/s is the default)
            "XMAS_NOTION_RETRY_BASE": "0.5",
        }
        settings = load_settings(env)
        engine = engine_for(settings.database_url)
        ids = [e.event_id for e in inbound.enqueue_many(engine, signups(args.signups, settings.clock.now()))]
        sequences_ds = data_source(emulator, env["XMAS_NOTION_SEQUENCES_DB"])
        notion_module._schema_cache.clear()
        notion_module._source_cache.clear()
        emulator.rate_limit = args.rate  # Notion's limit from here on (a full bucket, like an idle integration)
        emulator.reset_counts()

        print(f"Notion emulator at {args.rate:g} req/s (Retry-After 1), our budget {settings.notion_rate:g} req/s; "
              f"{args.signups} signups in batches of {args.batch}{' (cold caches per batch)' if args.cold else ''}")
        enrolled = emails = caller_429 = 0
        caller_calls: collections.Counter[str] = collections.Counter()
        batches = []
        started = time.monotonic()
        for start in range(0, len(ids), args.batch):
            if args.cold:
                notion_module._schema_cache.clear()
                notion_module._source_cache.clear()
            mark, t0 = len(emulator.history), time.monotonic()
            ctx = delivery_context(settings)
            report = enroll_events(ctx, ids[start:start + args.batch])
            caller_429 += ctx.crm.api.rate_limited
            caller_calls.update(ctx.crm.api.calls)
            elapsed = time.monotonic() - t0
            if report.failed or report.delivery.failed or report.delivery.crm_errors:
                print(f"  failures: {report.failed[:3]} {report.delivery.failed[:3]} {report.delivery.crm_errors}")
            enrolled += len(report.enrolled)
            emails += len(report.delivery.sent)
            batches.append((emulator.history[mark:], len(report.enrolled), len(report.delivery.sent), elapsed))
        wall = time.monotonic() - started

        sequence_pages = {p["id"] for p in emulator.pages(sequences_ds)}
        history = list(emulator.history)
        write_back = [h for h in history if h[0] == "pages.update" and page_id(h[1]) in sequence_pages]
        total = len(history)
        enrollment_calls = total - len(write_back)
        per_run = sum(1 for h in history if h[0] in PER_RUN)

        print(f"enrolled {enrolled} signups, sent {emails} emails (email 1) in {wall:.1f} s")
        print(f"Notion requests: {total} total, by endpoint: {dict(sorted(emulator.counts.items()))}")
        for n, (part, n_enrolled, n_sent, elapsed) in enumerate(batches, 1):
            kinds = collections.Counter(h[0] for h in part)
            fixed = {k: kinds[k] for k in PER_RUN if kinds[k]}
            wb = sum(1 for h in part if h[0] == "pages.update" and page_id(h[1]) in sequence_pages)
            print(f"  batch {n}: {n_enrolled} enrolled, {n_sent} sent, {len(part)} requests in {elapsed:.1f} s = "
                  f"{sum(fixed.values())} fixed per run {fixed} + {kinds['pages.create']} creates "
                  f"+ {wb} write-backs + {len(part) - sum(fixed.values()) - kinds['pages.create'] - wb} other")
        calls_per_signup = enrollment_calls / max(enrolled, 1)
        marginal = (enrollment_calls - per_run) / max(enrolled, 1)
        calls_per_email = len(write_back) / max(emails, 1)
        achieved = total / wall
        budget_use = achieved / args.rate
        print(f"per signup: {calls_per_signup:.3f} calls ({enrollment_calls} enrollment requests / {enrolled}), "
              f"of which {per_run} are fixed per-run overhead ({per_run / max(enrolled, 1):.3f}/signup) "
              f"and {marginal:.3f}/signup are the signup's own (contact + sequence creates)")
        print(f"per email: {calls_per_email:.3f} calls ({len(write_back)} write-backs / {emails} emails)")
        print(f"429s: {emulator.rate_limited} answered by the emulator, {caller_429} seen by our callers "
              f"(their calls: {dict(sorted(caller_calls.items()))})")
        print(f"budget: {total} requests / {wall:.1f} s = {achieved:.3f} req/s of {args.rate:g} -> use {budget_use:.3f}")
        figures = {
            "calls_per_signup": round(calls_per_signup, 3),
            "calls_per_email": round(calls_per_email, 3),
            "rate_limited": emulator.rate_limited,
            "budget_use": round(budget_use, 3),
            "fixed_calls": per_run,
            "marginal_calls_per_signup": round(marginal, 3),
        }
        figures.update(concurrent_runs(env, emulator, engine, args.concurrent_signups, args.signups, args.batch))
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
