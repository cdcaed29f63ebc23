"""Send windows: the first opening at or after a due time, in any IANA zone, across DST changes.

The property tests compare ``next_opening`` with a brute-force oracle written from the definition
alone: walk whole minutes forward from the due time and stop at the first one whose wall clock is
inside the window. Every opening falls on a whole minute (windows are HH:MM, and since 1990 every
zone's offsets and offset changes are whole minutes), so the two must agree exactly.
"""

import datetime as dt
import functools
import zoneinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from xmas_pipeline.campaign.windows import SendWindow, in_window, last_opening_before, next_opening

UTC = dt.timezone.utc
MINUTE = dt.timedelta(minutes=1)
TORONTO = ZoneInfo("America/Toronto")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

DST_ZONES = [
    "America/Toronto", "Europe/London", "Australia/Lord_Howe", "America/St_Johns", "America/Santiago",
    "Asia/Tehran", "Pacific/Chatham", "America/Havana", "Africa/Cairo", "Pacific/Apia", "Europe/Dublin",
]  # fmt: skip
ALL_ZONES = sorted(z for z in zoneinfo.available_timezones() if "/" in z or z == "UTC")
# Windows that open or close in the small hours collide with DST changes; office hours are the usual case.
EDGE_TIMES = [dt.time(h, m) for h in range(4) for m in (0, 30)] + [dt.time(9), dt.time(18), dt.time(23, 30)]


def window(start="09:00", end="18:00", days=DAYS[:6], blackout=()):
    return SendWindow(start=start, end=end, days=days, blackout_dates=blackout)


def utc(*args):
    return dt.datetime(*args, tzinfo=UTC)


def local(tz, *args, fold=0):
    return dt.datetime(*args, tzinfo=tz, fold=fold)


# ------------------------------------------------------------------------------------------ the oracle


def inside(instant, w, tz):
    """The definition, restated independently of the module: wall clock on an open day in [start, end)."""
    wall = instant.astimezone(tz)
    open_day = DAYS[wall.weekday()] in w.days and wall.date() not in w.blackout_dates
    return open_day and w.start <= wall.time().replace(fold=0) < w.end


def first_opening_by_walking(due, w, tz, limit_days=40):
    if inside(due, w, tz):
        return due
    minute = due.replace(second=0, microsecond=0) + MINUTE
    for _ in range(limit_days * 1440):
        if inside(minute, w, tz):
            return minute
        minute += MINUTE
    raise AssertionError("the oracle found no opening")


def last_opening_by_walking(due, w, tz, limit_days=40):
    if inside(due, w, tz):
        return due
    minute = due.replace(second=0, microsecond=0)
    for _ in range(limit_days * 1440):
        if inside(minute, w, tz):
            return minute
        minute -= MINUTE
    raise AssertionError("the oracle found no opening")


@functools.lru_cache(maxsize=2048)
def offset_changes(zone, year):
    """Roughly where a zone's offset changes in one year (to aim due times at them): day by day, then the hour."""
    tz = ZoneInfo(zone)
    out, day = [], utc(year, 1, 1)
    while day.year == year:
        if day.astimezone(tz).utcoffset() != (day + dt.timedelta(days=1)).astimezone(tz).utcoffset():
            hour = day
            while hour.astimezone(tz).utcoffset() == day.astimezone(tz).utcoffset():
                hour += dt.timedelta(hours=1)
            out.append(hour)
        day += dt.timedelta(days=1)
    return tuple(out)


# ------------------------------------------------------------------------------------------ strategies

zones = st.one_of(st.sampled_from(DST_ZONES), st.sampled_from(ALL_ZONES))
wall_times = st.one_of(st.sampled_from(EDGE_TIMES), st.times().map(lambda t: t.replace(second=0, microsecond=0)))


@st.composite
def windows(draw, near: dt.date | None = None):
    start, end = sorted(draw(st.lists(wall_times, min_size=2, max_size=2, unique=True)))
    days = draw(st.sets(st.sampled_from(DAYS), min_size=3))  # keeps the oracle's walk to days, not weeks
    blackout = set()
    if near is not None:
        blackout = draw(st.sets(st.integers(-1, 8).map(lambda n: near + dt.timedelta(days=n)), max_size=2))
    return SendWindow(start=start, end=end, days=tuple(days), blackout_dates=frozenset(blackout))


