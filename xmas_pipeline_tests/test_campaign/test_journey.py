"""The journey file: what it accepts, what it refuses (and how it says so), and the journeys we ship."""

import datetime as dt
from pathlib import Path

import pytest

from xmas_pipeline.campaign.journey import (
    ALWAYS_EXITS,
    ExitReason,
    Journey,
    JourneyFileError,
    Trigger,
    format_duration,
    load_journey,
    load_journeys,
    parse_duration,
    parse_journey,
    validate_timezone,
)
from xmas_pipeline.campaign.loader import load_campaign, load_file_templates
from xmas_pipeline.campaign.rendering import check_template, render
from xmas_pipeline.campaign.variables import contract_samples
from xmas_pipeline.settings import DEFAULT_CAMPAIGN_FILE

FILES = Path(DEFAULT_CAMPAIGN_FILE).parent
TEMPLATES = FILES / "templates"

HEAD = """\
name: Test journey
timezone: America/Toronto
start_date: 2026-11-01
end: 2026-12-24T00:00:00
deadline: 2026-12-18
booking_url: https://book.example.com/x
sender:
  name: Sarah at BusinessX
  email: sarah@businessx.example.com
  postal_address: "BusinessX Canada Inc., 100 King Street West, Toronto, ON M5X 1C9, Canada"
"""


def journey(body: str) -> Journey:
    return parse_journey(HEAD + body, "test.yaml")


def refused(body: str) -> str:
    with pytest.raises(JourneyFileError) as caught:
        journey(body)
    return str(caught.value)


# ------------------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0", dt.timedelta(0)),
        (0, dt.timedelta(0)),
        ("90m", dt.timedelta(minutes=90)),
        ("2h", dt.timedelta(hours=2)),
        ("72h", dt.timedelta(hours=72)),
        ("2d", dt.timedelta(days=2)),
        ("1d12h", dt.timedelta(days=1, hours=12)),
        ("1d2h30m", dt.timedelta(days=1, hours=2, minutes=30)),
        (" 2H ", dt.timedelta(hours=2)),
    ],
)
def test_durations_parse(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("-2h", "cannot be negative"),
        ("2", "no unit"),
        (2, "no unit"),
        ("2x", "not a duration"),
        ("h", "not a duration"),
        ("", "not a duration"),
        ("12h1d", "not a duration"),  # days, hours, minutes: in that order
        ("2 h", "not a duration"),
        ("1.5h", "not a duration"),
        ("400d", "longer than a year"),
        (True, "not a duration"),
        (None, "not a duration"),
    ],
)
def test_bad_durations_are_refused_with_a_reason(text, message):
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0", "1h30m", "2h", "3d", "1d12h", "7d"])
def test_durations_format_back_to_what_was_written(text):
    assert format_duration(parse_duration(text)) == text
    assert format_duration(parse_duration("90m")) == "1h30m"


# -------------------------------------------------------------------------------------------- time zones


def test_validate_timezone_accepts_iana_names_and_fixes_their_case():
    assert validate_timezone("America/Toronto") == "America/Toronto"
    assert validate_timezone(" america/st_johns ") == "America/St_Johns"
    assert validate_timezone("UTC") == "UTC"


@pytest.mark.parametrize(
    "name", ["EST", "-05:00", "GMT+5", "Mars/Olympus", "/etc/localtime", "../etc/passwd", "", "localtime"]
)
def test_validate_timezone_refuses_everything_else(name):
    with pytest.raises(ValueError, match="IANA"):
        validate_timezone(name)


# ------------------------------------------------------------------------------------------------ the file


def test_todays_campaign_file_is_a_valid_signup_journey_with_the_same_timing():
    as_journey = load_journey(DEFAULT_CAMPAIGN_FILE)
    as_campaign = load_campaign(DEFAULT_CAMPAIGN_FILE)
    assert as_journey.trigger is Trigger.SIGNUP
    assert [s.day_offset for s in as_journey.steps] == [s.day_offset for s in as_campaign.steps]
    assert [s.after for s in as_journey.steps] == [dt.timedelta(days=s.day_offset) for s in as_campaign.steps]
    assert [s.template for s in as_journey.steps] == [s.template for s in as_campaign.steps]
    for field in ("name", "timezone", "start_date", "end", "deadline", "booking_url", "sender", "template_source"):
        assert getattr(as_journey, field) == getattr(as_campaign, field), field
    assert as_journey.slug == as_campaign.slug == "christmas-2026"
    assert as_journey.tz == as_campaign.tz
    assert as_journey.step(3).template == "email_3"
    assert as_journey.send_window.exempt_steps == {1} and as_journey.late_send.max_lateness == dt.timedelta(hours=24)


