import datetime as dt

import pytest

from xmas_pipeline.campaign.loader import load_campaign, parse_campaign
from xmas_pipeline.campaign.timetable import campaign_day, day_bounds
from xmas_pipeline.planning import plan
from xmas_pipeline.settings import DEFAULT_CAMPAIGN_FILE

TZ_OFFSET = dt.timezone(dt.timedelta(hours=-5))


@pytest.fixture(scope="module")
def campaign():
    return load_campaign(DEFAULT_CAMPAIGN_FILE)


def test_the_shipped_campaign_is_christmas_2026(campaign):
    assert campaign.name == "Christmas 2026"
    assert campaign.timezone == "America/Toronto"
    assert [s.day_offset for s in campaign.steps] == [0, 2, 3, 4, 6, 8, 10]
    assert campaign.late_send.max_lateness == dt.timedelta(hours=24)


def test_steps_fall_on_their_days(campaign):
    anchor = dt.datetime(2026, 11, 5, 10, tzinfo=TZ_OFFSET)
    plan_ = plan(campaign, trigger_at=anchor, event_at=None, recipient_tz=None, day_seconds=86400)
    days = {p.step: (campaign_day(campaign, p.due_at) - dt.date(2026, 11, 5)).days for p in plan_}
    assert days == {1: 0, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8, 7: 10}
    assert all(p.state == "scheduled" and p.due_at.tzinfo == dt.timezone.utc for p in plan_)
    assert [p.template for p in plan_] == [f"email_{n}" for n in range(1, 8)]


def test_a_late_evening_signup_gets_email_1_at_once_and_follow_ups_next_morning(campaign):
    anchor = dt.datetime(2026, 11, 10, 23, 50, tzinfo=TZ_OFFSET)
    plan_ = plan(campaign, trigger_at=anchor, event_at=None, recipient_tz=None, day_seconds=86400)
    assert plan_[0].due_at == anchor  # exempt from the send window
    assert plan_[2].due_at == dt.datetime(2026, 11, 14, 8, 0, tzinfo=TZ_OFFSET)  # 23:50 + 3 days, then 08:00


def test_steps_after_the_campaign_end_are_planned_as_expired(campaign):
    anchor = dt.datetime(2026, 12, 18, 10, tzinfo=TZ_OFFSET)  # steps 5..7 would fall after Dec 24
    plan_ = plan(campaign, trigger_at=anchor, event_at=None, recipient_tz=None, day_seconds=86400)
    assert [p.state for p in plan_] == ["scheduled"] * 4 + ["expired"] * 3
    assert "at or after the end of Christmas 2026" in plan_[4].reason


def test_a_demo_day_lasts_a_minute(campaign):
    anchor = dt.datetime(2026, 11, 5, 10, tzinfo=TZ_OFFSET)
    plan_ = plan(campaign, trigger_at=anchor, event_at=None, recipient_tz=None, day_seconds=60)
    assert plan_[-1].due_at - anchor == dt.timedelta(minutes=10)


def test_day_bounds_follow_the_campaign_timezone_across_dst(campaign):
    start, end = day_bounds(campaign, dt.date(2026, 11, 1))  # DST ends in Toronto that night
    assert (end - start) == dt.timedelta(hours=25)
    assert start.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("value, expected", [("24h", 24 * 3600), ("90m", 5400), ("2d", 172800), ("1d12h", 129600), ("0", 0)])
def test_late_send_durations(value, expected):
    text = DEFAULT_CAMPAIGN_FILE.read_text().replace("max_lateness: 24h", f"max_lateness: {value}")
    assert parse_campaign(text).late_send.max_lateness.total_seconds() == expected


@pytest.mark.parametrize("value", ["-1h", "soon", "1e400h", "nan", "true"])
def test_a_bad_late_send_duration_names_the_field(value):
    from xmas_pipeline.campaign.loader import CampaignFileError

    text = DEFAULT_CAMPAIGN_FILE.read_text().replace("max_lateness: 24h", f"max_lateness: {value}")
    with pytest.raises(CampaignFileError, match="late_send.max_lateness"):
        parse_campaign(text)
