"""The signup sensor and the delivery schedule, evaluated as the daemon evaluates them.

Work is found by status, not by an id cursor; a batch's run key is stored on its events and asked for
again until Dagster has a run for it; a queued or running run is waiting, not an attempt.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
from dagster._core.events import DagsterEvent, DagsterEventType
import pytest
import sqlalchemy as sa

from xmas_pipeline.definitions import build_definitions
from xmas_pipeline.orchestration import sensors
from xmas_pipeline.orchestration.resources import XmasResource
from xmas_pipeline.store import inbound
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.store.schema import inbound_events
from xmas_pipeline_tests.daemon import DaemonSim, definitions_for
from xmas_pipeline_tests.test_delivery.helpers import signup


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def tick(defs, settings, instance):
    sensor = defs.resolve_sensor_def("signup_sensor")
    context = dg.build_sensor_context(
        instance=instance, resources={"xmas": XmasResource.from_settings(settings)}, definitions=defs
    )
    return sensor.evaluate_tick(context)


def statuses(engine) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(inbound_events.c.id, inbound_events.c.status)).all())


def test_no_signups_skips(settings, instance):
    result = tick(build_definitions(settings), settings, instance)
    assert result.run_requests == [] and "no new signups" in result.skip_message


def test_a_batch_is_one_run_whose_key_is_asked_for_until_dagster_has_it(settings, instance):
    ids = [signup(settings, f"s{i}@example.com") for i in range(3)]
    defs = build_definitions(settings)
    first = tick(defs, settings, instance)
    assert [r.run_key for r in first.run_requests] == [f"signups-{ids[0]}-{ids[-1]}-d1"]
    assert first.run_requests[0].run_config["ops"]["enroll_signups"]["config"]["event_ids"] == ids
    assert first.run_requests[0].tags["dagster/priority"] == sensors.ENROLL_PRIORITY
    # The daemon died before launching it: the next tick asks for the same key, so a daemon that did
    # launch it refuses the repeat and one that did not launches it now.
    again = tick(defs, settings, instance)
    assert [r.run_key for r in again.run_requests] == [first.run_requests[0].run_key]


def test_a_queued_or_running_run_is_waiting_not_an_attempt(settings, make_settings, instance, monkeypatch):
    """A burst of 3,000 signups, runs held in the queue for 15 minutes of wall time: no retry, no attempt, no dead event."""
    engine = engine_for(settings.database_url)
    ids = [signup(settings, f"q{i}@example.com") for i in range(3000)]
    defs = definitions_for(settings)
    daemon = DaemonSim(defs, instance, lambda at: make_settings(XMAS_NOW=at.isoformat()), hold=True)
    wall = dt.datetime.now(dt.timezone.utc)
    monkeypatch.setattr(sensors, "wall_now", lambda: wall)
    at = settings.clock.now()
    for second in range(0, 15 * 60 + 1, 30):  # a sensor tick every 30 s while the queue holds
        wall = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=second)
        daemon.tick(at + dt.timedelta(seconds=second))
    enrollments = [q for q in daemon.queued if q.job_name == "enroll_signups_job"]
    assert len(enrollments) == 30  # 3,000 signups, batches of 100, launched once each
    assert set(statuses(engine).values()) == {"dispatched"}
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.max(inbound_events.c.attempts))).scalar() == 0
    daemon.run_queue(at + dt.timedelta(minutes=15))
    assert set(statuses(engine).values()) == {"done"}
    assert len(list(settings.outbox_dir.glob("*-s1.eml"))) == len(ids)


def test_runs_canceled_before_they_started_are_requeued_not_counted(settings, make_settings, instance):
    engine = engine_for(settings.database_url)
    signup(settings, "c@example.com")
    defs = definitions_for(settings)
    daemon = DaemonSim(defs, instance, lambda at: make_settings(XMAS_NOW=at.isoformat()), hold=True)
    at = settings.clock.now()
    for attempt in range(3):
        daemon.tick(at)
        daemon.cancel_queued()
        daemon.tick(at)  # sees the canceled run: back to pending, then re-dispatched under a new key
    with engine.connect() as conn:
        row = conn.execute(sa.select(inbound_events)).one()
    assert row.attempts == 0 and row.status == "dispatched" and row.dispatches == 4
    daemon.run_queue(at)
    assert set(statuses(engine).values()) == {"done"}


def test_a_failed_run_is_an_attempt_and_its_events_come_back_batched(settings, make_settings, instance, monkeypatch):
    engine = engine_for(settings.database_url)
    ids = [signup(settings, f"f{i}@example.com") for i in range(3)]
    defs = definitions_for(settings)
    daemon = DaemonSim(defs, instance, lambda at: make_settings(XMAS_NOW=at.isoformat()), hold=True)
    at = settings.clock.now()
    daemon.tick(at)
    (queued,) = [q for q in daemon.queued if q.job_name == "enroll_signups_job"]
    daemon.queued = []
    # The run process started, then died (the events a run process and run monitoring would report).
    run = instance.get_run_by_id(queued.run_id)
    instance.report_dagster_event(DagsterEvent(DagsterEventType.RUN_START.value, job_name=run.job_name), run_id=run.run_id)
    instance.report_run_failed(instance.get_run_by_id(run.run_id), message="the run process was killed")
    wall = dt.datetime.now(dt.timezone.utc)
    monkeypatch.setattr(sensors, "wall_now", lambda: wall)
    daemon.tick(at)
    assert set(statuses(engine).values()) == {"retry"}
    wall += inbound.backoff(1) + dt.timedelta(seconds=1)
    daemon.tick(at)
    retried = [q for q in daemon.queued if q.job_name == "enroll_signups_job"]
    assert [q.request.run_config["ops"]["enroll_signups"]["config"]["event_ids"] for q in retried] == [ids]
    assert retried[0].request.run_key == f"signups-{ids[0]}-{ids[-1]}-d2"
    daemon.run_queue(at)
    assert set(statuses(engine).values()) == {"done"}


def test_an_insert_committed_out_of_id_order_is_still_enrolled(settings, make_settings, instance, database_url):
    """Postgres hands out ids at insert and commits in any order; an id below a sensor's cursor appears late."""
    if not database_url.startswith("postgres"):
        pytest.skip("SQLite serializes writers: ids are commit order there")
    engine = engine_for(settings.database_url)
    defs = definitions_for(settings)
    daemon = DaemonSim(defs, instance, lambda at: make_settings(XMAS_NOW=at.isoformat()))
    now = settings.clock.now()
    slow = engine.connect()
    slow_tx = slow.begin()
    low = slow.execute(
        inbound_events.insert().returning(inbound_events.c.id),
        dict(idempotency_key="slow", kind="signup", email="slow@example.com",
             payload='{"email": "slow@example.com", "first_name": "Slow"}', received_at=now, status="pending",
             attempts=0, dispatches=0),
    ).scalar_one()
    high = signup(settings, "fast@example.com")  # commits first, with the higher id
    assert low < high
    daemon.tick(now)
    assert statuses(engine) == {high: "done"}
    slow_tx.commit()
    slow.close()
    daemon.tick(now + dt.timedelta(seconds=5))
    assert statuses(engine) == {low: "done", high: "done"}
    assert {p.name for p in settings.outbox_dir.glob("*.eml")} and len(list(settings.outbox_dir.glob("*.eml"))) == 2


