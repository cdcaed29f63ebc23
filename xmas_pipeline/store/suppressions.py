"""Who must not be mailed (unsubscribed, bounced, complained) and the consent we hold for everyone else."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from xmas_pipeline.store.schema import consent_events, consents, sequences, suppressions


def suppress(engine: sa.Engine, email: str, reason: str, source: str, now: dt.datetime) -> bool:
    """Suppress an address and stop its active sequences, in one transaction. Returns False if already suppressed."""
    email = email.strip().lower()
    with engine.begin() as conn:
        exists = conn.execute(sa.select(suppressions.c.email).where(suppressions.c.email == email)).first()
        if exists is None:
            conn.execute(suppressions.insert().values(email=email, reason=reason, source=source, created_at=now))
        conn.execute(
            sequences.update()
            .where(sequences.c.email == email, sequences.c.status == "active")
            .values(status="exited", exit_reason=reason, updated_at=now)
        )
        if reason == "unsubscribed":
            conn.execute(
                consents.update()
                .where(consents.c.email == email, consents.c.withdrawn_at.is_(None))
                .values(withdrawn_at=now)
            )
        return exists is None


def suppressed(engine: sa.Engine, emails: list[str]) -> dict[str, str]:
    """The subset of ``emails`` that is suppressed, with the reason."""
    if not emails:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(suppressions.c.email, suppressions.c.reason).where(suppressions.c.email.in_(set(emails)))
        ).all()
    return dict(rows)


def record_consent(
    conn: sa.Connection,
    *,
    email: str,
    campaign: str,
    source: str,
    consented_at: dt.datetime,
    client_ip: str | None,
    user_agent: str | None,
    event_id: int | None,
    kind: str = "express",
) -> None:
    """CASL puts the proof of consent on the sender: keep how, when and from where.

    The first consent per journey stays in ``consents`` (withdrawn on unsubscribe); every one, re-signups
    included, is appended to ``consent_events``.
    """
    values = dict(email=email, campaign=campaign, kind=kind, source=source, consented_at=consented_at,
                  client_ip=client_ip, user_agent=user_agent, event_id=event_id)
    exists = conn.execute(
        sa.select(consents.c.id).where(consents.c.email == email, consents.c.campaign == campaign)
    ).first()
    if exists is None:
        conn.execute(consents.insert().values(**values))
    if event_id is None or conn.execute(
        sa.select(consent_events.c.id).where(consent_events.c.event_id == event_id, consent_events.c.campaign == campaign)
    ).first() is None:  # a retried event records its consent once
        conn.execute(consent_events.insert().values(**values))


def consent_history(engine: sa.Engine, email: str) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(
            sa.select(consent_events).where(consent_events.c.email == email.strip().lower()).order_by(consent_events.c.id)
        ))


def consent_for(engine: sa.Engine, email: str) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(consents).where(consents.c.email == email.strip().lower())))
