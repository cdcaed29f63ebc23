"""The campaign file's shape and the domain records the rest of the package passes around."""

from __future__ import annotations

import datetime as dt
import enum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, field_validator, model_validator

from xmas_pipeline.campaign.clock import parse_instant
from xmas_pipeline.campaign.durations import parse_duration


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


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: int = Field(ge=1, le=7)
    day_offset: float = Field(ge=0, description="Days after enrollment at which this step is due.")
    template: str = Field(description="Template name (a folder under templates/, or a Notion 'Template Name').")


class LateSend(BaseModel):
    """What happens to a step the system reaches long after it was due (the daemon was down, say)."""

    model_config = ConfigDict(extra="forbid")

    max_lateness: dt.timedelta = Field(
        default=dt.timedelta(hours=24),
        description="Later than this, the live path records the step as late instead of sending it; "
        "a backfill with send_late: true sends it.",
    )

    @field_validator("max_lateness", mode="before")
    @classmethod
    def _duration(cls, value: object) -> dt.timedelta:
        return parse_duration(value)


class Campaign(BaseModel):
    """One season's campaign, as written in its YAML file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Also the Notion 'Campaign' select value.")
    timezone: str
    start_date: dt.date = Field(description="The first daily partition.")
    end: dt.datetime = Field(
        description="Steps due at or after this moment are not sent; they are recorded as expired "
        "(campaign timezone if naive)."
    )
    deadline: dt.date = Field(description="The offer deadline the emails count down to.")
    booking_url: str
    sender: Sender
    steps: list[Step]
    template_source: str = Field(default="files", pattern="^(files|notion)$")
    late_send: LateSend = Field(default_factory=LateSend)
    notion_properties: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Overrides of Notion property names per database: {contacts|sequences|templates: {logical: actual}}.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}; use an IANA name such as America/Toronto") from exc
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Campaign:
        if self.end.tzinfo is None:
            self.end = self.end.replace(tzinfo=self.tz)
        numbers = [s.number for s in self.steps]
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError(f"steps must be numbered 1..N in order, got {numbers}")
        offsets = [s.day_offset for s in self.steps]
        if offsets != sorted(offsets):
            raise ValueError(f"step day offsets must not decrease, got {offsets}")
        if self.steps and self.steps[0].day_offset != 0:
            raise ValueError("step 1 is sent at enrollment: its day_offset must be 0")
        if self.end.date() < self.start_date:
            raise ValueError("the campaign ends before it starts")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def step(self, number: int) -> Step:
        return self.steps[number - 1]

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.name.lower()).strip("-")


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