def test_a_full_journey_reads_as_written():
    j = journey(
        """
trigger: booking_created
steps:
  - {number: 1, before: 72h, template: a}
  - {number: 2, before: 1d, template: b}
  - {number: 3, before: 90m, template: c}
  - {number: 4, after: 0, template: d}
late_send: {max_lateness: 30m}
send_window: {start: "09:00", end: "18:00", days: [mon, fri], blackout_dates: [2026-12-25], exempt_steps: [3]}
exits: [booking_cancelled, unsubscribed]
"""
    )
    assert [(s.number, s.before, s.after) for s in j.steps] == [
        (1, dt.timedelta(hours=72), None),
        (2, dt.timedelta(days=1), None),
        (3, dt.timedelta(minutes=90), None),
        (4, None, dt.timedelta(0)),
    ]
    assert j.late_send.max_lateness == dt.timedelta(minutes=30)
    assert j.send_window.start == dt.time(9) and j.send_window.end == dt.time(18)
    assert j.send_window.days == ("mon", "fri")
    assert j.send_window.blackout_dates == {dt.date(2026, 12, 25)} and j.send_window.exempt_steps == {3}
    assert j.has_reminders and j.step(2).day_offset is None and j.step(4).day_offset == 0
    assert j.end == dt.datetime(2026, 12, 24, tzinfo=j.tz)  # naive end read in the journey's zone


def test_any_number_of_steps():
    steps = "".join(f"  - {{number: {n}, after: {n}d, template: t{n}}}\n" for n in range(1, 13))
    assert len(journey("steps:\n" + steps).steps) == 12


def test_exits_default_per_trigger_and_always_include_the_compliance_ones():
    assert set(journey("steps:\n  - {number: 1, after: 0, template: a}\n").exits) == {
        ExitReason.BOOKED_CALL, ExitReason.PAID, *ALWAYS_EXITS
    }
    pre_call = journey("trigger: booking_created\nsteps:\n  - {number: 1, before: 2h, template: a}\n")
    assert set(pre_call.exits) == {ExitReason.BOOKING_CANCELLED, *ALWAYS_EXITS}
    only_listed = journey("trigger: payment_paid\nexits: [paid]\nsteps:\n  - {number: 1, after: 1h, template: a}\n")
    assert set(only_listed.exits) == {ExitReason.PAID, *ALWAYS_EXITS}
    assert ExitReason.BOOKED_CALL.words == "booked a call" and ExitReason.STOPPED.words == "stopped by ops"


@pytest.mark.parametrize(
    "body, where, message",
    [
        ("steps:\n  - {number: 1, after: -2h, template: a}\n", "steps[1].after", "cannot be negative"),
        ("steps:\n  - {number: 1, after: 2x, template: a}\n", "steps[1].after", "not a duration"),
        ("steps:\n  - {number: 1, template: a}\n", "steps[1]", "exactly one of after"),
        ("steps:\n  - {number: 1, after: 1h, before: 1h, template: a}\n", "steps[1]", "exactly one of after"),
        ("steps:\n  - {number: 1, after: 1h, day_offset: 1, template: a}\n", "steps[1]", "not both"),
        ("steps:\n  - {number: 1, day_offset: -1, template: a}\n", "steps[1]", "cannot be negative"),
        ("steps:\n  - {number: 1, after: 1h, template: a, subject: hi}\n", "steps[1].subject", "Extra inputs"),
        ("steps:\n  - {number: 2, after: 1h, template: a}\n", "steps", "numbered 1..N"),
        ("steps: []\n", "steps", "at least one step"),
        (
            "steps:\n  - {number: 1, after: 2d, template: a}\n  - {number: 2, after: 1d, template: b}\n",
            "steps",
            "number the steps in the order they are sent",
        ),
        ("steps:\n  - {number: 1, before: 2h, template: a}\n", "steps", "no event time"),
        (
            "trigger: booking_created\nsteps:\n  - {number: 1, before: 2h, template: a}\n"
            "  - {number: 2, before: 24h, template: b}\n",
            "steps",
            "number reminders from the earliest",
        ),
        ("trigger: booking_created\nsteps:\n  - {number: 1, before: 0, template: a}\n", "steps[1]", "more than 0"),
        ("trigger: bogus\nsteps:\n  - {number: 1, after: 0, template: a}\n", "trigger", "booking_created"),
        ("exits: [nope]\nsteps:\n  - {number: 1, after: 0, template: a}\n", "exits[1]", "booked_call"),
        ("late_send: {max_lateness: soon}\nsteps:\n  - {number: 1, after: 0, template: a}\n", "late_send.max_lateness", "not a duration"),
        (
            'send_window: {start: "18:00", end: "09:00"}\nsteps:\n  - {number: 1, after: 0, template: a}\n',
            "send_window",
            "must be before end",
        ),
        (
            "send_window: {start: 09:00, end: 18:00}\nsteps:\n  - {number: 1, after: 0, template: a}\n",
            "send_window.end",
            "in quotes",  # YAML reads an unquoted 18:00 as the number 1080
        ),
        (
            'send_window: {start: "09:00", end: "18:00", exempt_steps: [2]}\nsteps:\n  - {number: 1, after: 0, template: a}\n',
            "",
            "send_window.exempt_steps names step 2",
        ),
        ("stop_at_deadline: true\nsteps:\n  - {number: 1, after: 0, template: a}\n", "stop_at_deadline", "Extra inputs"),
    ],
)
def test_bad_journeys_are_refused_naming_the_field(body, where, message):
    error = refused(body)
    assert error.startswith("test.yaml is not a valid journey: ")
    assert message in error
    if where:
        assert f"{where}: " in error


