"""Lead classification from the assessment's system counts."""

from __future__ import annotations

from xmas_pipeline.campaign.models import Segment

READINESS_ZONES = {
    Segment.CRITICAL: "Crisis Zone",
    Segment.URGENT: "Warning Zone",
    Segment.OPTIMIZE: "Growth Zone",
}


def classify(red_systems: int | None, orange_systems: int | None) -> Segment:
    """red >= 2 is CRITICAL; red == 1 or orange >= 2 is URGENT; anything else OPTIMIZE."""
    red = max(red_systems or 0, 0)
    orange = max(orange_systems or 0, 0)
    if red >= 2:
        return Segment.CRITICAL
    if red == 1 or orange >= 2:
        return Segment.URGENT
    return Segment.OPTIMIZE


def readiness_zone(segment: Segment | str) -> str:
    return READINESS_ZONES[Segment(segment)]
