"""The campaign clock: real time, or pinned (XMAS_NOW) so tests and demos never sleep."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


def parse_instant(value: str) -> dt.datetime:
    """ISO 8601 with an offset (a trailing Z is accepted); naive values are refused, not guessed."""
    parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset; write e.g. 2026-12-01T09:00:00-05:00")
    return parsed


@dataclass(frozen=True)
class Clock:
    """Tells the time. `pinned` fixes it; `day_seconds` shrinks campaign days for demos."""

    pinned: dt.datetime | None = None
    day_seconds: int = 86400

    def now(self) -> dt.datetime:
        if self.pinned is not None:
            return self.pinned
        return dt.datetime.now(dt.timezone.utc)

    @property
    def day(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.day_seconds)


def wall_now() -> dt.datetime:
    """Real time, for queue mechanics (backoff, leases, stale dispatches) even when the campaign clock is pinned."""
    return dt.datetime.now(dt.timezone.utc)
