"""Every Notion property name the pipeline reads or writes, in one place.

The system we replaced spelled ``email`` and ``Email`` differently from file to file and wrote a
property that did not exist. Here each database has one mapping from a logical field to its Notion
property (name and type); a workspace whose names differ overrides them in the campaign file
(``notion_properties: {sequences: {first_name: "Given Name"}}``), and ``xmas notion check`` compares
the mapping with the real schema before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass

from xmas_pipeline.campaign.models import Segment

STEPS = 7  # "Email 1 Sent" .. "Email 7 Sent"


@dataclass(frozen=True)
class Prop:
    name: str
    type: str  # Notion property type: title, rich_text, email, number, select, date, checkbox
    options: tuple[str, ...] = ()  # select options created by `xmas notion init`


SEGMENTS = tuple(s.value for s in Segment)
# The origin system's "Sequence Type" options, one per kind of journey (records.SEQUENCE_TYPE_OF_TRIGGER).
SEQUENCE_TYPES = ("nurture", "precall", "noshow", "postcall", "onboarding")

CONTACTS: dict[str, Prop] = {
    "email": Prop("email", "email"),
    "first_name": Prop("first_name", "title"),
    "business_name": Prop("Business Name", "rich_text"),
    "segment": Prop("Segment", "select", SEGMENTS),
    "assessment_score": Prop("Assessment Score", "number"),
    "campaign_status": Prop("Christmas Campaign Status", "select", ("Signed Up", "Nurture Sequence", "Pre-Call Prep", "Unsubscribed", "Bounced", "Stopped")),
    "booking_status": Prop("Booking Status", "select", ("Not Booked", "Booked", "Completed", "No-Show")),
    "call_date": Prop("Diagnostic Call Date", "date"),  # the booked call's start (Cal.com)
}

SEQUENCES: dict[str, Prop] = {
    "email": Prop("Email", "email"),
    "first_name": Prop("First Name", "rich_text"),
    "business_name": Prop("Business Name", "rich_text"),
    "campaign": Prop("Campaign", "select"),  # the journey's name
    "sequence_type": Prop("Sequence Type", "select", SEQUENCE_TYPES),  # the origin system's journey kind
    "segment": Prop("Segment", "select", SEGMENTS),
    "assessment_score": Prop("Assessment Score", "number"),
    "red_systems": Prop("Red Systems", "number"),
    "orange_systems": Prop("Orange Systems", "number"),
    "yellow_systems": Prop("Yellow Systems", "number"),
    "green_systems": Prop("Green Systems", "number"),
    "signup_date": Prop("Signup Date", "date"),
    **{f"email_{n}_sent": Prop(f"Email {n} Sent", "date") for n in range(1, STEPS + 1)},
    "completed": Prop("Sequence Completed", "checkbox"),
}

TEMPLATES: dict[str, Prop] = {
    "name": Prop("Template Name", "title"),
    "subject": Prop("Subject Line", "rich_text"),
    "html": Prop("Email Body HTML", "rich_text"),
    "status": Prop("Status", "select", ("Active", "Inactive")),
}

DATABASES = {"contacts": CONTACTS, "sequences": SEQUENCES, "templates": TEMPLATES}
# Notion requires a title property; the sequences database's is not read, only labelled.
SEQUENCE_TITLE = "Name"


def mapping(database: str, overrides: dict[str, dict[str, str]] | None = None) -> dict[str, Prop]:
    """The database's properties with the campaign file's renames applied."""
    base = DATABASES[database]
    renames = (overrides or {}).get(database, {})
    unknown = set(renames) - set(base)
    if unknown:
        raise ValueError(
            f"campaign file notion_properties.{database} renames unknown field(s) {sorted(unknown)}; "
            f"known fields: {sorted(base)}"
        )
    return {field: Prop(renames.get(field, p.name), p.type, p.options) for field, p in base.items()}
