"""What the emails_due asset reports for a day, from known ledger rows (SQLite and Postgres)."""

from __future__ import annotations

import datetime as dt

from xmas_pipeline.campaign.journey import load_journeys_from
from xmas_pipeline.due_report import LISTED_DAY, due_report
from xmas_pipeline.settings import DEFAULT_CAMPAIGNS_DIR
from xmas_pipeline.store import ledger, mirror
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.store.schema import deliveries, sequences

UTC = dt.timezone.utc
DAY = dt.date(2026, 12, 8)  # starts 05:00 UTC (Toronto)
NOW = dt.datetime(2026, 12, 8, 18, 0, tzinfo=UTC)
JOURNEY = "Christmas 2026"


def at(day: int, hour: int) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, 0, tzinfo=UTC)


# (sequence, step, status, due, late_ok) -> what the report should make of it
ROWS = [
    ("a", 2, "scheduled", at(8, 20), None),  # this day, not yet come
    ("a", 3, "failed", at(8, 10), None),  # this day, sendable (8 h late, max 24 h)
    ("b", 2, "late", at(8, 6), None),  # this day, recorded late
    ("b", 3, "sent", at(8, 7), None),  # done: not listed
    ("a", 1, "scheduled", at(6, 10), None),  # earlier day, over max lateness
    ("b", 1, "claimed", at(8, 4), None),  # earlier day (04:00 UTC is the 7th in Toronto), sendable
    ("b", 4, "scheduled", at(5, 10), True),  # earlier day, an operator said send however late
    ("a", 4, "late", at(7, 10), None),  # recorded late on an earlier day: not carried
    ("a", 5, "scheduled", at(9, 6), None),  # the next day
]


def _load(engine) -> None:
    now = at(1, 12)
    with engine.begin() as conn:
        for key, segment, planned in (("a", "CRITICAL", now), ("b", "URGENT", now), ("c", "OPTIMIZE", None)):
            conn.execute(sequences.insert().values(
                sequence_key=key, email=f"{key}@example.com", campaign=JOURNEY, first_name=key.upper(),
                segment=segment, signup_at=at(20, 15) if key == "c" else now, status="active", updated_at=now,
                planned_at=planned))
        for key, step, status, due, late_ok in ROWS:
            conn.execute(deliveries.insert().values(
                sequence_key=key, campaign=JOURNEY, step=step, template=f"email_{step}", email=f"{key}@example.com",
                idempotency_key=ledger.row_key(key, step), status=status, due_at=due, late_ok=late_ok, attempts=0,
                crm_synced=False))


def test_live_day_counts_carry_over_and_groups(database_url):
    engine = engine_for(database_url)
    _load(engine)
    journeys = load_journeys_from(None, DEFAULT_CAMPAIGNS_DIR)

    report = due_report(engine, journeys, DAY, NOW, day_seconds=86400)

    assert report.sequences_planned == 1  # "c" had no ledger rows; its steps fall after this day
    assert (report.due, report.carried_over) == (3, 3)
    assert (report.sendable_now, report.over_max_lateness, report.recorded_late) == (3, 1, 1)
    assert report.by_journey_step_and_segment == [
        (JOURNEY, 1, "CRITICAL", 1), (JOURNEY, 1, "URGENT", 1), (JOURNEY, 2, "CRITICAL", 1),
        (JOURNEY, 2, "URGENT", 1), (JOURNEY, 3, "CRITICAL", 1), (JOURNEY, 4, "URGENT", 1),
    ]
    assert [(r["sequence_key"], r["step"], r["day"]) for r in report.preview] == [
        ("b", 4, "earlier day"), ("a", 1, "earlier day"), ("b", 1, "earlier day"),
        ("b", 2, "this day"), ("a", 3, "this day"), ("a", 2, "this day"),
    ]
    assert mirror.get_cursor(engine, LISTED_DAY) == "2026-12-08"
    assert due_report(engine, journeys, DAY, NOW, day_seconds=86400).sequences_planned == 0


def test_past_day_lists_only_its_own_steps(database_url):
    engine = engine_for(database_url)
    _load(engine)
    journeys = load_journeys_from(None, DEFAULT_CAMPAIGNS_DIR)

    report = due_report(engine, journeys, DAY, at(10, 18), day_seconds=86400)

    assert (report.due, report.carried_over, report.recorded_late) == (3, 0, 1)
    assert mirror.get_cursor(engine, LISTED_DAY) is None  # a backfill is not the schedule's first tick
