"""plan_sequence: every step's due time (after the send window) or why it will not be sent."""

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from xmas_pipeline.campaign.journey import load_journey, load_journeys, parse_journey
from xmas_pipeline.campaign.loader import load_campaign
from xmas_pipeline.campaign.plan import PlannedStep, call_variables, plan_sequence
from xmas_pipeline.campaign.windows import in_window
from xmas_pipeline.settings import DEFAULT_CAMPAIGN_FILE

TORONTO = ZoneInfo("America/Toronto")
UTC = dt.timezone.utc

HEAD = """\
name: Plan test
timezone: America/Toronto
start_date: 2026-11-01
end: 2027-01-15T00:00:00
deadline: 2026-12-18
booking_url: https://book.example.com/x
sender:
  name: Sarah at BusinessX
  email: sarah@businessx.example.com
  postal_address: "BusinessX Canada Inc., 100 King Street West, Toronto, ON M5X 1C9, Canada"
"""
REMINDERS = """\
trigger: booking_created
steps:
  - {number: 1, before: 72h, template: r72}
  - {number: 2, before: 24h, template: r24}
  - {number: 3, before: 2h, template: r2}
"""
OFFICE_HOURS = 'send_window: {start: "09:00", end: "18:00", days: [mon, tue, wed, thu, fri, sat]}\n'


def toronto(*args, fold=0):
    return dt.datetime(*args, tzinfo=TORONTO, fold=fold)


def journey(body):
    return parse_journey(HEAD + body, "plan-test.yaml")


def summary(plan):
    """(step, state, Toronto wall time) for readable assertions."""
    return [(p.step, p.state, p.due_at.astimezone(TORONTO).strftime("%a %m-%d %H:%M")) for p in plan]


@pytest.fixture(scope="module")
def office_reminders():
    return journey(REMINDERS + OFFICE_HOURS)


@pytest.fixture(scope="module")
def shipped():
    return load_journeys(DEFAULT_CAMPAIGN_FILE.parent)


# ----------------------------------------------------------------------------------------------- the shape


def test_the_interface_the_lead_consumes():
    assert [f.name for f in dataclasses.fields(PlannedStep)] == ["step", "template", "due_at", "state", "reason"]
    plan = plan_sequence(journey(REMINDERS), trigger_at=toronto(2026, 12, 1, 9), event_at=toronto(2026, 12, 7, 15))
    assert [p.template for p in plan] == ["r72", "r24", "r2"]
    for p in plan:
        assert p.due_at.utcoffset() == dt.timedelta(0) and p.due_at.tzinfo is UTC
        assert p.state == "scheduled" and p.reason is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan[0].state = "dropped"


def test_the_same_inputs_always_give_the_same_plan(shipped):
    kwargs = dict(
        trigger_at=toronto(2026, 12, 4, 23, 10), event_at=toronto(2026, 12, 7, 8, 0), recipient_tz="Europe/London"
    )
    assert plan_sequence(shipped["pre-call"], **kwargs) == plan_sequence(shipped["pre-call"], **kwargs)


def test_naive_times_and_a_missing_event_time_are_refused():
    j = journey(REMINDERS)
    with pytest.raises(ValueError, match="pass event_at"):
        plan_sequence(j, trigger_at=toronto(2026, 12, 1, 9))
    with pytest.raises(ValueError, match="trigger_at must be timezone-aware"):
        plan_sequence(j, trigger_at=dt.datetime(2026, 12, 1, 9), event_at=toronto(2026, 12, 7, 15))
    with pytest.raises(ValueError, match="IANA"):
        plan_sequence(j, trigger_at=toronto(2026, 12, 1, 9), event_at=toronto(2026, 12, 7, 15), recipient_tz="EST")


# ------------------------------------------------------------------------------------------ after steps


def test_the_nurture_without_a_window_keeps_todays_timetable():
    j = load_journey(DEFAULT_CAMPAIGN_FILE).model_copy(update={"send_window": None})
    signup = toronto(2026, 11, 5, 2, 13)
    plan = plan_sequence(j, trigger_at=signup)
    days = [0, 2, 3, 4, 6, 8, 10]  # elapsed days, as the nurture has always counted them
    assert [p.due_at for p in plan] == [(signup + dt.timedelta(days=d)).astimezone(UTC) for d in days]
    assert all(p.state == "scheduled" for p in plan)


def test_the_shipped_nurture_answers_at_once_then_writes_at_a_decent_hour():
    plan = plan_sequence(load_journey(DEFAULT_CAMPAIGN_FILE), trigger_at=toronto(2026, 11, 5, 2, 13))
    assert plan[0].due_at == toronto(2026, 11, 5, 2, 13)  # email 1 is exempt: it answers the signup
    assert [p.due_at for p in plan[1:3]] == [toronto(2026, 11, 7, 8, 0), toronto(2026, 11, 8, 8, 0)]


