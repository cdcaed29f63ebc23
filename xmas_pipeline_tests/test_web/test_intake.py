"""The intake app as the website, mail clients and Resend see it: status codes, bodies and what lands in the database."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from xmas_pipeline.campaign.tokens import sequence_key, unsubscribe_token
from xmas_pipeline.settings import Settings
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.store.schema import deliveries, inbound_events, sequences, suppressions
from xmas_pipeline.web.app import MAX_BODY, SIGNUP_PATH, create_app

SIGNUP = {
    "email": "Sarah.Lee@Example.COM",
    "first_name": "Sarah",
    "business_name": "Lee Bakery",
    "assessment_score": 38,
    "red_systems": 3,
    "orange_systems": 2,
    "yellow_systems": 2,
    "green_systems": 1,
    "gps_score": 4.5,
    "money_score": 3,
    "weakest_system_1": "Cash flow",
    "weakest_system_2": "Hiring",
    "revenue_leak_total": 125000,
    "email_1_sent_at": "2026-11-05T14:59:00Z",
}


JSON = {"Content-Type": "application/json"}


def fresh_secret() -> str:
    """A throwaway Standard Webhooks secret, made fresh for each run."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def signed_headers(
    secret: str, body: bytes, msg_id: str = "msg_1", at: dt.datetime | None = None, prefix: str = "webhook"
) -> dict[str, str]:
    """Standard Webhooks headers (``prefix="svix"`` for Resend's names) signing ``body`` at ``at``, and its JSON type."""
    at = at or dt.datetime.now(dt.timezone.utc)
    signature = Webhook(secret).sign(msg_id, at, body.decode())
    return {
        **JSON,
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(int(at.timestamp())),
        f"{prefix}-signature": signature,
    }


def rows(settings: Settings, table: sa.Table) -> list[sa.Row]:
    with engine_for(settings.database_url).connect() as conn:
        return list(conn.execute(sa.select(table)))


@pytest.fixture
def client_for(make_settings):
    """A started TestClient (lifespan running, so the writer thread is up) for given settings overrides."""
    clients = []

    def make(**overrides: str) -> tuple[TestClient, Settings]:
        settings = make_settings(**overrides)
        client = TestClient(create_app(settings), follow_redirects=False)
        client.__enter__()
        clients.append(client)
        return client, settings

    yield make
    for client in clients:
        client.__exit__(None, None, None)


# --- signup webhook ---------------------------------------------------------------------------


def test_signup_is_stored_and_answered_202(client_for):
    client, settings = client_for()
    body = {**SIGNUP, "utm_source": "newsletter", "quiz": {"answers": [1, 2, 3]}}
    response = client.post(
        SIGNUP_PATH,
        content=json.dumps(body),
        headers={**JSON, "User-Agent": "site/1.0", "X-Forwarded-For": "203.0.113.7, 10.0.0.1"},
    )
    assert response.status_code == 202
    event_id = response.json()["event_id"]
    assert response.json() == {"event_id": event_id, "duplicate": False}

    [row] = rows(settings, inbound_events)
    assert row.id == event_id and row.status == "pending" and row.kind == "signup"
    assert row.email == "sarah.lee@example.com"
    assert row.idempotency_key == f"sarah.lee@example.com|{settings.journeys().home.name}"
    assert row.client_ip == "testclient"  # the peer: X-Forwarded-For counts only from trusted proxies
    assert row.user_agent == "site/1.0"
    assert row.received_at == settings.clock.now()  # the injected (pinned) clock
    stored = json.loads(row.payload)
    # the object as received, unknown fields kept, email lower-cased
    assert stored == {**body, "email": "sarah.lee@example.com"}


def test_peer_address_is_recorded_without_a_proxy(client_for):
    client, settings = client_for()
    assert client.post(SIGNUP_PATH, json=SIGNUP).status_code == 202
    assert rows(settings, inbound_events)[0].client_ip == "testclient"


def test_duplicate_by_email_and_campaign(client_for):
    client, settings = client_for()
    first = client.post(SIGNUP_PATH, json=SIGNUP).json()
    again = client.post(SIGNUP_PATH, json={**SIGNUP, "email": "SARAH.LEE@example.com", "first_name": "S"})
    assert again.status_code == 202
    assert again.json() == {"event_id": first["event_id"], "duplicate": True}
    assert len(rows(settings, inbound_events)) == 1


