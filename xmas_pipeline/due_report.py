"""Use case: what a campaign day owes, summarised for the ``emails_due`` asset (load and compute, no Dagster).

The asset is a thin wrapper around ``due_report`` so that ``bench/due.py`` times exactly the code the
asset runs: plan what is unplanned, read the day's owed steps from the ledger, count them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa

from xmas_pipeline.campaign.journey import Journey, Journeys
from xmas_pipeline.campaign.timetable import campaign_day, day_bounds, local_time
from xmas_pipeline.planning import plan_unplanned
from xmas_pipeline.store import ledger, mirror

LISTED_DAY = "emails_due:last_listed_day"  # read by the delivery schedule
PREVIEW_ROWS = 50
PREVIEW_COLUMNS = ["email", "campaign", "step", "segment", "template", "due_at", "status", "day"]


def window(campaign: Journey, day: dt.date, now: dt.datetime) -> tuple[dt.datetime, dt.datetime, bool]:
    """The day's bounds, and whether it is the live day (today or later), which carries over earlier days."""
    start, end = day_bounds(campaign, day)
    return start, end, day >= campaign_day(campaign, now)


@dataclass
class DueReport:
    """The numbers and the preview the ``emails_due`` asset shows for one campaign day."""

    due: int = 0  # due this day
    carried_over: int = 0  # due on an earlier day and still owed (live day only)
    sendable_now: int = 0
    over_max_lateness: int = 0  # the next delivery run records these as late
    recorded_late: int = 0
    sequences_planned: int = 0
    by_journey_step_and_segment: list[tuple[str, int, str, int]] = field(default_factory=list)
    preview: list[dict] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.due + self.carried_over


def summarise(frame: pd.DataFrame, journeys: Journeys, start: dt.datetime, now: dt.datetime) -> DueReport:
    """Counts over ``ledger.owed``'s frame, column at a time (no Python per row)."""
    home = journeys.home
    start_ts, now_ts = pd.Timestamp(start), pd.Timestamp(now)
    due_at, status = frame["due_at"], frame["status"]
    carried = due_at < start_ts
    late = status == ledger.LATE
    max_late = frame["campaign"].map({j.name: pd.Timedelta(j.late_send.max_lateness) for j in journeys})
    come = due_at <= now_ts
    over = come & ~late & ~frame["late_ok"] & ((now_ts - due_at) > max_late)
    groups = frame.groupby(["campaign", "step", "segment"], sort=True, observed=True).size()
    preview = [
        dict(r, due_at=local_time(home, r["due_at"]), day="earlier day" if r["due_at"] < start_ts else "this day")
        for r in frame.head(PREVIEW_ROWS).to_dict("records")
    ]
    return DueReport(
        due=int((~carried).sum()),
        carried_over=int(carried.sum()),
        sendable_now=int((come & ~over & ~late).sum()),
        over_max_lateness=int(over.sum()),
        recorded_late=int(late.sum()),
        by_journey_step_and_segment=[(j, int(n), s, int(count)) for (j, n, s), count in groups.items()],
        preview=preview,
    )


def due_report(
    engine: sa.Engine, journeys: Journeys, day: dt.date, now: dt.datetime, *, day_seconds: int
) -> DueReport:
    """Plan what is unplanned, then list and count what ``day`` owes (the live day: with earlier leftovers)."""
    planned = plan_unplanned(engine, journeys, day_seconds=day_seconds, now=now)
    start, end, live = window(journeys.home, day, now)
    frame = ledger.owed(engine, journeys.names, start, end, carry_over=live)
    if live:  # the schedule's "first tick of the day" run has happened
        mirror.set_cursor(engine, LISTED_DAY, day.isoformat())
    report = summarise(frame, journeys, start, now)
    report.sequences_planned = planned
    return report
