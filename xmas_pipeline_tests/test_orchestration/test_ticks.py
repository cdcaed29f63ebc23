"""Every step on time, exactly once, as the daemon really runs it.

The real definitions are driven tick by tick (every 15 minutes of campaign time, sensors and schedules
alike) over twelve campaign days, starting on the night Toronto leaves daylight saving time. Leads sign
up through the real intake at awkward times: just after midnight, and in the last quarter hour of the
day, after the day's last tick. Nothing is materialized by hand.
"""

from __future__ import annotations

import datetime as dt
import os
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from xmas_pipeline.cli import main as xmas
from xmas_pipeline.definitions import build_definitions
from xmas_pipeline.orchestration.resources import XmasResource
from xmas_pipeline.store import ledger
from xmas_pipeline.store.db import engine_for, reset_for_tests
from xmas_pipeline.web.app import create_app
from xmas_pipeline_tests.daemon import DaemonSim, definitions_for

TZ = ZoneInfo("America/Toronto")
TICK = dt.timedelta(minutes=15)
START = dt.datetime(2026, 11, 1, 0, 0, tzinfo=TZ)  # DST ends at 02:00 that night
DAYS = 12
SIGNUP_TIMES = ["00:05", "09:00", "13:37", "23:44", "23:50", "23:59"]


def signups() -> list[tuple[dt.datetime, str]]:
    out = []
    for i, hhmm in enumerate(SIGNUP_TIMES):
        hour, minute = map(int, hhmm.split(":"))
        out.append((START.replace(hour=hour, minute=minute), f"lead{i}-{hhmm.replace(':', '')}@example.com"))
    return out


def post_signup(make_settings, at: dt.datetime, email: str) -> None:
    with TestClient(create_app(make_settings(XMAS_NOW=at.isoformat()))) as client:
        answer = client.post("/webhook/christmas-signup", json={"email": email, "first_name": "Lee", "red_systems": 1})
        assert answer.status_code == 202, answer.text


def outbox(folder) -> dict[str, int]:
    return {e.name: e.inode() for e in os.scandir(folder) if e.name.endswith(".eml")} if folder.exists() else {}


def simulate(daemon: DaemonSim, make_settings, settings, *, until: dt.datetime, down: tuple[dt.datetime, dt.datetime] | None = None):
    """Tick every 15 minutes from START to ``until``; signups arrive at their exact times, between ticks."""
    arrivals = signups()
    seen: dict[str, int] = {}
    at = START.astimezone(dt.timezone.utc)
    while at <= until:
        while arrivals and arrivals[0][0] <= at:
            when, email = arrivals.pop(0)
            post_signup(make_settings, when, email)
        if down is None or not (down[0] <= at < down[1]):
            daemon.tick(at)
        now = outbox(settings.outbox_dir)
        assert {k: now[k] for k in seen} == seen, f"a message already sent was written again at {at}"
        seen = now
        at += TICK
    return seen


@pytest.fixture
def database_url(tmp_path) -> str:
    """SQLite only: what is under test here is timing through the real schedule and sensor; the queue and
    claims under Postgres concurrency have their own tests."""
    url = f"sqlite:///{tmp_path / 'xmas.db'}"
    reset_for_tests(url)
    return url


@pytest.fixture
def sim(settings, make_settings):
    defs = definitions_for(settings)
    with dg.instance_for_test() as instance:  # persistent, as schedules need (an ephemeral one has no ref)
        yield DaemonSim(defs, instance, lambda at: make_settings(XMAS_NOW=at.isoformat()))


