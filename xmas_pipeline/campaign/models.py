"""The domain records the rest of the package passes around: segments, the sender, a signup."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, field_validator

from xmas_pipeline.campaign.clock import parse_instant


class Segment(str, enum.Enum):
    CRITICAL = "CRITICAL"
    URGENT = "URGENT"
    OPTIMIZE = "OPTIMIZE"


class SequenceStatus(str, enum.Enum):
    ACTIVE = "active"
    COMPLETED = "completed"
    EXITED = "exited"  # unsubscribed, bounced, booked a call, stopped by ops


class Sender(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    email: EmailStr
    reply_to: EmailStr | None = None
    postal_address: str = Field(min_length=10, description="CASL/CAN-SPAM: a valid mailing address.")
    website: str | None = None
    unsubscribe_mailto: EmailStr | None = Field(
        default=None, description="Mailbox for mailto: unsubscribes (RFC 8058 allows it beside the HTTPS link)."
    )

    @property
    def formatted(self) -> str:
        from email.headerregistry import Address

        local, _, domain = str(self.email).partition("@")
        return str(Address(display_name=self.name, username=local, domain=domain))

    @property
    def domain(self) -> str:
        return str(self.email).partition("@")[2]


SystemCount = Annotated[int, Field(ge=0, le=8)]


class SignupPayload(BaseModel):
    """A finished assessment posted by the website; unknown fields are allowed and kept.

    The intake validates requests with it and enrollment reads stored events with it, so the two can
    never disagree about what a signup is; its fields are also what the templates are rendered from.
    """

    # The website may add fields before we know about them: never a reason to lose a lead.
    model_config = ConfigDict(extra="allow")

    email: EmailStr
    first_name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    business_name: str | None = None
    assessment_score: Annotated[int, Field(ge=0, le=100)] | None = None
    red_systems: SystemCount = 0
    orange_systems: SystemCount = 0
    yellow_systems: SystemCount = 0
    green_systems: SystemCount = 0
    gps_score: float | None = None
    money_score: float | None = None
    weakest_system_1: str | None = None
    weakest_system_2: str | None = None
    revenue_leak_total: Annotated[float, Field(ge=0)] | None = None
    email_1_sent_at: dt.datetime | None = Field(
        default=None,
        description="When the website sent email 1 itself: ISO 8601 with a UTC offset (a trailing Z is accepted).",
        json_schema_extra={"format": "date-time"},
    )

    @field_validator("email_1_sent_at", mode="before")
    @classmethod
    def _aware_iso_instant(cls, value: object) -> object:
        # Only ISO strings with an offset: a naive time or a bare number would have to be guessed.
        if value is None:
            return value
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                raise ValueError("must carry a UTC offset")
            return value
        if not isinstance(value, str):
            raise ValueError("must be an ISO 8601 string with a UTC offset, e.g. 2026-12-01T09:00:00Z")
        return parse_instant(value)


# --- journey events: what the intake stores besides signups --------------------------------------

FiniteAmount = Annotated[float, Field(strict=True, ge=0, le=1e9, allow_inf_nan=False)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class BookingEvent(BaseModel):
    """A Cal.com booking event for one person, as the intake stores it (see ``web/calcom.py``)."""

    model_config = ConfigDict(extra="ignore")

    kind: Literal["booking_created", "booking_rescheduled", "booking_cancelled", "no_show"]
    email: EmailStr
    booking_uid: str
    event_at: dt.datetime | None = None  # the call's start
    attendee_timezone: str | None = None
    name: str | None = None
    previous_booking_uid: str | None = None
    occurred_at: dt.datetime | None = None


class CallOutcome(BaseModel):
    """``POST /webhook/event`` ``{"type": "call_outcome", ...}``: how the diagnostic call ended."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["call_outcome"]
    email: EmailStr
    outcome: Literal["maybe", "won", "lost"] = Field(description="maybe starts the post-call follow-up")
    first_name: ShortText | None = None


class Payment(BaseModel):
    """``POST /webhook/event`` ``{"type": "payment", ...}``: a payment; status paid starts onboarding."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["payment"]
    email: EmailStr
    amount: FiniteAmount
    paid_at: dt.datetime = Field(description="ISO 8601 with a UTC offset", json_schema_extra={"format": "date-time"})
    status: Literal["paid", "pending", "failed", "refunded"]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$")] | None = None
    first_name: ShortText | None = None

    @field_validator("paid_at", mode="before")
    @classmethod
    def _aware(cls, value: object) -> object:
        if isinstance(value, str):
            value = parse_instant(value)
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                raise ValueError("must carry a UTC offset")
            if not dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc) <= value <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1):
                raise ValueError("must lie between 2000 and tomorrow")
        return value


JourneyEventBody = Annotated[Union[CallOutcome, Payment], Field(discriminator="type")]
