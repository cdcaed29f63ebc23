"""When the delivery schedule ticks: the overdue check needs "two ticks ago" for any cron."""

from __future__ import annotations

import datetime as dt
import itertools

# Dagster's own cron iterator (the scheduler's, so DST and irregular crons agree with it); private API,
# pinned with dagster in setup.py.
from dagster._utils.schedules import reverse_cron_string_iterator


def ticks_before(cron: str, timezone: str, now: dt.datetime, count: int = 2) -> list[dt.datetime]:
    """The last ``count`` scheduled ticks at or before ``now``, newest first (aware, UTC)."""
    ticks = reverse_cron_string_iterator(end_timestamp=now.timestamp() + 1, cron_string=cron, execution_timezone=timezone)
    return [t.astimezone(dt.timezone.utc) for t in itertools.islice(ticks, count)]
