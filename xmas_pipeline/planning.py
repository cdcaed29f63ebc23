"""Use case: give each sequence its timetable, as ledger rows with due times, when it starts.

Enrollment plans the sequences it creates in the same transaction. Sequences that arrive another way
(first seen in the CRM, or written before planning existed) are planned by the next delivery run.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from xmas_pipeline.campaign.models import Campaign
from xmas_pipeline.campaign.timetable import plan_steps
from xmas_pipeline.store import ledger


def plan_sequence(
    conn: sa.Connection, campaign: Campaign, *, sequence_key: str, email: str, anchor: dt.datetime,
    day_seconds: int, now: dt.datetime,
) -> None:
    ledger.plan(
        conn, campaign=campaign.name, sequence_key=sequence_key, email=email,
        steps=plan_steps(campaign, anchor, day_seconds), now=now,
    )


def plan_unplanned(engine: sa.Engine, campaign: Campaign, *, day_seconds: int, now: dt.datetime) -> int:
    """Plan every active sequence that has no timetable yet; returns how many were planned."""
    planned = 0
    while True:
        batch = ledger.unplanned(engine, campaign.name)
        if not batch:
            return planned
        with engine.begin() as conn:
            for seq in batch:
                plan_sequence(conn, campaign, sequence_key=seq["sequence_key"], email=seq["email"],
                              anchor=seq["signup_at"], day_seconds=day_seconds, now=now)
        planned += len(batch)
