"""The website's signup payload, as the intake validates it (the stored copy keeps every field as received)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, field_validator

from xmas_pipeline.campaign.clock import parse_instant

SystemCount = Annotated[int, Field(ge=0, le=8)]


class SignupPayload(BaseModel):
    """A finished assessment posted by the website; unknown fields are allowed and kept."""

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
