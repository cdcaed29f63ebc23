"""The campaign funnel from known inputs: six leads enrolled for real, then an unsubscribe, a bounce, a
complaint and a booking through the intake, Resend engagement webhooks (one replayed), a delivery run;
the `campaign_funnel` materialization must show exactly what happened, per step and segment."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from xmas_pipeline.backends import delivery_context
from xmas_pipeline.campaign.tokens import sequence_key, unsubscribe_token
from xmas_pipeline.definitions import build_definitions
from xmas_pipeline.enrollment import enroll_events
from xmas_pipeline.orchestration.resources import XmasResource
from xmas_pipeline.settings import DEFAULT_CAMPAIGN_FILE
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.store.schema import deliveries, inbound_events, message_events
from xmas_pipeline.web.app import create_app
from xmas_pipeline_tests.test_delivery.helpers import signup
from xmas_pipeline_tests.test_journeys_end_to_end import CAL_SECRET, at, cal_body, signed
from xmas_pipeline_tests.test_web.test_intake import fresh_secret, signed_headers

JOURNEY = "Christmas 2026"
LEADS = {  # email -> (red, orange): CRITICAL, CRITICAL, URGENT, URGENT, OPTIMIZE, OPTIMIZE
    "crit.reader@example.com": (2, 0),
    "crit.complainer@example.com": (3, 0),
    "urg.reader@example.com": (1, 0),
    "urg.leaver@example.com": (0, 2),
    "opt.bouncer@example.com": (0, 0),
    "ada@example.com": (0, 1),  # the Cal.com fixture's attendee: books a call
}


def parse_md(md: str) -> list[dict[str, str]]:
    """A markdown table (as pandas writes it) back into rows."""
    lines = [line for line in md.splitlines() if line.startswith("|")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    return [dict(zip(header, [v.strip() for v in line.strip("|").split("|")])) for line in lines[2:]]


def provider_id(engine, email: str, step: int = 1) -> str:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(deliveries.c.provider_id).where(deliveries.c.email == email, deliveries.c.step == step)
        ).scalar_one()


@pytest.fixture
def world(make_settings):
    secret = fresh_secret()
    env = {"XMAS_CAMPAIGN_FILE": str(DEFAULT_CAMPAIGN_FILE), "RESEND_WEBHOOK_SECRET": secret, "XMAS_CAL_SECRET": CAL_SECRET}
    return secret, (lambda when: make_settings(XMAS_NOW=when.isoformat(), **env))


def test_funnel_counts_exactly_what_happened(world):
    secret, settings_at = world
    settings = settings_at(at(2026, 11, 5, 10, 0))
    engine = engine_for(settings.database_url)
    ids = [signup(settings, email, first_name="Lee", red_systems=red, orange_systems=orange)
           for email, (red, orange) in LEADS.items()]
    report = enroll_events(delivery_context(settings), ids)
    assert len(report.enrolled) == 6 and len(report.delivery.sent) == 6  # email 1, through the outbox

    later = settings_at(at(2026, 11, 5, 12, 0))
    with TestClient(create_app(later)) as client:
        def resend(kind: str, email: str, svix_id: str) -> dict:
            body = (f'{{"type": "email.{kind}", "created_at": "2026-11-05T17:00:00.000Z", '
                    f'"data": {{"email_id": "{provider_id(engine, email)}", "to": ["{email}"]}}}}').encode()
            answer = client.post("/webhook/resend", content=body, headers=signed_headers(secret, body, svix_id, prefix="svix"))
            assert answer.status_code == 200, answer.text
            return answer.json()

        token = unsubscribe_token(later.unsubscribe_secret, sequence_key("urg.leaver@example.com", JOURNEY))
        assert client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
        for email in ("crit.reader@example.com", "crit.complainer@example.com", "urg.reader@example.com", "ada@example.com"):
            assert resend("delivered", email, f"msg_delivered_{email}")["duplicate"] is False
        resend("complained", "crit.complainer@example.com", "msg_complaint")
        # Resend retries a webhook with the same svix-id: the replayed "delivered" must not undo the complaint.
        assert resend("delivered", "crit.complainer@example.com", "msg_delivered_crit.complainer@example.com")["duplicate"]
        body = b'{"type": "email.bounced", "data": {"email_id": "%s", "bounce": {"type": "Permanent"}}}' % (
            provider_id(engine, "opt.bouncer@example.com").encode())
        assert client.post("/webhook/resend", content=body,
                           headers=signed_headers(secret, body, "msg_bounce", prefix="svix")).json()["suppressed"] == [
            "opt.bouncer@example.com"]
        assert resend("opened", "crit.reader@example.com", "msg_open_1") == {
            "event": "opened", "recorded": True, "suppressed": [], "duplicate": False}
        assert resend("opened", "crit.reader@example.com", "msg_open_1")["duplicate"] is True  # replayed
        resend("opened", "crit.reader@example.com", "msg_open_2")  # opened again: still one message opened
        resend("opened", "urg.reader@example.com", "msg_open_3")
        resend("clicked", "ada@example.com", "msg_click_1")  # a click without an open (images blocked)
        booking = cal_body("BOOKING_CREATED", uid="book-1", start=at(2026, 11, 10, 15, 0))
        assert client.post("/webhook/cal", content=booking, headers=signed(booking)).status_code == 202
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(message_events)).scalar_one() == 10  # replays not stored
        booked = conn.execute(sa.select(inbound_events.c.id).where(inbound_events.c.kind == "booking_created")).scalars().all()
    enroll_events(delivery_context(later), booked)

    # Nov 7 11:00: email 2 is due for everyone; two leads may still get it.
    run_at = settings_at(at(2026, 11, 7, 11, 0))
    defs = build_definitions(run_at)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("daily_delivery_job").execute_in_process(
            partition_key="2026-11-07", instance=instance, resources={"xmas": XmasResource.from_settings(run_at)})
        assert result.success
        [funnel] = result.asset_materializations_for_node("campaign_funnel")
    meta = {k: v.value for k, v in funnel.metadata.items()}
    totals = {k: meta[k] for k in ("enrolled", "due", "sent", "delivered", "opened", "clicked", "skipped", "late",
                                   "failed", "unsubscribed", "bounced", "complained", "booked_call")}
    assert totals == {"enrolled": 6, "due": 12, "sent": 8, "delivered": 4, "opened": 3, "clicked": 1, "skipped": 4,
                      "late": 0, "failed": 0, "unsubscribed": 1, "bounced": 1, "complained": 1, "booked_call": 1}
    assert all(isinstance(v, int) for v in totals.values())  # plotted over time by Dagster
    assert "approximate" in meta["about_opens"] and "Apple Mail" in meta["about_opens"]

    rows = {(r["journey"], r["step"], r["segment"]): r for r in parse_md(meta["funnel"])}
    assert set(rows) == {(JOURNEY, f"email {n}", seg) for n in range(1, 8) for seg in ("CRITICAL", "URGENT", "OPTIMIZE")}
    numbers = lambda row: {k: int(v) for k, v in row.items() if k not in ("journey", "step", "segment")}  # noqa: E731
    zero = dict.fromkeys(["due", "sent", "delivered", "opened", "clicked", "skipped", "late", "failed",
                          "unsubscribed", "bounced", "complained", "booked call"], 0)
    assert numbers(rows[(JOURNEY, "email 1", "CRITICAL")]) == {
        **zero, "enrolled": 2, "due": 2, "sent": 2, "delivered": 2, "opened": 1, "complained": 1}
    assert numbers(rows[(JOURNEY, "email 1", "URGENT")]) == {
        **zero, "enrolled": 2, "due": 2, "sent": 2, "delivered": 1, "opened": 1, "unsubscribed": 1}
    assert numbers(rows[(JOURNEY, "email 1", "OPTIMIZE")]) == {
        **zero, "enrolled": 2, "due": 2, "sent": 2, "delivered": 1, "opened": 1, "clicked": 1, "bounced": 1,
        "booked call": 1}
    assert numbers(rows[(JOURNEY, "email 2", "CRITICAL")]) == {**zero, "enrolled": 2, "due": 2, "sent": 1, "skipped": 1}
    assert numbers(rows[(JOURNEY, "email 2", "URGENT")]) == {**zero, "enrolled": 2, "due": 2, "sent": 1, "skipped": 1}
    assert numbers(rows[(JOURNEY, "email 2", "OPTIMIZE")]) == {**zero, "enrolled": 2, "due": 2, "skipped": 2}
    assert numbers(rows[(JOURNEY, "email 3", "OPTIMIZE")]) == {**zero, "enrolled": 2}

    reasons = {(r["segment"], r["reason"]): int(r["skipped"]) for r in parse_md(meta["skipped_by_reason"])}
    assert reasons == {("CRITICAL", "suppressed: complained"): 1, ("URGENT", "suppressed: unsubscribed"): 1,
                       ("OPTIMIZE", "suppressed: bounced"): 1, ("OPTIMIZE", "sequence exited: booked a call"): 1}


def test_an_empty_campaign_has_a_funnel_of_zeros(world):
    _, settings_at = world
    run_at = settings_at(at(2026, 11, 7, 11, 0))
    with dg.instance_for_test() as instance:
        result = build_definitions(run_at).resolve_job_def("daily_delivery_job").execute_in_process(
            partition_key="2026-11-07", instance=instance, resources={"xmas": XmasResource.from_settings(run_at)})
    [funnel] = result.asset_materializations_for_node("campaign_funnel")
    assert funnel.metadata["enrolled"].value == 0 and funnel.metadata["sent"].value == 0
    assert funnel.metadata["funnel"].value == "_no lead enrolled yet_"


def test_a_re_signup_moves_the_lead_to_its_new_segment_in_the_funnel(world):
    """The ledger keeps a copy of the segment (so the funnel needs no join): a re-signup must update it."""
    from xmas_pipeline.store import funnel, inbound

    _, settings_at = world
    settings = settings_at(at(2026, 11, 5, 10, 0))
    engine = engine_for(settings.database_url)
    enroll_events(delivery_context(settings), [signup(settings, "mover@example.com", red_systems=0, orange_systems=0)])
    before = funnel.compute(engine, [JOURNEY], settings.clock.now()).steps
    assert set(before["segment"]) == {"OPTIMIZE"} and before["enrolled"].sum() == 7

    again = settings_at(at(2026, 11, 6, 10, 0))
    event = inbound.NewEvent(
        idempotency_key="mover@example.com|second", kind="signup", email="mover@example.com",
        payload={"email": "mover@example.com", "first_name": "Mo", "red_systems": 3, "orange_systems": 0},
        received_at=again.clock.now(), client_ip="203.0.113.9", user_agent="pytest",
    )
    enroll_events(delivery_context(again), [inbound.enqueue(engine, event).event_id])
    after = funnel.compute(engine, [JOURNEY], again.clock.now()).steps
    assert set(after["segment"]) == {"CRITICAL"} and after["enrolled"].sum() == 7
    with engine.connect() as conn:
        assert set(conn.execute(sa.select(deliveries.c.segment)).scalars()) == {"CRITICAL"}


def test_leads_without_a_segment_are_one_row_per_step(world):
    """A missing segment (NULL) and an empty one are the same "" row, not two rows with the same keys."""
    from xmas_pipeline.store import funnel

    _, settings_at = world
    settings = settings_at(at(2026, 11, 5, 10, 0))
    engine = engine_for(settings.database_url)
    ctx = delivery_context(settings)
    enroll_events(ctx, [signup(settings, "blank@example.com"), signup(settings, "null@example.com")])
    with engine.begin() as conn:
        conn.execute(deliveries.update().where(deliveries.c.email == "blank@example.com").values(segment=""))
        conn.execute(deliveries.update().where(deliveries.c.email == "null@example.com").values(segment=None))
    steps = funnel.compute(engine, [JOURNEY], settings.clock.now()).steps
    assert list(steps["segment"]) == [""] * 7 and list(steps["step"]) == list(range(1, 8))
    assert list(steps["enrolled"]) == [2] * 7 and list(steps["sent"]) == [2] + [0] * 6


def test_the_funnel_reads_its_covering_index_in_group_order(make_settings):
    """At a million leads the per-step counts must stream ix_deliveries_funnel, not sort the ledger."""
    from xmas_pipeline.store import funnel

    settings = make_settings()
    engine = engine_for(settings.database_url)
    if engine.dialect.name != "sqlite":
        pytest.skip("the plan is checked on SQLite; Postgres picks its plan by table statistics")
    captured: list[tuple[str, tuple]] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda conn, cursor, statement, params, *rest: captured.append((statement, params)))
    funnel.compute(engine, [JOURNEY], dt.datetime(2026, 11, 5, tzinfo=dt.timezone.utc))
    statement, params = next((s, p) for s, p in captured if "count(*) AS enrolled" in s)
    with engine.connect() as conn:
        rows = conn.connection.driver_connection.execute("EXPLAIN QUERY PLAN " + statement, params).fetchall()
    plan = " | ".join(row[-1] for row in rows)
    assert "COVERING INDEX ix_deliveries_funnel" in plan and "TEMP B-TREE" not in plan, plan
