"""The local mirror of the CRM's contacts and sequences (for the local CRM it is the CRM itself)."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import sqlalchemy as sa

from xmas_pipeline.campaign.tokens import sequence_number
from xmas_pipeline.campaign.records import ContactRecord, SequenceRecord, TemplateRecord
from xmas_pipeline.store.ledger import copy_segments
from xmas_pipeline.store.schema import contacts, sequences, sync_cursors, templates


def _upsert(conn: sa.Connection, table: sa.Table, key: str, values: dict) -> None:
    updated = conn.execute(table.update().where(table.c[key] == values[key]).values(**values)).rowcount
    if not updated:
        conn.execute(table.insert().values(**values))


def contact_values(contact: ContactRecord, now: dt.datetime) -> dict:
    values = contact.model_dump()
    values["updated_at"] = now
    return values


def upsert_contacts(engine: sa.Engine, records: list[ContactRecord], now: dt.datetime) -> int:
    with engine.begin() as conn:
        for record in records:
            _upsert(conn, contacts, "email", contact_values(record, now))
    return len(records)


def sequence_values(seq: SequenceRecord, now: dt.datetime, *, profile: dict | None = None) -> dict:
    values = seq.model_dump(exclude={"steps_sent", "completed", "sequence_type"})
    values["seq_no"] = sequence_number(seq.sequence_key)
    values["updated_at"] = now
    if profile is not None:
        values["profile"] = json.dumps(profile, default=str)
    return values


def upsert_sequences(engine: sa.Engine, records: list[SequenceRecord], now: dt.datetime) -> int:
    """Mirror CRM sequences; a sequence the CRM marks completed stops here too (status only moves forward)."""
    with engine.begin() as conn:
        for record in records:
            values = sequence_values(record, now)
            current = conn.execute(
                sa.select(sequences.c.status).where(sequences.c.sequence_key == record.sequence_key)
            ).scalar()
            if record.completed and current in (None, "active"):
                values["status"] = "completed"
            elif current is None:
                values["status"] = "active"
            _upsert(conn, sequences, "sequence_key", values)
        copy_segments(conn, [r.sequence_key for r in records])
    return len(records)


def insert_sequence(
    conn: sa.Connection, seq: SequenceRecord, profile: dict, now: dt.datetime, event_id: int | None = None
) -> None:
    values = sequence_values(seq, now, profile=profile)
    values.update(status="active", event_id=event_id)
    _upsert(conn, sequences, "sequence_key", values)


def update_sequence(conn: sa.Connection, sequence_key: str, now: dt.datetime, **values) -> None:
    conn.execute(sequences.update().where(sequences.c.sequence_key == sequence_key).values(updated_at=now, **values))
    if "segment" in values:
        copy_segments(conn, [sequence_key])


def emails_for_booking(engine: sa.Engine, booking_uid: str) -> set[str]:
    """Who booked this Cal.com booking, as far as the sequences know."""
    with engine.connect() as conn:
        return set(conn.execute(sa.select(sequences.c.email).where(sequences.c.booking_uid == booking_uid)).scalars())


def get_contact(engine: sa.Engine, email: str) -> ContactRecord | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(contacts).where(contacts.c.email == email.strip().lower())).mappings().first()
    return ContactRecord(**{k: v for k, v in row.items() if k in ContactRecord.model_fields}) if row else None


def get_sequence(engine: sa.Engine, sequence_key: str) -> sa.RowMapping | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(sequences).where(sequences.c.sequence_key == sequence_key)).mappings().first()


def sequences_for_email(engine: sa.Engine, email: str) -> list[sa.RowMapping]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(sequences).where(sequences.c.email == email.strip().lower())).mappings())


def email_for_sequence(engine: sa.Engine, sequence_key: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(sequences.c.email).where(sequences.c.sequence_key == sequence_key)).scalar()


def load_sequences(engine: sa.Engine, keys: list[str]) -> dict[str, sa.RowMapping]:
    out: dict[str, sa.RowMapping] = {}
    with engine.connect() as conn:
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            for row in conn.execute(sa.select(sequences).where(sequences.c.sequence_key.in_(chunk))).mappings():
                out[row["sequence_key"]] = row
    return out


def booking_statuses(engine: sa.Engine, emails: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    with engine.connect() as conn:
        for start in range(0, len(emails), 500):
            chunk = emails[start : start + 500]
            out.update(conn.execute(sa.select(contacts.c.email, contacts.c.booking_status).where(contacts.c.email.in_(chunk))).all())
    return out


def set_status(engine: sa.Engine, keys: list[str], status: str, reason: str | None, now: dt.datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            sequences.update()
            .where(sequences.c.sequence_key.in_(keys), sequences.c.status == "active")
            .values(status=status, exit_reason=reason, updated_at=now)
        )


def exits_to_sync(engine: sa.Engine) -> list[sa.RowMapping]:
    """Stopped sequences whose stop the CRM has not been told about yet."""
    c = sequences.c
    with engine.connect() as conn:
        return list(conn.execute(
            sa.select(c.sequence_key, c.email, c.crm_id, c.exit_reason)
            .where(c.status == "exited", sa.or_(c.exit_synced.is_(None), c.exit_synced.is_(False)))
        ).mappings())


def mark_exits_synced(engine: sa.Engine, keys: list[str]) -> None:
    with engine.begin() as conn:
        conn.execute(sequences.update().where(sequences.c.sequence_key.in_(keys)).values(exit_synced=True))


def sequences_frame(engine: sa.Engine, campaign: str) -> pd.DataFrame:
    """The columns the due computation needs, for one campaign."""
    q = sa.select(
        sequences.c.sequence_key, sequences.c.seq_no, sequences.c.email, sequences.c.segment, sequences.c.status,
        sequences.c.signup_at,
    ).where(sequences.c.campaign == campaign)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    frame = pd.DataFrame(rows, columns=["sequence_key", "seq_no", "email", "segment", "status", "signup_at"])
    frame["seq_no"] = _seq_numbers(frame)
    stamps = pd.to_datetime(frame["signup_at"], utc=True) if len(frame) else pd.Series([], dtype="datetime64[ns, UTC]")
    frame["anchor_ns"] = stamps.astype("datetime64[ns, UTC]").astype("int64") if len(frame) else pd.Series([], dtype="int64")
    return frame.drop(columns=["signup_at"])


def _seq_numbers(frame: pd.DataFrame) -> pd.Series:
    """seq_no as int64, filled in for rows written before the column existed."""
    if frame["seq_no"].isna().any():
        frame["seq_no"] = [n if n == n and n is not None else sequence_number(k)
                           for n, k in zip(frame["seq_no"], frame["sequence_key"])]
    return frame["seq_no"].astype("int64")


def counts_by(engine: sa.Engine, table: sa.Table, *columns: str) -> list[tuple]:
    with engine.connect() as conn:
        cols = [table.c[c] for c in columns]
        return list(conn.execute(sa.select(*cols, sa.func.count()).group_by(*cols).order_by(*cols)).all())


def get_cursor(engine: sa.Engine, name: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(sync_cursors.c.value).where(sync_cursors.c.name == name)).scalar()


def set_cursor(engine: sa.Engine, name: str, value: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(sync_cursors.delete().where(sync_cursors.c.name == name))
        if value is not None:
            conn.execute(sync_cursors.insert().values(name=name, value=value))


def upsert_templates(engine: sa.Engine, records: list[TemplateRecord], now: dt.datetime) -> int:
    with engine.begin() as conn:
        for record in records:
            _upsert(conn, templates, "name", {**record.model_dump(), "updated_at": now})
    return len(records)


def load_templates(engine: sa.Engine) -> list[TemplateRecord]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(templates)).mappings().all()
    return [TemplateRecord(**{k: v for k, v in row.items() if k in TemplateRecord.model_fields}) for row in rows]
