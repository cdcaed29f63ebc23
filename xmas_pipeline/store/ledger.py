"""The delivery ledger: one row per (sequence, step), written when the sequence is planned.

Life of a row::

    scheduled --claim--> claimed --provider accepted--> sent
        |                  |-- this recipient refused for good ------------> skipped (reason)
        |                  |-- nothing left (template broken, provider down) --> failed --next run--> claimed
        |                  |-- outcome unknown (crash, timeout) --> stays claimed; after the lease another
        |                  |   run takes the whole batch over and resends the same bytes under the same key
        |                  '-- the provider's answer leaves it unclear whether it went --> held (an operator decides)
        |-- may not go (suppressed, sequence stopped, booked) --> skipped (reason)
        |-- reached later than the journey's max_lateness --> late (how late); a send_late backfill sends it
        '-- due at/after the journey's end --> expired
    external: someone else sent it (the website's email 1, a CRM edit)

Claims are fenced: each claim carries a token, the run renews it before every provider call and every
write of an outcome names the token, so a run that lost its claim (lease expired, another run took over)
cannot record anything, and stops sending.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Iterable

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from xmas_pipeline.campaign.tokens import sequence_number
from xmas_pipeline.store.schema import deliveries, sequences

SCHEDULED, CLAIMED, SENT, FAILED, SKIPPED = "scheduled", "claimed", "sent", "failed", "skipped"
LATE, EXPIRED, EXTERNAL, HELD = "late", "expired", "external", "held"
OPEN = (SCHEDULED, FAILED, CLAIMED)  # still owed
DONE = (SENT, EXTERNAL)  # the lead has it
FINAL = (SENT, EXTERNAL, SKIPPED, LATE, EXPIRED, HELD)  # nothing more happens without an operator
DEFAULT_LEASE = dt.timedelta(minutes=5)
_CHUNK = 500  # ids per IN (...): well below SQLite's and Postgres's bound-parameter limits

c = deliveries.c


def row_key(sequence_key: str, step: int) -> str:
    """The row's identity, and the provider's idempotency key for its first hand-off."""
    return f"xmas-{sequence_key}-s{step}"


def provider_key(key: str, handoffs: int) -> str:
    """A re-rendered message (the first never reached the provider) gets a key of its own."""
    return key if handoffs <= 1 else f"{key}-h{handoffs}"


def batch_key(keys: Iterable[str], token: str) -> str:
    digest = hashlib.sha256("\n".join([token, *keys]).encode()).hexdigest()
    return f"xmas-batch-{digest[:32]}"


@dataclass(frozen=True)
class Due:
    """A ledger row that may need sending."""

    id: int
    sequence_key: str
    step: int
    email: str
    due_at: dt.datetime
    status: str = SCHEDULED
    late_ok: bool = False
    campaign: str = ""  # the journey's name


@dataclass(frozen=True)
class Claim:
    id: int
    token: str
    sequence_key: str
    step: int
    email: str
    campaign: str  # the journey's name
    template: str | None
    key: str  # the row key
    handoffs: int  # hand-offs so far (0: never rendered for a provider)
    message: dict | None  # frozen: resend exactly this
    batch_key: str | None


def _insert(engine_or_conn) -> sa.Insert:
    dialect = postgresql if engine_or_conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(deliveries)


def _status_is(*statuses: str) -> sa.ColumnElement[bool]:
    """``status IN (...)`` spelled so an executemany can use it (expanding IN lists cannot)."""
    return sa.or_(*(c.status == s for s in statuses))


def _chunks(items: list, size: int = _CHUNK) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- planning ---------------------------------------------------------------------------------------


def plan(conn: sa.Connection, *, campaign: str, sequence_key: str, email: str, steps: list, now: dt.datetime,
         event_id: int | None = None) -> None:
    """Give every planned step its ledger row (rows that exist, e.g. sent elsewhere, are kept as they are).

    ``event_id``: the inbound event that started the sequence, kept on each row for lineage.
    """
    rows = [
        dict(
            sequence_key=sequence_key,
            seq_no=sequence_number(sequence_key),
            campaign=campaign,
            step=p.step,
            template=p.template,
            email=email,
            idempotency_key=row_key(sequence_key, p.step),
            status=p.state,
            reason=p.reason,
            due_at=p.due_at,
            attempts=0,
            crm_synced=False,
            event_id=event_id,
        )
        for p in steps
    ]
    if rows:
        conn.execute(_insert(conn).values(rows).on_conflict_do_nothing())
        copy_segments(conn, [sequence_key])
    conn.execute(sequences.update().where(sequences.c.sequence_key == sequence_key).values(planned_at=now))


def replan(conn: sa.Connection, *, sequence_key: str, steps: list, reset: bool = False,
           event_id: int | None = None) -> int:
    """Move steps not yet sent to a new plan; rows already sent (or in a run's hands) keep theirs.

    A step the old plan dropped may come back (a call rescheduled further out), and one it scheduled
    may now be dropped (rescheduled too close to the call). With ``event_id``, moved rows name the
    event that moved them (their lineage).
    """
    lineage = {} if event_id is None else {"event_id": event_id}
    movable = sa.or_(c.status.in_([SCHEDULED, FAILED, EXPIRED, LATE] + ([SKIPPED, HELD] if reset else [])),
                     sa.and_(c.status == SKIPPED, c.reason.like("dropped:%")))
    moved = 0
    for p in steps:
        moved += conn.execute(
            deliveries.update()
            .where(c.sequence_key == sequence_key, c.step == p.step, movable)
            .values(status=p.state, reason=p.reason, due_at=p.due_at, late_by_s=None, message=None, batch_key=None,
                    **lineage)
        ).rowcount
    return moved


def copy_segments(conn: sa.Connection, keys: list[str] | None) -> None:
    """Bring the ledger rows' copy of their sequence's segment up to date (all rows when ``keys`` is None)."""
    current = sa.select(sequences.c.segment).where(sequences.c.sequence_key == c.sequence_key).scalar_subquery()
    if keys is None:
        conn.execute(deliveries.update().values(segment=current))
        return
    for chunk in _chunks(keys):
        conn.execute(deliveries.update().where(c.sequence_key.in_(chunk)).values(segment=current))


def unplanned(engine: sa.Engine, campaign: str, limit: int = 5000) -> list[sa.RowMapping]:
    """Active sequences without ledger rows yet (first seen in the CRM, or written before planning existed)."""
    s = sequences.c
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(s.sequence_key, s.email, s.signup_at, s.event_at, s.timezone, s.event_id)
                .where(s.planned_at.is_(None), s.status == "active", s.campaign == campaign)
                .limit(limit)
            ).mappings()
        )


# --- what is owed -----------------------------------------------------------------------------------

OWED_COLUMNS = ["id", "sequence_key", "email", "campaign", "segment", "step", "template", "due_at", "status", "late_ok"]


def _journeys(campaign: str | Iterable[str]):
    return c.campaign.in_([campaign] if isinstance(campaign, str) else list(campaign))


def owed(
    engine: sa.Engine, campaign: str | Iterable[str], start: dt.datetime, end: dt.datetime, *, carry_over: bool = False
) -> pd.DataFrame:
    """Steps due in [start, end) that are not finished (late ones included, for a send_late backfill).

    With ``carry_over``, also every step due before ``start`` that is still owed (not yet sent, skipped
    or recorded late): the live day picks up what earlier days did not finish, whatever the reason.
    Sorted by due time.
    """
    s = sequences.c
    # Hundreds of thousands of rows at scale: the times come back as the driver gives them (text on
    # SQLite, naive datetimes on Postgres) and are converted a column at a time, not row by row.
    columns = [c.id, c.sequence_key, c.email, c.campaign, s.segment, c.step, c.template,
               sa.type_coerce(c.due_at, sa.String).label("due_at"), c.status, sa.type_coerce(c.late_ok, sa.Integer)]
    base = sa.select(*columns).select_from(deliveries.join(sequences, s.sequence_key == c.sequence_key))
    journeys = _journeys(campaign)
    # Both are range scans of ix_deliveries_status_due (one per status), then a key lookup per row for the segment.
    queries = [base.where(journeys, c.status.in_([*OPEN, LATE]), c.due_at >= start, c.due_at < end)]
    if carry_over:
        queries.append(base.where(journeys, c.status.in_(OPEN), c.due_at < start))
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # Postgres takes status and due time as independent: most rows are "scheduled", so it expects
            # a million owed rows before ``start`` (there are a few thousand; past steps are sent) and
            # scans the whole table. Priced for SSD (1.1, not 4) it takes the index; JIT would cost
            # more than it saves here. Both only for this transaction.
            conn.exec_driver_sql("SET LOCAL random_page_cost = 1.1")
            conn.exec_driver_sql("SET LOCAL jit = off")
        rows = [row for q in queries for row in conn.execute(q).all()]
    values = list(zip(*rows)) if rows else [()] * len(OWED_COLUMNS)
    frame = pd.DataFrame({name: pd.Series(v, dtype=object) for name, v in zip(OWED_COLUMNS, values)})
    frame["id"] = frame["id"].astype("int64")
    frame["step"] = frame["step"].astype("int64")
    frame["due_at"] = pd.to_datetime(frame["due_at"], utc=True, format="ISO8601")
    frame["late_ok"] = frame["late_ok"].fillna(0).astype(bool)
    return frame.sort_values(["due_at", "id"], kind="stable").reset_index(drop=True)


def dues(frame: pd.DataFrame) -> list[Due]:
    """The frame's rows as ``Due`` objects, built from whole columns (no per-row pandas access)."""
    if frame.empty:
        return []
    return [
        Due(*fields)
        for fields in zip(frame["id"].tolist(), frame["sequence_key"].tolist(), frame["step"].tolist(),
                          frame["email"].tolist(), list(frame["due_at"].dt.to_pydatetime()), frame["status"].tolist(),
                          frame["late_ok"].tolist(), frame["campaign"].tolist())
    ]


def load_dues(engine: sa.Engine, ids: list[int]) -> list[Due]:
    out = []
    with engine.connect() as conn:
        for chunk in _chunks(ids):
            for r in conn.execute(sa.select(deliveries).where(c.id.in_(chunk))):
                out.append(Due(r.id, r.sequence_key, r.step, r.email, r.due_at, r.status, bool(r.late_ok), r.campaign))
    return sorted(out, key=lambda d: (d.due_at, d.id))


def step_one(engine: sa.Engine, sequence_key: str) -> Due | None:
    with engine.connect() as conn:
        r = conn.execute(sa.select(deliveries).where(c.sequence_key == sequence_key, c.step == 1)).first()
    if r is None or r.status not in OPEN:
        return None
    return Due(r.id, r.sequence_key, r.step, r.email, r.due_at, r.status, bool(r.late_ok), r.campaign)


# --- claims -----------------------------------------------------------------------------------------


def new_token() -> str:
    return uuid.uuid4().hex


def _claims(rows, token: str) -> list[Claim]:
    return [
        Claim(
            id=r.id,
            token=token,
            sequence_key=r.sequence_key,
            step=r.step,
            email=r.email,
            campaign=r.campaign,
            template=r.template,
            key=r.idempotency_key,
            handoffs=r.handoffs or 0,
            message=json.loads(r.message) if r.message else None,
            batch_key=r.batch_key,
        )
        for r in sorted(rows, key=lambda r: r.id)
    ]


_RETURNED = (c.id, c.sequence_key, c.step, c.email, c.campaign, c.template, c.idempotency_key, c.handoffs, c.message,
             c.batch_key)


def claim(
    engine: sa.Engine,
    ids: list[int],
    *,
    token: str,
    wall: dt.datetime,
    lease: dt.timedelta,
    run_id: str | None,
    send_late: bool = False,
) -> list[Claim]:
    """Claim the rows among ``ids`` that nobody holds; returns only what this call now owns.

    A claim that expired before its message was frozen is taken too (its run died before any hand-off).
    Rows locked by a concurrent claimer are skipped, not waited for (FOR UPDATE SKIP LOCKED on Postgres).
    """
    claimable = [c.status.in_([SCHEDULED, FAILED] + ([LATE] if send_late else [])),
                 sa.and_(c.status == CLAIMED, c.message.is_(None), c.claimed_at < wall - lease)]
    out: list[Claim] = []
    with engine.begin() as conn:
        for chunk in _chunks(ids):
            target = (
                sa.select(c.id).where(c.id.in_(chunk), sa.or_(*claimable)).order_by(c.id).with_for_update(skip_locked=True)
            )
            rows = conn.execute(
                deliveries.update()
                .where(c.id.in_(target.scalar_subquery()))
                .values(status=CLAIMED, claim_token=token, claimed_at=wall, attempts=c.attempts + 1, run_id=run_id)
                .returning(*_RETURNED)
            ).all()
            out.extend(_claims(rows, token))
    return out


def expired_batches(engine: sa.Engine, ids: list[int], wall: dt.datetime, lease: dt.timedelta) -> list[str]:
    """Batch keys of frozen claims among ``ids`` whose run stopped renewing them (in doubt)."""
    keys: set[str] = set()
    with engine.connect() as conn:
        for chunk in _chunks(ids):
            keys.update(
                conn.execute(
                    sa.select(c.batch_key).where(
                        c.id.in_(chunk), c.status == CLAIMED, c.message.is_not(None), c.claimed_at < wall - lease
                    )
                ).scalars()
            )
    return sorted(k for k in keys if k)


def take_over(
    engine: sa.Engine, batch: str, *, token: str, wall: dt.datetime, lease: dt.timedelta, run_id: str | None
) -> list[Claim]:
    """Take a whole in-doubt batch from a run that stopped renewing it; all of it or nothing.

    Rows are locked in id order and re-checked after any wait, so two runs never split a batch.
    """
    with engine.connect() as conn:
        transaction = conn.begin()
        target = (
            sa.select(c.id)
            .where(c.batch_key == batch, c.status == CLAIMED, c.claimed_at < wall - lease)
            .order_by(c.id)
            .with_for_update()
        )
        rows = conn.execute(
            deliveries.update()
            .where(c.id.in_(target.scalar_subquery()))
            .values(claim_token=token, claimed_at=wall, attempts=c.attempts + 1, run_id=run_id)
            .returning(*_RETURNED)
        ).all()
        whole = conn.execute(
            sa.select(sa.func.count()).select_from(deliveries).where(c.batch_key == batch, c.status == CLAIMED)
        ).scalar_one()
        if len(rows) != whole:  # another run holds part of it: give ours back untouched
            transaction.rollback()
            return []
        transaction.commit()
    return _claims(rows, token)


def _held(conn: sa.Connection, token: str, ids: list[int]) -> set[int]:
    """Lock this run's claims among ``ids`` for the rest of the transaction; returns the ids it still holds.

    The no-op write takes the row locks on Postgres and SQLite's write lock, so nobody can take a row
    over between this check and the writes that follow it in the same transaction.
    """
    held: set[int] = set()
    for chunk in _chunks(ids):
        held.update(
            conn.execute(
                deliveries.update()
                .where(c.id.in_(chunk), c.claim_token == token, c.status == CLAIMED)
                .values(claim_token=token)
                .returning(c.id)
            ).scalars()
        )
    return held


def _write_held(conn: sa.Connection, token: str, rows: list[tuple[int, dict]]) -> set[int]:
    """Write each row's values if this run still holds its claim; returns the ids it had lost.

    One statement to lock and check, then one executemany per shape of values (a batch's outcomes have
    at most four shapes), so a batch costs the same few round trips whatever its size.
    """
    held = _held(conn, token, [row_id for row_id, _ in rows])
    shapes: dict[tuple[str, ...], list[tuple[int, dict]]] = {}
    for row_id, values in rows:
        if row_id in held:
            shapes.setdefault(tuple(sorted(values)), []).append((row_id, values))
    for columns, items in shapes.items():
        statement = (
            deliveries.update()
            # The fence stays in the statement itself, though the rows are locked: belt and braces.
            .where(c.id == sa.bindparam("b_id"), c.claim_token == token, c.status == CLAIMED)
            .values({col: sa.bindparam(f"b_{col}", type_=deliveries.c[col].type) for col in columns})
        )
        conn.execute(statement, [{"b_id": row_id, **{f"b_{k}": v for k, v in values.items()}} for row_id, values in items])
    return {row_id for row_id, _ in rows} - held


def freeze(engine: sa.Engine, token: str, items: list[tuple[Claim, dict, str, int]],
           template_hashes: dict[int, str] | None = None) -> set[int]:
    """Store (message, batch key, hand-off count) on each claim before the provider sees it.

    ``template_hashes`` (row id -> hash of the template source just rendered) is recorded with the
    message; a row re-frozen with its old bytes keeps the hash it had. Returns the ids this run no
    longer holds (nothing is written to those).
    """
    if not items:
        return set()
    template_hashes = template_hashes or {}
    rows = [
        (cl.id, dict(message=json.dumps(message), subject=message.get("subject", "")[:500], batch_key=batch,
                     handoffs=handoffs,
                     **({"template_hash": template_hashes[cl.id]} if cl.id in template_hashes else {})))
        for cl, message, batch, handoffs in items
    ]
    with engine.begin() as conn:
        return _write_held(conn, token, rows)


def renew(engine: sa.Engine, token: str, wall: dt.datetime) -> set[int]:
    """Extend every claim this run holds; returns the ids it still holds (the fence before a send)."""
    with engine.begin() as conn:
        return set(
            conn.execute(
                deliveries.update()
                .where(c.claim_token == token, c.status == CLAIMED)
                .values(claimed_at=wall)
                .returning(c.id)
            ).scalars()
        )


def settle(engine: sa.Engine, token: str, outcomes: list[tuple[int, dict]]) -> set[int]:
    """Record outcomes, in one transaction, on rows this run still holds; returns the ids it had lost."""
    if not outcomes:
        return set()
    with engine.begin() as conn:
        return _write_held(conn, token, outcomes)


def sent(provider: str, provider_id: str | None, at: dt.datetime) -> dict:
    return dict(status=SENT, provider=provider, provider_id=provider_id, sent_at=at, reason=None)


def failed(reason: str, *, keep_message: bool) -> dict:
    """Not sent; a later run tries again. A message the provider never accepted is rendered afresh."""
    values = dict(status=FAILED, reason=reason[:4000])
    if not keep_message:
        values.update(message=None, batch_key=None)
    return values


def refused(reason: str) -> dict:
    """The provider will never take this message for this recipient: final."""
    return dict(status=SKIPPED, reason=reason[:4000])


def held(reason: str) -> dict:
    return dict(status=HELD, reason=reason[:4000])


def release(engine: sa.Engine, token: str, ids: list[int], reason: str) -> None:
    """Give back claims this run never handed to a provider: retryable, rendered afresh next time."""
    settle(engine, token, [(i, failed(reason, keep_message=False)) for i in ids])


# --- outcomes decided without a provider ------------------------------------------------------------


def mark_skipped(engine: sa.Engine, skips: list[tuple[Due, str]], *, stale_before: dt.datetime | None = None) -> None:
    """Record why a step will never be sent; never touches a row that was sent or is being sent.

    With ``stale_before``, an abandoned claim (in doubt, renewed before then) is closed too, rather than
    resent to someone who may no longer be mailed; its reason says it was in doubt.
    """
    if not skips:
        return
    row = c.id == sa.bindparam("b_id")
    with engine.begin() as conn:
        conn.execute(
            deliveries.update().where(row, _status_is(SCHEDULED, FAILED, LATE))
            .values(status=SKIPPED, reason=sa.bindparam("b_reason")),
            [{"b_id": d.id, "b_reason": reason[:4000]} for d, reason in skips],
        )
        if stale_before is not None:
            conn.execute(
                deliveries.update().where(row, c.status == CLAIMED, c.claimed_at < stale_before)
                .values(status=SKIPPED, reason=sa.bindparam("b_reason")),
                [{"b_id": d.id, "b_reason": f"{reason} (an earlier send of it was in doubt)"[:4000]} for d, reason in skips],
            )


def mark_late(engine: sa.Engine, lates: list[tuple[Due, dt.timedelta, str]]) -> None:
    if not lates:
        return
    with engine.begin() as conn:
        conn.execute(
            deliveries.update().where(c.id == sa.bindparam("b_id"), _status_is(SCHEDULED, FAILED))
            .values(status=LATE, late_by_s=sa.bindparam("b_late_by_s"), reason=sa.bindparam("b_reason")),
            [{"b_id": d.id, "b_late_by_s": int(late_by.total_seconds()), "b_reason": reason[:4000]}
             for d, late_by, reason in lates],
        )


def record_external(engine: sa.Engine, items: list[tuple[str, str, int, dt.datetime | None, dt.datetime, str]]) -> list[str]:
    """Steps the CRM (or the website) shows as sent by someone else: (campaign, sequence key, step, due, sent, source).

    Returns disagreements, which are reported and never resolved by sending.
    """
    disagreements = []
    with engine.begin() as conn:
        for campaign, key, step, due, sent_at, source in items:
            email = conn.execute(sa.select(sequences.c.email).where(sequences.c.sequence_key == key)).scalar()
            values = dict(status=EXTERNAL, reason=f"sent by {source}", sent_at=sent_at, provider=source)
            conn.execute(
                _insert(conn)
                .values(sequence_key=key, seq_no=sequence_number(key), campaign=campaign, step=step,
                        email=email or "", idempotency_key=row_key(key, step), due_at=due, attempts=0,
                        crm_synced=True, **values)
                .on_conflict_do_nothing()
            )
            status = conn.execute(sa.select(c.status).where(c.idempotency_key == row_key(key, step))).scalar_one()
            if status in (SCHEDULED, FAILED, SKIPPED, LATE, EXPIRED, HELD):
                conn.execute(deliveries.update().where(c.idempotency_key == row_key(key, step)).values(crm_synced=True, **values))
            elif status == CLAIMED:
                disagreements.append(f"{email} step {step}: {source} says sent while our send of it is in flight")
    return disagreements


def complete_sequences(engine: sa.Engine, keys: Iterable[str], now: dt.datetime) -> int:
    """Active sequences among ``keys`` with nothing left to send are completed."""
    keys = list(set(keys))
    s = sequences.c
    count = 0
    with engine.begin() as conn:
        for chunk in _chunks(keys):
            still_owed = sa.select(c.sequence_key).where(c.sequence_key.in_(chunk), c.status.in_(OPEN))
            count += conn.execute(
                sequences.update()
                .where(s.sequence_key.in_(chunk), s.status == "active", s.planned_at.is_not(None),
                       s.sequence_key.not_in(still_owed))
                .values(status="completed", updated_at=now)
            ).rowcount
    return count


# --- operators' tools -------------------------------------------------------------------------------


def put_back(
    engine: sa.Engine,
    statuses: list[str],
    *,
    reason_contains: str | None = None,
    due_from: dt.datetime | None = None,
    due_to: dt.datetime | None = None,
) -> list[sa.Row]:
    """Make skipped/held rows retryable again (rendered afresh, sent however late): ``xmas retry``."""
    where = [c.status.in_(statuses)]
    if reason_contains:
        where.append(c.reason.ilike(f"%{reason_contains}%"))
    if due_from is not None:
        where.append(c.due_at >= due_from)
    if due_to is not None:
        where.append(c.due_at < due_to)
    with engine.begin() as conn:
        rows = list(conn.execute(sa.select(c.id, c.email, c.step, c.status, c.reason).where(*where).order_by(c.id)))
        for chunk in _chunks([r.id for r in rows]):
            conn.execute(
                deliveries.update()
                .where(c.id.in_(chunk), c.status.in_(statuses))
                .values(status=FAILED, reason="put back by xmas retry", late_ok=True, message=None, batch_key=None)
            )
    return rows


# --- what the schedule, the checks and the UI read ----------------------------------------------------


def has_work(engine: sa.Engine, campaign: str | Iterable[str], now: dt.datetime, wall: dt.datetime, lease: dt.timedelta) -> str | None:
    """Why a delivery run is needed now (a step due and unsent, an in-doubt claim, an unplanned sequence), or None."""
    with engine.connect() as conn:
        due = conn.execute(
            sa.select(c.due_at).where(_journeys(campaign), c.status.in_([SCHEDULED, FAILED]), c.due_at <= now)
            .order_by(c.due_at).limit(1)
        ).scalar()
        if due is not None:
            return "steps due"
        stale = conn.execute(
            sa.select(c.id).where(_journeys(campaign), c.status == CLAIMED, c.claimed_at < wall - lease).limit(1)
        ).scalar()
        if stale is not None:
            return "claims to resume"
        s = sequences.c
        unplanned_seq = conn.execute(
            sa.select(s.sequence_key).where(s.campaign.in_([campaign] if isinstance(campaign, str) else list(campaign)),
                                            s.planned_at.is_(None), s.status == "active").limit(1)
        ).scalar()
        return "sequences to plan" if unplanned_seq is not None else None


def next_due(engine: sa.Engine, campaign: str | Iterable[str]) -> dt.datetime | None:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.min(c.due_at)).where(_journeys(campaign), c.status.in_([SCHEDULED, FAILED]))
        ).scalar()


