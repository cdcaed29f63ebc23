"""The domain records the rest of the package passes around: segments, the sender, a signup."""

from __future__ import annotations

import datetime as dt
import enum
import math
import re
from typing import Annotated, Literal, Union

import email_validator
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from xmas_pipeline.campaign.clock import parse_instant
from xmas_pipeline.campaign.zones import validate_timezone


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


NO_NUL = r"^[^\x00]*$"  # a NUL cannot be stored in a PostgreSQL text column
NAME_MAX = 200
FREE_TEXT_MAX = 2000
EARLIEST_INSTANT = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
FUTURE_SLACK = dt.timedelta(days=1)  # clocks differ; a website clock a day ahead is broken, not skewed
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")



def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


# email-validator refuses special-use domains (a@b.test, a@localhost): the schema says so too.
EMAIL_PATTERN = r"^(?!.*[@.](%s)$).*$" % "|".join(_any_case(d) for d in email_validator.SPECIAL_USE_DOMAIN_NAMES)


def _json_integer(value: object) -> object:
    """A JSON number with no fraction (6 or 6.0: JSON Schema calls both integers); never true or "6"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be a JSON number, not a string or true/false")
    if isinstance(value, float):
        if not value.is_integer():  # also NaN, Infinity and 1e400 (which parses to Infinity)
            raise ValueError("must be a whole number")
        return int(value)
    return value


# JSON numbers only: `true`, "50" and other strings are refused instead of coerced.
JsonInteger = BeforeValidator(_json_integer)
SystemCount = Annotated[int, Field(ge=0, le=8), JsonInteger]
Score = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=100)]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character (\\u0000)")
    return value


def _stripped_not_blank(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    return value


# The pattern only documents the NUL rule in the schema; the validator says it in words.
NoNul = (AfterValidator(_no_nul), Field(json_schema_extra={"pattern": NO_NUL}))
Name = Annotated[str, StringConstraints(max_length=NAME_MAX), *NoNul]


def checked_instant(value: object, info: ValidationInfo) -> dt.datetime:
    """An RFC 3339 instant with an offset, since 2000, at most a day after ``context["now"]`` (if given).

    Only strings with an offset: a naive time or a bare number would have to be guessed.
    """
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("must carry a UTC offset")
        instant = value
    elif isinstance(value, str) and RFC3339.fullmatch(value):
        try:
            instant = parse_instant(value.upper())
        except ValueError:
            raise ValueError("is not a calendar date and time (e.g. 2026-12-01T09:00:00Z)") from None
    else:
        raise ValueError("must be an RFC 3339 date-time with a UTC offset, e.g. 2026-12-01T09:00:00Z")
    try:
        utc = instant.astimezone(dt.timezone.utc)  # year 9999 at -23:59 overflows here
    except OverflowError:
        raise ValueError("is out of range: use a time since 2000, with a UTC offset") from None
    if utc < EARLIEST_INSTANT:
        raise ValueError("must not be before 2000-01-01")
    now = (info.context or {}).get("now") or dt.datetime.now(dt.timezone.utc)
    if utc > now + FUTURE_SLACK:
        raise ValueError("must not be more than a day in the future")
    return instant


class SignupPayload(BaseModel):
    """A finished assessment posted by the website; unknown fields are allowed and kept.

    The intake validates requests with it and enrollment reads stored events with it, so the two can
    never disagree about what a signup is; its fields are also what the templates are rendered from.
    Everything that could never be enrolled (a number that is not finite, an instant outside what the
    store and the timetable can hold, text a column cannot take) is refused here, at the door.
    Pass ``context={"now": instant}`` to also refuse an ``email_1_sent_at`` more than a day after it.
    """

    # The website may add fields before we know about them: never a reason to lose a lead.
    model_config = ConfigDict(extra="allow")

    email: Annotated[EmailStr, Field(json_schema_extra={"pattern": EMAIL_PATTERN})]
    first_name: Annotated[
        str,
        # Length is judged as sent (as the schema says), then the name is stripped.
        StringConstraints(min_length=1, max_length=NAME_MAX),
        AfterValidator(_no_nul),
        AfterValidator(_stripped_not_blank),
        Field(json_schema_extra={"pattern": r"^[^\x00]*[^\s\x00][^\x00]*$"}),  # not blank, no NUL
    ]
    business_name: Name | None = None
    assessment_score: Annotated[int, Field(ge=0, le=100), JsonInteger] | None = None
    red_systems: SystemCount = 0
    orange_systems: SystemCount = 0
    yellow_systems: SystemCount = 0
    green_systems: SystemCount = 0
    gps_score: Score | None = None
    money_score: Score | None = None
    weakest_system_1: Name | None = None
    weakest_system_2: Name | None = None
    revenue_leak_total: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=1e12)] | None = None
    timezone: Annotated[str, AfterValidator(validate_timezone)] | None = Field(
        default=None,
        description="The lead's IANA time zone (e.g. America/Vancouver; browsers give "
        "Intl.DateTimeFormat().resolvedOptions().timeZone): follow-ups go inside the send window there.",
        max_length=64,
        json_schema_extra={"format": "iana-time-zone"},
    )
    email_1_sent_at: dt.datetime | None = Field(
        default=None,
        description=(
            "When the website sent email 1 itself: RFC 3339 date-time with a UTC offset (a trailing Z is "
            "accepted), not before 2000 and not more than a day in the future."
        ),
        json_schema_extra={"format": "date-time"},
    )

    @field_validator("email_1_sent_at", mode="before")
    @classmethod
    def _aware_iso_instant(cls, value: object, info: ValidationInfo) -> object:
        return None if value is None else checked_instant(value, info)

    @model_validator(mode="after")
    def _storable_extras(self) -> SignupPayload:
        # Unknown fields are kept and stored as JSON: NaN, Infinity (1e400 parses to it) are not JSON.
        for name, value in (self.model_extra or {}).items():
            if value is None or type(value) in (int, bool):  # the common cases: nothing to check
                continue
            problem = _unstorable(value)
            if problem:
                raise ValueError(f"field {name!r}: {problem}")
        return self


def _unstorable(value: object) -> str | None:
    """Why an unknown field's value cannot be kept (a non-finite number, over-long text), else None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return "numbers must be finite (no NaN, Infinity or out-of-range values such as 1e400)"
        if isinstance(item, str) and len(item) > FREE_TEXT_MAX:
            return f"text must be at most {FREE_TEXT_MAX} characters"
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


# --- journey events: what the intake stores besides signups --------------------------------------

FiniteAmount = Annotated[float, Field(strict=True, ge=0, le=1e9, allow_inf_nan=False)]


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
    email: Annotated[EmailStr, Field(json_schema_extra={"pattern": EMAIL_PATTERN})]
    outcome: Literal["maybe", "won", "lost"] = Field(description="maybe starts the post-call follow-up")
    first_name: Name | None = None


class Payment(BaseModel):
    """``POST /webhook/event`` ``{"type": "payment", ...}``: a payment; status paid starts onboarding."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["payment"]
    email: Annotated[EmailStr, Field(json_schema_extra={"pattern": EMAIL_PATTERN})]
    amount: FiniteAmount
    paid_at: dt.datetime = Field(description="RFC 3339 with a UTC offset, since 2000, at most a day ahead",
                                 json_schema_extra={"format": "date-time"})
    status: Literal["paid", "pending", "failed", "refunded"]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$")] | None = None
    first_name: Name | None = None

    @field_validator("paid_at", mode="before")
    @classmethod
    def _aware(cls, value: object, info: ValidationInfo) -> object:
        return checked_instant(value, info)


JourneyEventBody = Annotated[Union[CallOutcome, Payment], Field(discriminator="type")]