def test_a_night_signup_gets_its_follow_ups_at_opening_time_and_step_1_at_once_when_exempt():
    j = journey(
        "steps:\n  - {number: 1, after: 0, template: a}\n  - {number: 2, after: 2d, template: b}\n"
        "  - {number: 3, after: 3d, template: c}\n"
        'send_window: {start: "09:00", end: "18:00", days: [mon, tue, wed, thu, fri, sat], exempt_steps: [1]}\n'
    )
    plan = plan_sequence(j, trigger_at=toronto(2026, 12, 2, 2, 13))  # Wednesday 02:13
    assert summary(plan) == [
        (1, "scheduled", "Wed 12-02 02:13"),  # exempt: at once
        (2, "scheduled", "Fri 12-04 09:00"),
        (3, "scheduled", "Sat 12-05 09:00"),
    ]


def test_the_window_is_read_in_the_recipients_zone():
    j = journey("steps:\n  - {number: 1, after: 1h, template: a}\n" + OFFICE_HOURS)
    trigger = toronto(2026, 12, 2, 5, 0)  # 06:00 in Toronto is 11:00 in London: inside London's window
    assert plan_sequence(j, trigger_at=trigger, recipient_tz="Europe/London")[0].due_at == toronto(2026, 12, 2, 6, 0)
    assert plan_sequence(j, trigger_at=trigger)[0].due_at == toronto(2026, 12, 2, 9, 0)


def test_steps_due_at_or_after_the_end_expire():
    j = journey("steps:\n  - {number: 1, after: 0, template: a}\n  - {number: 2, after: 2d, template: b}\n" + OFFICE_HOURS)
    plan = plan_sequence(j, trigger_at=toronto(2027, 1, 13, 10))
    assert [p.state for p in plan] == ["scheduled", "expired"]
    assert "at or after the end of Plan test (Fri 2027-01-15 00:00 EST)" in plan[1].reason
    # The window can push a step past the end too: due Thursday 20:00, opening Friday 09:00 is after the end.
    late = plan_sequence(j, trigger_at=toronto(2027, 1, 12, 20))
    assert [p.state for p in late] == ["scheduled", "expired"]


def test_no_show_recovery_at_once_then_a_day_and_two_days_later(shipped):
    marked = toronto(2026, 12, 9, 10, 40)  # Wednesday, just after the missed call
    assert summary(plan_sequence(shipped["no-show"], trigger_at=marked)) == [
        (1, "scheduled", "Wed 12-09 10:40"),
        (2, "scheduled", "Thu 12-10 10:40"),
        (3, "scheduled", "Fri 12-11 10:40"),
    ]


def test_onboarding_skips_christmas_day(shipped):
    paid = toronto(2026, 12, 24, 16, 30)
    assert summary(plan_sequence(shipped["onboarding"], trigger_at=paid)) == [
        (1, "scheduled", "Thu 12-24 17:30"),
        (2, "scheduled", "Mon 12-28 09:00"),  # +24h is Christmas Day; Boxing Day is a blackout, Sunday closed
        (3, "scheduled", "Mon 12-28 09:00"),  # +72h is Sunday: both wait for Monday's opening
    ]


# ---------------------------------------------------------------------------------------------- reminders


def test_reminders_72_24_and_2_hours_before_the_call():
    plan = plan_sequence(journey(REMINDERS), trigger_at=toronto(2026, 12, 1, 9), event_at=toronto(2026, 12, 7, 15))
    assert summary(plan) == [
        (1, "scheduled", "Fri 12-04 15:00"),
        (2, "scheduled", "Sun 12-06 15:00"),
        (3, "scheduled", "Mon 12-07 13:00"),
    ]


def test_reminders_whose_time_has_passed_at_booking_are_dropped():
    booked = toronto(2026, 12, 5, 10)  # Saturday; the call is Monday 15:00, 53 hours away
    plan = plan_sequence(journey(REMINDERS), trigger_at=booked, event_at=toronto(2026, 12, 7, 15))
    assert [p.state for p in plan] == ["dropped", "scheduled", "scheduled"]
    assert plan[0].reason == (
        "its time (Fri 2026-12-04 15:00 EST, 72 hours before the call) had already passed when the call was booked"
    )
    assert plan[0].due_at == toronto(2026, 12, 4, 15)  # the time it would have had


def test_a_call_less_than_2_hours_away_gets_no_reminders():
    booked = toronto(2026, 12, 7, 13, 31)
    plan = plan_sequence(journey(REMINDERS), trigger_at=booked, event_at=toronto(2026, 12, 7, 15))
    assert [p.state for p in plan] == ["dropped"] * 3
    assert all("booked less than 2 hours ahead" in p.reason for p in plan)
    # Exactly 2 hours ahead: the 2h reminder goes at once.
    plan = plan_sequence(journey(REMINDERS), trigger_at=toronto(2026, 12, 7, 13), event_at=toronto(2026, 12, 7, 15))
    assert summary(plan)[2] == (3, "scheduled", "Mon 12-07 13:00")


