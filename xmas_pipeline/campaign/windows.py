"""Send windows: the hours and days a journey may mail, in the recipient's time zone.

A window is read on the recipient's wall clock: an instant is *inside* it when, in their time zone,
its date is an open weekday that is not a blackout date and its time of day is in ``[start, end)``.
Everything here is pure and DST-correct: wall-clock times that do not exist (the hour skipped in
spring) or exist twice (the hour repeated in autumn) are handled by reasoning about instants, never
by adding hours to wall-clock times.

How the search works (and why it is exact): between two changes of a zone's UTC offset the wall clock
runs like UTC, so the instants inside the window form half-open intervals whose left ends are either
an instant whose wall clock reads exactly ``start`` on an open day, or an instant where the offset
changes (the wall clock jumps, e.g. over a skipped ``start``, or back into the window). The first
opening at or after an instant is therefore that instant or one of those candidates; we list the
candidates day by day and keep the earliest one that is inside the window.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, field_validator, model_validator

UTC = dt.timezone.utc
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()
_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
# Probing the offset at this step finds every change as long as no zone changes twice within it: in
# tzdata 2026 the closest two changes of any zone, over all its history, are 7 days apart.
_PROBE = dt.timedelta(hours=6)
_MINUTE = dt.timedelta(minutes=1)
_DAY = dt.timedelta(days=1)


def _wall_time(value: Any) -> dt.time:
    if isinstance(value, dt.time):
        return value.replace(tzinfo=None)
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 18:00 as the base-60 number 1080; refuse rather than guess.
        raise ValueError(f'got the number {value}: write the time in quotes as "HH:MM", e.g. "18:00"')
    if not isinstance(value, str) or not _HHMM.match(value.strip()):
        raise ValueError(f'{value!r} is not a time of day; write "HH:MM" on a 24-hour clock, e.g. "09:00"')
    hours, minutes = value.strip().split(":")
    return dt.time(int(hours), int(minutes))


def _weekday(value: Any) -> str:
    text = str(value).strip().lower()
    if text in WEEKDAYS:
        return text
    if text in _FULL_NAMES:
        return WEEKDAYS[_FULL_NAMES.index(text)]
    raise ValueError(f"{value!r} is not a weekday; use {', '.join(WEEKDAYS)}")


WallTime = Annotated[dt.time, BeforeValidator(_wall_time), PlainSerializer(lambda t: t.strftime("%H:%M"))]
Weekday = Annotated[str, BeforeValidator(_weekday)]


class SendWindow(BaseModel):
    """When a journey may send, on the recipient's wall clock; outside it a step waits for the next opening."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: WallTime = Field(description='Opening time, "HH:MM" (inclusive).')
    end: WallTime = Field(description='Closing time, "HH:MM" (exclusive: nothing is sent at 18:00 sharp).')
    days: tuple[Weekday, ...] = Field(default=WEEKDAYS, description="Open weekdays: mon, tue, wed, thu, fri, sat, sun.")
    blackout_dates: frozenset[dt.date] = Field(default=frozenset(), description="Dates with no sending at all.")
    exempt_steps: frozenset[int] = Field(default=frozenset(), description="Steps sent at their due time regardless.")

    @field_validator("days")
    @classmethod
    def _some_day(cls, days: tuple[str, ...]) -> tuple[str, ...]:
        if not days:
            raise ValueError("name at least one open weekday, e.g. [mon, tue, wed, thu, fri]")
        return tuple(d for d in WEEKDAYS if d in set(days))  # week order, no repeats

    @field_validator("exempt_steps")
    @classmethod
    def _positive_steps(cls, steps: frozenset[int]) -> frozenset[int]:
        bad = sorted(s for s in steps if s < 1)
        if bad:
            raise ValueError(f"step numbers start at 1, got {bad}")
        return steps

    @model_validator(mode="after")
    def _opens_before_it_closes(self) -> SendWindow:
        if self.start >= self.end:
            raise ValueError(
                f"start ({self.start:%H:%M}) must be before end ({self.end:%H:%M}); "
                "a window cannot run past midnight"
            )
        return self

    def is_open_on(self, day: dt.date) -> bool:
        return WEEKDAYS[day.weekday()] in self.days and day not in self.blackout_dates


def as_utc(instant: dt.datetime, name: str = "instant") -> dt.datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (got the naive {instant.isoformat()})")
    return instant.astimezone(UTC)


def in_window(instant: dt.datetime, window: SendWindow, tz: ZoneInfo) -> bool:
    """Whether the recipient's wall clock at ``instant`` is inside the window."""
    local = as_utc(instant).astimezone(tz)
    return window.is_open_on(local.date()) and window.start <= local.time() < window.end


