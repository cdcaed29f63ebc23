"""The embedded default CRM: the local database's contacts and sequences tables are the CRM.

Enrollment writes through to those tables itself (``store.mirror``), so this backend has nothing to
send anywhere: its writes hand the record back with a local id, and its reads come from the tables.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterator

import sqlalchemy as sa

from xmas_pipeline.crm.base import ContactRecord, SchemaProblem, SequenceRecord, SequenceUpdate, TemplateRecord
from xmas_pipeline.store.schema import contacts, deliveries, sequences


class LocalCRM:
    name = "local"

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def check_schema(self) -> list[SchemaProblem]:
        return []  # store.db creates and upgrades its own tables

    def save_contact(self, contact: ContactRecord, maybe_exists: bool = False) -> ContactRecord:
        return contact.model_copy(update={"crm_id": contact.crm_id or f"local:{contact.email}"})

    def create_sequence(self, sequence: SequenceRecord, maybe_exists: bool = False) -> SequenceRecord:
        return sequence.model_copy(update={"crm_id": sequence.crm_id or f"local:{sequence.sequence_key}"})

    def update_sequences(self, updates: list[SequenceUpdate]) -> None:
        return None  # the ledger and the sequences table already hold the truth

    def contacts_changed_since(self, since: dt.datetime | None) -> Iterator[ContactRecord]:
        q = sa.select(contacts)
        if since is not None:
            q = q.where(contacts.c.updated_at >= since)
        with self.engine.connect() as conn:
            for row in conn.execute(q).mappings():
                yield ContactRecord(**{k: v for k, v in row.items() if k in ContactRecord.model_fields})

    def sequences_changed_since(self, since: dt.datetime | None, campaign: str) -> Iterator[SequenceRecord]:
        q = sa.select(sequences).where(sequences.c.campaign == campaign)
        if since is not None:
            q = q.where(sequences.c.updated_at >= since)
        with self.engine.connect() as conn:
            rows = list(conn.execute(q).mappings())
            sent = {}
            for r in conn.execute(
                sa.select(deliveries.c.sequence_key, deliveries.c.step, deliveries.c.sent_at).where(
                    deliveries.c.status.in_(["sent", "external"])
                )
            ):
                sent.setdefault(r.sequence_key, {})[r.step] = r.sent_at
        for row in rows:
            fields = {k: v for k, v in row.items() if k in SequenceRecord.model_fields}
            yield SequenceRecord(
                **fields, steps_sent=sent.get(row["sequence_key"], {}), completed=row["status"] == "completed"
            )

    def templates_changed_since(self, since: dt.datetime | None) -> Iterator[TemplateRecord]:
        return iter(())  # local templates are files beside the campaign file
