"""Use case: turn queued events into contacts, sequences, exits and first emails.

A signup enrolls the lead in every signup journey (the nurture): contact, one sequence, a consent
record and email 1. A booking ends the journeys that stop on a booked call and starts the reminders; a
reschedule moves them; a cancellation stops them; a no-show, a "maybe" call outcome and a payment each
start their journey. A contact the CRM does not know yet is created from the event.

Every step is safe to repeat: the contact is keyed on the lower-cased email, a sequence on (email,
journey), consent on (email, journey) and each email on its ledger row, so a retried or replayed event
never creates a second sequence or sends twice.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Callable

import sqlalchemy as sa
from pydantic import BaseModel, TypeAdapter

from xmas_pipeline.campaign.clock import wall_now
from xmas_pipeline.campaign.journey import ExitReason, Journey, Trigger
from xmas_pipeline.campaign.models import BookingEvent, JourneyEventBody, Payment, SignupPayload
from xmas_pipeline.campaign.names import display_first_name
from xmas_pipeline.campaign.segments import classify
from xmas_pipeline.campaign.tokens import sequence_key
from xmas_pipeline.campaign.records import SEQUENCE_TYPE_OF_TRIGGER
from xmas_pipeline.crm.base import ContactRecord, CRMSchemaError, SequenceRecord
from xmas_pipeline.delivery import DeliveryContext, DeliveryReport, deliver, sync_crm
from xmas_pipeline.planning import plan_rows, replan_rows
from xmas_pipeline.store import inbound, ledger, mirror
from xmas_pipeline.store.ledger import Due
from xmas_pipeline.store.suppressions import record_consent
from xmas_pipeline.sync import sync_contacts

log = logging.getLogger(__name__)

CAMPAIGN_STATUS = "Nurture Sequence"
PRE_CALL_STATUS = "Pre-Call Prep"
CONTACTS_FRESH_FOR = dt.timedelta(seconds=30)
NOT_BOOKED, BOOKED, NO_SHOW = "Not Booked", "Booked", "No-Show"
EVENT_BODY = TypeAdapter(JourneyEventBody)


class BadEvent(ValueError):
    """The event can never be processed as it is (it would fail the same way on every retry)."""


# Failures that would repeat identically on every retry: the event goes dead at once, with the reason.
NEVER_SUCCEEDS = (BadEvent, OverflowError)


# Failures that would repeat identically on every retry: the event goes dead at once, with the reason.
NEVER_SUCCEEDS = (BadEvent, OverflowError)


@dataclass
class EnrollmentReport:
    enrolled: list[dict] = field(default_factory=list)  # new sequences
    repeats: list[str] = field(default_factory=list)  # signups of people already in the journey
    exited: list[dict] = field(default_factory=list)  # sequences an event ended
    moved: list[dict] = field(default_factory=list)  # sequences a reschedule re-planned
    ignored: list[dict] = field(default_factory=list)  # events that changed nothing, and why
    failed: list[dict] = field(default_factory=list)
    delivery: DeliveryReport = field(default_factory=DeliveryReport)


def enroll_events(
    ctx: DeliveryContext, event_ids: list[int], max_attempts: int = inbound.DEFAULT_MAX_ATTEMPTS
) -> EnrollmentReport:
    """Process each event; one that fails is retried later with backoff, then marked dead."""
    problems = ctx.crm.check_schema()
    if problems:
        raise CRMSchemaError(problems)  # before any write: fail fast, not halfway
    report = EnrollmentReport()
    # Contact lookups below come from the mirror: bring it up to date unless a run just did.
    sync_contacts(ctx.engine, ctx.crm, ctx.clock.now(), fresh_for=CONTACTS_FRESH_FOR)
    first_steps: list[Due] = []
    for event in inbound.load(ctx.engine, event_ids):
        if event.status in ("done", "dead"):
            continue  # a stale dispatch already finished by another run
        try:
            handler = HANDLERS.get(event.kind)
            if handler is None:
                raise BadEvent(f"unknown event kind {event.kind!r}")
            first_steps.extend(handler(ctx, event, report))
        except Exception as exc:  # noqa: BLE001 - any failure of one event must not sink the batch
            status = inbound.mark_failed(
                ctx.engine, event.id, f"{type(exc).__name__}: {exc}", wall_now(),
                max_attempts=1 if isinstance(exc, NEVER_SUCCEEDS) else max_attempts,
            )
            report.failed.append({"event_id": event.id, "email": event.email, "error": str(exc), "status": status})
            log.warning("event %s (%s) failed, now %s: %s", event.id, event.email, status, exc)
            continue
        inbound.mark_done(ctx.engine, event.id, wall_now())
    if first_steps:
        report.delivery = deliver(ctx, first_steps)
    elif report.exited or report.moved:
        report.delivery.crm_errors.extend(sync_crm(ctx))  # stops reach the CRM now, not at the next tick
    return report


def _payload(event: sa.Row, model: type[BaseModel] | TypeAdapter):
    # Judged against the time it arrived, as the intake judged it: the verdict never changes later.
    context = {"now": event.received_at}
    try:
        data = json.loads(event.payload)
        if isinstance(model, TypeAdapter):
            return model.validate_python(data, context=context)
        return model.model_validate(data, context=context)
    except ValueError as exc:  # a ValidationError, or stored JSON that does not parse
        raise BadEvent(f"payload cannot be processed: {exc}") from exc


def _retried(event: sa.Row) -> bool:
    # An event tried before may have reached the CRM without reaching the mirror: look before creating.
    return event.attempts > 0 or (event.dispatches or 0) > 1


# --- contacts and sequences ---------------------------------------------------------------------


def _save_contact(ctx: DeliveryContext, event: sa.Row, email: str, *, name_if_unknown: str | None = None,
                  **changes) -> ContactRecord:
    """The contact with ``changes`` applied, created from the event when the CRM does not know it yet."""
    existing = mirror.get_contact(ctx.engine, email)
    base = existing or ContactRecord(email=email, first_name="", booking_status=NOT_BOOKED)
    if name_if_unknown and not base.first_name:
        changes.setdefault("first_name", name_if_unknown)
    contact = base.model_copy(update=changes)
    if existing is None or _differs(existing, contact):
        contact = ctx.crm.save_contact(contact, maybe_exists=_retried(event))
        mirror.upsert_contacts(ctx.engine, [contact], ctx.clock.now())
    return contact


def _differs(old: ContactRecord, new: ContactRecord) -> bool:
    fields = ("first_name", "business_name", "segment", "assessment_score", "campaign_status", "booking_status",
              "call_date")
    return any(getattr(old, f) != getattr(new, f) for f in fields)


def _start(
    ctx: DeliveryContext,
    event: sa.Row,
    journey: Journey,
    contact: ContactRecord,
    report: EnrollmentReport,
    *,
    trigger_at: dt.datetime,
    profile: dict,
    consent: tuple[str, str],
    segment: str = "",
    scores: dict | None = None,
    event_at: dt.datetime | None = None,
    timezone: str | None = None,
    booking_uid: str | None = None,
    sent_elsewhere: dt.datetime | None = None,
) -> Due | None:
    """Start ``journey`` for the contact: CRM sequence, mirror row, planned steps, consent. Step 1 if owed now."""
    email = contact.email
    key = sequence_key(email, journey.name)
    now = ctx.clock.now()
    record = SequenceRecord(
        sequence_key=key, email=email, campaign=journey.name, first_name=contact.first_name,
        business_name=contact.business_name, segment=segment, signup_at=trigger_at, timezone=timezone,
        event_at=event_at, booking_uid=booking_uid, steps_sent={1: sent_elsewhere} if sent_elsewhere else {},
        sequence_type=SEQUENCE_TYPE_OF_TRIGGER[journey.trigger.value],
        **(scores or {}),
    )
    record = ctx.crm.create_sequence(record, maybe_exists=_retried(event))
    kind, source = consent
    with ctx.engine.begin() as conn:
        mirror.insert_sequence(conn, record, profile, now, event_id=event.id)
        plan_rows(conn, journey, sequence_key=key, email=email, trigger_at=trigger_at, event_at=event_at,
                  recipient_tz=timezone, day_seconds=ctx.clock.day_seconds, now=now, event_id=event.id)
        record_consent(conn, email=email, campaign=journey.name, source=source, consented_at=event.received_at,
                       client_ip=event.client_ip, user_agent=event.user_agent, event_id=event.id, kind=kind)
    report.enrolled.append({"email": email, "journey": journey.name, "segment": segment, "sequence_key": key})
    if sent_elsewhere:
        ledger.record_external(ctx.engine, [(journey.name, key, 1, trigger_at, sent_elsewhere, "website")])
        return None
    return ledger.step_one(ctx.engine, key)


def _restart(ctx: DeliveryContext, event: sa.Row, journey: Journey, current, report: EnrollmentReport,
             **changes) -> Due | None:
    """A sequence that ended (e.g. a cancelled call) starts again for a new trigger: active, steps re-planned."""
    now = ctx.clock.now()
    key = current["sequence_key"]
    with ctx.engine.begin() as conn:
        mirror.update_sequence(conn, key, now, status="active", exit_reason=None, exit_synced=None,
                               event_id=event.id, **changes)
        replan_rows(conn, journey, sequence_key=key, trigger_at=changes.get("signup_at", current["signup_at"]),
                    event_at=changes.get("event_at", current["event_at"]),
                    recipient_tz=changes.get("timezone", current["timezone"]), day_seconds=ctx.clock.day_seconds,
                    reset=True, event_id=event.id)
    report.enrolled.append({"email": current["email"], "journey": journey.name, "segment": current["segment"],
                            "sequence_key": key, "restarted": True})
    return ledger.step_one(ctx.engine, key)


def _exit(ctx: DeliveryContext, email: str, reason: ExitReason, report: EnrollmentReport, *, words: str | None = None,
          only: Callable[[dict], bool] = lambda seq: True) -> None:
    """End the contact's active sequences whose journey stops on ``reason``."""
    keys = []
    for seq in mirror.sequences_for_email(ctx.engine, email):
        journey = ctx.journeys.by_name.get(seq["campaign"])
        if seq["status"] == "active" and journey is not None and reason in journey.exits and only(seq):
            keys.append(seq["sequence_key"])
            report.exited.append({"email": email, "journey": journey.name, "reason": words or reason.words})
    if keys:
        mirror.set_status(ctx.engine, keys, "exited", words or reason.words, ctx.clock.now())


