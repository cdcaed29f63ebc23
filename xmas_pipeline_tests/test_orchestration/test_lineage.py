"""Every sent message traces back to the signup event, the template version, the Dagster run and the
provider's id: on the ledger row, in `xmas contact` and in the `deliveries` materialization."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from xmas_pipeline.backends import delivery_context
from xmas_pipeline.campaign.rendering import TemplateSource, source_hash
from xmas_pipeline.cli import main as xmas
from xmas_pipeline.definitions import build_definitions
from xmas_pipeline.orchestration.resources import XmasResource
from xmas_pipeline.settings import DEFAULT_CAMPAIGN_FILE
from xmas_pipeline.store import engagement, ledger
from xmas_pipeline.store.db import engine_for
from xmas_pipeline_tests.test_delivery.helpers import signup
from xmas_pipeline_tests.test_journeys_end_to_end import at

LEAD = "lin.trace@example.com"


@pytest.fixture
def settings_at(env, make_settings):
    env["XMAS_CAMPAIGN_FILE"] = str(DEFAULT_CAMPAIGN_FILE)
    return lambda when: make_settings(XMAS_NOW=when.isoformat())


def run_job(defs, instance, settings, name: str, **kwargs) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def(name).execute_in_process(
        instance=instance, resources={"xmas": XmasResource.from_settings(settings)}, **kwargs)
    assert result.success
    return result


def test_each_sent_message_names_its_event_template_version_run_and_provider_id(settings_at, env, monkeypatch, capsys):
    enrolled_at, sent_at = settings_at(at(2026, 11, 5, 10, 0)), settings_at(at(2026, 11, 7, 11, 0))
    engine = engine_for(enrolled_at.database_url)
    event_id = signup(enrolled_at, LEAD, first_name="Lin", red_systems=2)
    templates = delivery_context(enrolled_at).templates
    with dg.instance_for_test() as instance:
        enrolled = run_job(build_definitions(enrolled_at), instance, enrolled_at, "enroll_signups_job",
                           run_config={"ops": {"enroll_signups": {"config": {"event_ids": [event_id]}}}})
        daily = run_job(build_definitions(sent_at), instance, sent_at, "daily_delivery_job", partition_key="2026-11-07")
        [materialization] = daily.asset_materializations_for_node("deliveries")

    rows = {r.step: r for r in ledger.rows_for(engine, email=LEAD)}
    outbox = {p.name for p in enrolled_at.outbox_dir.glob("*.eml")}
    for step, run in ((1, enrolled.run_id), (2, daily.run_id)):
        row = rows[step]
        assert (row.status, row.event_id, row.campaign, row.template, row.run_id) == (
            "sent", event_id, "Christmas 2026", f"email_{step}", run)
        assert row.template_hash == source_hash(templates[f"email_{step}"]) and len(row.template_hash) == 12
        assert row.provider_id in outbox  # the outbox's message id is its file
    assert all(r.event_id == event_id for r in rows.values())  # planned steps carry it before they are sent

    [listed] = [r.data for r in materialization.metadata["sent_this_day_list"].value.records]
    assert {k: listed[k] for k in ("email", "step", "event_id", "template", "run_id", "provider_id")} == {
        "email": LEAD, "step": "2", "event_id": str(event_id), "template": f"email_2@{rows[2].template_hash}",
        "run_id": daily.run_id, "provider_id": rows[2].provider_id}

    engagement.record(engine, svix_id="msg_open", provider_id=rows[2].provider_id, kind="opened",
                      occurred_at=at(2026, 11, 7, 12, 30), received_at=at(2026, 11, 7, 12, 31))
    for key, value in {**env, "XMAS_NOW": at(2026, 11, 7, 13, 0).isoformat()}.items():
        monkeypatch.setenv(key, value)
    assert xmas(["contact", LEAD]) == 0
    out = capsys.readouterr().out.splitlines()
    traced = [line.strip() for line in out if line.strip().startswith("lineage:")]
    assert traced == [
        f"lineage: event {event_id}, template email_1@{rows[1].template_hash}, run {enrolled.run_id}, "
        f"provider id {rows[1].provider_id}",
        f"lineage: event {event_id}, template email_2@{rows[2].template_hash}, run {daily.run_id}, "
        f"provider id {rows[2].provider_id}; provider events: opened 2026-11-07 12:30 EST",
    ]
    # Each lineage line sits under its step's line.
    assert out[out.index("          " + traced[1]) - 1].startswith("  step 2  sent")


def test_a_template_edit_changes_the_hash_and_nothing_else_does():
    base = TemplateSource("email_2", "Hi {{ first_name }}", "<p>Hello</p>", "Hello")
    assert source_hash(base) == source_hash(TemplateSource("renamed", "Hi {{ first_name }}", "<p>Hello</p>", "Hello"))
    edits = [TemplateSource("email_2", "Hi {{ first_name }}!", "<p>Hello</p>", "Hello"),
             TemplateSource("email_2", "Hi {{ first_name }}", "<p>Hello!</p>", "Hello"),
             TemplateSource("email_2", "Hi {{ first_name }}", "<p>Hello</p>", "Hello!"),
             TemplateSource("email_2", "Hi {{ first_name }}", "<p>Hello", "</p>Hello"),  # same bytes, split elsewhere
             TemplateSource("email_2", "Hi {{ first_name }}", "<p>Hello</p>", "Hello", deadline_passed=base)]
    assert len({source_hash(t) for t in [base, *edits]}) == 6