@st.composite
def due_instants(draw, zone):
    """Anywhere in 1990..2060, or within two days of one of the zone's offset changes."""
    anywhere = st.datetimes(dt.datetime(1990, 1, 1), dt.datetime(2060, 12, 31), timezones=st.just(UTC))
    changes = offset_changes(zone, draw(st.integers(1990, 2060)))
    if changes and draw(st.booleans()):
        around = draw(st.sampled_from(changes))
        return around + dt.timedelta(seconds=draw(st.integers(-2 * 86400, 2 * 86400)))
    return draw(anywhere)


@st.composite
def cases(draw):
    zone = draw(zones)
    due = draw(due_instants(zone))
    w = draw(windows(near=due.astimezone(ZoneInfo(zone)).date()))
    return zone, due, w


# Bounded and repeatable: about 2 s per property on an idle core; derandomized so CI never meets a new seed.
PROPERTY = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True, database=None
)


# --------------------------------------------------------------------------------------------- properties


@PROPERTY
@given(cases())
@example(("America/Toronto", utc(2026, 3, 8, 6, 10), window(start="02:30", days=DAYS)))  # start skipped
@example(("America/Toronto", utc(2026, 11, 1, 6, 10), window(start="01:30", days=DAYS)))  # second 01:10
@example(("America/Toronto", utc(2026, 11, 1, 5, 45), window(start="00:00", end="01:30", days=DAYS)))
@example(("Australia/Lord_Howe", utc(2026, 10, 3, 15, 0), window(start="02:00", end="02:30", days=DAYS)))
@example(("America/St_Johns", utc(2026, 12, 25, 3), window(blackout={dt.date(2026, 12, 25)})))
def test_next_opening_is_the_first_in_window_instant_at_or_after_due(case):
    zone, due, w = case
    tz = ZoneInfo(zone)
    sent = next_opening(due, w, tz)
    assert sent.tzinfo is not None and sent.utcoffset() == dt.timedelta(0)
    assert sent >= due, "never earlier than due"
    assert inside(sent, w, tz), "inside the window on the recipient's wall clock"
    assert in_window(sent, w, tz)
    assert sent == first_opening_by_walking(due, w, tz), "no earlier in-window minute between due and the result"


@PROPERTY
@given(cases())
@example(("America/Toronto", utc(2026, 12, 6, 14, 30), window()))  # a closed Sunday -> Saturday 17:59
@example(("America/Toronto", utc(2026, 11, 1, 6, 10), window(start="00:00", end="01:30", days=DAYS)))
def test_last_opening_before_is_the_last_in_window_minute_at_or_before_due(case):
    zone, due, w = case
    tz = ZoneInfo(zone)
    sent = last_opening_before(due, w, tz)
    assert sent <= due
    assert inside(sent, w, tz)
    assert sent == last_opening_by_walking(due, w, tz)


# ------------------------------------------------------------------------------------- worked examples


def test_a_due_time_inside_the_window_is_kept_to_the_microsecond():
    due = local(TORONTO, 2026, 12, 1, 10, 15, 7, 123).astimezone(UTC)
    assert next_opening(due, window(), TORONTO) == due


def test_a_night_signup_waits_for_the_morning_in_the_recipients_zone():
    due = local(TORONTO, 2026, 12, 2, 2, 13)  # Wednesday 02:13
    assert next_opening(due, window(), TORONTO) == local(TORONTO, 2026, 12, 2, 9, 0)
    london = ZoneInfo("Europe/London")  # the same instant is 07:13 in London: opens at 09:00 there
    assert next_opening(due, window(), london) == local(london, 2026, 12, 2, 9, 0)


def test_closed_days_and_blackout_dates_are_skipped():
    w = window(days=("mon", "tue", "wed", "thu", "fri"), blackout={dt.date(2026, 12, 28)})
    saturday_evening = local(TORONTO, 2026, 12, 26, 19, 0)
    assert next_opening(saturday_evening, w, TORONTO) == local(TORONTO, 2026, 12, 29, 9, 0)  # Tuesday