# --- the events -----------------------------------------------------------------------------------


def on_signup(ctx: DeliveryContext, event: sa.Row, report: EnrollmentReport) -> list[Due]:
    profile = _payload(event, SignupPayload)
    email = event.email.strip().lower()
    segment = classify(profile.red_systems, profile.orange_systems).value
    existing = mirror.get_contact(ctx.engine, email)
    contact = _save_contact(
        ctx, event, email,
        first_name=profile.first_name,
        business_name=profile.business_name,
        segment=segment,
        assessment_score=profile.assessment_score,
        campaign_status=CAMPAIGN_STATUS if existing is None or existing.campaign_status in (None, "Signed Up")
        else existing.campaign_status,
        booking_status=(existing.booking_status if existing else None) or NOT_BOOKED,
    )
    scores = {k: getattr(profile, k) for k in ("assessment_score", "red_systems", "orange_systems",
                                              "yellow_systems", "green_systems")}
    stored = profile.model_dump(mode="json")
    out = []
    for journey in ctx.journeys.triggered_by(Trigger.SIGNUP):
        key = sequence_key(email, journey.name)
        current = mirror.get_sequence(ctx.engine, key)
        if current is not None:
            # A re-signup updates what the next emails say (answers, segment) and records the consent;
            # the timetable stays, and step 1 is only retried if it never went.
            report.repeats.append(email)
            with ctx.engine.begin() as conn:
                mirror.update_sequence(conn, key, ctx.clock.now(), segment=segment, profile=json.dumps(stored),
                                       first_name=profile.first_name, business_name=profile.business_name, **scores)
                record_consent(conn, email=email, campaign=journey.name, source=f"repeat signup (event {event.id})",
                               consented_at=event.received_at, client_ip=event.client_ip,
                               user_agent=event.user_agent, event_id=event.id)
            if current["planned_at"] is None:
                with ctx.engine.begin() as conn:
                    plan_rows(conn, journey, sequence_key=key, email=email, trigger_at=current["signup_at"],
                              event_at=current["event_at"], recipient_tz=current["timezone"],
                              day_seconds=ctx.clock.day_seconds, now=ctx.clock.now(),
                              event_id=current["event_id"] or event.id)
            if current["status"] == "active" and (due := ledger.step_one(ctx.engine, key)) is not None:
                out.append(due)
            continue
        due = _start(
            ctx, event, journey, contact, report,
            trigger_at=profile.email_1_sent_at or event.received_at,
            profile=stored, segment=segment, scores=scores, timezone=profile.timezone,
            consent=("express", f"assessment signup webhook (event {event.id})"),
            sent_elsewhere=profile.email_1_sent_at,
        )
        if due is not None:
            out.append(due)
    return out