def test_a_reschedule_is_a_new_plan_from_the_new_time():
    j = journey(REMINDERS)
    booked = toronto(2026, 12, 1, 9)
    first = plan_sequence(j, trigger_at=booked, event_at=toronto(2026, 12, 7, 15))
    moved = plan_sequence(j, trigger_at=toronto(2026, 12, 3, 12), event_at=toronto(2026, 12, 10, 11))
    assert summary(first) != summary(moved)
    assert summary(moved) == [
        (1, "scheduled", "Mon 12-07 11:00"),
        (2, "scheduled", "Wed 12-09 11:00"),
        (3, "scheduled", "Thu 12-10 09:00"),
    ]


def test_a_reminder_outside_the_window_goes_at_the_nearest_opening_before_the_call(office_reminders):
    # Monday 09:30 call, office hours Monday to Saturday.
    plan = plan_sequence(office_reminders, trigger_at=toronto(2026, 12, 1, 9), event_at=toronto(2026, 12, 7, 9, 30))
    assert summary(plan) == [
        (1, "scheduled", "Fri 12-04 09:30"),  # inside: unchanged
        (2, "scheduled", "Sat 12-05 17:59"),  # Sunday 09:30 is closed: Saturday's close is nearer than Monday 09:00
        (3, "scheduled", "Mon 12-07 09:00"),  # 07:30 -> 09:00, still before the call
    ]


def test_a_reminder_never_goes_at_or_after_the_call_nor_twice_at_once(office_reminders):
    # Monday 08:00 call: the 2h reminder (06:00) cannot wait for 09:00, and Saturday's close is taken.
    plan = plan_sequence(office_reminders, trigger_at=toronto(2026, 12, 1, 9), event_at=toronto(2026, 12, 7, 8))
    assert summary(plan) == [
        (1, "scheduled", "Fri 12-04 09:00"),
        (2, "scheduled", "Sat 12-05 17:59"),
        (3, "dropped", "Sat 12-05 17:59"),
    ]
    assert plan[2].reason == (
        "the send window moves it to Sat 2026-12-05 17:59 EST, with or before reminder 2 "
        "(Sat 2026-12-05 17:59 EST): one reminder is enough"
    )
    for p in plan:
        assert p.due_at < toronto(2026, 12, 7, 8)


def test_a_reminder_with_no_opening_between_booking_and_call_is_dropped(office_reminders):
    # Booked Sunday 10:00 for Monday 08:30: the 2h reminder (06:30) has no opening between booking and call.
    plan = plan_sequence(office_reminders, trigger_at=toronto(2026, 12, 6, 10), event_at=toronto(2026, 12, 7, 8, 30))
    assert [p.state for p in plan] == ["dropped", "dropped", "dropped"]
    assert "had already passed" in plan[0].reason and "had already passed" in plan[1].reason
    assert plan[2].reason.endswith("the window has no opening between the booking and the call")


def test_an_exempt_reminder_keeps_its_exact_time():
    body = REMINDERS + 'send_window: {start: "09:00", end: "18:00", exempt_steps: [3]}\n'
    plan = plan_sequence(journey(body), trigger_at=toronto(2026, 12, 1, 9), event_at=toronto(2026, 12, 7, 8))
    assert summary(plan)[2] == (3, "scheduled", "Mon 12-07 06:00")


def test_shipped_pre_call_reminders_fall_inside_their_window_and_before_the_call(shipped):
    j = shipped["pre-call"]
    booked = toronto(2026, 11, 30, 22, 0)
    for hours in range(3, 24 * 5, 5):  # calls at every hour of day over five days
        call = booked + dt.timedelta(hours=hours)
        for p in plan_sequence(j, trigger_at=booked, event_at=call):
            if p.state == "scheduled":
                assert booked <= p.due_at < call
                assert in_window(p.due_at, j.send_window, TORONTO)


def test_reminders_across_the_autumn_clock_change():
    # The call is Monday 2026-11-02 10:00 EST. Durations are elapsed time, as the timetable has always
    # counted them, so 72 hours before is Friday 11:00 EDT (Python's wall-clock arithmetic would say 10:00).
    plan = plan_sequence(journey(REMINDERS), trigger_at=toronto(2026, 10, 25, 9), event_at=toronto(2026, 11, 2, 10))
    assert plan[0].due_at == toronto(2026, 11, 2, 10).astimezone(UTC) - dt.timedelta(hours=72)
    assert summary(plan)[0] == (1, "scheduled", "Fri 10-30 11:00")


# ----------------------------------------------------------------------------------------- call variables


def test_call_variables_in_the_recipients_zone():
    call = dt.datetime(2026, 12, 7, 15, 30, tzinfo=UTC)
    assert call_variables(call, "America/Toronto") == {"call_date": "Monday, December 7", "call_time": "10:30 AM EST"}
    assert call_variables(call, "Australia/Lord_Howe") == {"call_date": "Tuesday, December 8", "call_time": "2:30 AM +11"}
    assert call_variables(dt.datetime(2026, 12, 7, 17, tzinfo=UTC), "Europe/London")["call_time"] == "5:00 PM GMT"
