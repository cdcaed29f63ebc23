"""Use case: pull what changed in the CRM into the local mirror (incremental, overlapping, de-duplicated)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import sqlalchemy as sa

from xmas_pipeline.campaign.clock import wall_now
from xmas_pipeline.campaign.journey import Journey
from xmas_pipeline.crm.base import CRM
from xmas_pipeline.store import ledger, mirror

# Notion rounds edit times down to the minute, so a cursor must look back past that rounding.
OVERLAP = dt.timedelta(minutes=2)


@dataclass
class SyncReport:
    fetched: int = 0
    full: bool = False
    disagreements: list[str] = field(default_factory=list)


def _since(engine: sa.Engine, name: str, full: bool) -> dt.datetime | None:
    raw = None if full else mirror.get_cursor(engine, name)
    return dt.datetime.fromisoformat(raw) - OVERLAP if raw else None


def _advance(engine: sa.Engine, name: str, stamps: list[dt.datetime | None]) -> None:
    known = [s for s in stamps if s is not None]
    if known:
        current = mirror.get_cursor(engine, name)
        newest = max(known)
        if current is None or newest > dt.datetime.fromisoformat(current):
            mirror.set_cursor(engine, name, newest.isoformat())


def sync_contacts(
    engine: sa.Engine, crm: CRM, now: dt.datetime, full: bool = False, fresh_for: dt.timedelta | None = None
) -> SyncReport:
    """Pull changed contacts; with ``fresh_for``, skip when a sync finished that recently (wall clock)."""
    if crm.name == "local":
        return SyncReport()  # the local tables are the CRM: nothing to pull
    synced_at = mirror.get_cursor(engine, "contacts:synced_at")
    if fresh_for and not full and synced_at and wall_now() - dt.datetime.fromisoformat(synced_at) < fresh_for:
        return SyncReport()
    started = wall_now()
    since = _since(engine, "contacts", full)
    records: dict = {}
    for record in crm.contacts_changed_since(since):  # oldest page first: it wins over later duplicates
        records.setdefault(record.email, record)
    mirror.upsert_contacts(engine, list(records.values()), now)
    _advance(engine, "contacts", [r.edited_at for r in records.values()])
    mirror.set_cursor(engine, "contacts:synced_at", started.isoformat())
    return SyncReport(fetched=len(records), full=since is None)


def sync_sequences(engine: sa.Engine, crm: CRM, campaign: Journey, now: dt.datetime, full: bool = False) -> SyncReport:
    if crm.name == "local":
        return SyncReport()
    cursor = f"sequences:{campaign.name}"  # one per journey: each is read with its own filter
    since = _since(engine, cursor, full)
    records: dict = {}
    for record in crm.sequences_changed_since(since, campaign.name):
        records.setdefault(record.sequence_key, record)
    mirror.upsert_sequences(engine, list(records.values()), now)
    # A step the CRM shows sent counts as sent (the website may send email 1 itself): never send it again.
    external = [
        (campaign.name, r.sequence_key, step, None, sent_at, "crm")
        for r in records.values()
        for step, sent_at in r.steps_sent.items()
        if 1 <= step <= len(campaign.steps)
    ]
    disagreements = ledger.record_external(engine, external) if external else []
    _advance(engine, cursor, [r.edited_at for r in records.values()])
    return SyncReport(fetched=len(records), full=since is None, disagreements=disagreements)


def sync_templates(engine: sa.Engine, crm: CRM, now: dt.datetime, full: bool = False) -> SyncReport:
    """Templates edited in the CRM since the last sync (only the Notion templates database has any)."""
    since = _since(engine, "templates", full)
    records = {r.name: r for r in crm.templates_changed_since(since)}
    mirror.upsert_templates(engine, list(records.values()), now)
    _advance(engine, "templates", [r.edited_at for r in records.values()])
    return SyncReport(fetched=len(records), full=since is None)
