"""One Notion budget for the whole deployment (store/ratelimit.py, wired in crm/notion_api.py).

The main test runs two real processes, each with its own notion-client, doing what enrollment and
delivery do (schema check, creates, the "Email N Sent" write-back, queries) at the same moment against
the Notion emulator, which enforces 3 requests/s for the integration across all clients. With the
shared budget Notion never answers 429 and the combined rate stays inside 3/s; the control run gives
each process its own 3/s budget (the old behaviour) and the emulator answers 429.

Run as a module, this file is that worker process.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from xmas_pipeline.settings import PROJECT_ROOT
from xmas_pipeline.store.ratelimit import RateBudgetUnavailable, SharedRateBudget, bucket_name
from xmas_pipeline.store.schema import rate_buckets
from xmas_pipeline_tests.conftest import free_port
from xmas_pipeline_tests.fakes.notion import NotionEmulator
from xmas_pipeline_tests.fakes.notion_setup import xmas_databases

UTC = dt.timezone.utc
NOTION_RATE = 3.0
ROUNDS = 2  # per worker: 4 calls a round, plus the schema check


# --- the worker process ---------------------------------------------------------------------------


def worker() -> None:
    """One process's share of the load: what an enrollment or a delivery run asks of Notion."""
    from xmas_pipeline.crm.base import ContactRecord, SequenceRecord, SequenceUpdate
    from xmas_pipeline.crm.notion import NotionCRM
    from xmas_pipeline.crm.notion_api import NotionCaller, RateBudget, make_client
    from xmas_pipeline.settings import load_settings

    name, own_budget, rounds = sys.argv[1], sys.argv[2] == "own-budget", int(sys.argv[3])
    settings = load_settings()
    campaign = settings.journeys().home
    if own_budget:  # the control: a budget per process, as before the shared one
        caller = NotionCaller(make_client(settings.notion_token, settings.notion_api_url),
                              RateBudget(settings.notion_rate), retry_base_s=settings.notion_retry_base_s)
        crm = NotionCRM(caller, contacts_db=settings.notion_contacts_db, sequences_db=settings.notion_sequences_db,
                        templates_db=None, campaign=campaign)
    else:
        crm = NotionCRM.from_settings(settings, campaign)
    print("ready", flush=True)
    sys.stdin.readline()  # go: both processes start together

    started = time.time()
    assert crm.check_schema() == []
    now = dt.datetime.now(UTC)
    for i in range(rounds):
        email = f"{name}-{i}@example.com"
        crm.save_contact(ContactRecord(email=email, first_name=name, segment="URGENT"))
        sequence = crm.create_sequence(SequenceRecord(sequence_key=f"{name}-{i}", email=email, campaign=campaign.name,
                                                      first_name=name, segment="URGENT", signup_at=now))
        crm.update_sequences([SequenceUpdate(sequence_key=sequence.sequence_key, crm_id=sequence.crm_id,
                                             steps_sent={1: now})])
        list(crm.contacts_changed_since(None))
    print(json.dumps({"calls": sum(crm.api.calls.values()), "by_kind": crm.api.calls, "rate_limited": crm.api.rate_limited,
                      "started": started, "ended": time.time()}), flush=True)


# --- running two of them --------------------------------------------------------------------------


@pytest.fixture
def emulator():
    with NotionEmulator(retry_after=1, seed=3) as emu:
        yield emu


