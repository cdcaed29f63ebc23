"""When each step of a sequence falls due, and which campaign day an instant belongs to (pure, no I/O).

A step is due at ``anchor + day_offset * day_length`` where the anchor is the enrollment time (or the
moment the website says it sent email 1). A sequence is planned once, when it starts: every step gets
its due time then (``plan_steps``), and the ledger keeps it, so a day's mail is a query, not a scan.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from xmas_pipeline.campaign.models import Campaign

SCHEDULED = "scheduled"
EXPIRED = "expired"


@dataclass(frozen=True)
class PlannedStep:
    step: int
    template: str
    due_at: dt.datetime  # aware UTC
    state: str  # "scheduled" | "expired"
    reason: str | None = None  # why it will not be sent, in words an operator reads


def day_bounds(campaign: Campaign, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The UTC instants where ``day`` starts and ends in the campaign timezone (DST-correct)."""
    tz = campaign.tz
    start = dt.datetime.combine(day, dt.time.min, tzinfo=tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min, tzinfo=tz)
    return start.astimezone(dt.timezone.utc), end.astimezone(dt.timezone.utc)


def campaign_day(campaign: Campaign, instant: dt.datetime) -> dt.date:
    return instant.astimezone(campaign.tz).date()


def local_time(campaign: Campaign, instant: dt.datetime | None) -> str:
    """An instant as people running the campaign read it: campaign timezone, minutes, zone name."""
    return instant.astimezone(campaign.tz).strftime("%Y-%m-%d %H:%M %Z") if instant else "-"


def due_at(campaign: Campaign, anchor: dt.datetime, step: int, day_seconds: int = 86400) -> dt.datetime:
    return (anchor + dt.timedelta(seconds=campaign.step(step).day_offset * day_seconds)).astimezone(dt.timezone.utc)


def plan_steps(campaign: Campaign, anchor: dt.datetime, day_seconds: int = 86400) -> list[PlannedStep]:
    """Every step of a sequence anchored at ``anchor``: scheduled, or expired when due at/after the campaign end."""
    planned = []
    for step in campaign.steps:
        at = due_at(campaign, anchor, step.number, day_seconds)
        if at >= campaign.end:
            reason = f"expired: due {local_time(campaign, at)}, after the campaign end {local_time(campaign, campaign.end)}"
            planned.append(PlannedStep(step.number, step.template, at, EXPIRED, reason))
        else:
            planned.append(PlannedStep(step.number, step.template, at, SCHEDULED))
    return planned