def next_opening(instant: dt.datetime, window: SendWindow | None, tz: ZoneInfo) -> dt.datetime:
    """The first instant at or after ``instant`` that is inside the window, in UTC.

    ``instant`` itself when it is already inside (or there is no window). A ``start`` that does not
    exist that day (skipped by a DST change) opens the window at the change; a ``start`` that occurs
    twice opens it the first time. Closed weekdays and blackout dates are skipped.
    """
    at = as_utc(instant)
    if window is None or in_window(at, window, tz):
        return at
    lo = at
    for _ in range(_max_days(window)):
        hi = lo + _DAY
        found = [c for c in _left_ends(lo, hi, window, tz) if c >= at and in_window(c, window, tz)]
        if found:
            return min(found)
        lo = hi
    raise RuntimeError(f"no opening of {window!r} in {tz.key} after {at.isoformat()}")  # unreachable: see _max_days


def last_opening_before(instant: dt.datetime, window: SendWindow | None, tz: ZoneInfo) -> dt.datetime:
    """The latest moment at or before ``instant`` that is inside the window, in UTC.

    ``instant`` itself when it is inside; otherwise the last minute before the window last closed
    (17:59 for a window that ends at 18:00). Used to give a reminder more notice instead of less.
    """
    at = as_utc(instant)
    if window is None or in_window(at, window, tz):
        return at
    hi = at
    for _ in range(_max_days(window)):
        lo = hi - _DAY
        found = [c for c in _last_minutes(lo, hi, window, tz) if c <= at and in_window(c, window, tz)]
        if found:
            return max(found)
        hi = lo
    raise RuntimeError(f"no opening of {window!r} in {tz.key} before {at.isoformat()}")  # unreachable


def _max_days(window: SendWindow) -> int:
    # Every week has an open weekday; each blackout date (and, at most once a year, a DST change that
    # swallows the window) can cost one more week. Generous, and finite, so a bad window cannot hang.
    return 7 * (len(window.blackout_dates) + 3)


def _left_ends(lo: dt.datetime, hi: dt.datetime, window: SendWindow, tz: ZoneInfo) -> list[dt.datetime]:
    """Where an in-window interval can begin, within [lo, hi): ``start`` on the wall clock, or an offset change."""
    return _wall_crossings(lo, hi, window.start, window, tz) + _offset_changes(lo, hi, tz)


def _last_minutes(lo: dt.datetime, hi: dt.datetime, window: SendWindow, tz: ZoneInfo) -> list[dt.datetime]:
    """The last whole minute of each in-window interval that ends within (lo, hi], plus interval starts.

    An interval ends where the wall clock reaches ``end`` or the offset changes; its starts are listed
    too, as a fallback for an interval shorter than a minute (only a pathological zone has one).
    """
    ends = _wall_crossings(lo, hi + _MINUTE, window.end, window, tz) + _offset_changes(lo, hi + _MINUTE, tz)
    return [e - _MINUTE for e in ends] + _left_ends(lo, hi + _MINUTE, window, tz)


def _wall_crossings(
    lo: dt.datetime, hi: dt.datetime, wall: dt.time, window: SendWindow, tz: ZoneInfo
) -> list[dt.datetime]:
    """Instants in [lo, hi) at which the wall clock reads ``wall`` on an open day (each fold that exists)."""
    first = lo.astimezone(tz).date() - _DAY
    last = hi.astimezone(tz).date() + _DAY
    out = []
    day = first
    while day <= last:
        if window.is_open_on(day):
            naive = dt.datetime.combine(day, wall)
            first = naive.replace(tzinfo=tz).astimezone(UTC)
            second = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)  # differs only when the time repeats
            for utc in (first,) if first == second else (first, second):
                # Keep it only if this wall time really happens (it does not inside a DST gap).
                if lo <= utc < hi and utc.astimezone(tz).replace(tzinfo=None) == naive:
                    out.append(utc)
        day += _DAY
    return out


def _offset_changes(lo: dt.datetime, hi: dt.datetime, tz: ZoneInfo) -> list[dt.datetime]:
    """The instants in [lo, hi) at which the zone's UTC offset changes (the first second of the new offset)."""
    out = []
    a = int(lo.timestamp()) - 1  # whole seconds: tzdata changes offsets on whole seconds
    end = int(hi.timestamp()) + 1
    step = int(_PROBE.total_seconds())
    offset_a = _offset(a, tz)
    while a < end:
        b = min(a + step, end)
        offset_b = _offset(b, tz)
        if offset_b != offset_a:
            low, high = a, b  # offset(low) == offset_a != offset(high)
            while high - low > 1:
                mid = (low + high) // 2
                if _offset(mid, tz) == offset_a:
                    low = mid
                else:
                    high = mid
            change = dt.datetime.fromtimestamp(high, UTC)
            if lo <= change < hi:
                out.append(change)
        a, offset_a = b, offset_b
    return out


def _offset(seconds: int, tz: ZoneInfo) -> dt.timedelta | None:
    return dt.datetime.fromtimestamp(seconds, UTC).astimezone(tz).utcoffset()
