"""The whole journey through the real intake and in-process Dagster runs, the clock pinned at each tick.

A lead signs up, books the diagnostic call on Cal.com (a signed payload shaped like Cal.com's), and the
nurture stops before its next step; the 72/24/2 h reminders go out once each, a reschedule moves the
ones not yet sent, a no-show starts recovery. A "maybe" call outcome and a paid payment start their
journeys for people the CRM has never seen. Bad signatures are 401 with nothing stored, and a replayed
booking changes nothing. The sensor and the schedule are the real ones, evaluated as the daemon does.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from xmas_pipeline.store import ledger, mirror
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.store.schema import inbound_events
from xmas_pipeline.web.app import create_app
from xmas_pipeline_tests.daemon import DaemonSim, definitions_for

TZ = ZoneInfo("America/Toronto")
CAL_SECRET = "cal-test-secret"
FIXTURES = Path(__file__).parent / "fixtures" / "calcom"
LEAD = "ada@example.com"


def at(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=TZ)


def cal_body(trigger: str, *, uid: str, start: dt.datetime | None = None, reschedule_uid: str | None = None) -> bytes:
    """A Cal.com webhook from the recorded shapes, for the lead's booking ``uid`` starting at ``start``."""
    name = {"BOOKING_CREATED": "booking_created", "BOOKING_RESCHEDULED": "booking_rescheduled",
            "BOOKING_CANCELLED": "booking_cancelled", "BOOKING_NO_SHOW_UPDATED": "booking_no_show_updated"}[trigger]
    body = copy.deepcopy(json.loads((FIXTURES / f"{name}.json").read_text()))
    payload = body["payload"]
    if trigger == "BOOKING_NO_SHOW_UPDATED":
        payload["bookingUid"] = uid
    else:
        payload["uid"] = uid
        payload["startTime"] = start.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
        payload["endTime"] = (start + dt.timedelta(minutes=45)).astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
        for attendee in payload.get("attendees", []):
            attendee["timeZone"] = "America/Toronto"
        if reschedule_uid:
            payload["rescheduleUid"] = reschedule_uid
    return json.dumps(body).encode()


def signed(body: bytes, secret: str = CAL_SECRET) -> dict[str, str]:
    return {"content-type": "application/json",
            "x-cal-signature-256": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


@pytest.fixture
def world(make_settings, settings):
    """The intake at any instant, and the daemon driving the real definitions."""
    env = {"XMAS_CAL_SECRET": CAL_SECRET}
    settings_at = lambda when: make_settings(XMAS_NOW=when.isoformat(), **env)  # noqa: E731

    def post(when: dt.datetime, path: str, body: bytes, headers: dict) -> tuple[int, dict]:
        with TestClient(create_app(settings_at(when))) as client:
            answer = client.post(path, content=body, headers=headers)
            return answer.status_code, answer.json()

    with dg.instance_for_test() as instance:
        daemon = DaemonSim(definitions_for(settings_at(at(2026, 11, 5, 9))), instance, settings_at)
        yield post, daemon


def steps(engine, email: str) -> dict[tuple[str, int], ledger.Due]:
    return {(r.campaign, r.step): r for r in ledger.rows_for(engine, email=email)}


def inbound_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(inbound_events)).scalar_one()


