"""Delivery and enrollment behaviour a marketer or ops person can observe, on SQLite and Postgres."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import sqlalchemy as sa

from xmas_pipeline.backends import delivery_context
from xmas_pipeline.campaign.rendering import TemplateSource
from xmas_pipeline.campaign.timetable import campaign_day, day_bounds
from xmas_pipeline.cli import main as xmas
from xmas_pipeline.delivery import deliver
from xmas_pipeline.enrollment import enroll_events
from xmas_pipeline.mail.resend import ResendSender
from xmas_pipeline.store import inbound, ledger, mirror, suppressions
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.store.ledger import Due
from xmas_pipeline.store.schema import consents, deliveries, sequences
from xmas_pipeline_tests.fakes.resend import ResendEmulator
from xmas_pipeline_tests.test_delivery.helpers import enroll, signup


def due_on(ctx, day_offset: float = 0) -> list[Due]:
    """What today's live delivery run would be given: today's steps and every earlier one still owed."""
    start, end = day_bounds(ctx.campaign, campaign_day(ctx.campaign, ctx.clock.now()))
    return ledger.dues(ledger.owed(ctx.engine, ctx.campaign.name, start, end, carry_over=True))


def at(make_settings, base: dt.datetime, days: float, **env):
    return make_settings(XMAS_NOW=(base + dt.timedelta(days=days)).isoformat(), **env)


def count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()


def test_enrollment_sends_email_one_and_records_consent(settings):
    report = enroll(settings, "Ann@Example.com", red_systems=2, first_name="Ann")
    assert [e["segment"] for e in report.enrolled] == ["CRITICAL"]
    assert len(report.delivery.sent) == 1
    engine = engine_for(settings.database_url)
    assert count(engine, consents, consents.c.email == "ann@example.com") == 1
    assert (settings.outbox_dir).is_dir() and len(list(settings.outbox_dir.glob("*.eml"))) == 1


def test_repeat_signup_never_creates_a_second_sequence_or_restarts(settings, make_settings):
    enroll(settings, "rep@example.com")
    later = at(make_settings, settings.clock.now(), 3)
    engine = engine_for(settings.database_url)
    before = mirror.get_sequence(engine, mirror.sequences_for_email(engine, "rep@example.com")[0]["sequence_key"])
    event_id = inbound.enqueue(
        engine,
        inbound.NewEvent("rep-again", "signup", "REP@example.com", {"email": "REP@example.com", "first_name": "Rep"},
                         later.clock.now()),
    ).event_id
    report = enroll_events(delivery_context(later), [event_id])
    assert report.repeats == ["rep@example.com"] and not report.enrolled
    assert count(engine, sequences) == 1
    assert mirror.sequences_for_email(engine, "rep@example.com")[0]["signup_at"] == before["signup_at"]
    assert len(list(settings.outbox_dir.glob("*.eml"))) == 1


def test_email_one_sent_by_the_website_is_recorded_not_resent(settings):
    sent_at = settings.clock.now() - dt.timedelta(hours=1)
    report = enroll(settings, "web@example.com", email_1_sent_at=sent_at.isoformat().replace("+00:00", "Z"))
    assert report.delivery.sent == []
    engine = engine_for(settings.database_url)
    row = ledger.rows_for(engine, email="web@example.com")[0]
    assert (row.step, row.status) == (1, "external")
    assert mirror.sequences_for_email(engine, "web@example.com")[0]["signup_at"] == sent_at


def test_unsubscribed_contact_gets_nothing_more(settings, make_settings):
    enroll(settings, "gone@example.com", "stay@example.com")
    engine = engine_for(settings.database_url)
    suppressions.suppress(engine, "gone@example.com", "unsubscribed", "test", settings.clock.now())
    ctx = delivery_context(at(make_settings, settings.clock.now(), 2, XMAS_CLAIM_LEASE_SECONDS="0"))
    report = deliver(ctx, due_on(ctx, 2))
    assert [(s["email"], s["step"]) for s in report.sent] == [("stay@example.com", 2)]
    assert not any(r["email"] == "gone@example.com" for r in report.sent)
    assert len(list(settings.outbox_dir.glob("*.eml"))) == 3


def test_broken_template_fails_its_step_and_nothing_leaves_until_fixed(settings, make_settings):
    enroll(settings, "tpl@example.com")
    ctx = delivery_context(at(make_settings, settings.clock.now(), 2))
    good = ctx.templates["email_2"]
    ctx.templates["email_2"] = dataclasses.replace(good, html="<p>Hi {{ FirstName }}</p>")
    report = deliver(ctx, due_on(ctx, 2))
    assert report.sent == []
    assert "FirstName" in report.failed[0]["error"]
    assert len(list(settings.outbox_dir.glob("*.eml"))) == 1  # only email 1
    ctx.templates["email_2"] = dataclasses.replace(good, subject="  ")
    assert "subject is empty" in deliver(ctx, due_on(ctx, 2)).failed[0]["error"]

    ctx.templates["email_2"] = good  # the marketer fixes it: the next run sends it
    assert [s["step"] for s in deliver(ctx, due_on(ctx, 2)).sent] == [2]


def test_booking_a_call_stops_the_sequence(settings, make_settings):
    enroll(settings, "booked@example.com")
    engine = engine_for(settings.database_url)
    contact = mirror.get_contact(engine, "booked@example.com").model_copy(update={"booking_status": "Booked"})
    mirror.upsert_contacts(engine, [contact], settings.clock.now())
    ctx = delivery_context(at(make_settings, settings.clock.now(), 2))
    report = deliver(ctx, due_on(ctx, 2))
    assert report.sent == [] and report.skipped[0]["reason"] == "booked a call"
    assert mirror.sequences_for_email(engine, "booked@example.com")[0]["status"] == "exited"


def test_concurrent_runs_send_each_step_once(settings, make_settings):
    emails = [f"c{i}@example.com" for i in range(30)]
    enroll(settings, *emails)
    with ResendEmulator(rate_limit=1000) as resend:
        resend.delay_s = 0.01
        later = at(make_settings, settings.clock.now(), 2)
        contexts = [delivery_context(later) for _ in range(3)]
        for ctx in contexts:
            ctx.sender = ResendSender(api_key=resend.api_key, api_url=resend.api_url)
        due = due_on(contexts[0], 2)
        threads = [threading.Thread(target=deliver, args=(ctx, due)) for ctx in contexts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(resend.sent) == 30
        assert sorted(m["to"][0] for m in resend.sent) == sorted(emails)
    engine = engine_for(settings.database_url)
    assert count(engine, deliveries, deliveries.c.step == 2, deliveries.c.status == "sent") == 30


def test_an_event_that_cannot_be_enrolled_goes_dead_and_can_be_replayed(settings, capsys, monkeypatch, env):
    engine = engine_for(settings.database_url)
    bad = inbound.enqueue(
        engine, inbound.NewEvent("bad", "signup", "bad@example.com", {"email": "bad@example.com"}, settings.clock.now())
    ).event_id
    good = signup(settings, "fine@example.com")
    report = enroll_events(delivery_context(settings), [bad, good])
    assert [f["event_id"] for f in report.failed] == [bad]
    assert [e["email"] for e in report.enrolled] == ["fine@example.com"]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert xmas(["events", "--dead"]) == 0
    out = capsys.readouterr().out
    assert f"{bad:>6}  bad@example.com" in out and "first_name" in out
    assert xmas(["events", "--replay", str(bad)]) == 0
    assert inbound.dispatch_waiting(engine, dt.datetime.now(dt.timezone.utc), 10).ids == [bad]


def test_demo_clock_plays_a_day_in_a_minute(make_settings):
    demo = make_settings(XMAS_DAY_SECONDS="60")
    enroll(demo, "demo@example.com")
    sent = []
    for minutes in (1, 2, 3, 4, 6, 8, 10):
        ctx = delivery_context(at(make_settings, demo.clock.now(), minutes / 1440, XMAS_DAY_SECONDS="60"))
        sent += [s["step"] for s in deliver(ctx, due_on(ctx, 0)).sent]
    assert sent == [2, 3, 4, 5, 6, 7]


def test_a_message_the_provider_refuses_for_good_is_not_retried_forever(settings, make_settings):
    enroll(settings, "refused@example.com")
    with ResendEmulator(rate_limit=100) as resend:
        later = at(make_settings, settings.clock.now(), 2)
        ctx = delivery_context(later)
        ctx.sender = ResendSender(api_key=resend.api_key, api_url=resend.api_url)
        resend.fail_next(1, status=422, name="validation_error")
        report = deliver(ctx, due_on(ctx, 2))
        assert report.sent == [] and "refused by resend" in report.skipped[0]["reason"]
        requests = resend.requests
        assert deliver(ctx, due_on(ctx, 2)).sent == []
        assert resend.requests == requests and resend.sent == []
    row = [r for r in ledger.rows_for(engine_for(settings.database_url), email="refused@example.com") if r.step == 2][0]
    assert row.status == "skipped" and "validation_error" in row.reason