def overdue(engine: sa.Engine, campaign: str | Iterable[str], before: dt.datetime, limit: int = 20) -> tuple[int, list[sa.Row]]:
    """Steps due before ``before`` that are still owed: neither sent, skipped with a reason nor recorded late."""
    where = [_journeys(campaign), c.status.in_(OPEN), c.due_at < before]
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(deliveries).where(*where)).scalar_one()
        rows = list(
            conn.execute(
                sa.select(c.email, c.campaign, c.step, c.due_at, c.status, c.reason).where(*where).order_by(c.due_at).limit(limit)
            )
        )
    return count, rows


def sent_between(engine: sa.Engine, campaign: str | Iterable[str], start: dt.datetime, end: dt.datetime) -> list[sa.Row]:
    """Everything that went out in [start, end): enrollment's email 1, scheduled runs and CLI sends alike."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(c.email, c.campaign, c.step, c.subject, c.provider, c.provider_id, c.sent_at, c.due_at, c.run_id,
                          c.template, c.template_hash, c.event_id)
                .where(_journeys(campaign), c.status == SENT, c.sent_at >= start, c.sent_at < end)
                .order_by(c.sent_at, c.id)
            )
        )


def due_between_by_status(engine: sa.Engine, campaign: str | Iterable[str], start: dt.datetime, end: dt.datetime) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(c.status, sa.func.count())
            .where(_journeys(campaign), c.due_at >= start, c.due_at < end)
            .group_by(c.status)
        ).all()
    return dict(rows)


def not_sent_between(engine: sa.Engine, campaign: str | Iterable[str], start: dt.datetime, end: dt.datetime, limit: int = 50) -> list[sa.Row]:
    """Steps due in [start, end) that were skipped, recorded late, expired, failed or held, with the reason."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(c.email, c.campaign, c.step, c.status, c.reason, c.due_at, c.late_by_s)
                .where(_journeys(campaign), c.due_at >= start, c.due_at < end,
                       c.status.in_([SKIPPED, LATE, EXPIRED, FAILED, HELD]))
                .order_by(c.due_at, c.id)
                .limit(limit)
            )
        )


