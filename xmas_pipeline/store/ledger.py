"""The delivery ledger: a row per (sequence, step) claimed before any provider call.

A row is ``claimed`` (with the rendered message frozen in it) before the send, ``sent`` after the
provider accepted it, ``failed`` when the provider or the template refused it (retried by a later run),
``skipped`` when it must never go (suppressed, sequence stopped, campaign over) and ``external`` when
someone else sent it (the website's email 1). A claim left by a crashed run is taken over after the
lease and resent with the same idempotency key and the same bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from xmas_pipeline.campaign.tokens import sequence_number
from xmas_pipeline.store.schema import deliveries

FINISHED = ("sent", "external", "skipped")
DEFAULT_LEASE = dt.timedelta(minutes=5)


def idempotency_key(sequence_key: str, step: int) -> str:
    return f"xmas-{sequence_key}-s{step}"


@dataclass(frozen=True)
class Due:
    sequence_key: str
    step: int
    email: str
    due_at: dt.datetime


@dataclass(frozen=True)
class Claim:
    id: int
    token: str
    sequence_key: str
    step: int
    email: str
    idempotency_key: str
    message: dict | None  # set when resuming a crashed claim: resend exactly this
    batch_key: str | None
    resumed: bool


def _insert(engine: sa.Engine):
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(deliveries)


def _wall_now() -> dt.datetime:
    # Leases are about real processes, so they use the wall clock even when the campaign clock is pinned.
    return dt.datetime.now(dt.timezone.utc)


def claim(
    engine: sa.Engine, due: list[Due], run_id: str | None = None, lease: dt.timedelta = DEFAULT_LEASE
) -> list[Claim]:
    """Claim every due step nobody else holds; returns only the rows this call now owns."""
    if not due:
        return []
    token = uuid.uuid4().hex
    wall = _wall_now()
    c = deliveries.c
    with engine.begin() as conn:
        for chunk_start in range(0, len(due), 500):
            chunk = due[chunk_start : chunk_start + 500]
            conn.execute(
                _insert(engine)
                .values(
                    [
                        dict(
                            sequence_key=d.sequence_key,
                            seq_no=sequence_number(d.sequence_key),
                            step=d.step,
                            email=d.email,
                            idempotency_key=idempotency_key(d.sequence_key, d.step),
                            status="claimed",
                            due_at=d.due_at,
                            claim_token=token,
                            claimed_at=wall,
                            attempts=1,
                            crm_synced=False,
                            run_id=run_id,
                        )
                        for d in chunk
                    ]
                )
                .on_conflict_do_nothing()
            )
            keys = [idempotency_key(d.sequence_key, d.step) for d in chunk]
            # Failed rows are retried; claims older than the lease belonged to a run that died.
            conn.execute(
                deliveries.update()
                .where(
                    c.idempotency_key.in_(keys),
                    c.claim_token != token,
                    sa.or_(c.status == "failed", sa.and_(c.status == "claimed", c.claimed_at < wall - lease)),
                )
                .values(
                    claim_token=token,
                    claimed_at=wall,
                    attempts=c.attempts + 1,
                    run_id=run_id,
                    # a failed row is rendered afresh (the template may have been fixed); a stale claim keeps its bytes
                    message=sa.case((c.status == "failed", None), else_=c.message),
                    batch_key=sa.case((c.status == "failed", None), else_=c.batch_key),
                    status="claimed",
                )
            )
        rows = conn.execute(sa.select(deliveries).where(c.claim_token == token).order_by(c.id)).all()
    return [
        Claim(
            id=r.id,
            token=token,
            sequence_key=r.sequence_key,
            step=r.step,
            email=r.email,
            idempotency_key=r.idempotency_key,
            message=json.loads(r.message) if r.message else None,
            batch_key=r.batch_key,
            resumed=r.message is not None,
        )
        for r in rows
    ]


def freeze(engine: sa.Engine, claims: list[Claim], messages: dict[int, dict], batch_keys: dict[int, str]) -> None:
    """Store each claim's rendered message and batch before it is handed to the provider."""
    with engine.begin() as conn:
        for cl in claims:
            if cl.id in messages:
                conn.execute(
                    deliveries.update()
                    .where(deliveries.c.id == cl.id, deliveries.c.claim_token == cl.token)
                    .values(
                        message=json.dumps(messages[cl.id]),
                        subject=messages[cl.id].get("subject", "")[:500],
                        batch_key=batch_keys[cl.id],
                    )
                )


def _settle(engine: sa.Engine, outcomes: list[tuple[Claim, dict]]) -> None:
    """Record outcomes on rows this run still owns (a claim taken over by another run is left alone)."""
    with engine.begin() as conn:
        for cl, values in outcomes:
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id == cl.id, deliveries.c.claim_token == cl.token)
                .values(**values)
            )


def mark_sent(
    engine: sa.Engine, results: list[tuple[Claim, str, str | None]], now: dt.datetime
) -> None:
    """``results``: (claim, provider name, provider id)."""
    _settle(engine, [
        (cl, dict(status="sent", provider=provider, provider_id=provider_id, sent_at=now, reason=None))
        for cl, provider, provider_id in results
    ])


