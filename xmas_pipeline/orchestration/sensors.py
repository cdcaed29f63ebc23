"""The signup sensor: turns queued signup events into enrollment runs."""

import datetime as dt
import json

import dagster as dg

from xmas_pipeline.campaign.clock import wall_now
from xmas_pipeline.orchestration.jobs import ENROLL_JOB, enroll_signups_job
from xmas_pipeline.orchestration.resources import XmasResource
from xmas_pipeline.store import inbound

BATCH = 100
STALE_AFTER_MINUTES = 10


def _request(ids: list[int], run_key: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key,
        job_name=ENROLL_JOB,
        run_config=dg.RunConfig(ops={"enroll_signups": {"config": {"event_ids": ids}}}),
        tags={"xmas/events": ",".join(map(str, ids[:20])) + ("…" if len(ids) > 20 else "")},
    )


def build_signup_sensor(interval_seconds: int) -> dg.SensorDefinition:
    @dg.sensor(
        name="signup_sensor",
        job=enroll_signups_job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def signup_sensor(context: dg.SensorEvaluationContext, xmas: XmasResource) -> dg.SensorResult:
        """Requests one enrollment run per batch of new signups, and a run per event due a retry."""
        engine = xmas.engine()
        cursor = json.loads(context.cursor) if context.cursor else {"last_id": 0}
        requests = []

        # New events: the key names the id range, so a daemon that re-evaluates the same cursor
        # after a crash asks for the same key and Dagster launches it once.
        ids = inbound.new_event_ids(engine, cursor["last_id"], BATCH)
        if ids:
            inbound.mark_dispatched(engine, ids, wall_now())
            requests.append(_request(ids, f"signups-{ids[0]}-{ids[-1]}"))
            cursor["last_id"] = ids[-1]

        # Retries: run keys are remembered forever (failed runs too), so each retry gets a new key
        # from the event's dispatch counter instead of re-requesting an old one.
        retry = inbound.events_to_retry(engine, wall_now(), dt.timedelta(minutes=STALE_AFTER_MINUTES), BATCH)
        if retry:
            retry = inbound.note_stale(engine, retry)
            numbers = inbound.mark_dispatched(engine, retry, wall_now()) if retry else {}
            for event_id in retry:
                requests.append(_request([event_id], f"signup-{event_id}-d{numbers[event_id]}"))

        if not requests:
            dead = inbound.depth(engine).get("dead", 0)
            why = "no new signups" + (f"; {dead} dead signup(s): see `xmas events --dead`" if dead else "")
            return dg.SensorResult(skip_reason=dg.SkipReason(why), cursor=json.dumps(cursor))
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor))

    return signup_sensor
