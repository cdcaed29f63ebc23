"""Use case: turn queued signup events into a contact, one sequence, a consent record and email 1.

Every step is safe to repeat: the contact is keyed on the lower-cased email, the sequence on (email,
campaign), consent on (email, campaign) and email 1 on its ledger row, so a retried or replayed event
never creates a second sequence or sends twice.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field

import sqlalchemy as sa

from xmas_pipeline.campaign.clock import wall_now
from xmas_pipeline.campaign.models import SignupPayload
from xmas_pipeline.campaign.segments import classify
from xmas_pipeline.campaign.tokens import sequence_key
from xmas_pipeline.crm.base import ContactRecord, CRMSchemaError, SequenceRecord
from xmas_pipeline.delivery import DeliveryContext, DeliveryReport, deliver
from xmas_pipeline.store import inbound, ledger, mirror
from xmas_pipeline.store.ledger import Due
from xmas_pipeline.store.suppressions import record_consent
from xmas_pipeline.sync import sync_contacts

log = logging.getLogger(__name__)

CAMPAIGN_STATUS = "Nurture Sequence"
CONTACTS_FRESH_FOR = dt.timedelta(seconds=30)
NOT_BOOKED = "Not Booked"


class BadEvent(ValueError):
    """The event can never be enrolled as it is (it would fail the same way on every retry)."""


# Failures that would repeat identically on every retry: the event goes dead at once, with the reason.
NEVER_SUCCEEDS = (BadEvent, OverflowError)


@dataclass
class EnrollmentReport:
    enrolled: list[dict] = field(default_factory=list)  # new sequences
    repeats: list[str] = field(default_factory=list)  # signups of people already in the campaign
    failed: list[dict] = field(default_factory=list)
    delivery: DeliveryReport = field(default_factory=DeliveryReport)


def enroll_events(
    ctx: DeliveryContext, event_ids: list[int], max_attempts: int = inbound.DEFAULT_MAX_ATTEMPTS
) -> EnrollmentReport:
    """Enroll each event; an event that fails is retried later with backoff, then marked dead."""
    problems = ctx.crm.check_schema()
    if problems:
        raise CRMSchemaError(problems)  # before any write: fail fast, not halfway
    report = EnrollmentReport()
    # Contact lookups below come from the mirror: bring it up to date unless a run just did.
    sync_contacts(ctx.engine, ctx.crm, ctx.clock.now(), fresh_for=CONTACTS_FRESH_FOR)
    step_one: list[Due] = []
    for event in inbound.load(ctx.engine, event_ids):
        if event.status == "done":
            continue  # a stale dispatch already finished by another run
        try:
            due = enroll_one(ctx, event, report)
        except Exception as exc:  # noqa: BLE001 - any failure of one event must not sink the batch
            status = inbound.mark_failed(
                ctx.engine, event.id, f"{type(exc).__name__}: {exc}", wall_now(),
                max_attempts=1 if isinstance(exc, NEVER_SUCCEEDS) else max_attempts,
            )
            report.failed.append({"event_id": event.id, "email": event.email, "error": str(exc), "status": status})
            log.warning("event %s (%s) failed, now %s: %s", event.id, event.email, status, exc)
            continue
        if due is not None:
            step_one.append(due)
        inbound.mark_done(ctx.engine, event.id, wall_now())
    if step_one:
        report.delivery = deliver(ctx, step_one)
    return report


def enroll_one(ctx: DeliveryContext, event: sa.Row, report: EnrollmentReport) -> Due | None:
    try:
        # Judged against the time it arrived, as the intake judged it: the verdict never changes later.
        profile = SignupPayload.model_validate(json.loads(event.payload), context={"now": event.received_at})
    except ValueError as exc:  # a ValidationError, or stored JSON that does not parse
        raise BadEvent(f"payload cannot be enrolled: {exc}") from exc
    email = event.email.strip().lower()
    sent_elsewhere = profile.email_1_sent_at
    campaign = ctx.campaign
    now = ctx.clock.now()
    segment = classify(profile.red_systems, profile.orange_systems).value

    existing = mirror.get_contact(ctx.engine, email)
    contact = ContactRecord(
        email=email,
        first_name=profile.first_name,
        business_name=profile.business_name,
        segment=segment,
        assessment_score=profile.assessment_score,
        campaign_status=CAMPAIGN_STATUS if existing is None or existing.campaign_status in (None, "Signed Up") else existing.campaign_status,
        booking_status=(existing.booking_status if existing else None) or NOT_BOOKED,
        crm_id=existing.crm_id if existing else None,
    )
    # An event tried before may have reached the CRM without reaching the mirror: look before creating.
    retried = event.attempts > 0 or (event.dispatches or 0) > 1
    if existing is None or _differs(existing, contact):
        contact = ctx.crm.save_contact(contact, maybe_exists=retried)
        mirror.upsert_contacts(ctx.engine, [contact], now)

    key = sequence_key(email, campaign.name)
    current = mirror.get_sequence(ctx.engine, key)
    if current is not None:
        report.repeats.append(email)
        # A repeat never restarts the timetable; step 1 is only retried if it never went.
        return Due(key, 1, email, current["signup_at"]) if current["status"] == "active" else None

    anchor = sent_elsewhere or event.received_at
    record = SequenceRecord(
        sequence_key=key,
        email=email,
        campaign=campaign.name,
        first_name=profile.first_name,
        business_name=profile.business_name,
        segment=segment,
        assessment_score=profile.assessment_score,
        red_systems=profile.red_systems,
        orange_systems=profile.orange_systems,
        yellow_systems=profile.yellow_systems,
        green_systems=profile.green_systems,
        signup_at=anchor,
        steps_sent={1: sent_elsewhere} if sent_elsewhere else {},
    )
    record = ctx.crm.create_sequence(record, maybe_exists=retried)
    with ctx.engine.begin() as conn:
        mirror.insert_sequence(conn, record, profile.model_dump(mode="json"), now)
        record_consent(
            conn,
            email=email,
            campaign=campaign.name,
            source=f"assessment signup webhook (event {event.id})",
            consented_at=event.received_at,
            client_ip=event.client_ip,
            user_agent=event.user_agent,
            event_id=event.id,
        )
    report.enrolled.append({"email": email, "segment": segment, "sequence_key": key})
    if sent_elsewhere:
        ledger.record_external(ctx.engine, [(Due(key, 1, email, anchor), sent_elsewhere, "website")])
        return None
    return Due(key, 1, email, anchor)


def _differs(old: ContactRecord, new: ContactRecord) -> bool:
    fields = ("first_name", "business_name", "segment", "assessment_score", "campaign_status", "booking_status")
    return any(getattr(old, f) != getattr(new, f) for f in fields)
