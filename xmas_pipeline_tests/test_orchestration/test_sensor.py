"""The signup sensor: one run per batch, keys a restarted daemon repeats, retries that get new keys."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import sqlalchemy as sa

from xmas_pipeline.definitions import build_definitions
from xmas_pipeline.orchestration.resources import XmasResource
from xmas_pipeline.store import inbound
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.store.schema import inbound_events
from xmas_pipeline_tests.test_delivery.helpers import signup


def tick(defs, settings, cursor=None):
    sensor = defs.resolve_sensor_def("signup_sensor")
    context = dg.build_sensor_context(cursor=cursor, resources={"xmas": XmasResource.from_settings(settings)}, definitions=defs)
    return sensor.evaluate_tick(context)


def test_no_signups_skips(settings):
    result = tick(build_definitions(settings), settings)
    assert result.run_requests == [] and "no new signups" in result.skip_message


def test_a_batch_is_one_run_and_a_reevaluated_tick_asks_for_the_same_key(settings):
    ids = [signup(settings, f"s{i}@example.com") for i in range(3)]
    defs = build_definitions(settings)
    first = tick(defs, settings)
    assert [r.run_key for r in first.run_requests] == [f"signups-{ids[0]}-{ids[-1]}"]
    assert first.run_requests[0].run_config["ops"]["enroll_signups"]["config"]["event_ids"] == ids
    assert json.loads(first.cursor) == {"last_id": ids[-1]}
    # A daemon that crashed before storing the cursor evaluates again from the old one: same key,
    # which the daemon refuses to launch twice.
    again = tick(defs, settings, cursor=None)
    assert [r.run_key for r in again.run_requests] == [f"signups-{ids[0]}-{ids[-1]}"]
    # With the cursor stored, nothing new.
    assert tick(defs, settings, cursor=first.cursor).run_requests == []


def test_failed_events_come_back_after_backoff_with_a_new_key_each_time(settings):
    engine = engine_for(settings.database_url)
    event = signup(settings, "flaky@example.com")
    defs = build_definitions(settings)
    cursor = tick(defs, settings).cursor
    now = dt.datetime.now(dt.timezone.utc)
    assert inbound.mark_failed(engine, event, "Notion was down", now) == "retry"
    assert tick(defs, settings, cursor).run_requests == []  # backoff not over yet
    with engine.begin() as conn:  # let the backoff pass
        conn.execute(inbound_events.update().values(next_attempt_at=now - dt.timedelta(seconds=1)))
    keys = [r.run_key for r in tick(defs, settings, cursor).run_requests]
    assert keys == [f"signup-{event}-d2"]
    inbound.mark_failed(engine, event, "Notion was down again", now)
    with engine.begin() as conn:
        conn.execute(inbound_events.update().values(next_attempt_at=now - dt.timedelta(seconds=1)))
    assert [r.run_key for r in tick(defs, settings, cursor).run_requests] == [f"signup-{event}-d3"]


def test_an_event_whose_run_vanished_is_retried_then_dies(settings):
    engine = engine_for(settings.database_url)
    event = signup(settings, "lost@example.com")
    defs = build_definitions(settings)
    cursor = tick(defs, settings).cursor
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    for attempt in range(1, inbound.DEFAULT_MAX_ATTEMPTS + 1):
        with engine.begin() as conn:  # the run never finished the event
            conn.execute(inbound_events.update().values(dispatched_at=long_ago))
        requests = tick(defs, settings, cursor).run_requests
        if attempt < inbound.DEFAULT_MAX_ATTEMPTS:
            assert [r.run_key for r in requests] == [f"signup-{event}-d{attempt + 1}"]
    with engine.connect() as conn:
        row = conn.execute(sa.select(inbound_events).where(inbound_events.c.id == event)).one()
    assert row.status == "dead" and "did not finish" in row.last_error


def test_schedule_requests_todays_partition_in_the_campaign_timezone(make_settings):
    settings = make_settings(XMAS_NOW="2026-11-06T03:30:00+00:00")  # still Nov 5 in Toronto
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def("delivery_schedule")
    context = dg.build_schedule_context(
        resources={"xmas": XmasResource.from_settings(settings)}, repository_def=defs.get_repository_def()
    )
    result = schedule.evaluate_tick(context)
    assert [r.partition_key for r in result.run_requests] == ["2026-11-05"]
    assert schedule.cron_schedule == "*/15 * * * *" and schedule.execution_timezone == "America/Toronto"


def test_definitions_load_with_the_defaults(settings):
    defs = build_definitions(settings)
    assert {a.key.to_user_string() for a in defs.resolve_asset_graph().assets_defs for _ in [0]} >= {
        "contacts", "sequences", "templates", "emails_due", "deliveries"
    }
    partitions = defs.resolve_job_def("daily_delivery_job").partitions_def
    assert partitions.get_first_partition_key() == "2026-11-01"
    # end_offset=1: today's partition exists while the day runs
    today = dt.datetime.now(dt.timezone.utc).astimezone(dt.timezone(dt.timedelta(hours=-5))).date().isoformat()
    assert partitions.has_partition_key(today) or partitions.get_last_partition_key() >= today