def test_after_closing_time_moves_to_the_next_day():
    assert next_opening(local(TORONTO, 2026, 12, 1, 18, 0), window(), TORONTO) == local(TORONTO, 2026, 12, 2, 9)


def test_a_start_time_skipped_by_spring_forward_opens_when_the_clock_jumps():
    # 2026-03-08 in Toronto: 02:00 EST jumps to 03:00 EDT, so 02:30 never happens that day.
    w = window(start="02:30", days=DAYS)
    opened = next_opening(local(TORONTO, 2026, 3, 8, 1, 0), w, TORONTO)
    assert opened == utc(2026, 3, 8, 7, 0)
    assert opened.astimezone(TORONTO).strftime("%H:%M %Z") == "03:00 EDT"


def test_a_start_time_repeated_by_fall_back_opens_the_first_time():
    # 2026-11-01 in Toronto: 01:00-02:00 happens twice (EDT, then EST).
    w = window(start="01:30", days=DAYS)
    assert next_opening(local(TORONTO, 2026, 11, 1, 0, 0), w, TORONTO) == utc(2026, 11, 1, 5, 30)  # 01:30 EDT
    # Due during the second 01:10 (EST): the window opens again at the second 01:30.
    second_0110 = local(TORONTO, 2026, 11, 1, 1, 10, fold=1)
    assert next_opening(second_0110, w, TORONTO) == utc(2026, 11, 1, 6, 30)  # 01:30 EST


def test_fall_back_can_reopen_a_window_that_had_closed():
    # Window 00:00-01:30. At 01:45 EDT it is closed; at 02:00 EDT the clock falls back to 01:00 EST: open again.
    w = window(start="00:00", end="01:30", days=DAYS)
    assert next_opening(local(TORONTO, 2026, 11, 1, 1, 45), w, TORONTO) == utc(2026, 11, 1, 6, 0)


def test_lord_howe_half_hour_dst():
    lord_howe = ZoneInfo("Australia/Lord_Howe")  # 2026-10-04 02:00 +10:30 jumps to 02:30 +11:00
    w = window(start="02:10", end="03:00", days=DAYS)
    assert next_opening(local(lord_howe, 2026, 10, 4, 1, 0), w, lord_howe) == local(lord_howe, 2026, 10, 4, 2, 30)


def test_a_day_missing_from_the_calendar_is_skipped():
    apia = ZoneInfo("Pacific/Apia")  # 2011-12-30 never happened in Samoa
    w = window(days=DAYS)
    assert next_opening(local(apia, 2011, 12, 29, 20, 0), w, apia) == local(apia, 2011, 12, 31, 9, 0)


def test_no_window_means_due_time():
    due = utc(2026, 12, 1, 3, 0)
    assert next_opening(due, None, TORONTO) == due
    assert last_opening_before(due, None, TORONTO) == due


def test_last_opening_before_gives_the_last_minute_before_closing():
    sunday = local(TORONTO, 2026, 12, 6, 9, 30)  # closed on Sundays
    assert last_opening_before(sunday, window(), TORONTO) == local(TORONTO, 2026, 12, 5, 17, 59)


def test_naive_instants_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        next_opening(dt.datetime(2026, 12, 1, 9), window(), TORONTO)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"start": "18:00", "end": "09:00"}, "must be before end"),
        ({"start": "09:00", "end": "09:00"}, "must be before end"),
        ({"start": "9am", "end": "18:00"}, "HH:MM"),
        ({"start": "09:00", "end": 1080}, "in quotes"),
        ({"start": "09:00", "end": "18:00", "days": []}, "at least one"),
        ({"start": "09:00", "end": "18:00", "days": ["mon", "someday"]}, "not a weekday"),
        ({"start": "09:00", "end": "18:00", "exempt_steps": [0]}, "start at 1"),
        ({"start": "09:00", "end": "18:00", "colour": "red"}, "Extra inputs"),
    ],
)
def test_bad_windows_are_refused_with_a_reason(fields, message):
    with pytest.raises(ValueError, match=message):
        SendWindow(**fields)


def test_weekdays_are_normalised():
    w = SendWindow(start="09:00", end="18:00", days=["Friday", "MON", "mon"])
    assert w.days == ("mon", "fri")
