"""The whole campaign on the embedded default: real uvicorn intake, Dagster definitions in-process.

50 posted signups (5 repeats, 3 invalid) become 42 sequences with email 1 in the outbox; advancing the
clock day by day and materializing each day's partitions sends steps 2..7 exactly once; materializing
any partition again sends nothing new.
"""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from xmas_pipeline.campaign.segments import classify
from xmas_pipeline.definitions import build_definitions
from xmas_pipeline.orchestration.resources import XmasResource
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.store.schema import deliveries, sequences
from xmas_pipeline.web.app import create_app
from xmas_pipeline_tests.conftest import UvicornThread
from xmas_pipeline_tests.fakes.notion_setup import data_source

START = dt.date(2026, 11, 5)  # the conftest's pinned clock: 10:00 Toronto time that day


def leads() -> list[dict]:
    return [
        {
            "email": f"lead{i}@example.com",
            "first_name": f"Lead {i}",
            "business_name": f"Shop {i}",
            "assessment_score": (i * 7) % 101,
            "red_systems": i % 4,
            "orange_systems": (i // 4) % 4,
            "weakest_system_1": "FUEL",
            "revenue_leak_total": 1000 + i,
            "utm_source": "newsletter",  # a field the site added later: kept, never a reason to refuse
        }
        for i in range(42)
    ]


def outbox_snapshot(folder) -> dict[str, int]:
    """File name -> inode: a resend would replace the file (new inode) even though the name is the same."""
    return {entry.name: entry.inode() for entry in os.scandir(folder) if entry.name.endswith(".eml")}


@pytest.fixture(params=["local", "notion", "notion-with-faults"])
def crm_env(request):
    """The CRM the campaign runs on: local tables, or Notion through the emulator (optionally failing 30 %)."""
    if request.param == "local":
        yield {}
        return
    from xmas_pipeline_tests.fakes.notion import NotionEmulator
    from xmas_pipeline_tests.fakes.notion_setup import xmas_databases

    with NotionEmulator(retry_after=0, seed=11) as emulator:
        env = xmas_databases(emulator)
        if request.param == "notion-with-faults":
            emulator.fail_ratio = 0.25  # failed before any effect: 429 and 5xx
            emulator.fail_statuses = [429, 500, 502, 503, 504]
            emulator.fail_after_write_ratio = 0.05  # applied, then answered 5xx: the ambiguous case
        yield env
        emulator.fail_ratio = emulator.fail_after_write_ratio = 0.0
        assert_no_duplicate_pages(emulator, env)


def assert_no_duplicate_pages(emulator, env) -> None:
    for database, key in [("XMAS_NOTION_CONTACTS_DB", "email"), ("XMAS_NOTION_SEQUENCES_DB", "Email")]:
        source = data_source(emulator, env[database])
        emails = [page["properties"][key]["email"] for page in emulator.pages(source)]
        assert len(emails) == len(set(emails)) == 42, database


def run_day(defs, instance, make_settings, day: dt.date) -> dg.ExecuteInProcessResult:
    settings = make_settings(XMAS_NOW=f"{day.isoformat()}T23:00:00-05:00")
    job = defs.resolve_job_def("daily_delivery_job")
    return job.execute_in_process(
        partition_key=day.isoformat(), instance=instance, resources={"xmas": XmasResource.from_settings(settings)}
    )


def sent_count(result: dg.ExecuteInProcessResult) -> int:
    return result.asset_materializations_for_node("deliveries")[0].metadata["sent_by_this_run"].value


@pytest.mark.slow
def test_fifty_signups_become_a_whole_campaign_sent_exactly_once(env, crm_env, make_settings):
    env.update(crm_env)
    settings = make_settings()
    people = leads()
    repeats = [dict(people[i], email=people[i]["email"].upper()) for i in range(5)]
    invalid = [
        {"email": "not-an-email", "first_name": "Nope"},
        {"email": "nameless@example.com"},
        {"email": "too-red@example.com", "first_name": "Red", "red_systems": 9},
    ]
    with UvicornThread(create_app(settings)) as server, httpx.Client(base_url=server.url) as http:
        answers = [http.post("/webhook/christmas-signup", json=body) for body in people + repeats + invalid]
    assert [a.status_code for a in answers] == [202] * 47 + [422] * 3
    assert [a.json()["duplicate"] for a in answers[:47]] == [False] * 42 + [True] * 5

    engine = engine_for(settings.database_url)
    defs = build_definitions(settings)
    resource = XmasResource.from_settings(settings)
    with dg.instance_for_test() as instance:
        tick = defs.resolve_sensor_def("signup_sensor").evaluate_tick(
            dg.build_sensor_context(instance=instance, resources={"xmas": resource}, definitions=defs)
        )
        assert len(tick.run_requests) == 1  # one run for the batch
        enroll = defs.resolve_job_def("enroll_signups_job")
        for request in tick.run_requests:
            assert enroll.execute_in_process(
                run_config=request.run_config, instance=instance, resources={"xmas": resource}, tags=request.tags
            ).success

        with engine.connect() as conn:
            rows = conn.execute(sa.select(sequences.c.email, sequences.c.segment)).all()
        assert len(rows) == 42
        expected = {p["email"]: classify(p["red_systems"], p["orange_systems"]).value for p in people}
        assert dict(rows) == expected
        first = outbox_snapshot(settings.outbox_dir)
        assert len(first) == 42 and all(name.endswith("-s1.eml") for name in first)

        seen = dict(first)
        for offset in range(11):
            result = run_day(defs, instance, make_settings, START + dt.timedelta(days=offset))
            assert result.success
            now = outbox_snapshot(settings.outbox_dir)
            assert {k: now[k] for k in seen} == seen, "an email already sent was written again"
            seen = now
        assert len(seen) == 42 * 7

        with engine.connect() as conn:
            per_step = conn.execute(
                sa.select(deliveries.c.step, sa.func.count()).where(deliveries.c.status == "sent").group_by(deliveries.c.step)
            ).all()
            statuses = conn.execute(sa.select(sequences.c.status).distinct()).scalars().all()
        assert dict(per_step) == {step: 42 for step in range(1, 8)}
        assert statuses == ["completed"]

        # Materializing any partition again (a backfill of days already done) sends nothing new.
        for offset in range(11):
            assert sent_count(run_day(defs, instance, make_settings, START + dt.timedelta(days=offset))) == 0
        assert outbox_snapshot(settings.outbox_dir) == seen
