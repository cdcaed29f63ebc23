"""A broken template stops the sends that depend on it: `templates` is upstream of `deliveries`, and its
blocking `templates_contract` check failing makes Dagster skip `deliveries` (and the funnel) in the run,
with the problem in the check's metadata. Fixed, the next run sends."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from xmas_pipeline.definitions import build_definitions
from xmas_pipeline.orchestration.resources import XmasResource
from xmas_pipeline.settings import DEFAULT_CAMPAIGNS_DIR
from xmas_pipeline.store import ledger
from xmas_pipeline.store.db import engine_for
from xmas_pipeline_tests.test_delivery.helpers import enroll
from xmas_pipeline_tests.test_journeys_end_to_end import at

LEAD = "gate.keeper@example.com"


@pytest.fixture
def campaign(tmp_path, env):
    """A copy of the shipped campaign the test may break."""
    folder = tmp_path / "campaigns"
    shutil.copytree(DEFAULT_CAMPAIGNS_DIR, folder)
    env["XMAS_CAMPAIGN_FILE"] = str(folder / "christmas-2026.yaml")
    return folder


def daily_run(make_settings) -> tuple[dg.ExecuteInProcessResult, list[str]]:
    """The day's delivery run, and its log's messages (what the run page shows)."""
    settings = make_settings(XMAS_NOW=at(2026, 11, 7, 11, 0).isoformat())
    with dg.instance_for_test() as instance:
        result = build_definitions(settings).resolve_job_def("daily_delivery_job").execute_in_process(
            partition_key="2026-11-07", instance=instance, resources={"xmas": XmasResource.from_settings(settings)},
            raise_on_error=False)
        return result, [entry.user_message for entry in instance.all_logs(result.run_id)]


def test_a_failing_templates_contract_blocks_the_sends(campaign, settings, make_settings):
    body = campaign / "templates" / "email_2" / "body.html"
    good = body.read_text()
    body.write_text(good.replace("</p>", " Your code: {{ coupon_code }}</p>", 1))
    report = enroll(settings, LEAD, first_name="Gail", red_systems=2)
    assert len(report.delivery.sent) == 1  # email 1's template is fine: enrollment sends it
    outbox = settings.outbox_dir

    result, log = daily_run(make_settings)
    assert not result.success
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "templates_contract"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    problems = check.metadata["problems"].value
    assert "Christmas 2026 step 2" in problems and "coupon_code" in problems
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "templates" in started and not {"deliveries", "campaign_funnel"} & started
    assert "Dependencies for step deliveries failed: ['templates']. Not executing." in log
    assert result.asset_materializations_for_node("deliveries") == []
    assert result.asset_materializations_for_node("emails_due")  # listing what is owed is not gated
    step_2 = {r.step: r for r in ledger.rows_for(engine_for(settings.database_url), email=LEAD)}[2]
    assert step_2.status == "scheduled" and step_2.message is None  # never claimed, never rendered
    assert len(list(outbox.glob("*.eml"))) == 1

    body.write_text(good)  # fixed: the next run sends what waited
    result, _ = daily_run(make_settings)
    assert result.success
    assert result.asset_materializations_for_node("deliveries")[0].metadata["sent_by_this_run"].value == 1
    assert len(list(outbox.glob("*.eml"))) == 2
