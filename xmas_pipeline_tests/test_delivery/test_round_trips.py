"""A batch costs the ledger a fixed number of statements, however many messages it carries.

Counted at the driver (every statement SQLAlchemy hands to a cursor, an executemany counting once),
for a whole ``deliver()`` over one batch of 3 messages and over one batch of 12: a path that writes
each row on its own (one freeze or settle statement per message) grows with the batch and fails here.
"""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager

import sqlalchemy as sa

from xmas_pipeline.backends import delivery_context
from xmas_pipeline.campaign.timetable import campaign_day, day_bounds
from xmas_pipeline.delivery import DeliveryRun
from xmas_pipeline.store import ledger
from xmas_pipeline_tests.test_delivery.helpers import enroll

SMALL, LARGE = 3, 12


@contextmanager
def statements(engine: sa.Engine):
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement.split()[0].upper())

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


def test_a_batch_costs_the_same_statements_for_3_messages_as_for_12(settings, make_settings):
    leads = [f"trip{i:02d}@example.com" for i in range(SMALL + LARGE)]
    enroll(settings, *leads)
    later = make_settings(XMAS_NOW=(settings.clock.now() + dt.timedelta(days=2, minutes=1)).isoformat())
    ctx = delivery_context(later, run_id="round-trips")
    start, end = day_bounds(ctx.campaign, campaign_day(ctx.campaign, ctx.clock.now()))
    due = ledger.dues(ledger.owed(ctx.engine, ctx.campaign.name, start, end, carry_over=True))
    assert len(due) == SMALL + LARGE and ctx.sender.max_batch >= LARGE  # each run below is one batch
    ctx.templates  # loaded once per process in production; not a ledger cost

    counts = {}
    for label, rows in (("small", due[:SMALL]), ("large", due[SMALL:])):
        run = DeliveryRun(ctx, rows)
        with statements(ctx.engine) as seen:
            report = run.run()
        assert len(report.sent) == len(rows) and report.stopped is None
        counts[label] = seen
    assert sorted(r.status for r in ledger.rows_for(ctx.engine) if r.step == 2) == ["sent"] * (SMALL + LARGE)
    assert len(counts["large"]) == len(counts["small"]), counts
    # prepare (eligibility reads, skips, lates), claim, freeze, fence, settle, finish: a handful each.
    assert len(counts["large"]) <= 25, counts["large"]
