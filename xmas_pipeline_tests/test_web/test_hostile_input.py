"""The intake against an attacker and a careless client: nothing hijacked, nothing half-accepted.

Each test posts what a hostile or sloppy sender would, then looks at the answer and at what landed
in the inbound queue (the only thing the intake writes).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from fastapi.testclient import TestClient

from xmas_pipeline.backends import delivery_context
from xmas_pipeline.enrollment import enroll_events
from xmas_pipeline.settings import SettingsError
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.store.inbound import NewEvent, enqueue
from xmas_pipeline.store.schema import inbound_events
from xmas_pipeline.web.app import SIGNUP_PATH, create_app
from xmas_pipeline_tests.test_web.test_intake import JSON, SIGNUP, client_for, fresh_secret, rows, signed_headers

__all__ = ["client_for"]  # the fixture, shared with test_intake

VICTIM = {"email": "victim@example.com", "first_name": "Vera", "red_systems": 1}
MALLORY = {"email": "mallory@example.com", "first_name": "Mallory"}


def post_text(client: TestClient, text: str, headers: dict[str, str] | None = None):
    """Post a body exactly as written: what a non-Python client may send (NaN, 1e400, key order)."""
    return client.post(SIGNUP_PATH, content=text.encode(), headers={**JSON, **(headers or {})})


# --- 1. idempotency keys belong to the caller -----------------------------------------------------


@pytest.mark.parametrize("attacker_body", [MALLORY, VICTIM], ids=["own email", "victim's email, other body"])
def test_a_key_naming_the_victims_natural_key_cannot_block_her_signup(client_for, attacker_body):
    client, settings = client_for()
    natural_key = f"victim@example.com|{settings.journeys().home.name}"
    attack = client.post(SIGNUP_PATH, json={**attacker_body, "first_name": "Mallory"},
                         headers={"Idempotency-Key": natural_key.replace(" ", "-")})  # fmt: skip
    assert attack.status_code == 202
    # The header cannot even spell the natural key (no spaces); a caller's key is stored namespaced.
    spelled = client.post(SIGNUP_PATH, json=MALLORY, headers={"Idempotency-Key": natural_key})
    assert spelled.status_code == 422 and spelled.json()["detail"][0]["loc"] == ["header", "idempotency-key"]

    victim = client.post(SIGNUP_PATH, json=VICTIM)
    assert victim.status_code == 202 and victim.json()["duplicate"] is False
    stored = {row.idempotency_key: json.loads(row.payload) for row in rows(settings, inbound_events)}
    assert stored[natural_key] == VICTIM  # the victim's own signup, stored under her natural key
    assert all(key == natural_key or key.startswith("idem:") for key in stored)


def test_reusing_a_key_for_another_email_stores_both(client_for):
    client, settings = client_for()
    first = client.post(SIGNUP_PATH, json=VICTIM, headers={"Idempotency-Key": "site-42"})
    second = client.post(SIGNUP_PATH, json=MALLORY, headers={"Idempotency-Key": "site-42"})
    assert first.status_code == second.status_code == 202
    assert second.json()["duplicate"] is False and second.json()["event_id"] != first.json()["event_id"]
    assert sorted(row.email for row in rows(settings, inbound_events)) == ["mallory@example.com", "victim@example.com"]


def test_same_key_with_another_body_is_409_and_changes_nothing(client_for):
    client, settings = client_for()
    assert client.post(SIGNUP_PATH, json=VICTIM, headers={"Idempotency-Key": "k-1"}).status_code == 202
    reused = client.post(SIGNUP_PATH, json={**VICTIM, "red_systems": 5}, headers={"Idempotency-Key": "k-1"})
    assert reused.status_code == 409
    assert "different body" in reused.json()["error"] and "new key" in reused.json()["error"]
    [row] = rows(settings, inbound_events)
    assert json.loads(row.payload) == VICTIM
    # The same body again, keys in another order and email in another case, is a plain duplicate.
    again = post_text(client, '{"red_systems": 1, "first_name": "Vera", "email": "Victim@Example.com"}',
                      {"Idempotency-Key": "k-1"})  # fmt: skip
    assert again.status_code == 202 and again.json() == {"event_id": row.id, "duplicate": True}


@pytest.mark.parametrize("key", ["x" * 129, "two words", "tab\there"])
def test_a_malformed_idempotency_key_is_422(client_for, key):
    client, settings = client_for()
    response = client.post(SIGNUP_PATH, json=VICTIM, headers={"Idempotency-Key": key})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
    assert rows(settings, inbound_events) == []


def test_a_signed_replay_is_a_duplicate_whatever_other_headers_say(client_for):
    secret = fresh_secret()
    client, settings = client_for(XMAS_WEBHOOK_SECRET=secret)
    body = json.dumps(VICTIM).encode()
    signed = signed_headers(secret, body, msg_id="msg_2Kx9")
    first = client.post(SIGNUP_PATH, content=body, headers={**signed, "Idempotency-Key": "a"})
    assert first.status_code == 202 and first.json()["duplicate"] is False
    for fresh_key in ["b", "c"]:
        replay = client.post(SIGNUP_PATH, content=body, headers={**signed, "Idempotency-Key": fresh_key})
        assert replay.status_code == 202 and replay.json() == {"event_id": first.json()["event_id"], "duplicate": True}
    [row] = rows(settings, inbound_events)
    assert row.idempotency_key == "webhook:victim@example.com|msg_2Kx9"


def test_a_signed_message_id_reused_for_another_body_is_409(client_for):
    secret = fresh_secret()
    client, settings = client_for(XMAS_WEBHOOK_SECRET=secret)
    one, other = json.dumps(VICTIM).encode(), json.dumps({**VICTIM, "red_systems": 4}).encode()
    assert client.post(SIGNUP_PATH, content=one, headers=signed_headers(secret, one, "msg_1")).status_code == 202
    assert client.post(SIGNUP_PATH, content=other, headers=signed_headers(secret, other, "msg_1")).status_code == 409
    assert len(rows(settings, inbound_events)) == 1


# --- 2. strict payloads: refused at the door, no row written --------------------------------------

REFUSED = {
    "1e400": ('"revenue_leak_total": 1e400', "revenue_leak_total"),
    "NaN": ('"gps_score": NaN', "gps_score"),
    "Infinity": ('"money_score": Infinity', "money_score"),
    "true": ('"red_systems": true', "red_systems"),
    "false as a number": ('"revenue_leak_total": false', "revenue_leak_total"),
    '"50"': ('"assessment_score": "50"', "assessment_score"),
    "50.5 for an integer": ('"assessment_score": 50.5', "assessment_score"),
    "score over 100": ('"gps_score": 100.5', "gps_score"),
    "year 9999": ('"email_1_sent_at": "9999-12-31T23:59:59-23:59"', "email_1_sent_at"),
    "before 2000": ('"email_1_sent_at": "1999-12-31T23:59:59Z"', "email_1_sent_at"),
    "over a day ahead": ('"email_1_sent_at": "2026-11-06T15:00:01Z"', "email_1_sent_at"),
    "a date only": ('"email_1_sent_at": "2026-11-05"', "email_1_sent_at"),
    "name over 200": (f'"business_name": "{"b" * 201}"', "business_name"),
    "NUL in a name": ('"first_name": "Sa\\u0000rah"', "first_name"),
    "NaN in an extra field": ('"quiz": {"answers": [1, NaN]}', None),
    "1e400 in an extra field": ('"utm_score": 1e400', None),
    "free text over 2000": (f'"notes": "{"n" * 2001}"', None),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_what_cannot_be_enrolled_is_422_and_nothing_is_written(client_for, case):
    client, settings = client_for()  # the clock is pinned at 2026-11-05T15:00Z
    fragment, field = REFUSED[case]
    response = post_text(client, '{"email": "sarah@example.com", "first_name": "Sarah", %s}' % fragment)
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["loc"] == (["body", field] if field else ["body"])
    assert problem["msg"]
    assert rows(settings, inbound_events) == []


def test_the_edges_of_what_is_accepted(client_for):
    client, settings = client_for()
    body = {
        "email": "sarah@example.com",
        "first_name": "S" * 200,
        "business_name": "B" * 200,
        "assessment_score": 100,
        "gps_score": 0,
        "revenue_leak_total": 125000,  # an integer is a fine number
        "red_systems": 6.0,  # a whole number written with a fraction is still an integer in JSON
        "email_1_sent_at": "2026-11-06T15:00:00z",  # exactly a day ahead of the pinned clock; lower-case z
        "notes": "n" * 2000,
    }
    assert client.post(SIGNUP_PATH, json=body).status_code == 202
    [row] = rows(settings, inbound_events)
    assert json.loads(row.payload)["red_systems"] == 6  # stored as received; enrollment reads it as 6


def test_an_unenrollable_event_stored_earlier_goes_dead_at_once_with_the_reason(settings):
    """Events an older intake let in (year 9999) fail on every try: dead after one, not five."""
    engine = engine_for(settings.database_url)
    payload = {"email": "old@example.com", "first_name": "Old", "email_1_sent_at": "9999-12-31T23:59:59-23:59"}
    event = enqueue(engine, NewEvent("old@example.com|x", "signup", "old@example.com", payload, settings.clock.now()))
    report = enroll_events(delivery_context(settings), [event.event_id])
    assert [f["status"] for f in report.failed] == ["dead"]
    [row] = rows(settings, inbound_events)
    assert (row.status, row.attempts) == ("dead", 1)
    assert "email_1_sent_at" in row.last_error and "out of range" in row.last_error


# --- 3. JSON only --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data",
     "application/json; charset=latin-1", "application/jsonx"],
)  # fmt: skip
def test_a_body_that_is_not_declared_json_is_415(client_for, content_type):
    client, settings = client_for(RESEND_WEBHOOK_SECRET=fresh_secret())
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps(SIGNUP).encode()  # a perfectly good signup: a cross-site form could post it as text/plain
    response = client.post(SIGNUP_PATH, content=body, headers=headers)
    assert response.status_code == 415 and "application/json" in response.json()["error"]
    assert client.post("/webhook/resend", content=body, headers=headers).status_code == 415
    assert rows(settings, inbound_events) == []


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON; charset=utf-8", 'application/json;charset="UTF-8"'])
def test_json_with_or_without_utf8_charset_is_accepted(client_for, content_type):
    client, _ = client_for()
    response = client.post(SIGNUP_PATH, content=json.dumps(SIGNUP).encode(), headers={"Content-Type": content_type})
    assert response.status_code == 202


# --- 6. X-Forwarded-For only from trusted proxies ---------------------------------------------------


@pytest.mark.parametrize(
    "trusted, peer, forwarded, recorded",
    [
        (None, "203.0.113.50", "198.51.100.1", "203.0.113.50"),  # no proxies configured: the peer
        ("10.0.0.0/8", "203.0.113.50", "198.51.100.1", "203.0.113.50"),  # the peer is not a proxy
        ("10.0.0.0/8", "10.0.0.2", "198.51.100.1", "198.51.100.1"),  # one proxy
        ("10.0.0.0/8", "10.0.0.2", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # a client-forged left hop
        ("10.0.0.0/8 192.168.0.0/16", "10.0.0.2", "198.51.100.1, 192.168.1.1", "198.51.100.1"),  # two proxies
        ("10.0.0.0/8", "10.0.0.2", "garbage", "10.0.0.2"),
        ("::1/128", "::1", "2001:db8::7", "2001:db8::7"),
    ],
)
def test_forwarded_for_counts_only_from_trusted_proxies(make_settings, trusted, peer, forwarded, recorded):
    settings = make_settings(**({"XMAS_TRUSTED_PROXIES": trusted} if trusted else {}))
    with TestClient(create_app(settings), client=(peer, 40000)) as client:
        assert client.post(SIGNUP_PATH, json=SIGNUP, headers={"X-Forwarded-For": forwarded}).status_code == 202
    assert rows(settings, inbound_events)[0].client_ip == recorded


def test_a_bad_trusted_proxy_setting_names_the_variable(make_settings):
    with pytest.raises(SettingsError, match="XMAS_TRUSTED_PROXIES.*not-a-network"):
        make_settings(XMAS_TRUSTED_PROXIES="10.0.0.0/8, not-a-network")


# --- 7. signatures: any good v1 entry verifies ------------------------------------------------------


def test_a_malformed_signature_entry_does_not_hide_a_good_one(client_for):
    secret = fresh_secret()
    client, settings = client_for(XMAS_WEBHOOK_SECRET=secret)
    body = json.dumps(SIGNUP).encode()
    good = signed_headers(secret, body)
    wrong = signed_headers(fresh_secret(), body)["webhook-signature"]
    noisy = f"nocomma v1,not*base64 v1,c2hvcnQ= v1a,{'A' * 88} {wrong} {good['webhook-signature']}"
    assert client.post(SIGNUP_PATH, content=body, headers={**good, "webhook-signature": noisy}).status_code == 202
    only_noise = client.post(SIGNUP_PATH, content=body, headers={**good, "webhook-signature": "nocomma v1,@@"})
    assert only_noise.status_code == 401
    assert len(rows(settings, inbound_events)) == 1


def test_resend_accepts_any_good_svix_signature(client_for):
    secret = fresh_secret()
    client, _ = client_for(RESEND_WEBHOOK_SECRET=secret)
    body = json.dumps({"type": "email.delivery_delayed", "data": {}}).encode()
    headers = signed_headers(secret, body, prefix="svix")
    headers["svix-signature"] = "v1,### " + headers["svix-signature"]
    assert client.post("/webhook/resend", content=body, headers=headers).json() == {"ignored": "email.delivery_delayed"}


def test_an_instant_accepted_at_the_door_is_accepted_by_enrollment(client_for):
    """The future-date window uses the campaign clock, the same one enrollment re-checks against."""
    client, settings = client_for()
    now = settings.clock.now()
    ahead = (now + dt.timedelta(hours=23)).isoformat()
    assert client.post(SIGNUP_PATH, json={**SIGNUP, "email_1_sent_at": ahead}).status_code == 202
    report = enroll_events(delivery_context(settings), [rows(settings, inbound_events)[0].id])
    assert report.failed == [] and len(report.enrolled) == 1