def test_a_bad_timezone_or_end_is_refused():
    one_step = "steps:\n  - {number: 1, after: 0, template: a}\n"
    with pytest.raises(JourneyFileError, match="timezone: 'EST' is not an IANA time zone"):
        parse_journey(HEAD.replace("America/Toronto", "EST") + one_step)
    early_end = HEAD.replace("2026-12-24T00:00:00", "2026-10-01T00:00:00")
    with pytest.raises(JourneyFileError, match="ends before it starts"):
        parse_journey(early_end + one_step)


def test_load_journeys_refuses_two_files_with_one_name(tmp_path):
    text = HEAD + "steps:\n  - {number: 1, after: 0, template: a}\n"
    (tmp_path / "a.yaml").write_text(text)
    assert list(load_journeys(tmp_path)) == ["test-journey"]
    (tmp_path / "b.yaml").write_text(text)
    with pytest.raises(JourneyFileError, match="both define the journey 'Test journey'"):
        load_journeys(tmp_path)
    with pytest.raises(JourneyFileError, match="does not exist"):
        load_journeys(tmp_path / "missing")


# ---------------------------------------------------------------------------------- the shipped journeys

SHIPPED = {
    "christmas-2026": (Trigger.SIGNUP, None),
    "pre-call": (Trigger.BOOKING_CREATED, [("before", "3d"), ("before", "1d"), ("before", "2h")]),
    "no-show": (Trigger.NO_SHOW, [("after", "0"), ("after", "1d"), ("after", "2d")]),
    "post-call-maybe": (Trigger.CALL_OUTCOME_MAYBE, [("after", "1h"), ("after", "3d"), ("after", "7d")]),
    "onboarding": (Trigger.PAYMENT_PAID, [("after", "1h"), ("after", "1d"), ("after", "3d")]),
}


@pytest.fixture(scope="module")
def shipped():
    return load_journeys(FILES)


def test_every_journey_of_the_origin_system_ships_with_its_timing(shipped):
    assert set(shipped) == set(SHIPPED)
    for slug, (trigger, timing) in SHIPPED.items():
        j = shipped[slug]
        assert j.trigger is trigger, slug
        assert (FILES / f"{slug}.yaml").is_file(), "the file is named after the journey"
        if timing is not None:
            got = [("before", format_duration(s.before)) if s.before else ("after", format_duration(s.after))
                   for s in j.steps]
            assert got == timing, slug


def test_new_journeys_share_the_nurtures_sender_and_booking_link(shipped):
    nurture = shipped["christmas-2026"]
    for slug in ("pre-call", "no-show", "post-call-maybe", "onboarding"):
        assert shipped[slug].sender == nurture.sender, slug
        assert shipped[slug].booking_url == nurture.booking_url, slug
        assert shipped[slug].send_window is not None, slug


def _all_steps(shipped):
    return [(slug, step) for slug, j in sorted(shipped.items()) for step in j.steps]


def test_every_referenced_template_exists_with_all_three_parts(shipped):
    for slug, step in _all_steps(shipped):
        folder = TEMPLATES / step.template
        for part in ("subject.txt", "body.html", "body.txt"):
            path = folder / part
            assert path.is_file(), f"{slug} step {step.number}: {path} is missing"
            assert path.read_text(encoding="utf-8").strip(), f"{slug} step {step.number}: {path} is empty"


def test_new_templates_pass_the_contract_and_greet_the_reader(shipped):
    """Through the real contract (every sample signup, before and after the deadline) and the real renderer."""
    templates = load_file_templates(list(shipped.values()), FILES)
    new = [(s, st) for s, st in _all_steps(shipped) if s != "christmas-2026"]
    assert len(new) == 12
    for slug, step in new:
        template = templates[step.template]
        assert check_template(template, step.template) == [], step.template
        _, variables = contract_samples(shipped[slug])[0]  # the minimal signup: email and first name only
        rendered = render(template, variables)
        assert "Ann" in rendered.html and "Ann" in rendered.text, f"{step.template} greets the reader by name"
        if slug == "no-show":
            assert "{{ booking_url }}" in (TEMPLATES / step.template / "body.txt").read_text(), "the reschedule link"
        if slug == "pre-call":
            body = (TEMPLATES / step.template / "body.txt").read_text()
            assert "{{ call_date }}" in body and "{{ call_time }}" in body, step.template
