import pytest

from xmas_pipeline.campaign.models import Segment
from xmas_pipeline.campaign.segments import classify, readiness_zone


@pytest.mark.parametrize(
    "red, orange, expected",
    [
        (0, 0, Segment.OPTIMIZE),
        (0, 1, Segment.OPTIMIZE),
        (0, 2, Segment.URGENT),
        (1, 0, Segment.URGENT),
        (1, 8, Segment.URGENT),
        (2, 0, Segment.CRITICAL),
        (8, 0, Segment.CRITICAL),  # the old website showed URGENT here; the rule says CRITICAL
        (None, None, Segment.OPTIMIZE),
        (-3, -1, Segment.OPTIMIZE),
    ],
)
def test_classify_follows_the_rule(red, orange, expected):
    assert classify(red, orange) is expected


def test_each_segment_has_a_readiness_zone():
    assert [readiness_zone(s) for s in Segment] == ["Crisis Zone", "Warning Zone", "Growth Zone"]
