"""A journey file: what starts a sequence, its steps and their timing, its send window, and what stops it.

A superset of the one-campaign file (``models.Campaign``): today's ``christmas-2026.yaml`` loads
unchanged as a journey triggered by a signup, with its ``day_offset`` steps read as ``after``.

    name: Pre-call                 # also the Notion "Campaign" select value; slug "pre-call"
    trigger: booking_created       # signup | booking_created | no_show | call_outcome_maybe | payment_paid
    steps:
      - {number: 1, before: 72h, template: pre_call_72h}   # before the event (the booked call)
      - {number: 2, after: 1d12h, template: ...}            # after the trigger
    late_send: {max_lateness: 1h}
    send_window: {start: "09:00", end: "18:00", days: [mon, tue, wed, thu, fri, sat],
                  blackout_dates: [2026-12-25], exempt_steps: [1]}
    exits: [booking_cancelled]     # unsubscribed, bounced, complained and stopped always apply

Durations are whole days, hours and minutes in that order: ``0``, ``90m``, ``2h``, ``72h``, ``2d``,
``1d12h``; they are elapsed time (``2d`` is 48 hours, also across a DST change), as the timetable has
always counted them, and the send window then puts the step at a decent local hour.
Errors name the field (``steps[2].after``: list positions count from 1, like step numbers).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
import re
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from xmas_pipeline.campaign.models import Sender
from xmas_pipeline.campaign.zones import validate_timezone
from xmas_pipeline.campaign.windows import SendWindow

# ---------------------------------------------------------------------------------------------- time zones


# ----------------------------------------------------------------------------------------------- durations

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")
MAX_DURATION = dt.timedelta(days=366)


def parse_duration(value: Any) -> dt.timedelta:
    """``0``, ``90m``, ``2h``, ``72h``, ``2d`` or ``1d12h`` (days, hours, minutes, in that order) as a timedelta."""
    if isinstance(value, dt.timedelta):
        delta = value
    elif isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write e.g. 2h, 90m, 2d or 1d12h")
    elif isinstance(value, int | float):
        if value != 0:
            raise ValueError(f"{value!r} has no unit; write e.g. {value}h, {value}d or {value}m")
        delta = dt.timedelta(0)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text.startswith("-"):
            raise ValueError(
                f"{value!r}: a duration cannot be negative; for a reminder before an event write before: {text[1:]}"
            )
        match = _DURATION.match(text)
        if text.isdigit() and int(text) != 0:
            raise ValueError(f"{value!r} has no unit; write e.g. {text}h, {text}d or {text}m")
        if text == "0":
            delta = dt.timedelta(0)
        elif not text or match is None:
            raise ValueError(f"{value!r} is not a duration; write e.g. 0, 90m, 2h, 72h, 2d or 1d12h")
        else:
            days, hours, minutes = (int(g or 0) for g in match.groups())
            delta = dt.timedelta(days=days, hours=hours, minutes=minutes)
    else:
        raise ValueError(f"{value!r} is not a duration; write e.g. 2h, 90m, 2d or 1d12h")
    if delta < dt.timedelta(0):
        raise ValueError(f"{value!r}: a duration cannot be negative")
    if delta > MAX_DURATION:
        raise ValueError(f"{value!r} is longer than a year; is it a typo?")
    return delta


def format_duration(delta: dt.timedelta) -> str:
    """The inverse of ``parse_duration`` for whole minutes: 72h stays ``3d``, 36h is ``1d12h``, zero is ``0``."""
    minutes = int(delta.total_seconds() // 60)
    if minutes == 0:
        return "0"
    days, rest = divmod(minutes, 1440)
    hours, minutes = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n)


def duration_words(delta: dt.timedelta) -> str:
    """72h reads as "72 hours" in messages for people (reminders are thought of in hours)."""
    minutes = int(delta.total_seconds() // 60)
    if minutes % 60:
        return f"{minutes} minutes"
    hours = minutes // 60
    return "1 hour" if hours == 1 else f"{hours} hours"


Duration = Annotated[dt.timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration)]


# ------------------------------------------------------------------------------------- triggers and exits


class Trigger(str, enum.Enum):
    SIGNUP = "signup"  # the website's assessment signup (the nurture)
    BOOKING_CREATED = "booking_created"  # Cal.com BOOKING_CREATED; the event time is the call's start
    NO_SHOW = "no_show"  # the attendee missed the call
    CALL_OUTCOME_MAYBE = "call_outcome_maybe"  # the call ended with a "maybe"
    PAYMENT_PAID = "payment_paid"  # payment confirmed


#: Triggers that come with an event time, so steps may be due ``before`` it.
EVENT_TRIGGERS = frozenset({Trigger.BOOKING_CREATED})


class ExitReason(str, enum.Enum):
    BOOKED_CALL = "booked_call"
    BOOKING_CANCELLED = "booking_cancelled"
    PAID = "paid"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    STOPPED = "stopped"

    @property
    def words(self) -> str:
        """As an operator reads it (and as ``sequences.exit_reason`` already says it)."""
        return EXIT_WORDS[self]


EXIT_WORDS = {
    ExitReason.BOOKED_CALL: "booked a call",
    ExitReason.BOOKING_CANCELLED: "call cancelled",
    ExitReason.PAID: "paid",
    ExitReason.UNSUBSCRIBED: "unsubscribed",
    ExitReason.BOUNCED: "bounced",
    ExitReason.COMPLAINED: "complained",
    ExitReason.STOPPED: "stopped by ops",
}

#: Every journey stops on these, listed or not: consent and deliverability are not a per-journey choice.
ALWAYS_EXITS = (ExitReason.UNSUBSCRIBED, ExitReason.BOUNCED, ExitReason.COMPLAINED, ExitReason.STOPPED)

#: What else stops a journey when its file lists no ``exits``.
DEFAULT_EXITS = {
    Trigger.SIGNUP: (ExitReason.BOOKED_CALL, ExitReason.PAID),  # the nurture's goal is a booked call
    Trigger.BOOKING_CREATED: (ExitReason.BOOKING_CANCELLED,),  # a reschedule moves reminders, not an exit
    Trigger.NO_SHOW: (ExitReason.BOOKED_CALL,),  # rebooking is the goal of recovery
    Trigger.CALL_OUTCOME_MAYBE: (ExitReason.PAID, ExitReason.BOOKED_CALL),
    Trigger.PAYMENT_PAID: (),
}


# ----------------------------------------------------------------------------------------------- the file


class JourneyStep(BaseModel):
    """One email: due ``after`` the trigger, or ``before`` the event (reminders). Legacy ``day_offset`` = after."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    number: int = Field(ge=1)
    template: str = Field(
        min_length=1, description="Template name (a folder under templates/, or a Notion 'Template Name')."
    )
    after: Duration | None = Field(default=None, description="Due this long after the trigger.")
    before: Duration | None = Field(default=None, description="Due this long before the event (a reminder).")

    @model_validator(mode="before")
    @classmethod
    def _legacy_day_offset(cls, data: Any) -> Any:
        if isinstance(data, dict) and "day_offset" in data:
            data = dict(data)
            offset = data.pop("day_offset")
            if data.get("after") is not None:
                raise ValueError("write either after or the older day_offset, not both")
            if isinstance(offset, bool) or not isinstance(offset, int | float):
                raise ValueError(f"day_offset must be a number of days, got {offset!r}; or write after: 2d")
            if offset < 0:
                raise ValueError(f"day_offset cannot be negative, got {offset}")
            data["after"] = dt.timedelta(days=offset)
        return data

    @model_validator(mode="after")
    def _exactly_one_timing(self) -> JourneyStep:
        if (self.after is None) == (self.before is None):
            raise ValueError(f"step {self.number}: give exactly one of after: <duration> or before: <duration>")
        if self.before is not None and self.before <= dt.timedelta(0):
            raise ValueError(f"step {self.number}: before must be more than 0, or the reminder arrives with the event")
        return self

    @property
    def day_offset(self) -> float | None:
        """``after`` in days, as ``models.Step.day_offset`` gave it; None for a ``before`` step."""
        return None if self.after is None else self.after / dt.timedelta(days=1)