@pytest.mark.slow
def test_signup_booking_reminders_reschedule_no_show_outcome_and_payment(world, settings):
    post, daemon = world
    engine = engine_for(settings.database_url)

    # A lead signs up; the next tick enrolls them and email 1 goes.
    signup = json.dumps({"email": LEAD, "first_name": "Ada", "red_systems": 2, "orange_systems": 1,
                         "yellow_systems": 3, "green_systems": 2, "assessment_score": 41}).encode()
    assert post(at(2026, 11, 5, 9, 58), "/webhook/christmas-signup", signup, {"content-type": "application/json"})[0] == 202
    daemon.tick(at(2026, 11, 5, 10, 0))
    assert steps(engine, LEAD)[("Christmas 2026", 1)].status == "sent"

    # Bad signatures are refused and store nothing.
    booking = cal_body("BOOKING_CREATED", uid="book-1", start=at(2026, 11, 10, 15, 0))
    before = inbound_count(engine)
    assert post(at(2026, 11, 6, 12, 0), "/webhook/cal", booking, signed(booking, "wrong-secret"))[0] == 401
    assert post(at(2026, 11, 6, 12, 0), "/webhook/cal", booking, {"content-type": "application/json"})[0] == 401
    assert inbound_count(engine) == before

    # The booking: the nurture stops before its next step (due Nov 7 10:00), reminders are planned.
    status, answer = post(at(2026, 11, 6, 12, 0), "/webhook/cal", booking, signed(booking))
    assert status == 202 and [e["kind"] for e in answer["events"]] == ["booking_created"]
    daemon.tick(at(2026, 11, 6, 12, 0))
    nurture = mirror.get_sequence(engine, steps(engine, LEAD)[("Christmas 2026", 1)].sequence_key)
    assert (nurture["status"], nurture["exit_reason"]) == ("exited", "booked a call")
    contact = mirror.get_contact(engine, LEAD)
    assert contact.booking_status == "Booked" and contact.call_date == at(2026, 11, 10, 15, 0)
    planned = steps(engine, LEAD)
    assert [planned[("Pre-call", n)].due_at for n in (1, 2, 3)] == [
        at(2026, 11, 7, 15, 0), at(2026, 11, 9, 15, 0), at(2026, 11, 10, 13, 0)]

    # A replayed booking (Cal.com retries) is a duplicate and changes nothing.
    status, answer = post(at(2026, 11, 6, 12, 5), "/webhook/cal", booking, signed(booking))
    assert status == 202 and answer["events"][0]["duplicate"] is True
    daemon.tick(at(2026, 11, 6, 12, 15))
    assert steps(engine, LEAD) == planned

    # Nov 7: the nurture's step 2 was due at 10:00 and is not sent; the 72 h reminder goes at 15:00.
    daemon.tick(at(2026, 11, 7, 10, 0))
    daemon.tick(at(2026, 11, 7, 15, 0))
    now = steps(engine, LEAD)
    assert now[("Christmas 2026", 2)].status == "skipped" and "booked a call" in now[("Christmas 2026", 2)].reason
    assert now[("Pre-call", 1)].status == "sent"

    # The call moves to Nov 12 15:00: the reminders not yet sent move with it, the sent one stays.
    moved = cal_body("BOOKING_RESCHEDULED", uid="book-2", start=at(2026, 11, 12, 15, 0), reschedule_uid="book-1")
    assert post(at(2026, 11, 8, 9, 0), "/webhook/cal", moved, signed(moved))[0] == 202
    daemon.tick(at(2026, 11, 8, 9, 0))
    now = steps(engine, LEAD)
    assert [now[("Pre-call", n)].due_at for n in (2, 3)] == [at(2026, 11, 11, 15, 0), at(2026, 11, 12, 13, 0)]
    assert now[("Pre-call", 1)].sent_at == at(2026, 11, 7, 15, 0)
    daemon.tick(at(2026, 11, 9, 15, 0))  # the old 24 h time: nothing goes
    assert steps(engine, LEAD)[("Pre-call", 2)].status == "scheduled"
    daemon.tick(at(2026, 11, 11, 15, 0))
    daemon.tick(at(2026, 11, 12, 13, 0))
    now = steps(engine, LEAD)
    assert [now[("Pre-call", n)].status for n in (1, 2, 3)] == ["sent"] * 3
    pre_call_files = sorted(p.name for p in settings.outbox_dir.glob("*-s*.eml")
                            if now[("Pre-call", 1)].sequence_key in p.name)
    assert len(pre_call_files) == 3  # once each

    # The host marks the lead a no-show: recovery starts, its first email at once.
    no_show = cal_body("BOOKING_NO_SHOW_UPDATED", uid="book-2")
    no_show = no_show.replace(b"ada@example.com", LEAD.encode())
    assert post(at(2026, 11, 12, 16, 0), "/webhook/cal", no_show, signed(no_show))[0] == 202
    daemon.tick(at(2026, 11, 12, 16, 0))
    now = steps(engine, LEAD)
    assert now[("No-show", 1)].status == "sent" and now[("No-show", 2)].status == "scheduled"
    assert mirror.get_contact(engine, LEAD).booking_status == "No-Show"

    # A "maybe" and a payment, for people never seen before: created from the event, journeys started.
    maybe = json.dumps({"type": "call_outcome", "email": "maybe@example.com", "outcome": "maybe",
                        "first_name": "Max"}).encode()
    paid = json.dumps({"type": "payment", "email": "pay@example.com", "amount": 1500, "status": "paid",
                       "paid_at": at(2026, 11, 13, 10, 0).isoformat()}).encode()
    for body in (maybe, paid):
        assert post(at(2026, 11, 13, 10, 0), "/webhook/event", body, {"content-type": "application/json"})[0] == 202
    unknown = json.dumps({"type": "refund", "email": "pay@example.com"}).encode()
    assert post(at(2026, 11, 13, 10, 0), "/webhook/event", unknown, {"content-type": "application/json"})[0] == 422
    daemon.tick(at(2026, 11, 13, 10, 0))
    daemon.tick(at(2026, 11, 13, 11, 0))
    assert steps(engine, "maybe@example.com")[("Post-call maybe", 1)].status == "sent"
    assert steps(engine, "pay@example.com")[("Onboarding", 1)].status == "sent"
    assert mirror.get_contact(engine, "maybe@example.com").first_name == "Max"

    # Nothing went twice, and every run the daemon launched succeeded.
    assert all(r.success for r in daemon.results)
    sent = [r for r in ledger.rows_for(engine) if r.status == "sent"]
    assert len(sent) == len({(r.sequence_key, r.step) for r in sent}) == len(list(settings.outbox_dir.glob("*.eml")))
