"""Campaign days as Dagster partitions, in the campaign's timezone."""

from __future__ import annotations

import dagster as dg

from xmas_pipeline.campaign.journey import Journeys


def daily_partitions(journeys: Journeys) -> dg.DailyPartitionsDefinition:
    # end_offset=1: today's partition exists while the day runs, so the schedule can send today's mail.
    # One calendar for every journey: the home journey's time zone, from the earliest start.
    return dg.DailyPartitionsDefinition(
        start_date=journeys.start_date.isoformat(), timezone=journeys.home.timezone, end_offset=1
    )
