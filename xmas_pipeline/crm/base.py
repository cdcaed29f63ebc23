"""What the pipeline needs from a CRM, and the records it exchanges with one.

The local database mirrors the CRM (``store.mirror``). Enrollment reads from that mirror and writes
through the CRM, so a Notion-backed signup costs one contact write and one sequence create.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterator, Protocol

from pydantic import BaseModel

from xmas_pipeline.campaign.records import ContactRecord, SequenceRecord, SequenceUpdate, TemplateRecord

__all__ = ["CRM", "CRMSchemaError", "ContactRecord", "SchemaProblem", "SequenceRecord", "SequenceUpdate", "TemplateRecord"]


class SchemaProblem(BaseModel):
    database: str
    property: str
    problem: str  # "missing" or "is <type>, expected <type>"

    def __str__(self) -> str:
        return f"{self.database}: property {self.property!r} {self.problem}"


class CRMSchemaError(RuntimeError):
    """The CRM's databases do not have the properties the pipeline writes; nothing was written."""

    def __init__(self, problems: list[SchemaProblem]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"The CRM schema does not match what the pipeline writes ({len(problems)} problem(s)):\n{lines}\n"
            "Fix the properties in Notion (or map their names in the campaign file's notion_properties), "
            "then run `xmas notion check`."
        )


class CRM(Protocol):
    name: str

    def check_schema(self) -> list[SchemaProblem]:
        """Every missing or mistyped property across the CRM's databases, in one list."""
        ...

    def save_contact(self, contact: ContactRecord, maybe_exists: bool = False) -> ContactRecord:
        """Create the contact, or update it in place when ``contact.crm_id`` is known. Returns it with crm_id.

        A retry inside the call never makes a second row. Callers look in the mirror first; when an
        earlier attempt may have created the row unseen (a retried event), they pass ``maybe_exists``
        and the backend looks it up before creating.
        """
        ...

    def create_sequence(self, sequence: SequenceRecord, maybe_exists: bool = False) -> SequenceRecord:
        """Create the sequence row (keyed on email + campaign); returns it with crm_id. Repeats as save_contact."""
        ...

    def update_sequences(self, updates: list[SequenceUpdate]) -> None:
        """Write back "Email N Sent" dates and completion: at most one call per sequence."""
        ...

    def contacts_changed_since(self, since: dt.datetime | None) -> Iterator[ContactRecord]:
        """Contacts edited at or after ``since`` (all when None), for the mirror."""
        ...

    def sequences_changed_since(self, since: dt.datetime | None, campaign: str) -> Iterator[SequenceRecord]:
        """This campaign's sequences edited at or after ``since`` (all when None), for the mirror."""
        ...

    def templates_changed_since(self, since: dt.datetime | None) -> Iterator[TemplateRecord]:
        """Email templates kept in the CRM (Notion's templates database) edited since ``since``; none for local."""
        ...
