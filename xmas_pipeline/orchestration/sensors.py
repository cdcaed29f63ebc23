"""The signup sensor: turns queued signup events into enrollment runs, and follows those runs."""

import dagster as dg

from xmas_pipeline.campaign.clock import wall_now
from xmas_pipeline.orchestration.jobs import ENROLL_JOB
from xmas_pipeline.orchestration.resources import XmasResource
from xmas_pipeline.store import inbound

BATCH = 100
MAX_NEW_BATCHES_PER_TICK = 20  # bounds a tick's work (and its time) during a burst
ENROLL_PRIORITY = "10"  # the run queue takes enrollment runs before delivery and backfill runs

WAITING = {
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING,
}


def _request(batch: inbound.Dispatch) -> dg.RunRequest:
    ids = batch.ids
    return dg.RunRequest(
        run_key=batch.run_key,
        job_name=ENROLL_JOB,
        run_config=dg.RunConfig(ops={"enroll_signups": {"config": {"event_ids": ids}}}),
        tags={
            "xmas/events": ",".join(map(str, ids[:20])) + ("…" if len(ids) > 20 else ""),
            "dagster/priority": ENROLL_PRIORITY,
        },
    )


def _runs_by_key(instance: dg.DagsterInstance, keys: list[str]) -> dict[str, dg.RunRecord]:
    if not keys:
        return {}
    records = instance.get_run_records(filters=dg.RunsFilter(job_name=ENROLL_JOB, tags={"dagster/run_key": keys}))
    return {r.dagster_run.tags.get("dagster/run_key"): r for r in records}


def follow_dispatched(instance: dg.DagsterInstance, xmas: XmasResource) -> tuple[list[dg.RunRequest], list[str]]:
    """Re-request batches Dagster has no run for; settle batches whose run ended without finishing them."""
    engine = xmas.engine()
    batches = inbound.dispatched(engine)
    runs = _runs_by_key(instance, [b.run_key for b in batches])
    requests, notes = [], []
    for batch in batches:
        record = runs.get(batch.run_key)
        run = record.dagster_run if record else None
        if run is None:
            # Requested before, but no run exists (the daemon stopped before launching it): ask again
            # with the same key; the daemon launches a key only once.
            requests.append(_request(batch))
        elif run.status in WAITING:
            continue  # queued or running: not an attempt, however long it waits
        elif run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED) and record.start_time is None:
            inbound.requeue(engine, batch, f"run {run.run_id} was {run.status.value.lower()} before it started")
            notes.append(f"{len(batch.ids)} signup(s) requeued: run {run.run_id[:8]} never started")
        else:
            why = f"run {run.run_id} ended {run.status.value} without finishing this signup"
            inbound.note_run_failed(engine, batch, why, wall_now())
            notes.append(f"{len(batch.ids)} signup(s) retried later: {why}")
    return requests, notes


def build_signup_sensor(interval_seconds: int, enroll_job: dg.JobDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name="signup_sensor",
        job=enroll_job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def signup_sensor(context: dg.SensorEvaluationContext, xmas: XmasResource) -> dg.SensorResult:
        """Requests one enrollment run per batch of waiting signups (new or due a retry) and follows those runs."""
        engine = xmas.engine()
        requests, notes = follow_dispatched(context.instance, xmas)
        for _ in range(MAX_NEW_BATCHES_PER_TICK):
            batch = inbound.dispatch_waiting(engine, wall_now(), BATCH)
            if batch is None:
                break
            requests.append(_request(batch))
        for note in notes:
            context.log.info(note)
        if not requests:
            depth = inbound.depth(engine)
            why = "no new signups"
            if depth.get("dispatched"):
                why += f"; {depth['dispatched']} signup(s) in queued or running enrollment runs"
            if depth.get("retry"):
                why += f"; {depth['retry']} waiting for a retry"
            if depth.get("dead"):
                why += f"; {depth['dead']} dead signup(s): see `xmas events --dead`"
            return dg.SensorResult(skip_reason=dg.SkipReason(why))
        return dg.SensorResult(run_requests=requests)

    return signup_sensor
