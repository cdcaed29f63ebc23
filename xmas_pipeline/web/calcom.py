"""Cal.com webhooks, without a web framework: check the signature, read the payload, say what it means.

Cal.com signs the raw body (``x-cal-signature-256``: hex HMAC-SHA256 with the webhook's secret) and
signs no timestamp, so replays are stopped by de-duplication on ``JourneyEvent.dedupe_key``.
Cal.com retries failed deliveries: answer 2xx only once the events are stored, 401 for a bad
signature, 400 for a ``CalPayloadError``, and 200 for an ``Ignored`` trigger (PING included).

What each trigger becomes:
  - BOOKING_CREATED -> ``booking_created`` (ends the nurture, starts the reminders);
  - BOOKING_RESCHEDULED -> ``booking_rescheduled`` (``previous_booking_uid`` is the booking it replaces);
  - BOOKING_CANCELLED -> ``booking_cancelled``;
  - BOOKING_NO_SHOW_UPDATED with an attendee marked ``noShow: true`` -> ``no_show`` for that attendee
    (un-marking, ``noShow: false``, is ignored);
  - MEETING_ENDED -> ``no_show`` only for attendees whose ``noShow`` flag is true. Cal.com's
    default MEETING_ENDED payload does not say who joined, and a "sorry we missed you" to someone
    who was on the call is worse than none, so a meeting that ended with no attendee flagged is
    ignored. The flag is set by the host (in Cal.com's bookings list) or by Cal Video's automatic
    no-show detection, which also sends AFTER_GUESTS_CAL_VIDEO_NO_SHOW, read the same way;
  - everything else (PING, BOOKING_REQUESTED, BOOKING_REJECTED, BOOKING_PAID, ...) -> ``Ignored``.

Booking events concern the booker only (``responses.email``, else the first attendee): guests
added to the call never signed up, so they are not enrolled in anything. No-show payloads do not say
who booked, so they name every attendee flagged; whoever processes them should start recovery only
for the email that booked that ``booking_uid``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from xmas_pipeline.campaign.journey import validate_timezone

SIGNATURE_HEADER = "x-cal-signature-256"

JourneyEventKind = Literal["booking_created", "booking_rescheduled", "booking_cancelled", "no_show"]


def verify_cal_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the hex HMAC-SHA256 of the raw ``body`` under ``secret`` (constant-time)."""
    if not secret or header is None:
        return False
    given = header.strip().lower()
    if not given.isascii():
        return False  # compare_digest refuses non-ASCII str; such a header cannot be ours anyway
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


# --------------------------------------------------------------------------------------- Cal.com's payload


class CalAttendee(BaseModel):
    model_config = ConfigDict(extra="allow")

    email: str | None = None
    name: str | None = None
    timeZone: str | None = None
    noShow: bool | None = None