def _booking(ctx: DeliveryContext, event: sa.Row) -> tuple[BookingEvent, str]:
    booking = _payload(event, BookingEvent)
    return booking, booking.email.strip().lower()


def _reminder_journeys(ctx: DeliveryContext) -> list[Journey]:
    return ctx.journeys.triggered_by(Trigger.BOOKING_CREATED)


def on_booking_created(ctx: DeliveryContext, event: sa.Row, report: EnrollmentReport) -> list[Due]:
    booking, email = _booking(ctx, event)
    contact = _save_contact(ctx, event, email, name_if_unknown=display_first_name(_first_word(booking.name)),
                            booking_status=BOOKED, call_date=booking.event_at, campaign_status=PRE_CALL_STATUS)
    _exit(ctx, email, ExitReason.BOOKED_CALL, report)
    out = []
    for journey in _reminder_journeys(ctx):
        current = mirror.get_sequence(ctx.engine, sequence_key(email, journey.name))
        changes = dict(signup_at=event.received_at, event_at=booking.event_at, booking_uid=booking.booking_uid,
                       timezone=booking.attendee_timezone)
        if current is not None:
            due = _restart(ctx, event, journey, current, report, **changes)
        else:
            due = _start(ctx, event, journey, contact, report, trigger_at=event.received_at,
                         event_at=booking.event_at, timezone=booking.attendee_timezone,
                         booking_uid=booking.booking_uid, profile={"first_name": contact.first_name},
                         consent=("implied", f"Cal.com booking {booking.booking_uid} (event {event.id})"))
        if due is not None:
            out.append(due)
    return out


