"""Use case: give each sequence its timetable, as ledger rows with due times, when it starts (or moves).

Enrollment plans the sequences it creates in the same transaction. Sequences that arrive another way
(first seen in the CRM, or written before planning existed) are planned by the next delivery run. A
rescheduled call re-plans the steps not yet sent.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from xmas_pipeline.campaign.journey import Journey, Journeys
from xmas_pipeline.campaign.plan import DROPPED, PlannedStep, plan_sequence
from xmas_pipeline.store import ledger

DAY = 86400


def scaled(journey: Journey, day_seconds: int) -> Journey:
    """The journey with every duration shrunk by ``day_seconds / 1 day`` (``make demo``: a day is a minute).

    Send windows are dropped: a window of 09:00-18:00 means nothing in a one-minute day.
    """
    if day_seconds == DAY:
        return journey
    factor = day_seconds / DAY
    steps = [
        s.model_copy(update={k: getattr(s, k) * factor for k in ("after", "before") if getattr(s, k) is not None})
        for s in journey.steps
    ]
    return journey.model_copy(update={"steps": steps, "send_window": None})


def plan(
    journey: Journey, *, trigger_at: dt.datetime, event_at: dt.datetime | None, recipient_tz: str | None, day_seconds: int
) -> list[PlannedStep]:
    """``plan_sequence`` with demo time applied; a plan's ``dropped`` steps become skipped ledger rows."""
    return [
        p if p.state != DROPPED else PlannedStep(p.step, p.template, p.due_at, ledger.SKIPPED, f"dropped: {p.reason}")
        for p in plan_sequence(scaled(journey, day_seconds), trigger_at=trigger_at, event_at=event_at,
                               recipient_tz=recipient_tz)
    ]


def plan_rows(
    conn: sa.Connection, journey: Journey, *, sequence_key: str, email: str, trigger_at: dt.datetime,
    event_at: dt.datetime | None = None, recipient_tz: str | None = None, day_seconds: int, now: dt.datetime,
    event_id: int | None = None,
) -> None:
    steps = plan(journey, trigger_at=trigger_at, event_at=event_at, recipient_tz=recipient_tz, day_seconds=day_seconds)
    ledger.plan(conn, campaign=journey.name, sequence_key=sequence_key, email=email, steps=steps, now=now,
                event_id=event_id)


def replan_rows(
    conn: sa.Connection, journey: Journey, *, sequence_key: str, trigger_at: dt.datetime,
    event_at: dt.datetime | None, recipient_tz: str | None, day_seconds: int, reset: bool = False,
    event_id: int | None = None,
) -> int:
    """Move the steps not yet sent to a new plan (a rescheduled call); returns how many rows moved.

    With ``reset`` (a journey starting again) steps skipped for any reason are planned afresh too.
    """
    steps = plan(journey, trigger_at=trigger_at, event_at=event_at, recipient_tz=recipient_tz, day_seconds=day_seconds)
    return ledger.replan(conn, sequence_key=sequence_key, steps=steps, reset=reset, event_id=event_id)


def plan_unplanned(engine: sa.Engine, journeys: Journeys, *, day_seconds: int, now: dt.datetime) -> int:
    """Plan every active sequence that has no timetable yet; returns how many were planned."""
    planned = 0
    for journey in journeys:
        while batch := ledger.unplanned(engine, journey.name):
            with engine.begin() as conn:
                for seq in batch:
                    try:
                        steps = plan(journey, trigger_at=seq["signup_at"], event_at=seq["event_at"],
                                     recipient_tz=seq["timezone"], day_seconds=day_seconds)
                    except ValueError as exc:  # e.g. reminders without a call time: nothing can be sent
                        steps = [PlannedStep(s.number, s.template, seq["signup_at"], ledger.SKIPPED, f"dropped: {exc}")
                                 for s in journey.steps]
                    ledger.plan(conn, campaign=journey.name, sequence_key=seq["sequence_key"], email=seq["email"],
                                steps=steps, now=now, event_id=seq["event_id"])
            planned += len(batch)
    return planned