def test_duplicate_by_idempotency_key_header(client_for):
    client, settings = client_for()
    first = client.post(SIGNUP_PATH, json=SIGNUP, headers={"Idempotency-Key": "site-42"}).json()
    again = client.post(SIGNUP_PATH, json=SIGNUP, headers={"Idempotency-Key": "site-42"})
    assert again.status_code == 202 and again.json() == {"event_id": first["event_id"], "duplicate": True}
    [row] = rows(settings, inbound_events)
    assert row.idempotency_key == "idem:sarah.lee@example.com|site-42"


def test_invalid_fields_are_all_named_and_nothing_is_written(client_for):
    client, settings = client_for()
    body = {**SIGNUP, "email": "not-an-email", "red_systems": 9, "first_name": "   "}
    body["email_1_sent_at"] = "2026-11-05T09:00:00"  # naive: no offset
    response = client.post(SIGNUP_PATH, json=body)
    assert response.status_code == 422
    bad = {tuple(item["loc"]) for item in response.json()["detail"]}
    assert bad == {("body", "email"), ("body", "red_systems"), ("body", "first_name"), ("body", "email_1_sent_at")}
    assert all(item["msg"] for item in response.json()["detail"])
    assert rows(settings, inbound_events) == []


def test_missing_fields_and_bad_json_are_422(client_for):
    client, settings = client_for()
    missing = client.post(SIGNUP_PATH, json={"business_name": "x"})
    assert missing.status_code == 422
    assert {tuple(i["loc"]) for i in missing.json()["detail"]} == {("body", "email"), ("body", "first_name")}
    broken = client.post(SIGNUP_PATH, content=b'{"email": ', headers=JSON)
    assert broken.status_code == 422 and broken.json()["detail"][0]["type"] == "json_invalid"
    assert client.post(SIGNUP_PATH, json=[SIGNUP]).status_code == 422
    assert rows(settings, inbound_events) == []


def test_body_over_64_kib_is_413(client_for):
    client, settings = client_for()
    big = json.dumps({**SIGNUP, "notes": "x" * MAX_BODY}).encode()
    assert client.post(SIGNUP_PATH, content=big, headers=JSON).status_code == 413

    def chunks():  # no Content-Length: the limit must hold on the bytes actually read
        yield big[: MAX_BODY // 2]
        yield big[MAX_BODY // 2 :]

    assert client.post(SIGNUP_PATH, content=chunks(), headers=JSON).status_code == 413
    assert rows(settings, inbound_events) == []


def test_the_documented_route_behaves_like_the_fast_path(make_settings):
    settings = make_settings()
    app = create_app(settings)
    app.signup_endpoint = None  # force the normal FastAPI middleware and routing
    with TestClient(app) as client:
        assert client.post(SIGNUP_PATH, json=SIGNUP).json() == {"event_id": 1, "duplicate": False}
        assert client.post(SIGNUP_PATH, json={**SIGNUP, "red_systems": 9}).status_code == 422
    assert len(rows(settings, inbound_events)) == 1


def test_concurrent_signups_share_commits(make_settings):
    settings = make_settings()
    app = create_app(settings)

    async def burst() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
                return await asyncio.gather(
                    *[client.post(SIGNUP_PATH, json={**SIGNUP, "email": f"lead{i}@example.com"}) for i in range(50)]
                )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [202] * 50
    ids = {r.json()["event_id"] for r in responses}
    assert ids == {row.id for row in rows(settings, inbound_events)} and len(ids) == 50
    assert app.state.writer.batches < 50  # group commit: requests that arrived together shared a transaction


# --- signatures -----------------------------------------------------------------------------


def test_signed_signup_is_accepted(client_for):
    secret = fresh_secret()
    client, settings = client_for(XMAS_WEBHOOK_SECRET=secret)
    body = json.dumps(SIGNUP).encode()
    response = client.post(SIGNUP_PATH, content=body, headers=signed_headers(secret, body))
    assert response.status_code == 202
    assert len(rows(settings, inbound_events)) == 1


def test_rotated_secrets_both_verify(client_for):
    old, new = fresh_secret(), fresh_secret()
    client, _ = client_for(XMAS_WEBHOOK_SECRET=f"{new} {old}")
    body = json.dumps(SIGNUP).encode()
    assert client.post(SIGNUP_PATH, content=body, headers=signed_headers(old, body)).status_code == 202


@pytest.mark.parametrize("case", ["unsigned", "wrong secret", "tampered body", "old timestamp", "garbage signature"])
def test_bad_signatures_are_401_and_nothing_is_written(client_for, case):
    secret = fresh_secret()
    client, settings = client_for(XMAS_WEBHOOK_SECRET=secret)
    body = json.dumps(SIGNUP).encode()
    headers = {
        "unsigned": JSON,
        "wrong secret": signed_headers(fresh_secret(), body),
        "tampered body": signed_headers(secret, body.replace(b"Sarah", b"Mallory")),
        "old timestamp": signed_headers(secret, body, at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=6)),
        "garbage signature": {**signed_headers(secret, body), "webhook-signature": "nocomma"},
    }[case]
    response = client.post(SIGNUP_PATH, content=body, headers=headers)
    assert response.status_code == 401
    assert "signature" in response.json()["error"]
    assert rows(settings, inbound_events) == []


# --- health and docs ------------------------------------------------------------------------


def test_healthz_reports_queue_depth(client_for):
    client, _ = client_for()
    client.post(SIGNUP_PATH, json=SIGNUP)
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "writer": "ok", "queue": {"pending": 1}}