def on_booking_rescheduled(ctx: DeliveryContext, event: sa.Row, report: EnrollmentReport) -> list[Due]:
    booking, email = _booking(ctx, event)
    _save_contact(ctx, event, email, booking_status=BOOKED, call_date=booking.event_at)
    uids = {booking.booking_uid, booking.previous_booking_uid} - {None}
    moved = False
    for journey in _reminder_journeys(ctx):
        current = mirror.get_sequence(ctx.engine, sequence_key(email, journey.name))
        if current is None or (current["booking_uid"] and current["booking_uid"] not in uids):
            continue
        changes = dict(event_at=booking.event_at, booking_uid=booking.booking_uid)
        with ctx.engine.begin() as conn:
            mirror.update_sequence(conn, current["sequence_key"], ctx.clock.now(), **changes)
            count = replan_rows(conn, journey, sequence_key=current["sequence_key"], trigger_at=event.received_at,
                                event_at=booking.event_at, recipient_tz=current["timezone"],
                                day_seconds=ctx.clock.day_seconds, event_id=event.id)
        report.moved.append({"email": email, "journey": journey.name, "steps": count})
        moved = True
    if not moved:  # a reschedule of a booking we never saw is a booking
        return on_booking_created(ctx, event, report)
    return []


def on_booking_cancelled(ctx: DeliveryContext, event: sa.Row, report: EnrollmentReport) -> list[Due]:
    booking, email = _booking(ctx, event)
    contact = mirror.get_contact(ctx.engine, email)
    if contact is not None and contact.booking_status == BOOKED:
        _save_contact(ctx, event, email, booking_status=NOT_BOOKED, call_date=None)
    # Only the reminders about this booking stop; the nurture is not restarted.
    _exit(ctx, email, ExitReason.BOOKING_CANCELLED, report,
          only=lambda seq: seq["booking_uid"] in (None, booking.booking_uid))
    return []


