"""The delivery schedule: today's campaign day, every 15 minutes by default."""

import datetime as dt

import dagster as dg

from xmas_pipeline.campaign.models import Campaign
from xmas_pipeline.campaign.timetable import campaign_day
from xmas_pipeline.orchestration.resources import XmasResource


def build_delivery_schedule(job, campaign: Campaign, cron: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="delivery_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone=campaign.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def delivery_schedule(context: dg.ScheduleEvaluationContext, xmas: XmasResource):
        """Mirrors the CRM and sends what has come due today (campaign timezone)."""
        today = campaign_day(campaign, xmas.settings().clock.now())
        last_day = campaign.end.astimezone(campaign.tz).date()
        if today < campaign.start_date or today > last_day + dt.timedelta(days=1):
            return dg.SkipReason(f"{today} is outside the campaign ({campaign.start_date} to {last_day})")
        return dg.RunRequest(partition_key=today.isoformat(), tags={"xmas/day": today.isoformat()})

    return delivery_schedule
