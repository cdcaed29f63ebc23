"""Each template variable is known only when the lead told us; nothing is filled in by invention."""

import datetime as dt

import pytest

from xmas_pipeline.campaign.loader import load_campaign
from xmas_pipeline.campaign.rendering import PROVIDED_VARIABLES
from xmas_pipeline.campaign.segments import classify
from xmas_pipeline.campaign.variables import (
    FULL_SIGNUP,
    MINIMAL_SIGNUP,
    build_variables,
    calendar_variables,
    contract_samples,
    is_known,
    lead_variables,
)
from xmas_pipeline.settings import DEFAULT_CAMPAIGN_FILE

README_SIGNUP = {"email": "sarah@example.com", "first_name": "Sarah", "red_systems": 2, "orange_systems": 1, "assessment_score": 48}


def lead(profile: dict) -> dict:
    # As enrollment stores it: counts that were not sent are 0, and the segment is classified from them.
    stored = {"red_systems": 0, "orange_systems": 0, "yellow_systems": 0, "green_systems": 0, **profile}
    return lead_variables(stored, classify(stored["red_systems"], stored["orange_systems"]).value)


def known(variables: dict) -> set[str]:
    return {name for name, value in variables.items() if is_known(value)}


def test_a_minimal_signup_knows_only_the_name():
    v = lead(MINIMAL_SIGNUP)
    assert known(v) == {"first_name", "has_results"}
    assert v["first_name"] == "Ann" and v["has_results"] is False


def test_counts_that_do_not_add_up_to_8_are_unknown_but_a_red_heavy_segment_is_the_leads():
    v = lead(README_SIGNUP)
    assert not any(is_known(v[f"{c}_systems"]) for c in ("red", "orange", "yellow", "green"))
    assert v["segment"] == "CRITICAL" and v["readiness_zone"] == "Crisis Zone"  # red 2 was sent: that is CRITICAL
    assert v["assessment_score"] == 48 and v["has_results"] is True
    assert not is_known(v["weakest_system_1"]) and not is_known(v["tip_1"])


def test_full_counts_are_known_and_add_up():
    v = lead(FULL_SIGNUP)
    assert [v[f"{c}_systems"] for c in ("red", "orange", "yellow", "green")] == [2, 3, 2, 1]
    assert v["weakest_system_1"] == "CREW" and v["tip_1"].startswith("Confirm your holiday staffing")
    assert v["revenue_leak"] == "$12,400"


@pytest.mark.parametrize(
    ("profile", "why"),
    [
        ({"assessment_score": 81}, "a score alone: OPTIMIZE would come from counts nobody sent"),
        ({"red_systems": 0, "orange_systems": 1, "yellow_systems": 3, "green_systems": 4}, "complete counts but no score"),
        ({"orange_systems": 1, "assessment_score": 70}, "counts that do not add up and do not force a segment"),
    ],
)
def test_no_zone_without_a_score_and_counts_that_back_it(profile, why):
    v = lead({**MINIMAL_SIGNUP, **profile})
    assert not is_known(v["segment"]) and not is_known(v["readiness_zone"]), why


def test_a_growth_zone_needs_complete_counts_and_a_score():
    v = lead({**MINIMAL_SIGNUP, "red_systems": 0, "orange_systems": 1, "yellow_systems": 3, "green_systems": 4, "assessment_score": 81})
    assert v["segment"] == "OPTIMIZE" and v["readiness_zone"] == "Growth Zone"


def test_a_system_without_a_tip_gets_no_borrowed_tip():
    v = lead({**MINIMAL_SIGNUP, "weakest_system_1": "Marketing", "weakest_system_2": "radar"})
    assert v["weakest_system_1"] == "Marketing" and not is_known(v["tip_1"])  # not the GPS tip any more
    assert v["tip_2"].startswith("Ask your last ten clients")


def test_names_are_recased_in_the_variables():
    assert lead({**MINIMAL_SIGNUP, "first_name": "ann"})["first_name"] == "Ann"
    assert lead({**MINIMAL_SIGNUP, "first_name": "McDonald"})["first_name"] == "McDonald"


@pytest.mark.parametrize(
    ("today", "days", "passed", "month"),
    [
        (dt.date(2026, 11, 20), 28, False, "November"),
        (dt.date(2026, 12, 10), 8, False, "December"),
        (dt.date(2026, 12, 18), 0, False, "December"),
        (dt.date(2026, 12, 20), None, True, "December"),
    ],
)
def test_calendar_words_come_from_the_send_date(today, days, passed, month):
    v = calendar_variables(today, dt.date(2026, 12, 18))
    assert v["deadline_passed"] is passed and v["month_name"] == month
    assert v["deadline_date"] == "Friday, December 18"
    if days is None:
        assert not is_known(v["days_to_deadline"])  # no "0 days from now" once it has passed
    else:
        assert v["days_to_deadline"] == days


def test_build_variables_is_the_contract_and_uses_the_campaign_timezone():
    campaign = load_campaign(DEFAULT_CAMPAIGN_FILE)
    # 03:00 UTC on Dec 19 is still Dec 18 in Toronto: the deadline day, not past it.
    v = build_variables(profile=MINIMAL_SIGNUP, segment="OPTIMIZE", campaign=campaign, step=2,
                        now=dt.datetime(2026, 12, 19, 3, tzinfo=dt.timezone.utc), unsubscribe_url="https://i.example.com/u/x")
    assert set(v) == PROVIDED_VARIABLES
    assert v["days_to_deadline"] == 0 and v["deadline_passed"] is False


def test_contract_samples_cover_every_variable_and_both_sides_of_the_deadline():
    samples = contract_samples()
    assert all(set(v) == PROVIDED_VARIABLES for _, v in samples)
    labels = [label for label, _ in samples]
    assert any(label.startswith("minimal signup") for label in labels)
    assert {v["deadline_passed"] for _, v in samples} == {True, False}