def run_workers(env: dict[str, str], emulator: NotionEmulator, mode: str, rounds: int = ROUNDS) -> list[dict]:
    """Start two workers, let both import and connect, switch the limit on, then say go at once."""
    procs = [
        subprocess.Popen([sys.executable, "-m", "xmas_pipeline_tests.test_crm.test_rate_budget", name, mode,
                          str(rounds)],
                         cwd=PROJECT_ROOT, env={**os.environ, **env, "PYTHONPATH": str(PROJECT_ROOT)},
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for name in ("enrollment", "delivery")
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", "a worker did not start (see its stderr above)"
        emulator.reset_counts()
        emulator.rate_limit = NOTION_RATE  # Notion's limit from here on: a full bucket, like an idle integration
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = []
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"a worker failed: {out}"
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


def test_two_processes_share_one_notion_budget_and_notion_never_says_429(make_settings, emulator) -> None:
    reports = run_workers(_env(make_settings, emulator), emulator, "shared-budget")

    total = sum(r["calls"] for r in reports)
    assert emulator.total_requests == total >= 2 * (4 * ROUNDS + 4)
    assert all(r["by_kind"].get(kind) for r in reports for kind in ("pages.create", "pages.update", "data_sources.query"))
    # The two processes really competed: each was busy while the other was.
    overlap = min(r["ended"] for r in reports) - max(r["started"] for r in reports)
    assert overlap > 0.5 * min(r["ended"] - r["started"] for r in reports)

    assert emulator.rate_limited == 0 and all(r["rate_limited"] == 0 for r in reports)
    times = sorted(emulator.request_times)
    combined = (len(times) - 1) / (times[-1] - times[0])
    print(f"{total} Notion requests from two processes at {combined:.2f} req/s combined, 0 answered 429")
    assert combined <= NOTION_RATE * 1.05  # 5%: the first request's own latency shortens the measured span
    assert emulator.busiest(2.0) <= 2 * NOTION_RATE + 2  # evenly spaced: no burst hides inside the average


def test_control_a_budget_per_process_is_refused_by_notion(make_settings, emulator, database_url) -> None:
    """Proves the test above can fail: the old per-process budgets together exceed the integration's limit."""
    if not database_url.startswith("sqlite"):
        pytest.skip("the control does not use the database; once is enough")
    reports = run_workers(_env(make_settings, emulator), emulator, "own-budget", rounds=1)
    assert emulator.throttled > 0 and sum(r["rate_limited"] for r in reports) > 0


def _env(make_settings, emulator: NotionEmulator) -> dict[str, str]:
    settings = make_settings()
    return {
        **xmas_databases(emulator),  # setup calls before the limit is switched on
        "XMAS_HOME": str(settings.home),
        "XMAS_DATABASE_URL": settings.database_url,
        "XMAS_UNSUBSCRIBE_SECRET": "test-unsubscribe-secret",
        "XMAS_NOTION_RATE": str(NOTION_RATE),  # the default, written out
        "XMAS_NOTION_RETRY_BASE": "0.05",
    }


# --- the budget itself ------------------------------------------------------------------------------


@pytest.fixture
def two_processes(database_url):
    """Two budgets on one bucket through separate engines (separate connections), as two processes have."""
    engines: list[sa.Engine] = []

    def make(rate: float) -> tuple[SharedRateBudget, SharedRateBudget]:
        kwargs = {"connect_args": {"timeout": 30}} if database_url.startswith("sqlite") else {}
        engines.extend(sa.create_engine(database_url, **kwargs) for _ in range(2))
        return SharedRateBudget(engines[-2], "test:bucket", rate), SharedRateBudget(engines[-1], "test:bucket", rate)

    yield make
    for engine in engines:
        engine.dispose()


def test_reservations_from_two_engines_are_spaced_at_the_rate(two_processes) -> None:
    a, b = two_processes(rate=10)
    slots = [budget.reserve() for budget in (a, b, a, b, a, b, a, b)]
    gaps = [later.at - earlier.at for earlier, later in zip(slots, slots[1:])]
    assert all(gap >= 0.1 - 1e-6 for gap in gaps), gaps  # one schedule, whichever engine reserved
    assert slots[0].wait <= 0  # an idle bucket lets the first call go at once


def test_threads_of_two_processes_never_exceed_the_rate(two_processes) -> None:
    a, b = two_processes(rate=50)
    went: list[float] = []
    lock = threading.Lock()

    def work(budget: SharedRateBudget) -> None:
        for _ in range(10):
            budget.acquire()
            with lock:
                went.append(time.monotonic())

    threads = [threading.Thread(target=work, args=(budget,)) for budget in (a, b, a, b)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert a.calls + b.calls == 40
    assert time.monotonic() - started >= 39 / 50 - 0.02
    went.sort()
    # In any 0.2 s at 50/s: 10 slots, plus at most one late waker per thread (sleeps overshoot under load).
    assert max(sum(1 for t in went if start <= t < start + 0.2) for start in went) <= 10 + len(threads)


def test_a_429_pauses_every_process(two_processes) -> None:
    a, b = two_processes(rate=100)
    a.pause(5)  # process A was told Retry-After: 5
    assert b.reserve().wait >= 4


def test_a_slot_far_in_the_future_is_a_clock_jump_and_is_forgotten(two_processes) -> None:
    a, _ = two_processes(rate=10)
    a.reserve()
    with a.engine.begin() as conn:
        conn.execute(rate_buckets.update().values(next_free=time.time() + 3600))
    assert a.reserve().wait <= 0


def test_an_unreachable_database_refuses_the_call_instead_of_running_unlimited(emulator) -> None:
    from xmas_pipeline.crm.notion_api import NotionCaller, make_client

    gone = sa.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/gone",
                            connect_args={"connect_timeout": 2})
    caller = NotionCaller(make_client(emulator.token, emulator.base_url),
                          SharedRateBudget(gone, bucket_name("notion", emulator.token), 3))
    with pytest.raises(RateBudgetUnavailable, match="No call was made.*XMAS_DATABASE_URL"):
        caller.call("users.me", caller.client.search)
    assert emulator.total_requests == 0


def test_every_notion_call_of_a_run_takes_a_slot_of_the_shared_budget(make_settings, emulator) -> None:
    """Reads, creates and updates of the CRM all go through the database's bucket, and a 429 pauses it."""
    from xmas_pipeline.crm.base import ContactRecord
    from xmas_pipeline.crm.notion import NotionCRM
    settings = make_settings(**xmas_databases(emulator))
    crm = NotionCRM.from_settings(settings, settings.journeys().home, sleep=lambda s: None)
    assert isinstance(crm.api.budget, SharedRateBudget)
    before = crm.api.budget.calls
    emulator.reset_counts()
    saved = crm.save_contact(ContactRecord(email="ann@example.com", first_name="Ann"))
    crm.save_contact(saved.model_copy(update={"booking_status": "Booked"}))
    waited = crm.api.budget.waited_s
    emulator.fail_next(429)  # Retry-After: 1; the caller's own sleep is skipped, the budget's is real
    list(crm.contacts_changed_since(None))
    assert crm.api.budget.calls - before == emulator.total_requests >= 4  # data source, create, update, 429, query
    # The 429's Retry-After went into the shared bucket: the retry (like any process's next call) waited it out.
    assert crm.api.budget.waited_s - waited >= 0.9


if __name__ == "__main__":
    worker()
