"""`xmas contact` answers "did Sarah get email 3?" with reasons, as ops would ask it."""

from __future__ import annotations

import datetime as dt

from xmas_pipeline.backends import delivery_context
from xmas_pipeline.cli import main as xmas
from xmas_pipeline.delivery import deliver
from xmas_pipeline.store import suppressions
from xmas_pipeline.store.db import engine_for
from xmas_pipeline_tests.test_delivery.helpers import enroll
from xmas_pipeline_tests.test_delivery.test_delivery import at, due_on


def run(capsys, monkeypatch, env, *args) -> tuple[int, str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = xmas(list(args))
    return code, capsys.readouterr().out


def test_contact_shows_consent_and_every_step_with_its_reason(settings, make_settings, env, capsys, monkeypatch):
    enroll(settings, "sarah@example.com", first_name="Sarah", red_systems=2)
    later = at(make_settings, settings.clock.now(), 2)
    ctx = delivery_context(later)
    deliver(ctx, due_on(ctx, 2))
    env["XMAS_NOW"] = (settings.clock.now() + dt.timedelta(days=2, hours=1)).isoformat()
    code, out = run(capsys, monkeypatch, env, "contact", "Sarah@Example.com")
    assert code == 0
    assert "consent   express for Christmas 2026" in out and "ip 203.0.113.9" in out
    assert "step 1  sent" in out and "via outbox id xmas-" in out
    assert "step 2  sent" in out
    assert "step 3  scheduled for 2026-11-08 10:00" in out

    suppressions.suppress(engine_for(settings.database_url), "sarah@example.com", "unsubscribed", "test", settings.clock.now())
    code, out = run(capsys, monkeypatch, env, "contact", "sarah@example.com")
    assert "SUPPRESSED (unsubscribed)" in out
    assert "step 3  will not be sent: sequence exited (unsubscribed)" in out


def test_unknown_contact_exits_1(env, capsys, monkeypatch, settings):
    code, out = run(capsys, monkeypatch, env, "contact", "nobody@example.com")
    assert code == 1 and "no contact or sequence" in out


def test_stop_ends_a_sequence_without_suppressing(settings, env, capsys, monkeypatch):
    enroll(settings, "phone@example.com")
    code, out = run(capsys, monkeypatch, env, "stop", "phone@example.com", "--reason", "booked by phone")
    assert code == 0 and "stopped 1 sequence" in out
    code, out = run(capsys, monkeypatch, env, "contact", "phone@example.com")
    assert "sequence  Christmas 2026: exited (booked by phone)" in out
    assert "SUPPRESSED" not in out


def test_bad_configuration_is_named(env, capsys, monkeypatch):
    env["XMAS_NOW"] = "2026-11-05 10:00"  # no offset
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert xmas(["events"]) == 2
    assert "XMAS_NOW" in capsys.readouterr().err


# --- `xmas stop` reaches the CRM the way an unsubscribe does ------------------------------------


def test_stop_reaches_the_local_crm(settings, env, capsys, monkeypatch):
    from xmas_pipeline.crm.local import LocalCRM
    from xmas_pipeline.store import mirror

    enroll(settings, "phone@example.com")
    code, out = run(capsys, monkeypatch, env, "stop", "phone@example.com", "--reason", "booked by phone")
    assert code == 0 and "the local CRM has it: sequence marked done, campaign status Stopped" in out
    engine = engine_for(settings.database_url)
    [contact] = LocalCRM(engine).contacts_changed_since(None)
    assert contact.campaign_status == "Stopped"
    assert mirror.exits_to_sync(engine) == []  # told now, not left for the next delivery run


def notion_env(env, emulator) -> dict:
    from xmas_pipeline_tests.fakes.notion_setup import xmas_databases

    return {**env, **xmas_databases(emulator)}


def notion_pages(emulator, settings, database: str) -> list[dict]:
    from xmas_pipeline.backends import make_crm
    from xmas_pipeline.campaign.loader import load_campaign
    from xmas_pipeline_tests.fakes.notion_setup import data_source

    crm = make_crm(settings, engine_for(settings.database_url), load_campaign(settings.campaign_file))
    return emulator.pages(data_source(emulator, crm.database_ids[database]))


def test_stop_reaches_notion_like_an_unsubscribe(make_settings, env, capsys, monkeypatch):
    from xmas_pipeline_tests.fakes.notion import NotionEmulator

    with NotionEmulator(retry_after=0) as emulator:
        env = notion_env(env, emulator)
        settings = make_settings(**env)
        enroll(settings, "phone@example.com", "quit@example.com")

        code, out = run(capsys, monkeypatch, env, "stop", "phone@example.com", "--reason", "booked by phone")
        assert code == 0 and "the notion CRM has it" in out
        code, out = run(capsys, monkeypatch, env, "stop", "quit@example.com", "--unsubscribe")
        assert code == 0 and "campaign status Unsubscribed" in out

        contacts = {p["properties"]["email"]["email"]: p["properties"] for p in notion_pages(emulator, settings, "contacts")}
        sequences = {p["properties"]["Email"]["email"]: p["properties"] for p in notion_pages(emulator, settings, "sequences")}
        assert contacts["phone@example.com"]["Christmas Campaign Status"]["select"]["name"] == "Stopped"
        assert contacts["quit@example.com"]["Christmas Campaign Status"]["select"]["name"] == "Unsubscribed"
        assert sequences["phone@example.com"]["Sequence Completed"]["checkbox"] is True
        assert sequences["quit@example.com"]["Sequence Completed"]["checkbox"] is True


def test_a_stop_while_notion_is_down_still_stops_and_says_what_the_crm_is_missing(make_settings, env, capsys, monkeypatch):
    from xmas_pipeline.store import mirror
    from xmas_pipeline_tests.fakes.notion import NotionEmulator

    with NotionEmulator(retry_after=0) as emulator:
        env = notion_env(env, emulator)
        settings = make_settings(**env)
        enroll(settings, "phone@example.com")
        emulator.fail_next(*[503] * 20)
        code, out = run(capsys, monkeypatch, env, "stop", "phone@example.com", "--reason", "booked by phone")
        assert code == 1
        assert "stopped 1 sequence(s) of phone@example.com" in out and "the notion CRM was not fully told" in out
        engine = engine_for(settings.database_url)
        [seq] = mirror.sequences_for_email(engine, "phone@example.com")
        assert seq["status"] == "exited"  # no email goes out, whatever the CRM said
        assert [e["email"] for e in mirror.exits_to_sync(engine)] == ["phone@example.com"]  # the next run retries
