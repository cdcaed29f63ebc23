"""Campaign days as Dagster partitions, in the campaign's timezone."""

from __future__ import annotations

import dagster as dg

from xmas_pipeline.campaign.models import Campaign


def daily_partitions(campaign: Campaign) -> dg.DailyPartitionsDefinition:
    # end_offset=1: today's partition exists while the day runs, so the schedule can send today's mail.
    return dg.DailyPartitionsDefinition(
        start_date=campaign.start_date.isoformat(), timezone=campaign.timezone, end_offset=1
    )
