"""The delivery schedule: on every tick, a run for today's campaign day whenever a step is owed."""

import datetime as dt

import dagster as dg

from xmas_pipeline.campaign.clock import wall_now
from xmas_pipeline.campaign.journey import Journeys
from xmas_pipeline.campaign.timetable import campaign_day, local_time
from xmas_pipeline.due_report import LISTED_DAY
from xmas_pipeline.orchestration.jobs import DELIVERY_JOB
from xmas_pipeline.orchestration.resources import XmasResource
from xmas_pipeline.store import ledger, mirror


def build_delivery_schedule(job, journeys: Journeys, cron: str) -> dg.ScheduleDefinition:
    campaign = journeys.home  # the calendar: partitions are its days

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
        if today < journeys.start_date:
            return dg.SkipReason(f"the campaign starts on {journeys.start_date}")
        engine = xmas.engine()
        # Cheap, indexed questions: a run only when there is work, plus one per day so the day's
        # partition shows what it owes from its first tick.
        why = ledger.has_work(engine, journeys.names, now, wall_now(), dt.timedelta(seconds=settings.claim_lease_s))
        listed = mirror.get_cursor(engine, LISTED_DAY)
        if why is None and listed is not None and listed >= today.isoformat():
            upcoming = ledger.next_due(engine, journeys.names)
            return dg.SkipReason(
                "nothing due" + (f"; next step due {local_time(campaign, upcoming)}" if upcoming else "; no step is scheduled")
            )
        last_end = max(j.end for j in journeys)
        if why is None and today > last_end.astimezone(campaign.tz).date():
            return dg.SkipReason(f"every journey ended (the last {local_time(campaign, last_end)}) and nothing is owed")
        # A run for today that has not started yet will send everything due when it starts: don't pile
        # up more behind it while the queue is busy.
        waiting = context.instance.get_run_records(
            filters=dg.RunsFilter(job_name=DELIVERY_JOB, tags={"dagster/partition": today.isoformat()},
                                  statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]),
            limit=1,
        )
        if waiting:
            return dg.SkipReason(f"today's delivery run {waiting[0].dagster_run.run_id[:8]} is queued; it sends what is due when it starts")
        return dg.RunRequest(
            partition_key=today.isoformat(),
            tags={"xmas/day": today.isoformat(), "xmas/reason": why or "first tick of the day"},
        )

    return delivery_schedule
