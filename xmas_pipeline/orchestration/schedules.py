"""The delivery schedule: on every tick, a run for today's campaign day whenever a step is owed."""

import datetime as dt

import dagster as dg

from xmas_pipeline.campaign.clock import wall_now
from xmas_pipeline.campaign.models import Campaign
from xmas_pipeline.campaign.timetable import campaign_day, local_time
from xmas_pipeline.orchestration.assets import LISTED_DAY
from xmas_pipeline.orchestration.resources import XmasResource
from xmas_pipeline.store import ledger, mirror


def build_delivery_schedule(job, campaign: Campaign, cron: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="delivery_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone=campaign.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def delivery_schedule(context: dg.ScheduleEvaluationContext, xmas: XmasResource):
        """Each tick: sends every step whose time has come, from any day, through today's partition."""
        settings = xmas.settings()
        now = settings.clock.now()
        today = campaign_day(campaign, now)
        if today < campaign.start_date:
            return dg.SkipReason(f"the campaign starts on {campaign.start_date}")
        engine = xmas.engine()
        # Cheap, indexed questions: a run only when there is work, plus one per day so the day's
        # partition shows what it owes from its first tick.
        why = ledger.has_work(engine, campaign.name, now, wall_now(), dt.timedelta(seconds=settings.claim_lease_s))
        listed = mirror.get_cursor(engine, LISTED_DAY)
        if why is None and listed is not None and listed >= today.isoformat():
            upcoming = ledger.next_due(engine, campaign.name)
            return dg.SkipReason(
                "nothing due" + (f"; next step due {local_time(campaign, upcoming)}" if upcoming else "; no step is scheduled")
            )
        if why is None and today > campaign.end.astimezone(campaign.tz).date():
            return dg.SkipReason(f"the campaign ended {local_time(campaign, campaign.end)} and nothing is owed")
        return dg.RunRequest(
            partition_key=today.isoformat(),
            tags={"xmas/day": today.isoformat(), "xmas/reason": why or "first tick of the day"},
        )

    return delivery_schedule