class LateSend(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_lateness: Duration = Field(
        default=dt.timedelta(hours=24),
        description="A step later than this is recorded as late, not sent (an operator may send it with send_late).",
    )


class Journey(BaseModel):
    """One journey, as written in its YAML file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Also the Notion 'Campaign' select value.")
    trigger: Trigger = Field(default=Trigger.SIGNUP, description="What starts a sequence of this journey.")
    timezone: str = Field(description="The journey's time zone, used when the recipient's is unknown.")
    start_date: dt.date = Field(description="The first daily partition.")
    end: dt.datetime = Field(description="No step is sent at or after this moment (journey timezone if naive).")
    deadline: dt.date = Field(description="The offer deadline the emails count down to.")
    booking_url: str
    sender: Sender
    steps: list[JourneyStep]
    late_send: LateSend = Field(default_factory=LateSend)
    send_window: SendWindow | None = None
    exits: list[ExitReason] = Field(default_factory=list, description="What ends a sequence early.")
    template_source: str = Field(default="files", pattern="^(files|notion)$")
    notion_properties: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Overrides of Notion property names per database: {contacts|sequences|templates: {logical: actual}}.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_exits(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("exits") is None:
            try:
                trigger = Trigger(data.get("trigger", Trigger.SIGNUP))
            except ValueError:
                return data  # the trigger field reports its own error
            data = {**data, "exits": list(DEFAULT_EXITS[trigger])}
        return data

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return validate_timezone(value)

    @field_validator("exits")
    @classmethod
    def _always_exits(cls, exits: list[ExitReason]) -> list[ExitReason]:
        listed = set(exits) | set(ALWAYS_EXITS)
        return [reason for reason in ExitReason if reason in listed]  # one order everywhere

    @field_validator("steps")
    @classmethod
    def _steps_in_order(cls, steps: list[JourneyStep], info: ValidationInfo) -> list[JourneyStep]:
        if not steps:
            raise ValueError("a journey needs at least one step")
        numbers = [s.number for s in steps]
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError(f"steps must be numbered 1..N in order, got {numbers}")
        afters = [s for s in steps if s.after is not None]
        for prev, step in zip(afters, afters[1:]):
            if step.after < prev.after:
                raise ValueError(
                    f"step {step.number} (after {format_duration(step.after)}) comes before step {prev.number} "
                    f"(after {format_duration(prev.after)}); number the steps in the order they are sent"
                )
        befores = [s for s in steps if s.before is not None]
        for prev, step in zip(befores, befores[1:]):
            if step.before > prev.before:
                raise ValueError(
                    f"step {step.number} (before {format_duration(step.before)}) comes before step {prev.number} "
                    f"(before {format_duration(prev.before)}); number reminders from the earliest, e.g. 72h, 24h, 2h"
                )
        trigger = info.data.get("trigger")
        if befores and trigger is not None and trigger not in EVENT_TRIGGERS:
            raise ValueError(
                f"step {befores[0].number} is due before an event, but a {trigger.value} journey has no event time "
                f"to count back from (only {', '.join(t.value for t in EVENT_TRIGGERS)} has one); use after"
            )
        return steps

    @model_validator(mode="after")
    def _coherent(self) -> Journey:
        if self.end.tzinfo is None:
            self.end = self.end.replace(tzinfo=self.tz)
        if self.end.date() < self.start_date:
            raise ValueError(
                f"end ({self.end.date()}) is before start_date ({self.start_date}): the journey ends before it starts"
            )
        if self.send_window is not None:
            unknown = sorted(n for n in self.send_window.exempt_steps if n > len(self.steps))
            if unknown:
                raise ValueError(
                    f"send_window.exempt_steps names step {unknown[0]}, "
                    f"but the journey's steps are 1..{len(self.steps)}"
                )
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def step(self, number: int) -> JourneyStep:
        return self.steps[number - 1]

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.name.lower()).strip("-")

    @property
    def has_reminders(self) -> bool:
        """Whether some step is due before the event (so planning needs the event time)."""
        return any(s.before is not None for s in self.steps)


# --------------------------------------------------------------------------------------------- reading files


class JourneyFileError(ValueError):
    """A journey file (or folder) cannot be used; the message names the file and the field."""


def _where(loc: tuple) -> str:
    """``('steps', 2, 'after')`` as ``steps[3].after``: list positions count from 1, like step numbers."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _problem(error: dict) -> str:
    message = error["msg"].removeprefix("Value error, ")
    return f"{_where(error['loc'])}: {message}" if error["loc"] else message


def parse_journey(text: str, source: str = "<journey>") -> Journey:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise JourneyFileError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise JourneyFileError(f"{source} must be a YAML mapping of journey fields")
    try:
        return Journey.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        raise JourneyFileError(f"{source} is not a valid journey: {problems}") from exc


def load_journey(path: Path | str) -> Journey:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise JourneyFileError(f"cannot read journey file {path}: {exc.strerror}") from exc
    return parse_journey(text, str(path))


def load_journeys(folder: Path | str) -> dict[str, Journey]:
    """Every ``*.yaml`` journey in a folder, by slug; two files with one name (or slug) are refused."""
    folder = Path(folder)
    if not folder.is_dir():
        raise JourneyFileError(f"journeys folder {folder} does not exist; set XMAS_CAMPAIGNS_DIR")
    journeys: dict[str, Journey] = {}
    seen: dict[str, Path] = {}
    for path in sorted(folder.glob("*.yaml")):
        journey = load_journey(path)
        if journey.slug in seen:
            raise JourneyFileError(
                f"{path} and {seen[journey.slug]} both define the journey {journey.name!r}; give each a distinct name"
            )
        seen[journey.slug] = path
        journeys[journey.slug] = journey
    if not journeys:
        raise JourneyFileError(f"no journey files (*.yaml) in {folder}")
    return journeys


@dataclass(frozen=True)
class Journeys:
    """Every journey a deployment runs, by name (the ledger and the CRM's Campaign select use the name).

    The home journey (the first triggered by a signup, else the first) sets the deployment's calendar:
    the daily partitions' time zone and first day, and the name a signup's default idempotency key uses.
    """

    by_name: dict[str, Journey]
    source: Path  # the file or folder they came from (templates live beside it)

    @property
    def home(self) -> Journey:
        journeys = list(self.by_name.values())
        return next((j for j in journeys if j.trigger == Trigger.SIGNUP), journeys[0])

    def get(self, name: str) -> Journey:
        try:
            return self.by_name[name]
        except KeyError:
            raise JourneyFileError(
                f"no journey named {name!r} (known: {', '.join(self.by_name)}); was its file removed from {self.source}?"
            ) from None

    def triggered_by(self, trigger: Trigger) -> list[Journey]:
        return [j for j in self.by_name.values() if j.trigger == trigger]

    def __iter__(self):
        return iter(self.by_name.values())

    def __len__(self) -> int:
        return len(self.by_name)

    @property
    def names(self) -> list[str]:
        return list(self.by_name)

    @property
    def templates_dir(self) -> Path:
        folder = self.source if self.source.is_dir() else self.source.parent
        return folder.resolve() / "templates"

    @property
    def start_date(self) -> dt.date:
        return min(j.start_date for j in self)


def load_journeys_from(campaign_file: Path | str | None, campaigns_dir: Path | str) -> Journeys:
    """One file (XMAS_CAMPAIGN_FILE) when given, else every journey in the folder (XMAS_CAMPAIGNS_DIR)."""
    if campaign_file is not None:
        journey = load_journey(campaign_file)
        return Journeys({journey.name: journey}, Path(campaign_file))
    by_slug = load_journeys(campaigns_dir)
    return Journeys({j.name: j for j in by_slug.values()}, Path(campaigns_dir))
