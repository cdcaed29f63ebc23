"""What happened to each sent message after the provider took it: one row per provider webhook.

Resend signs each webhook delivery with a Svix id that stays the same when it retries, so (id, kind)
is the row's identity: a replayed webhook is stored once and the funnel's counts do not move.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from xmas_pipeline.store.schema import deliveries, message_events

KINDS = ("delivered", "opened", "clicked", "bounced", "soft_bounced", "complained")


@dataclass(frozen=True)
class Recorded:
    duplicate: bool  # this webhook delivery was recorded before: nothing changed
    delivery_id: int | None  # the ledger row of the message, when we sent it
    email: str | None  # its recipient, per the ledger


def record(
    engine: sa.Engine, *, svix_id: str, provider_id: str | None, kind: str, occurred_at: dt.datetime,
    received_at: dt.datetime,
) -> Recorded:
    """Store one provider event for one message (once per ``svix_id`` and kind)."""
    if kind not in KINDS:
        raise ValueError(f"unknown message event kind {kind!r}")
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    with engine.begin() as conn:
        row = None
        if provider_id:
            row = conn.execute(
                sa.select(deliveries.c.id, deliveries.c.email).where(deliveries.c.provider_id == provider_id)
            ).first()
        inserted = conn.execute(
            dialect.insert(message_events)
            .values(svix_id=svix_id[:200], delivery_id=row.id if row else None,
                    provider_id=provider_id[:200] if provider_id else None, kind=kind,
                    occurred_at=occurred_at, received_at=received_at)
            .on_conflict_do_nothing(index_elements=["svix_id", "kind"])
        ).rowcount
    return Recorded(duplicate=inserted == 0, delivery_id=row.id if row else None, email=row.email if row else None)


def events_for(engine: sa.Engine, delivery_ids: list[int]) -> list[sa.Row]:
    """Every event recorded for these ledger rows, oldest first (``xmas contact``)."""
    if not delivery_ids:
        return []
    with engine.connect() as conn:
        return list(conn.execute(
            sa.select(message_events.c.delivery_id, message_events.c.kind, message_events.c.occurred_at)
            .where(message_events.c.delivery_id.in_(delivery_ids))
            .order_by(message_events.c.occurred_at, message_events.c.id)
        ))
