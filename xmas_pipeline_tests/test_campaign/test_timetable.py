import datetime as dt

import pandas as pd
import pytest

from xmas_pipeline.campaign.loader import load_campaign
from xmas_pipeline.campaign.timetable import campaign_day, compute_emails_due, day_bounds, due_at
from xmas_pipeline.settings import DEFAULT_CAMPAIGN_FILE

TZ_OFFSET = dt.timezone(dt.timedelta(hours=-5))


@pytest.fixture(scope="module")
def campaign():
    return load_campaign(DEFAULT_CAMPAIGN_FILE)


def frame(rows):
    df = pd.DataFrame(rows, columns=["sequence_key", "email", "segment", "status", "anchor"])
    df["anchor_ns"] = pd.to_datetime(df["anchor"], utc=True).astype("datetime64[ns, UTC]").astype("int64")
    return df.drop(columns=["anchor"])


def test_the_shipped_campaign_is_christmas_2026(campaign):
    assert campaign.name == "Christmas 2026"
    assert campaign.timezone == "America/Toronto"
    assert [s.day_offset for s in campaign.steps] == [0, 2, 3, 4, 6, 8, 10]


def test_steps_fall_on_their_days(campaign):
    anchor = dt.datetime(2026, 11, 5, 10, tzinfo=TZ_OFFSET)
    seqs = frame([("a", "a@example.com", "URGENT", "active", anchor)])
    empty = pd.DataFrame(columns=["sequence_key", "step"])
    found = {}
    for offset in range(12):
        day = dt.date(2026, 11, 5) + dt.timedelta(days=offset)
        due = compute_emails_due(campaign, seqs, empty, day)
        for step in due["step"]:
            found[int(step)] = offset
    assert found == {1: 0, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8, 7: 10}


def test_vectorized_agrees_with_the_one_row_version(campaign):
    anchor = dt.datetime(2026, 11, 10, 23, 30, tzinfo=TZ_OFFSET)
    seqs = frame([("a", "a@example.com", "URGENT", "active", anchor)])
    due = compute_emails_due(campaign, seqs, pd.DataFrame(columns=["sequence_key", "step"]), dt.date(2026, 11, 13))
    assert list(due["step"]) == [3]
    assert due["due_at"][0].to_pydatetime() == due_at(campaign, anchor, 3)
    assert campaign_day(campaign, due_at(campaign, anchor, 3)) == dt.date(2026, 11, 13)


def test_finished_inactive_and_late_steps_are_not_due(campaign):
    anchor = dt.datetime(2026, 11, 5, 10, tzinfo=TZ_OFFSET)
    late = dt.datetime(2026, 12, 22, 10, tzinfo=TZ_OFFSET)  # step 2 would fall after the campaign end
    seqs = frame(
        [
            ("a", "a@example.com", "URGENT", "active", anchor),
            ("b", "b@example.com", "CRITICAL", "exited", anchor),
            ("c", "c@example.com", "OPTIMIZE", "active", anchor),
            ("d", "d@example.com", "OPTIMIZE", "active", late),
        ]
    )
    finished = pd.DataFrame([("c", 3)], columns=["sequence_key", "step"])
    due = compute_emails_due(campaign, seqs, finished, dt.date(2026, 11, 8))
    assert list(due["sequence_key"]) == ["a"]
    assert list(compute_emails_due(campaign, seqs, finished, dt.date(2026, 12, 22))["step"]) == [1]
    assert compute_emails_due(campaign, seqs, finished, dt.date(2026, 12, 24)).empty
    assert compute_emails_due(campaign, seqs, finished, dt.date(2026, 12, 25)).empty


def test_day_bounds_follow_the_campaign_timezone_across_dst(campaign):
    start, end = day_bounds(campaign, dt.date(2026, 11, 1))  # DST ends in Toronto that night
    assert (end - start) == dt.timedelta(hours=25)
    assert start.utcoffset() == dt.timedelta(0)


def test_a_sequence_number_collision_never_hides_a_due_step(campaign):
    anchor = dt.datetime(2026, 11, 5, 10, tzinfo=TZ_OFFSET)
    seqs = frame([("a" * 32, "a@example.com", "URGENT", "active", anchor), ("b" * 32, "b@example.com", "URGENT", "active", anchor)])
    seqs["seq_no"] = [7, 7]  # forced collision
    finished = pd.DataFrame([("a" * 32, 7, 2)], columns=["sequence_key", "seq_no", "step"])
    due = compute_emails_due(campaign, seqs, finished, dt.date(2026, 11, 7))
    assert list(due["email"]) == ["b@example.com"]