def mark_failed(engine: sa.Engine, failures: list[tuple[Claim, str]]) -> None:
    """Not sent, worth another try by a later run (a template fixed, a provider back)."""
    _settle(engine, [(cl, dict(status="failed", reason=error[:4000])) for cl, error in failures])


def mark_refused(engine: sa.Engine, refusals: list[tuple[Claim, str]]) -> None:
    """The provider refused for good: final (``skipped``), so no later run sends it again."""
    _settle(engine, [(cl, dict(status="skipped", reason=why[:4000], crm_synced=True)) for cl, why in refusals])


def release(engine: sa.Engine, claims: list[Claim]) -> None:
    """Give back claims this run never handed to a provider (e.g. a quota stop), keeping nothing frozen."""
    with engine.begin() as conn:
        for cl in claims:
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id == cl.id, deliveries.c.claim_token == cl.token, deliveries.c.message.is_(None))
                .values(status="failed", reason="not sent: the run stopped before this message")
            )


def mark_skipped(engine: sa.Engine, skips: list[tuple[Due, str]], now: dt.datetime) -> None:
    """Record why a step will never be sent; never overwrites a row that was sent."""
    c = deliveries.c
    with engine.begin() as conn:
        for d, reason in skips:
            key = idempotency_key(d.sequence_key, d.step)
            conn.execute(
                _insert(engine)
                .values(
                    sequence_key=d.sequence_key,
                    seq_no=sequence_number(d.sequence_key),
                    step=d.step,
                    email=d.email,
                    idempotency_key=key,
                    status="skipped",
                    reason=reason,
                    due_at=d.due_at,
                    attempts=0,
                    crm_synced=True,
                    sent_at=None,
                )
                .on_conflict_do_nothing()
            )
            conn.execute(
                deliveries.update()
                .where(c.idempotency_key == key, c.status == "failed")
                .values(status="skipped", reason=reason)
            )


def record_external(engine: sa.Engine, items: list[tuple[Due, dt.datetime, str]]) -> list[str]:
    """Steps the CRM shows as sent by someone else. Returns disagreements (never resolved by sending)."""
    c = deliveries.c
    disagreements = []
    with engine.begin() as conn:
        for d, sent_at, source in items:
            key = idempotency_key(d.sequence_key, d.step)
            conn.execute(
                _insert(engine)
                .values(
                    sequence_key=d.sequence_key,
                    seq_no=sequence_number(d.sequence_key),
                    step=d.step,
                    email=d.email,
                    idempotency_key=key,
                    status="external",
                    reason=f"sent by {source}",
                    due_at=d.due_at,
                    sent_at=sent_at,
                    provider=source,
                    attempts=0,
                    crm_synced=True,
                )
                .on_conflict_do_nothing()
            )
            row = conn.execute(sa.select(c.status).where(c.idempotency_key == key)).scalar_one()
            if row in ("failed", "skipped"):
                conn.execute(
                    deliveries.update()
                    .where(c.idempotency_key == key)
                    .values(status="external", reason=f"sent by {source}", sent_at=sent_at, provider=source)
                )
            elif row == "claimed":
                disagreements.append(f"{d.email} step {d.step}: {source} says sent while a send is in flight")
    return disagreements


def finished_steps(engine: sa.Engine) -> pd.DataFrame:
    """(sequence_key, seq_no, step) of ledger rows that need no more sending."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(deliveries.c.sequence_key, deliveries.c.seq_no, deliveries.c.step).where(
                deliveries.c.status.in_(FINISHED)
            )
        ).all()
    frame = pd.DataFrame(rows, columns=["sequence_key", "seq_no", "step"])
    if frame["seq_no"].isna().any():
        frame["seq_no"] = [sequence_number(k) for k in frame["sequence_key"]]
    return frame.astype({"seq_no": "int64", "step": "int64"})


def unsynced(engine: sa.Engine) -> list[sa.Row]:
    """Sent rows whose "Email N Sent" date has not reached the CRM yet."""
    c = deliveries.c
    with engine.connect() as conn:
        return list(conn.execute(sa.select(c.id, c.sequence_key, c.step, c.sent_at).where(c.status == "sent", c.crm_synced.is_(False))))


def mark_synced(engine: sa.Engine, ids: list[int]) -> None:
    with engine.begin() as conn:
        for start in range(0, len(ids), 500):
            conn.execute(deliveries.update().where(deliveries.c.id.in_(ids[start : start + 500])).values(crm_synced=True))


def record_provider_event(engine: sa.Engine, provider_id: str, event: str, at: dt.datetime) -> str | None:
    """A provider webhook (delivered/bounced/complained) for one message; returns its recipient, if known."""
    c = deliveries.c
    with engine.begin() as conn:
        row = conn.execute(sa.select(c.id, c.email).where(c.provider_id == provider_id)).first()
        if row is None:
            return None
        conn.execute(deliveries.update().where(c.id == row.id).values(event=event, event_at=at))
        return row.email


def rows_for(engine: sa.Engine, *, email: str | None = None) -> list[sa.Row]:
    q = sa.select(deliveries).order_by(deliveries.c.sequence_key, deliveries.c.step)
    if email is not None:
        q = q.where(deliveries.c.email == email.strip().lower())
    with engine.connect() as conn:
        return list(conn.execute(q))


def counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(deliveries.c.status, sa.func.count()).group_by(deliveries.c.status)).all()
    return dict(rows)
