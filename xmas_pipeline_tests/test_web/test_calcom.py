"""Cal.com webhooks: the signature, Cal.com's own payload shapes, and what each trigger means for the journeys."""

import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path

import pytest

from xmas_pipeline.web.calcom import (
    CalPayloadError,
    Ignored,
    JourneyEvent,
    interpret,
    parse_cal_webhook,
    verify_cal_signature,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "calcom"
SECRET = "test-cal-secret"
UTC = dt.timezone.utc


def raw(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def events(name: str):
    return interpret(parse_cal_webhook(raw(name)))


def edited(name: str, **payload_changes) -> bytes:
    body = json.loads(raw(name))
    body["payload"].update(payload_changes)
    return json.dumps(body).encode()


# ------------------------------------------------------------------------------------------- the signature


def test_a_known_signature_verifies():
    # Computed outside Python: openssl dgst -sha256 -hmac test-cal-secret booking_created.json
    known = "8ab4f383df222f0e4b4c9571f468005c2b4aff4af44384ce04478242e77bc847"
    assert verify_cal_signature(SECRET, raw("booking_created"), known)


@pytest.mark.parametrize("dress", [str.upper, lambda s: f"  {s}\n", lambda s: f"\t{s.upper()} "])
def test_uppercase_hex_and_surrounding_whitespace_are_tolerated(dress):
    body = raw("booking_created")
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert verify_cal_signature(SECRET, body, dress(signature))


def test_anything_else_fails():
    body = raw("booking_created")
    good = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert not verify_cal_signature(SECRET, body + b" ", good), "the raw body, byte for byte"
    assert not verify_cal_signature(SECRET, json.dumps(json.loads(body)).encode(), good), "never re-serialised JSON"
    assert not verify_cal_signature("another-secret", body, good)
    assert not verify_cal_signature(SECRET, body, None)
    assert not verify_cal_signature(SECRET, body, "")
    assert not verify_cal_signature(SECRET, body, good[:-1])
    assert not verify_cal_signature(SECRET, body, "sha256=" + good)
    assert not verify_cal_signature(SECRET, body, "é" * 64)
    assert not verify_cal_signature("", body, hmac.new(b"", body, hashlib.sha256).hexdigest()), "no secret, no trust"


# ------------------------------------------------------------------------------------------------ bookings


def test_booking_created_starts_reminders_for_the_booker_only():
    [event] = events("booking_created")
    assert event == JourneyEvent(
        kind="booking_created",
        email="ada@example.com",  # the booking form's answer, lower-cased; the guest is not enrolled
        booking_uid="p3YzqQm8bXk2Lr7Vt1Nc9w",
        event_at=dt.datetime(2026, 12, 7, 15, 0, tzinfo=UTC),
        attendee_timezone="America/Vancouver",
        dedupe_key="cal:p3YzqQm8bXk2Lr7Vt1Nc9w:BOOKING_CREATED",
        name="Ada Lovelace",
        previous_booking_uid=None,
        occurred_at=dt.datetime(2026, 12, 1, 14, 2, 11, 538000, tzinfo=UTC),
    )


def test_without_form_answers_the_first_attendee_is_the_booker():
    body = json.loads(raw("booking_created"))
    del body["payload"]["responses"]
    [event] = interpret(parse_cal_webhook(json.dumps(body).encode()))
    assert event.email == "ada@example.com"


def test_a_reschedule_names_the_booking_it_replaces_and_is_keyed_by_its_new_start():
    [event] = events("booking_rescheduled")
    assert event.kind == "booking_rescheduled"
    assert event.booking_uid == "Hq8Tz2VwYc4Kp1Ls6Nb3Rd"
    assert event.previous_booking_uid == "p3YzqQm8bXk2Lr7Vt1Nc9w"
    assert event.event_at == dt.datetime(2026, 12, 10, 16, tzinfo=UTC)
    assert event.dedupe_key == "cal:Hq8Tz2VwYc4Kp1Ls6Nb3Rd:BOOKING_RESCHEDULED:2026-12-10T16:00:00+00:00"
    [moved_again] = interpret(parse_cal_webhook(edited("booking_rescheduled", startTime="2026-12-11T16:00:00Z")))
    assert moved_again.dedupe_key != event.dedupe_key


def test_a_cancellation_stops_the_reminders():
    [event] = events("booking_cancelled")
    assert (event.kind, event.email, event.booking_uid) == ("booking_cancelled", "ada@example.com", "Hq8Tz2VwYc4Kp1Ls6Nb3Rd")
    assert event.dedupe_key == "cal:Hq8Tz2VwYc4Kp1Ls6Nb3Rd:BOOKING_CANCELLED"


def test_a_replayed_delivery_has_the_same_dedupe_key():
    assert events("booking_created") == events("booking_created")
    assert events("booking_created")[0].dedupe_key != events("booking_cancelled")[0].dedupe_key


def test_a_booking_awaiting_confirmation_is_not_a_booking_yet():
    assert isinstance(events("booking_requested"), Ignored)
    pending = interpret(parse_cal_webhook(edited("booking_created", status="PENDING")))
    assert isinstance(pending, Ignored) and "PENDING" in pending.reason


def test_an_unreadable_attendee_timezone_falls_back_to_none():
    body = json.loads(raw("booking_created"))
    body["payload"]["attendees"][0]["timeZone"] = "Pacific Standard Time"
    [event] = interpret(parse_cal_webhook(json.dumps(body).encode()))
    assert event.attendee_timezone is None


# ------------------------------------------------------------------------------------------------ no-shows


def test_an_attendee_marked_no_show_starts_recovery():
    [event] = events("booking_no_show_updated")
    assert (event.kind, event.email, event.booking_uid) == ("no_show", "ada@example.com", "Hq8Tz2VwYc4Kp1Ls6Nb3Rd")
    assert event.event_at is None  # Cal.com's no-show update carries no start time
    assert event.dedupe_key == "cal:Hq8Tz2VwYc4Kp1Ls6Nb3Rd:no_show:ada@example.com"


def test_unmarking_a_no_show_is_ignored():
    assert isinstance(events("booking_no_show_unmarked"), Ignored)


def test_a_meeting_that_ended_without_the_attendee_starts_recovery_once():
    [ended] = events("meeting_ended_no_show")
    [video] = events("after_guests_cal_video_no_show")
    [marked] = events("booking_no_show_updated")
    assert ended.kind == video.kind == "no_show"
    assert ended.event_at == dt.datetime(2026, 12, 10, 16, tzinfo=UTC)
    # Whichever trigger reports the missed call first, recovery starts once.
    assert ended.dedupe_key == video.dedupe_key == marked.dedupe_key


def test_a_meeting_that_ended_with_nobody_flagged_is_not_a_no_show():
    result = events("meeting_ended")
    assert isinstance(result, Ignored) and "does not say anyone was missing" in result.reason


# ------------------------------------------------------------------------------------------- other triggers


@pytest.mark.parametrize("trigger", ["PING", "BOOKING_REJECTED", "BOOKING_PAID", "MEETING_STARTED", "RECORDING_READY", "SOMETHING_NEW"])
def test_other_triggers_are_ignored(trigger):
    body = json.loads(raw("ping"))
    body["triggerEvent"] = trigger
    result = interpret(parse_cal_webhook(json.dumps(body).encode()))
    assert isinstance(result, Ignored) and trigger in result.reason


def test_ping_is_ignored():
    assert events("ping") == Ignored("PING: Cal.com's test delivery")


# ------------------------------------------------------------------------------------------ broken bodies


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"payload": {}}', "triggerEvent"),
        (b'{"triggerEvent": "BOOKING_CREATED", "payload": {"startTime": "soon"}}', "payload.startTime"),
    ],
)
def test_unreadable_bodies_are_refused_with_a_reason(body, message):
    with pytest.raises(CalPayloadError, match=message):
        parse_cal_webhook(body)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"uid": None}, "without payload.uid"),
        ({"attendees": [], "responses": {}}, "without payload.attendees"),
        ({"startTime": None}, "without payload.startTime"),
    ],
)
def test_a_booking_missing_what_we_need_is_refused(changes, message):
    with pytest.raises(CalPayloadError, match=message):
        interpret(parse_cal_webhook(edited("booking_created", **changes)))


def test_unknown_fields_and_shapes_are_tolerated():
    body = json.loads(raw("booking_created"))
    body["payload"]["somethingNew"] = {"nested": [1, 2, 3]}
    body["payload"]["attendees"][0]["badge"] = "vip"
    body["webhookVersion"] = "2026-01-01"
    assert interpret(parse_cal_webhook(json.dumps(body).encode()))[0].email == "ada@example.com"
    naive = interpret(parse_cal_webhook(edited("booking_created", startTime="2026-12-07T15:00:00")))
    assert naive[0].event_at == dt.datetime(2026, 12, 7, 15, tzinfo=UTC), "Cal.com's times are UTC"
