"""The variables every template is rendered with, computed from a sequence and the campaign file."""

from __future__ import annotations

import datetime as dt

from xmas_pipeline.campaign.models import Campaign
from xmas_pipeline.campaign.segments import readiness_zone

SYSTEM_TIPS = {
    "GPS": "Write down the three numbers that tell you whether December is on track, and check them every Monday.",
    "CREW": "Confirm your December staffing now, and name a backup for every key shift.",
    "ENGINE": "Pick the one service that brings in the most revenue and make it bookable online today.",
    "FUEL": "Send your past clients a holiday offer before they spend their budget elsewhere.",
    "CABIN": "Walk through a client visit as a newcomer would and fix the first thing that slows you down.",
    "COCKPIT": "Put every December booking, deposit and deadline in one calendar the whole team can see.",
    "RADAR": "Ask your last ten clients what almost stopped them from booking, and fix the top answer.",
    "AUTOPILOT": "Automate your booking confirmations and reminders so no-shows stop eating your December.",
}
CAPACITY_TIP = "Block your capacity for the two busiest December weeks now, before the calendar fills itself."


def _system(name: str | None, default: str) -> str:
    return (name or "").strip() or default


def tip_for(system: str) -> str:
    key = next((k for k in SYSTEM_TIPS if k in system.upper()), None)
    return SYSTEM_TIPS[key] if key else SYSTEM_TIPS["GPS"]


def format_money(amount: float | None) -> str | None:
    if amount is None:
        return None
    return f"${amount:,.0f}"


def build_variables(
    *,
    profile: dict,
    segment: str,
    campaign: Campaign,
    step: int,
    now: dt.datetime,
    unsubscribe_url: str,
) -> dict:
    """Exactly ``rendering.PROVIDED_VARIABLES``; missing personal data falls back to friendly defaults."""
    weakest_1 = _system(profile.get("weakest_system_1"), "GPS")
    weakest_2 = _system(profile.get("weakest_system_2"), "CREW")
    today = now.astimezone(campaign.tz).date()
    score = profile.get("assessment_score")
    return {
        "first_name": (profile.get("first_name") or "").strip() or "there",
        "business_name": (profile.get("business_name") or "").strip() or "your business",
        "segment": segment,
        "readiness_zone": readiness_zone(segment),
        "assessment_score": int(score) if score is not None else None,
        "red_systems": int(profile.get("red_systems") or 0),
        "orange_systems": int(profile.get("orange_systems") or 0),
        "yellow_systems": int(profile.get("yellow_systems") or 0),
        "green_systems": int(profile.get("green_systems") or 0),
        "gps_score": profile.get("gps_score"),
        "money_score": profile.get("money_score"),
        "weakest_system_1": weakest_1,
        "weakest_system_2": weakest_2,
        "tip_1": tip_for(weakest_1),
        "tip_2": tip_for(weakest_2),
        "tip_3": CAPACITY_TIP,
        "revenue_leak": format_money(profile.get("revenue_leak_total")),
        "days_to_deadline": max((campaign.deadline - today).days, 0),
        "deadline_date": f"{campaign.deadline:%A}, {campaign.deadline:%B} {campaign.deadline.day}",
        "booking_url": campaign.booking_url,
        "campaign_name": campaign.name,
        "sender_name": campaign.sender.name,
        "step": step,
        "total_steps": len(campaign.steps),
        "unsubscribe_url": unsubscribe_url,
    }
