"""Every shipped template, rendered as the pipeline would at three send dates, with a minimal signup,
a partial one (the README's) and full ones: no invented result, no calendar wording the send date
contradicts, counts only when they add up to the 8 systems, and no offer once its deadline has passed.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest

from xmas_pipeline.campaign.loader import load_campaign, load_file_templates
from xmas_pipeline.campaign.rendering import Rendered, check_template, render
from xmas_pipeline.campaign.segments import classify
from xmas_pipeline.campaign.variables import FULL_SIGNUP, MINIMAL_SIGNUP, SAMPLE_SIGNUPS, build_variables
from xmas_pipeline.settings import DEFAULT_CAMPAIGN_FILE

CAMPAIGN = load_campaign(DEFAULT_CAMPAIGN_FILE)
TEMPLATES = load_file_templates(CAMPAIGN, DEFAULT_CAMPAIGN_FILE)
SEND_DATES = [dt.date(2026, 11, 20), dt.date(2026, 12, 10), dt.date(2026, 12, 20)]
PARTIAL = {**MINIMAL_SIGNUP, "red_systems": 2, "orange_systems": 1, "assessment_score": 48}  # the README's curl

# Sentences that tell a lead something about their own results.
RESULT_CLAIMS = [
    r"Crisis Zone|Warning Zone|Growth Zone|Readiness:",
    r"your (overall )?score|score:",
    r"your (two )?weakest|weakest systems? (is|are)\b|flagged|pointed to",
    r"business systems scored|systems in the red|in the red:",
    r"better shape than most|ahead of most|results are solid|stronger position than|in decent shape",
    r"results like these|your results (landed|put|say|show)|results are in|with your results",
    r"leaking around|revenue leak:|\$\d",
    r"GPS and CREW",  # what the old templates invented for everyone
]
# Calendar wording that is false once December has begun.
DECEMBER_IN_THE_FUTURE = re.compile(r"before December|pre-December|December (is )?this close|until December(?! \d)|next month", re.I)
# Offer wording that is false once the deadline has passed.
OFFER_STILL_OPEN = re.compile(r"open until|closes on|close today|close tomorrow|available until|which is today|which is tomorrow|days from now|Book my free", re.I)


def rendered(template: str, profile: dict, day: dt.date) -> Rendered:
    stored = {"red_systems": 0, "orange_systems": 0, "yellow_systems": 0, "green_systems": 0, **profile}  # as enrollment stores it
    now = dt.datetime.combine(day, dt.time(10), CAMPAIGN.tz)
    variables = build_variables(
        profile=stored, segment=classify(stored["red_systems"], stored["orange_systems"]).value, campaign=CAMPAIGN,
        step=int(template.split("_")[1]), now=now, unsubscribe_url="https://intake.example.com/u/token",
    )
    return render(TEMPLATES[template], variables)


def all_text(r: Rendered) -> str:
    return "\n".join([r.subject, r.text, re.sub(r"<[^>]+>", " ", r.html)])


def test_every_step_has_a_template_and_a_deadline_passed_variant_that_honour_the_contract():
    assert sorted(TEMPLATES) == sorted(step.template for step in CAMPAIGN.steps)
    for name, template in TEMPLATES.items():
        assert check_template(template, name) == []
        assert template.deadline_passed is not None, f"{name} has no copy for after the offer deadline"


@pytest.mark.parametrize("day", SEND_DATES, ids=str)
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_a_minimal_signup_is_told_nothing_about_its_results(template, day):
    out = all_text(rendered(template, MINIMAL_SIGNUP, day))
    claims = [m.group(0) for pattern in RESULT_CLAIMS for m in re.finditer(pattern, out, re.I)]
    assert claims == [], f"{template} on {day} claims results a minimal signup never gave"
    assert "Hi Ann," in out


@pytest.mark.parametrize("day", SEND_DATES, ids=str)
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_counts_are_shown_only_when_they_add_up_to_the_8_systems(template, day):
    full = rendered(template, FULL_SIGNUP, day)
    for r in (full.text, re.sub(r"<[^>]+>", "", full.html)):
        if "8 business systems scored" in r:
            counts = [int(n) for n in re.findall(r"(?:Red|Orange|Yellow|Green) \([^)]*\): (\d+)", r)]
            assert counts == [2, 3, 2, 1] and sum(counts) == 8
    partial = all_text(rendered(template, PARTIAL, day))
    assert "8 business systems" not in partial and "Red (needs attention now)" not in partial
    assert not re.search(r"systems in the red|in orange", partial, re.I)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_the_full_signup_is_personalised(template):
    out = all_text(rendered(template, FULL_SIGNUP, SEND_DATES[1]))
    assert "Hi Ann," in out
    if template in ("email_1", "email_7"):
        assert "Crisis Zone" in out and "CREW" in out and "$12,400" in out


@pytest.mark.parametrize("who", sorted(SAMPLE_SIGNUPS))
@pytest.mark.parametrize("day", SEND_DATES, ids=str)
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_calendar_wording_fits_the_send_date(template, day, who):
    out = all_text(rendered(template, SAMPLE_SIGNUPS[who], day))
    if day.month == 12:
        assert not DECEMBER_IN_THE_FUTURE.search(out), f"{template} sent {day}: {DECEMBER_IN_THE_FUTURE.search(out).group(0)!r}"
    if day > CAMPAIGN.deadline:
        assert not OFFER_STILL_OPEN.search(out), f"{template} sent {day}: {OFFER_STILL_OPEN.search(out).group(0)!r}"
        assert CAMPAIGN.booking_url not in out
        assert "closed on Friday, December 18" in out
    else:
        days = (CAMPAIGN.deadline - day).days
        for n in re.findall(r"(\d+) days from now", out):
            assert int(n) == days
        assert "which is today" not in out


def test_on_the_deadline_day_the_offer_closes_today():
    r = rendered("email_7", FULL_SIGNUP, CAMPAIGN.deadline)
    assert r.subject == "Last call: free diagnostic calls close today"
    assert "closes on Friday, December 18, which is today" in r.text
    assert rendered("email_7", FULL_SIGNUP, CAMPAIGN.deadline - dt.timedelta(days=1)).subject.endswith("close tomorrow")