def unsynced(engine: sa.Engine, *, run_id: str | None = None, stragglers_before: dt.datetime | None = None) -> list[sa.Row]:
    """Sent rows whose "Email N Sent" date has not reached the CRM yet.

    With ``run_id``: only this run's sends, plus stragglers a run left unsynced (sent before
    ``stragglers_before``), so two runs at once do not both write the same dates back.
    """
    where = [c.status == SENT, c.crm_synced.is_(False)]
    if run_id is not None:
        where.append(sa.or_(c.run_id == run_id, c.sent_at < stragglers_before))
    with engine.connect() as conn:
        return list(conn.execute(sa.select(c.id, c.sequence_key, c.step, c.sent_at).where(*where)))


def mark_synced(engine: sa.Engine, ids: list[int]) -> None:
    with engine.begin() as conn:
        for chunk in _chunks(ids):
            conn.execute(deliveries.update().where(c.id.in_(chunk)).values(crm_synced=True))


def record_provider_event(engine: sa.Engine, provider_id: str, event: str, at: dt.datetime) -> str | None:
    """A provider webhook (delivered/bounced/complained) for one message; returns its recipient, if known."""
    with engine.begin() as conn:
        row = conn.execute(sa.select(c.id, c.email).where(c.provider_id == provider_id)).first()
        if row is None:
            return None
        conn.execute(deliveries.update().where(c.id == row.id).values(event=event, event_at=at))
        return row.email


def rows_for(engine: sa.Engine, *, email: str | None = None) -> list[sa.Row]:
    q = sa.select(deliveries).order_by(c.sequence_key, c.step)
    if email is not None:
        q = q.where(c.email == email.strip().lower())
    with engine.connect() as conn:
        return list(conn.execute(q))


def counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(c.status, sa.func.count()).group_by(c.status)).all()
    return dict(rows)