def test_schedule_asks_for_todays_partition_when_a_step_is_due(make_settings, instance):
    settings = make_settings(XMAS_NOW="2026-11-06T03:30:00+00:00")  # still Nov 5 in Toronto
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def("delivery_schedule")
    context = dg.build_schedule_context(
        instance=instance, resources={"xmas": XmasResource.from_settings(settings)}, repository_def=defs.get_repository_def()
    )
    result = schedule.evaluate_tick(context)
    assert [r.partition_key for r in result.run_requests] == ["2026-11-05"]  # the day's first tick
    assert result.run_requests[0].tags["xmas/reason"] == "first tick of the day"
    assert schedule.cron_schedule == "*/15 * * * *" and schedule.execution_timezone == "America/Toronto"


def test_definitions_load_with_the_defaults(settings, instance):
    defs = build_definitions(settings)
    assert {k.to_user_string() for a in defs.resolve_asset_graph().assets_defs for k in a.keys} >= {
        "contacts", "sequences", "templates", "emails_due", "deliveries"
    }
    partitions = defs.resolve_job_def("daily_delivery_job").partitions_def
    assert partitions.get_first_partition_key() == "2026-11-01"
    # With the local CRM nothing waits in the notion pool: email 1 never queues behind deliveries.
    enroll = defs.resolve_job_def("enroll_signups_job")
    assert all(node.definition.pool is None for node in enroll.nodes)
    notion = build_definitions(settings.model_copy(update={"crm": "notion"}))
    assert [n.definition.pool for n in notion.resolve_job_def("enroll_signups_job").nodes] == ["notion"]