def on_no_show(ctx: DeliveryContext, event: sa.Row, report: EnrollmentReport) -> list[Due]:
    booking, email = _booking(ctx, event)
    # No-show payloads name whoever was flagged: start recovery for the person who booked that call,
    # or for anyone when the booking was never seen here (a 1:1 call booked before this system ran).
    bookers = mirror.emails_for_booking(ctx.engine, booking.booking_uid)
    if bookers and email not in bookers:
        report.ignored.append({"email": email, "why": f"not the booker of {booking.booking_uid}"})
        return []
    contact = _save_contact(ctx, event, email, name_if_unknown=display_first_name(_first_word(booking.name)),
                            booking_status=NO_SHOW)
    return _start_triggered(ctx, event, report, Trigger.NO_SHOW, contact,
                            consent=("implied", f"booked call {booking.booking_uid} missed (event {event.id})"),
                            booking_uid=booking.booking_uid, timezone=booking.attendee_timezone)


def on_journey_event(ctx: DeliveryContext, event: sa.Row, report: EnrollmentReport) -> list[Due]:
    body = _payload(event, EVENT_BODY)
    email = str(body.email).strip().lower()
    first = display_first_name(body.first_name) if body.first_name else None
    if isinstance(body, Payment):
        if body.status != "paid":
            report.ignored.append({"email": email, "why": f"payment {body.status}: only paid starts onboarding"})
            return []
        contact = _save_contact(ctx, event, email, name_if_unknown=first)
        _exit(ctx, email, ExitReason.PAID, report)
        return _start_triggered(ctx, event, report, Trigger.PAYMENT_PAID, contact, trigger_at=body.paid_at,
                                consent=("implied", f"payment {body.paid_at.isoformat()} (event {event.id})"))
    contact = _save_contact(ctx, event, email, name_if_unknown=first)
    if body.outcome != "maybe":
        # A decision ends the "maybe" follow-up; nothing new starts.
        _exit(ctx, email, ExitReason.STOPPED, report, words=f"call outcome: {body.outcome}",
              only=lambda seq: ctx.journeys.get(seq["campaign"]).trigger == Trigger.CALL_OUTCOME_MAYBE)
        return []
    return _start_triggered(ctx, event, report, Trigger.CALL_OUTCOME_MAYBE, contact,
                            consent=("implied", f"call outcome maybe (event {event.id})"))


def _start_triggered(ctx: DeliveryContext, event: sa.Row, report: EnrollmentReport, trigger: Trigger,
                     contact: ContactRecord, *, consent: tuple[str, str], trigger_at: dt.datetime | None = None,
                     **extra) -> list[Due]:
    out = []
    for journey in ctx.journeys.triggered_by(trigger):
        current = mirror.get_sequence(ctx.engine, sequence_key(contact.email, journey.name))
        if current is not None:
            if current["status"] != "active":  # it ended before (e.g. a second missed call): start it again
                due = _restart(ctx, event, journey, current, report, signup_at=trigger_at or event.received_at, **extra)
                out.extend([due] if due else [])
            else:
                report.repeats.append(contact.email)
            continue
        due = _start(ctx, event, journey, contact, report, trigger_at=trigger_at or event.received_at,
                     profile={"first_name": contact.first_name}, consent=consent, **extra)
        if due is not None:
            out.append(due)
    return out


def _first_word(name: str | None) -> str | None:
    return name.split()[0] if name and name.split() else None


HANDLERS: dict[str, Callable[[DeliveryContext, sa.Row, EnrollmentReport], list[Due]]] = {
    "signup": on_signup,
    "booking_created": on_booking_created,
    "booking_rescheduled": on_booking_rescheduled,
    "booking_cancelled": on_booking_cancelled,
    "no_show": on_no_show,
    "journey_event": on_journey_event,
}
