"""Campaign days: which day an instant belongs to, where a day starts and ends, how times are shown (pure).

Due times themselves are decided once per sequence by ``campaign/plan.py`` (``plan_sequence``).
"""

from __future__ import annotations

import datetime as dt

from xmas_pipeline.campaign.journey import Journey


def day_bounds(journey: Journey, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The UTC instants where ``day`` starts and ends in the journey's timezone (DST-correct)."""
    tz = journey.tz
    start = dt.datetime.combine(day, dt.time.min, tzinfo=tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min, tzinfo=tz)
    return start.astimezone(dt.timezone.utc), end.astimezone(dt.timezone.utc)


def campaign_day(journey: Journey, instant: dt.datetime) -> dt.date:
    return instant.astimezone(journey.tz).date()


def local_time(journey: Journey, instant: dt.datetime | None) -> str:
    """An instant as people running the campaign read it: its timezone, minutes, zone name."""
    return instant.astimezone(journey.tz).strftime("%Y-%m-%d %H:%M %Z") if instant else "-"