@pytest.mark.slow
def test_every_step_goes_within_one_tick_of_its_time_exactly_once(sim, settings, make_settings):
    files = simulate(sim, make_settings, settings, until=(START + dt.timedelta(days=DAYS)).astimezone(dt.timezone.utc))
    assert sim.ticks == DAYS * 24 * 4 + 1 + 4  # 12 days of quarter hours, plus the extra hour of Nov 1

    engine = engine_for(settings.database_url)
    for signed_up, email in signups():
        rows = ledger.rows_for(engine, email=email)
        assert [(r.step, r.status) for r in rows] == [(n, "sent") for n in range(1, 8)], email
        for row in rows:
            late = row.sent_at - row.due_at
            assert dt.timedelta(0) <= late < TICK, f"{email} step {row.step} due {row.due_at} sent {row.sent_at}"
        assert rows[0].due_at == signed_up.astimezone(dt.timezone.utc)
    assert len(files) == 6 * 7

    # Email 1 of the 23:50 and 23:59 leads fell due after the day's last tick (23:45) and went out at the
    # next day's 00:00 tick. Their follow-ups wait for the send window: 08:00 in Toronto.
    crossed = {(r.email, r.step) for r in ledger.rows_for(engine) if r.due_at.astimezone(TZ).date() != r.sent_at.astimezone(TZ).date()}
    assert crossed == {(email, 1) for _, email in signups()[4:]}
    follow_ups = [r for r in ledger.rows_for(engine) if r.step > 1]
    assert all(8 <= r.sent_at.astimezone(TZ).hour < 20 for r in follow_ups)

    # The overdue check ran on every delivery run and never failed; nothing is owed at the end.
    evaluations = sim.check_results("no_overdue_steps")
    assert evaluations and all(e.passed for e in evaluations)
    assert all(r.success for r in sim.results)
    assert ledger.overdue(engine, "Christmas 2026", dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc))[0] == 0

    # One enrollment run per tick that found signups (23:50 and 23:59 share the 00:00 tick's batch);
    # the run keys a re-evaluated tick repeats are refused, as the daemon refuses them.
    enroll_runs = sim.instance.get_run_records(dg.RunsFilter(job_name="enroll_signups_job"))
    ticks_with_signups = {(when - dt.timedelta(microseconds=1)).replace(second=0, microsecond=0, minute=(when.minute // 15) * 15)
                          for when, _ in signups()}
    assert len(enroll_runs) == len(ticks_with_signups) == 5

    # What went out on a day is in that day's deliveries partition, email 1 included.
    day = dt.date(2026, 11, 3)
    start, end = (dt.datetime.combine(d, dt.time.min, tzinfo=TZ) for d in (day, day + dt.timedelta(days=1)))
    expected = [r for r in ledger.rows_for(engine) if start <= r.sent_at < end]
    event = sim.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("deliveries"), asset_partitions=[day.isoformat()]), limit=1
    ).records[0].asset_materialization
    assert event.metadata["sent_this_day"].value == len(expected) > 0


@pytest.mark.slow
def test_thirty_hours_down_sends_what_is_within_max_lateness_and_a_backfill_sends_the_rest(
    sim, settings, make_settings, monkeypatch, env, capsys
):
    down = (dt.datetime(2026, 11, 5, 8, 0, tzinfo=TZ), dt.datetime(2026, 11, 6, 14, 0, tzinfo=TZ))
    until = (START + dt.timedelta(days=DAYS)).astimezone(dt.timezone.utc)
    simulate(sim, make_settings, settings, until=until, down=down)

    engine = engine_for(settings.database_url)
    rows = ledger.rows_for(engine)
    late = [r for r in rows if r.status == "late"]
    # The send window put each due time at or after 08:00; the outage began at 08:00 on Nov 5 and ended
    # at 14:00 on Nov 6. Steps due in its first six hours were over 24 h late when the daemon came back:
    # recorded late, with how late. Steps due in its last 24 h went at the first tick back.
    start, back = (t.astimezone(dt.timezone.utc) for t in down)
    over = {(r.email, r.step) for r in rows if start <= r.due_at < back - dt.timedelta(hours=24)}
    within = [r for r in rows if back - dt.timedelta(hours=24) <= r.due_at < back]
    assert {(r.email, r.step) for r in late} == over and len(over) == 6
    assert all(r.late_by_s > 24 * 3600 and "send_late: true" in r.reason for r in late)
    assert within and all(r.status == "sent" and r.sent_at == back for r in within)
    assert sum(r.status == "sent" for r in rows) == 6 * 7 - len(over)

    # The operator sees it and what to do.
    for key, value in {**env, "XMAS_NOW": until.isoformat()}.items():
        monkeypatch.setenv(key, value)
    assert xmas(["contact", "lead1-0900@example.com"]) == 0
    assert "backfill 2026-11-05 with send_late: true" in capsys.readouterr().out

    # A backfill of that day without send_late sends nothing; with it, the two late steps go, once.
    job = sim.defs.resolve_job_def("daily_delivery_job")
    resource = {"xmas": XmasResource.from_settings(make_settings(XMAS_NOW=until.isoformat()))}
    send_late = {"ops": {"deliveries": {"config": {"send_late": True}}}}
    for config, expected in [({}, 0), (send_late, len(over)), (send_late, 0)]:  # every late step fell on Nov 5
        result = job.execute_in_process(run_config=config, partition_key="2026-11-05", instance=sim.instance, resources=resource)
        assert result.asset_materializations_for_node("deliveries")[0].metadata["sent_by_this_run"].value == expected
    rows = ledger.rows_for(engine)
    assert all(r.status == "sent" for r in rows) and len(outbox(settings.outbox_dir)) == 6 * 7
