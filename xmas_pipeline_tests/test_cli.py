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