class CalPayload(BaseModel):
    """``payload``: a booking (most triggers) or a no-show update (``bookingUid`` + attendees' flags)."""

    model_config = ConfigDict(extra="allow")

    uid: str | None = None
    bookingUid: str | None = None  # BOOKING_NO_SHOW_UPDATED names the booking this way
    bookingId: int | None = None
    rescheduleUid: str | None = None
    startTime: dt.datetime | None = None
    endTime: dt.datetime | None = None
    type: str | None = None
    title: str | None = None
    status: str | None = None
    cancellationReason: str | None = None
    organizer: dict[str, Any] | None = None
    attendees: list[CalAttendee] = Field(default_factory=list)
    responses: dict[str, Any] | None = None

    @field_validator("startTime", "endTime")
    @classmethod
    def _utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        # Cal.com documents these as UTC ("...Z"); a naive value from a custom template is read as UTC too.
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)

    @field_validator("attendees", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        return [] if value is None else value

    @property
    def booking_uid(self) -> str | None:
        return self.uid or self.bookingUid

    def booker_email(self) -> str | None:
        """The person who booked: the booking form's email answer, else the first attendee."""
        answer = (self.responses or {}).get("email")
        if isinstance(answer, dict):
            answer = answer.get("value")
        if isinstance(answer, str) and "@" in answer:
            return answer.strip().lower()
        first = next((a for a in self.attendees if a.email), None)
        return first.email.strip().lower() if first else None

    def attendee(self, email: str) -> CalAttendee | None:
        return next((a for a in self.attendees if (a.email or "").strip().lower() == email), None)


class CalWebhook(BaseModel):
    """The body Cal.com posts by default: ``{triggerEvent, createdAt, payload}``; extra fields are kept."""

    model_config = ConfigDict(extra="allow")

    triggerEvent: str
    createdAt: dt.datetime | None = None
    payload: CalPayload = Field(default_factory=CalPayload)


class CalPayloadError(ValueError):
    """The body is not a Cal.com webhook we can act on; the message says what is missing (answer 400)."""


def parse_cal_webhook(body: bytes) -> CalWebhook:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalPayloadError(f"the body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CalPayloadError("the body must be a JSON object with triggerEvent and payload")
    if data.get("payload") is None:
        data = {**data, "payload": {}}
    try:
        return CalWebhook.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise CalPayloadError(f"not a Cal.com webhook body: {problems}") from exc


# ------------------------------------------------------------------------------------------- what it means


@dataclass(frozen=True)
class JourneyEvent:
    """One thing that happened to one contact, ready to enqueue; ``dedupe_key`` makes a replay a no-op."""

    kind: JourneyEventKind
    email: str  # lower-cased
    booking_uid: str
    event_at: dt.datetime | None  # the call's start (UTC); None when Cal.com does not send it (no-show updates)
    attendee_timezone: str | None  # IANA name from Cal.com, None when missing or not a valid zone
    dedupe_key: str
    name: str | None = None  # the attendee's name as given at booking, for a contact created from the event
    previous_booking_uid: str | None = None  # on a reschedule: the booking whose reminders move
    occurred_at: dt.datetime | None = None  # Cal.com's createdAt for the webhook


@dataclass(frozen=True)
class Ignored:
    """A webhook we answer 200 to and do nothing with; ``reason`` is for the log."""

    reason: str


BOOKING_KINDS: dict[str, JourneyEventKind] = {
    "BOOKING_CREATED": "booking_created",
    "BOOKING_RESCHEDULED": "booking_rescheduled",
    "BOOKING_CANCELLED": "booking_cancelled",
}
NO_SHOW_TRIGGERS = frozenset({"BOOKING_NO_SHOW_UPDATED", "MEETING_ENDED", "AFTER_GUESTS_CAL_VIDEO_NO_SHOW"})
#: Booking statuses that are not (yet) a booked call.
NOT_BOOKED_STATUSES = frozenset({"PENDING", "AWAITING_HOST", "REJECTED", "CANCELLED"})


def interpret(event: CalWebhook) -> list[JourneyEvent] | Ignored:
    """What a Cal.com webhook means for the journeys; raises CalPayloadError when a needed field is missing."""
    trigger = event.triggerEvent.strip().upper()
    if trigger in BOOKING_KINDS:
        return _booking_event(trigger, event)
    if trigger in NO_SHOW_TRIGGERS:
        return _no_shows(trigger, event)
    if trigger == "PING":
        return Ignored("PING: Cal.com's test delivery")
    return Ignored(f"{trigger}: not a trigger any journey uses")


def _booking_event(trigger: str, event: CalWebhook) -> list[JourneyEvent] | Ignored:
    p = event.payload
    kind = BOOKING_KINDS[trigger]
    status = (p.status or "").strip().upper()
    if kind != "booking_cancelled" and status in NOT_BOOKED_STATUSES:
        return Ignored(f"{trigger} with status {status}: not a confirmed booking")
    uid = _required(p.booking_uid, trigger, "payload.uid")
    email = _required(p.booker_email(), trigger, "payload.attendees[0].email")
    start = p.startTime
    if start is None and kind != "booking_cancelled":
        raise CalPayloadError(f"{trigger} without payload.startTime: cannot time the reminders")
    if kind == "booking_rescheduled":
        # A booking can move more than once; each new start time is a new event.
        dedupe = f"cal:{uid}:{trigger}:{start.isoformat()}"
    else:
        dedupe = f"cal:{uid}:{trigger}"
    attendee = p.attendee(email)
    return [
        JourneyEvent(
            kind=kind,
            email=email,
            booking_uid=uid,
            event_at=start,
            attendee_timezone=_zone(attendee.timeZone if attendee else None),
            dedupe_key=dedupe,
            name=_name(attendee),
            previous_booking_uid=p.rescheduleUid if kind == "booking_rescheduled" else None,
            occurred_at=event.createdAt,
        )
    ]


def _no_shows(trigger: str, event: CalWebhook) -> list[JourneyEvent] | Ignored:
    p = event.payload
    missing = [a for a in p.attendees if a.noShow is True and a.email]
    if not missing:
        if trigger == "MEETING_ENDED":
            return Ignored("MEETING_ENDED with no attendee marked noShow: Cal.com does not say anyone was missing")
        return Ignored(f"{trigger} with no attendee marked noShow (an un-marking, or only the host)")
    uid = _required(p.booking_uid, trigger, "payload.uid or payload.bookingUid")
    out = []
    for attendee in missing:
        email = attendee.email.strip().lower()
        out.append(
            JourneyEvent(
                kind="no_show",
                email=email,
                booking_uid=uid,
                event_at=p.startTime,
                attendee_timezone=_zone(attendee.timeZone),
                # One recovery per missed call, whichever of the no-show triggers reports it first.
                dedupe_key=f"cal:{uid}:no_show:{email}",
                name=_name(attendee),
                occurred_at=event.createdAt,
            )
        )
    return out


def _required(value: str | None, trigger: str, field: str) -> str:
    if not value or not value.strip():
        raise CalPayloadError(f"{trigger} without {field}: cannot tell which booking or person it is about")
    return value.strip()


def _name(attendee: CalAttendee | None) -> str | None:
    return ((attendee.name or "").strip() or None) if attendee is not None else None


def _zone(name: str | None) -> str | None:
    # A time zone we cannot read only costs the send window its precision: fall back to the journey's.
    if not name:
        return None
    try:
        return validate_timezone(name)
    except ValueError:
        return None
