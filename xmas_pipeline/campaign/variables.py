"""The variables every template is rendered with, each one either known or ``Unknown``.

An email must never tell a lead something about their results that they did not tell us. So nothing
the lead left out is filled in with a friendly default: it is an ``Unknown``, which is false in an
``{% if %}``, fails the ``is known`` test, gives way to ``|default(...)``, and refuses to be printed
(the render fails and names the variable). Templates branch on it; the template contract renders
every template with a minimal signup (email and first name only) and with full ones, so a template
that would print an unknown value is refused before anything is sent.

Date wording is computed at send time, never written into the copy: ``days_to_deadline``,
``deadline_passed`` and ``month_name`` come from the day the email goes out.

| variable | known when |
|---|---|
| first_name | the signup had one (title-cased only if it came all lower- or all upper-case) |
| business_name | the signup had one |
| assessment_score, gps_score, money_score, revenue_leak | the signup had it |
| red/orange/yellow/green_systems | all four were sent and they add up to the 8 systems |
| segment, readiness_zone | there is a score and the system counts back the segment (see ``_placed``) |
| weakest_system_1/2 | the lead named them |
| tip_1/2 | the matching weakest system is one of the eight systems we have a tip for |
| has_results | always: true when any of the results above is known |
| days_to_deadline | the offer deadline has not passed on the send date (0 on the day itself) |
| call_date, call_time | the sequence is about a booked call (the pre-call reminders): in the reader's time zone |
| deadline_passed, deadline_date, month_name, tip_3, booking_url, campaign_name, sender_name, step, total_steps, unsubscribe_url | always |
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import jinja2

from xmas_pipeline.campaign.journey import Journey
from xmas_pipeline.campaign.models import Segment
from xmas_pipeline.campaign.names import display_first_name
from xmas_pipeline.campaign.segments import classify, readiness_zone

SYSTEM_TIPS = {
    "GPS": "Write down the three numbers that tell you whether the season is on track, and check them every Monday.",
    "CREW": "Confirm your holiday staffing in writing, and name a backup for every key shift.",
    "ENGINE": "Pick the one service that brings in the most revenue and make it bookable online today.",
    "FUEL": "Send your past clients a holiday offer before they spend their budget elsewhere.",
    "CABIN": "Walk through a client visit as a newcomer would and fix the first thing that slows you down.",
    "COCKPIT": "Put every holiday booking, deposit and deadline in one calendar the whole team can see.",
    "RADAR": "Ask your last ten clients what almost stopped them from booking, and fix the top answer.",
    "AUTOPILOT": "Automate your booking confirmations and reminders so no-shows stop eating your busiest weeks.",
}
CAPACITY_TIP = "Decide how many bookings you can really take on your busiest days, and stop taking more at that number."
COLORS = ("red", "orange", "yellow", "green")
SYSTEMS = len(SYSTEM_TIPS)  # the assessment scores 8 systems


class Unknown(jinja2.Undefined):
    """A value the lead did not give us: falsy, not ``known``, and an error when printed."""

    __slots__ = ()

    def __init__(self, name: str):
        super().__init__(name=name)

    @property
    def _undefined_message(self) -> str:
        name = self._undefined_name
        return (
            f"{name} is unknown for this lead or send date; print it only inside "
            f"{{% if {name} is known %}}...{{% endif %}} or give a fallback with {{{{ {name}|default('...') }}}}"
        )

    def __str__(self) -> str:
        self._fail_with_undefined_error()

    # Two unknowns are not equal to each other: "weakest_system_1 == weakest_system_2" must not be true.
    def __eq__(self, other: object) -> bool:
        return other is self

    def __ne__(self, other: object) -> bool:
        return other is not self

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"Unknown({self._undefined_name!r})"


def is_known(value: Any) -> bool:
    """The ``is known`` test of the templates."""
    return value is not None and not isinstance(value, jinja2.Undefined)


def _or_unknown(name: str, value: Any) -> Any:
    return Unknown(name) if value is None else value


def _text(value: Any) -> str | None:
    text = " ".join(str(value).split()) if value is not None else ""
    return text or None


def _number(value: Any) -> float | int | None:
    if value is None or value == "":
        return None
    number = float(value)
    return int(number) if number.is_integer() else number


def tip_for(system: str | None) -> str | None:
    """The quick win for one of the eight systems; None for a system we have no tip for."""
    if not system:
        return None
    key = next((k for k in SYSTEM_TIPS if k == system.strip().upper()), None)
    key = key or next((k for k in SYSTEM_TIPS if k in system.upper()), None)
    return SYSTEM_TIPS[key] if key else None


def format_money(amount: float | None) -> str | None:
    if amount is None:
        return None
    return f"${amount:,.0f}"


def system_counts(profile: dict) -> dict[str, int] | None:
    """The four colour counts when all were sent and they add up to the 8 systems, else None."""
    counts = {color: profile.get(f"{color}_systems") for color in COLORS}
    if any(v is None for v in counts.values()):
        return None
    counts = {color: int(v) for color, v in counts.items()}
    if any(v < 0 for v in counts.values()) or sum(counts.values()) != SYSTEMS:
        return None
    return counts


def _placed(segment: str | None, profile: dict, score: Any, counts: dict[str, int] | None) -> bool:
    """Whether the segment is the lead's own result, not the classification of missing counts.

    Counts that were not sent read as 0, which classifies as OPTIMIZE ("Growth Zone", "better shape
    than most"): that is invented. A segment is the lead's when there is a score and either the counts
    are complete, or the red/orange counts that were sent force CRITICAL or URGENT by themselves.
    """
    if score is None or segment not in {s.value for s in Segment}:
        return False
    if counts is not None:
        return True
    forced = classify(profile.get("red_systems"), profile.get("orange_systems"))
    return forced != Segment.OPTIMIZE and forced.value == segment


def lead_variables(profile: dict, segment: str | None) -> dict:
    """What the lead told us (``profile`` is the stored signup), each value known or Unknown."""
    score = _number(profile.get("assessment_score"))
    counts = system_counts(profile)
    placed = _placed(segment, profile, score, counts)
    weakest_1 = _text(profile.get("weakest_system_1"))
    weakest_2 = _text(profile.get("weakest_system_2"))
    leak = _number(profile.get("revenue_leak_total"))
    values = {
        "first_name": display_first_name(profile.get("first_name")),
        "business_name": _text(profile.get("business_name")),
        "segment": segment if placed else None,
        "readiness_zone": readiness_zone(segment) if placed else None,
        "assessment_score": score,
        **{f"{color}_systems": counts[color] if counts else None for color in COLORS},
        "gps_score": _number(profile.get("gps_score")),
        "money_score": _number(profile.get("money_score")),
        "weakest_system_1": weakest_1,
        "weakest_system_2": weakest_2,
        "tip_1": tip_for(weakest_1),
        "tip_2": tip_for(weakest_2),
        "revenue_leak": format_money(leak),
    }
    results = ("assessment_score", "red_systems", "weakest_system_1", "weakest_system_2", "revenue_leak", "segment")
    values["has_results"] = any(values[name] is not None for name in results)
    return {name: _or_unknown(name, value) for name, value in values.items()}


def calendar_variables(today: dt.date, deadline: dt.date) -> dict:
    """Date wording for an email sent on ``today``: countdown to the offer deadline, month names."""
    days = (deadline - today).days
    return {
        "days_to_deadline": days if days >= 0 else Unknown("days_to_deadline"),
        "deadline_passed": days < 0,
        "deadline_date": f"{deadline:%A}, {deadline:%B} {deadline.day}",
        "month_name": f"{today:%B}",
    }


def build_variables(
    *,
    profile: dict,
    segment: str | None,
    campaign: Journey,
    step: int,
    now: dt.datetime,
    unsubscribe_url: str,
) -> dict:
    """Exactly ``rendering.PROVIDED_VARIABLES``, for one lead, one step, sent at ``now``."""
    return {
        **lead_variables(profile, segment),
        **calendar_variables(now.astimezone(campaign.tz).date(), campaign.deadline),
        "tip_3": CAPACITY_TIP,
        "booking_url": campaign.booking_url,
        "campaign_name": campaign.name,
        "sender_name": campaign.sender.name,
        "step": step,
        "total_steps": len(campaign.steps),
        "unsubscribe_url": unsubscribe_url,
        # Set by delivery from the booked call when there is one (``plan.call_variables``).
        "call_date": Unknown("call_date"),
        "call_time": Unknown("call_time"),
    }


# --- what the template contract renders every template with ----------------------------------------

MINIMAL_SIGNUP = {"email": "lead@example.com", "first_name": "Ann"}
FULL_SIGNUP = {
    "email": "lead@example.com",
    "first_name": "Ann",
    "business_name": "Harbour Salon",
    "assessment_score": 48,
    "red_systems": 2,
    "orange_systems": 3,
    "yellow_systems": 2,
    "green_systems": 1,
    "gps_score": 41.5,
    "money_score": 55,
    "weakest_system_1": "CREW",
    "weakest_system_2": "ENGINE",
    "revenue_leak_total": 12400,
}
# Full signups in each segment (so every segment branch is rendered), and one with counts that do not add up.
SAMPLE_SIGNUPS = {
    "minimal signup (email and first name only)": MINIMAL_SIGNUP,
    "full signup, CRITICAL": FULL_SIGNUP,
    "full signup, URGENT": {**FULL_SIGNUP, "red_systems": 1, "orange_systems": 2, "yellow_systems": 3, "green_systems": 2},
    "full signup, OPTIMIZE": {**FULL_SIGNUP, "red_systems": 0, "orange_systems": 1, "yellow_systems": 3, "green_systems": 4,
                              "assessment_score": 81, "weakest_system_1": "Marketing"},
    "partial signup (score and two counts)": {**MINIMAL_SIGNUP, "red_systems": 2, "orange_systems": 1, "assessment_score": 48},
    # A contact first met through a booking, a call outcome or a payment may have no name at all.
    "contact known only by email (from a booking or payment)": {"email": "lead@example.com"},
}


def contract_samples(campaign: Journey | None = None) -> list[tuple[str, dict]]:
    """Labelled variables for every sample signup, sent well before, the day before, on and after the deadline.

    Without a campaign, the campaign's own facts are sample values (the contract is about the template).
    """
    deadline = campaign.deadline if campaign else dt.date(2026, 12, 18)
    facts = {
        "tip_3": CAPACITY_TIP,
        "booking_url": campaign.booking_url if campaign else "https://book.example.com/call",
        "campaign_name": campaign.name if campaign else "Sample campaign",
        "sender_name": campaign.sender.name if campaign else "Sam at Example",
        "step": 1,
        "total_steps": len(campaign.steps) if campaign else 7,
        "unsubscribe_url": "https://intake.example.com/u/sample",
        # Reminder templates speak of the booked call; its sample is a Monday morning in Toronto.
        "call_date": "Monday, December 7",
        "call_time": "10:30 AM EST",
    }
    days = {"28 days before the deadline": -28, "the day before the deadline": -1, "on the deadline": 0, "after the deadline": 2}
    out = []
    for who, profile in SAMPLE_SIGNUPS.items():
        segment = classify(profile.get("red_systems"), profile.get("orange_systems")).value  # as enrollment does
        for when, offset in days.items():
            today = deadline + dt.timedelta(days=offset)
            variables = {**lead_variables(profile, segment), **calendar_variables(today, deadline), **facts}
            out.append((f"{who}, sent {when}", variables))
    return out
