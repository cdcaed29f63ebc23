"""The records the pipeline exchanges with a CRM and keeps in its mirror (pure data, no I/O)."""

from __future__ import annotations

import datetime as dt

from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

# Contacts and sequences are keyed on the address as typed, lower-cased and trimmed.
LowerEmail = Annotated[str, AfterValidator(lambda value: value.strip().lower())]


class ContactRecord(BaseModel):
    email: LowerEmail
    first_name: str
    business_name: str | None = None
    segment: str | None = None
    assessment_score: float | None = None
    campaign_status: str | None = None  # Notion "Christmas Campaign Status"
    booking_status: str | None = None  # Notion "Booking Status"; Booked/Completed ends the sequence
    call_date: dt.datetime | None = None  # Notion "Diagnostic Call Date": the booked call's start
    crm_id: str | None = None
    edited_at: dt.datetime | None = None


class SequenceRecord(BaseModel):
    sequence_key: str  # deterministic from (email, campaign); also the create's client key
    email: LowerEmail
    campaign: str
    first_name: str
    business_name: str | None = None
    segment: str
    assessment_score: float | None = None
    red_systems: int = 0
    orange_systems: int = 0
    yellow_systems: int = 0
    green_systems: int = 0
    signup_at: dt.datetime  # the timetable's anchor: when the journey's trigger happened
    timezone: str | None = None  # the recipient's IANA zone (send windows); the journey's when None
    event_at: dt.datetime | None = None  # what reminders count back from (the booked call's start)
    booking_uid: str | None = None  # the Cal.com booking this sequence is about
    sequence_type: str | None = None  # Notion "Sequence Type": what kind of journey (nurture, precall, ...)
    steps_sent: dict[int, dt.datetime] = Field(default_factory=dict)  # "Email N Sent" dates in the CRM
    completed: bool = False
    crm_id: str | None = None
    edited_at: dt.datetime | None = None


class SequenceUpdate(BaseModel):
    """A coalesced write-back for one sequence page: every step sent in a run, in one call."""

    sequence_key: str
    crm_id: str | None
    steps_sent: dict[int, dt.datetime] = Field(default_factory=dict)
    completed: bool | None = None


class TemplateRecord(BaseModel):
    name: str
    subject: str
    html: str
    text: str | None = None
    active: bool = True
    edited_at: dt.datetime | None = None


#: Notion "Sequence Type" for each journey trigger (the origin system's values, plus the nurture's).
SEQUENCE_TYPE_OF_TRIGGER = {
    "signup": "nurture",
    "booking_created": "precall",
    "no_show": "noshow",
    "call_outcome_maybe": "postcall",
    "payment_paid": "onboarding",
}