def test_healthz_is_503_when_the_database_is_unreachable(make_settings, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the database directory should be")
    settings = make_settings(XMAS_DATABASE_URL=f"sqlite:///{blocker}/xmas.db")
    with TestClient(create_app(settings)) as client:
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json() == {"status": "degraded", "database": "unavailable", "writer": "ok", "queue": {}}
        assert "not-a-dir" not in response.text  # no paths, hosts or ports for whoever asks
        assert client.post(SIGNUP_PATH, json=SIGNUP).status_code == 503


def test_docs_and_openapi_show_the_signup_schema(client_for):
    client, _ = client_for()
    assert client.get("/docs").status_code == 200
    operation = client.get("/openapi.json").json()["paths"][SIGNUP_PATH]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["title"] == "SignupPayload"
    assert {"email", "first_name"} <= set(schema["required"])
    assert {"red_systems", "email_1_sent_at", "revenue_leak_total"} <= set(schema["properties"])


# --- unsubscribe ----------------------------------------------------------------------------

ACTIVE_EMAIL = "sarah.lee@example.com"


def add_sequence(settings: Settings, email: str = ACTIVE_EMAIL) -> str:
    """An active sequence row as enrollment would leave it; returns its unsubscribe token."""
    campaign = settings.journeys().home.name
    key = sequence_key(email, campaign)
    now = settings.clock.now()
    with engine_for(settings.database_url).begin() as conn:
        conn.execute(
            sequences.insert().values(
                sequence_key=key, email=email, campaign=campaign, first_name="Sarah", segment="CRITICAL",
                signup_at=now, status="active", updated_at=now,
            )
        )  # fmt: skip
    return unsubscribe_token(settings.unsubscribe_secret, key)


def test_unsubscribe_get_shows_a_page_and_changes_nothing(client_for):
    client, settings = client_for()
    token = add_sequence(settings)
    response = client.get(f"/u/{token}")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "Confirm unsubscribe" in response.text and 'method="post"' in response.text
    assert rows(settings, suppressions) == []
    assert rows(settings, sequences)[0].status == "active"


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_unsubscribe(client_for, encoding):
    client, settings = client_for()
    token = add_sequence(settings)
    if encoding == "urlencoded":
        response = client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
    else:
        response = client.post(f"/u/{token}", files={"List-Unsubscribe": (None, "One-Click")})
        assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert response.status_code == 200 and "location" not in response.headers
    assert len(response.content) < 1000
    [row] = rows(settings, suppressions)
    assert (row.email, row.reason, row.source) == (ACTIVE_EMAIL, "unsubscribed", "one-click")
    [seq] = rows(settings, sequences)
    assert (seq.status, seq.exit_reason) == ("exited", "unsubscribed")
    # a second click (mail clients retry) is still a 200
    assert client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert len(rows(settings, suppressions)) == 1


def test_unsubscribe_from_the_page(client_for):
    client, settings = client_for()
    token = add_sequence(settings)
    assert client.post(f"/u/{token}", data={"confirm": "yes"}).status_code == 200
    assert rows(settings, suppressions)[0].source == "unsubscribe page"


def test_bad_tokens_are_404_alike(client_for):
    client, settings = client_for()
    token = add_sequence(settings)
    key, _, _ = token.partition(".")
    unknown = unsubscribe_token(settings.unsubscribe_secret, "0" * 32)  # well signed, no such sequence
    forged = unsubscribe_token("another-secret", key)
    answers = set()
    for bad in ["nonsense", forged, unknown, key]:
        for method in ("GET", "POST"):
            form = {"List-Unsubscribe": "One-Click"} if method == "POST" else None
            response = client.request(method, f"/u/{bad}", data=form)
            assert response.status_code == 404
            answers.add(response.content)
    assert len(answers) == 1 and len(answers.pop()) < 20
    assert rows(settings, suppressions) == []


# --- Resend webhooks ------------------------------------------------------------------------


def add_delivery(settings: Settings, provider_id: str = "re_abc123") -> None:
    add_sequence(settings)
    key = sequence_key(ACTIVE_EMAIL, settings.journeys().home.name)
    with engine_for(settings.database_url).begin() as conn:
        conn.execute(
            deliveries.insert().values(
                sequence_key=key, step=1, email=ACTIVE_EMAIL, idempotency_key=f"xmas-{key}-s1", status="sent",
                provider="resend", provider_id=provider_id, sent_at=settings.clock.now(), attempts=1, crm_synced=True,
            )
        )  # fmt: skip


def resend_event(kind: str, bounce_type: str | None = None) -> bytes:
    data = {"email_id": "re_abc123", "to": [ACTIVE_EMAIL], "from": "sarah@businessx.example.com", "subject": "Hi"}
    if bounce_type is not None:
        data["bounce"] = {"type": bounce_type, "subType": "General", "message": "mailbox does not exist"}
    return json.dumps({"type": kind, "created_at": "2026-11-05T15:00:00.000Z", "data": data}).encode()


def test_resend_hard_bounce_suppresses_and_records(client_for):
    secret = fresh_secret()
    client, settings = client_for(RESEND_WEBHOOK_SECRET=secret)
    add_delivery(settings)
    body = resend_event("email.bounced", "Permanent")
    response = client.post("/webhook/resend", content=body, headers=signed_headers(secret, body, prefix="svix"))
    assert response.status_code == 200
    [row] = rows(settings, suppressions)
    assert (row.email, row.reason, row.source) == (ACTIVE_EMAIL, "bounced", "resend")
    [delivery] = rows(settings, deliveries)
    assert delivery.event == "bounced" and delivery.event_at == settings.clock.now()
    assert rows(settings, sequences)[0].status == "exited"


def test_resend_soft_bounce_delivered_and_complaint(client_for):
    secret = fresh_secret()
    client, settings = client_for(RESEND_WEBHOOK_SECRET=secret)
    add_delivery(settings)

    def post(body: bytes):
        return client.post("/webhook/resend", content=body, headers=signed_headers(secret, body, prefix="svix"))

    assert post(resend_event("email.delivered")).status_code == 200
    assert rows(settings, deliveries)[0].event == "delivered"
    assert post(resend_event("email.bounced", "Transient")).status_code == 200
    assert rows(settings, suppressions) == []  # a soft bounce is recorded, not suppressed
    opened = post(resend_event("email.opened")).json()
    assert opened == {"event": "opened", "recorded": True, "suppressed": [], "duplicate": False}
    assert rows(settings, deliveries)[0].event == "soft_bounced"  # an open is engagement, not a delivery outcome
    assert post(resend_event("email.delivery_delayed")).json() == {"ignored": "email.delivery_delayed"}
    assert post(resend_event("email.complained")).status_code == 200
    assert rows(settings, suppressions)[0].reason == "complained"
    assert rows(settings, deliveries)[0].event == "complained"


def test_resend_bad_signature_is_401(client_for):
    secret = fresh_secret()
    client, settings = client_for(RESEND_WEBHOOK_SECRET=secret)
    add_delivery(settings)
    body = resend_event("email.bounced", "Permanent")
    forged = signed_headers(fresh_secret(), body, prefix="svix")
    assert client.post("/webhook/resend", content=body, headers=forged).status_code == 401
    assert client.post("/webhook/resend", content=body, headers=JSON).status_code == 401
    assert rows(settings, suppressions) == [] and rows(settings, deliveries)[0].event is None


def test_resend_without_a_secret_is_503(client_for):
    client, settings = client_for()
    add_delivery(settings)
    body = resend_event("email.bounced", "Permanent")
    response = client.post("/webhook/resend", content=body, headers=signed_headers(fresh_secret(), body, prefix="svix"))
    assert response.status_code == 503 and response.json() == {"error": "RESEND_WEBHOOK_SECRET not configured"}
    assert rows(settings, suppressions) == []
