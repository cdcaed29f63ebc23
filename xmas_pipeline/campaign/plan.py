"""The one place a sequence's timetable is decided: every step's due time, or why it will not be sent.

Enrollment calls ``plan_sequence`` once per (contact, journey) and stores a ledger row per step with
the result, so what ``emails_due`` shows is what will be sent. It is pure: the same journey and
instants always give the same plan, and it never reads a clock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from xmas_pipeline.campaign.journey import Journey, JourneyStep, duration_words, validate_timezone
from xmas_pipeline.campaign.windows import SendWindow, as_utc, in_window, last_opening_before, next_opening

SCHEDULED = "scheduled"
DROPPED = "dropped"
EXPIRED = "expired"

#: A call booked closer than this gets no reminders at all (the origin system's rule).
REMINDER_MIN_NOTICE = dt.timedelta(hours=2)


@dataclass(frozen=True)
class PlannedStep:
    step: int
    template: str
    due_at: dt.datetime  # aware UTC, after send-window adjustment (the unadjusted time for a dropped step)
    state: str  # "scheduled" | "dropped" | "expired"
    reason: str | None  # why dropped/expired, in words an operator reads


def plan_sequence(
    journey: Journey,
    *,
    trigger_at: dt.datetime,
    event_at: dt.datetime | None = None,
    recipient_tz: str | None = None,
) -> list[PlannedStep]:
    """Every step of ``journey`` for one contact, in step order.

    Args:
        trigger_at: when the trigger happened (signup, booking made, no-show marked, ...).
        event_at: the event reminders count back from (the booked call's start); required when the
            journey has ``before`` steps.
        recipient_tz: the contact's IANA time zone; the journey's when None.

    Timing: an ``after`` step is due at ``trigger_at + after``; a ``before`` step (a reminder) at
    ``event_at - before``. Then the send window, read in the recipient's time zone, moves any step
    outside it (except ``send_window.exempt_steps``), and a step due at or after ``journey.end`` is
    ``expired``.

    ``after`` steps move to the next opening of the window, never earlier: they may share an opening
    with another step (two steps due over a closed Sunday both go on Monday at opening time).

    Reminders follow the origin system's rules, then the window:
      - all are ``dropped`` when the call is less than 2 hours away at ``trigger_at``;
      - one whose time had already passed at ``trigger_at`` is ``dropped`` (it is never sent late);
      - one outside the window goes at the in-window moment *nearest* its planned time, earlier or
        later, as long as that is after the booking and before the call. A marketer wants a reminder
        at a decent hour *before* the call: a 2 h reminder due at 07:30 for a 09:30 call goes at 09:00
        when the window opens, but a 24 h reminder due on a closed Sunday goes at the end of Saturday
        rather than on Monday morning beside the 2 h one. Earlier means the last minute of the
        window (17:59 for one that closes at 18:00).
      - one with no such moment, or that would go out at or before the previous reminder (two moved
        onto the same minute), is ``dropped``, and the reason says so.
    """
    trigger_at = as_utc(trigger_at, "trigger_at")
    if event_at is not None:
        event_at = as_utc(event_at, "event_at")
    elif journey.has_reminders:
        raise ValueError(
            f"journey {journey.name!r} has reminders counted back from an event; "
            "pass event_at (the booked call's start time)"
        )
    tz = ZoneInfo(validate_timezone(recipient_tz)) if recipient_tz is not None else journey.tz
    window = journey.send_window

    plan: list[PlannedStep] = []
    last_reminder: PlannedStep | None = None
    for step in journey.steps:
        if step.before is not None:
            planned = _plan_reminder(step, trigger_at, event_at, window, tz, last_reminder)
            if planned.state == SCHEDULED:
                last_reminder = planned
        else:
            due = trigger_at + step.after
            if window is not None and step.number not in window.exempt_steps:
                due = next_opening(due, window, tz)
            planned = _scheduled(step, due)
        plan.append(_expire_after_end(journey, planned, tz))
    return plan


def _plan_reminder(
    step: JourneyStep,
    trigger_at: dt.datetime,
    event_at: dt.datetime,
    window: SendWindow | None,
    tz: ZoneInfo,
    previous: PlannedStep | None,
) -> PlannedStep:
    due = event_at - step.before
    notice = f"{duration_words(step.before)} before the call"
    if event_at - trigger_at < REMINDER_MIN_NOTICE:
        return _dropped(
            step, due, f"the call ({_when(event_at, tz)}) was booked less than 2 hours ahead: no reminders"
        )
    if due < trigger_at:
        return _dropped(step, due, f"its time ({_when(due, tz)}, {notice}) had already passed when the call was booked")
    if window is not None and step.number not in window.exempt_steps and not in_window(due, window, tz):
        options = [
            t
            for t in (last_opening_before(due, window, tz), next_opening(due, window, tz))
            if trigger_at <= t < event_at
        ]
        if not options:
            return _dropped(
                step,
                due,
                f"its time ({_when(due, tz)}, {notice}) is outside the send window and the window has no "
                "opening between the booking and the call",
            )
        # Nearest to the planned time; on a tie the earlier one, which gives more notice.
        due = min(options, key=lambda t: (abs(t - due), t))
    if previous is not None and due <= previous.due_at:
        return _dropped(
            step,
            due,
            f"the send window moves it to {_when(due, tz)}, with or before reminder {previous.step} "
            f"({_when(previous.due_at, tz)}): one reminder is enough",
        )
    return _scheduled(step, due)


def _expire_after_end(journey: Journey, planned: PlannedStep, tz: ZoneInfo) -> PlannedStep:
    if planned.state != SCHEDULED or planned.due_at < journey.end:
        return planned
    return PlannedStep(
        step=planned.step,
        template=planned.template,
        due_at=planned.due_at,
        state=EXPIRED,
        reason=f"due {_when(planned.due_at, tz)}, at or after the end of {journey.name} ({_when(journey.end, tz)})",
    )


def _scheduled(step: JourneyStep, due: dt.datetime) -> PlannedStep:
    return PlannedStep(step.number, step.template, due.astimezone(dt.timezone.utc), SCHEDULED, None)


def _dropped(step: JourneyStep, due: dt.datetime, reason: str) -> PlannedStep:
    return PlannedStep(step.number, step.template, due.astimezone(dt.timezone.utc), DROPPED, reason)


def _when(instant: dt.datetime, tz: ZoneInfo) -> str:
    """``Sat 2026-12-05 17:59 EST`` in the recipient's zone, for reasons an operator reads."""
    local = instant.astimezone(tz)
    return f"{local:%a %Y-%m-%d %H:%M} {local.tzname()}"


def call_variables(event_at: dt.datetime, tz_name: str) -> dict[str, str]:
    """``call_date`` and ``call_time`` for reminder templates, in the recipient's time zone.

    E.g. ``{"call_date": "Monday, December 7", "call_time": "10:30 AM EST"}``.
    """
    local = as_utc(event_at, "event_at").astimezone(ZoneInfo(validate_timezone(tz_name)))
    hour = local.hour % 12 or 12
    return {
        "call_date": f"{local:%A}, {local:%B} {local.day}",
        "call_time": f"{hour}:{local:%M} {'AM' if local.hour < 12 else 'PM'} {local.tzname()}",
    }
