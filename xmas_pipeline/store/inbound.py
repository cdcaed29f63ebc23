"""The inbound queue: signups land here durably before any Notion or mail work happens.

Life of an event: ``pending`` (inserted by the intake) → ``dispatched`` (a run was requested for it) →
``done``; a failed try goes to ``retry`` with a backoff, and after ``max_attempts`` tries to ``dead``,
from where ``xmas events --replay ID`` brings it back. A run that never started is not a try: its
events go back to ``pending``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import sqlalchemy as sa

from xmas_pipeline.store.schema import inbound_events

DEFAULT_MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class NewEvent:
    idempotency_key: str
    kind: str
    email: str
    payload: dict | str  # a str is the JSON body exactly as received (stored without re-serializing)
    received_at: dt.datetime
    client_ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class Enqueued:
    event_id: int
    duplicate: bool


def enqueue_many(engine: sa.Engine, events: list[NewEvent]) -> list[Enqueued]:
    """Insert events in one transaction; an already-known idempotency key returns the existing row.

    One statement per step, not per event: the known keys are read in chunks, keys repeated within
    ``events`` are inserted once (the first is new, the later ones are duplicates of it), and the new
    rows go in with one executemany whose RETURNING maps every key to its id. The ids are matched by
    key, so no row order is needed: ``sort_by_parameter_order=True`` would make SQLite fall back to
    one INSERT per row, whereas unordered it sends one multi-row INSERT (Postgres batches either way).
    A payload given as a ``str`` is taken to be its JSON text already and stored as it is.
    """
    if not events:
        return []
    c = inbound_events.c
    chunk = 500  # keys per lookup: far below SQLite's and Postgres's bound-parameter limits
    keys = list(dict.fromkeys(e.idempotency_key for e in events))  # unique, first occurrence first
    for _ in range(3):  # a concurrent writer may insert the same key between our read and write
        try:
            with engine.begin() as conn:
                known: dict[str, int] = {}
                for at in range(0, len(keys), chunk):
                    known.update(
                        conn.execute(
                            sa.select(c.idempotency_key, c.id).where(c.idempotency_key.in_(keys[at : at + chunk]))
                        ).all()
                    )
                rows: list[dict] = []
                for event in events:
                    key = event.idempotency_key
                    if key in known:
                        continue
                    known[key] = 0  # placeholder until the insert returns its id; a repeat is a duplicate
                    payload = event.payload
                    rows.append(
                        {
                            "idempotency_key": key,
                            "kind": event.kind,
                            "email": event.email,
                            "payload": payload if isinstance(payload, str) else json.dumps(payload, default=str),
                            "received_at": event.received_at,
                            "client_ip": event.client_ip,
                            "user_agent": (event.user_agent or "")[:512] or None,
                            "status": "pending",
                            "attempts": 0,
                            "dispatches": 0,
                        }
                    )
                new_ids: dict[str, int] = {}
                if rows:
                    inserted = conn.execute(
                        inbound_events.insert().returning(c.id, c.idempotency_key), rows
                    )
                    new_ids = {key: new_id for new_id, key in inserted}
                    if len(new_ids) != len(rows):
                        raise RuntimeError(f"inserted {len(rows)} events but {len(new_ids)} ids came back")
                    known.update(new_ids)
                results: list[Enqueued] = []
                for event in events:
                    key = event.idempotency_key
                    # The first occurrence of a key this call inserted is new; every other one is a duplicate.
                    results.append(Enqueued(known[key], new_ids.pop(key, None) is None))
                return results
        except sa.exc.IntegrityError:
            continue
    raise RuntimeError("could not enqueue events: idempotency keys kept colliding")


def enqueue(engine: sa.Engine, event: NewEvent) -> Enqueued:
    return enqueue_many(engine, [event])[0]


# --- the sensor's side -------------------------------------------------------------------------
#
# Work is found by status, never by an id cursor: on Postgres ids are handed out at insert and
# committed in any order, so an id below a cursor can still appear. A batch is marked dispatched under
# a run key stored on its events; the sensor re-requests that same key until Dagster has a run for it
# (the daemon launches a key once), then follows the run: queued or running is waiting, not an attempt.

MAX_LAUNCHES = 20  # runs requested for an event that never started before it is given up as dead


@dataclass(frozen=True)
class Dispatch:
    run_key: str
    ids: list[int]


def dispatch_waiting(engine: sa.Engine, now: dt.datetime, limit: int) -> Dispatch | None:
    """Mark up to ``limit`` waiting events (new, or due a retry) dispatched under one new run key.

    Oldest first. On Postgres the rows are taken with FOR UPDATE SKIP LOCKED, so two dispatchers never
    take the same event. The key names the batch's first event and that event's dispatch count, which
    no other batch can share, so a key is never reused (Dagster remembers keys forever, failed runs too).
    """
    c = inbound_events.c
    waiting = sa.or_(c.status == "pending", sa.and_(c.status == "retry", c.next_attempt_at <= now))
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(c.id, c.dispatches).where(waiting).order_by(c.id).limit(limit).with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return None
        ids = [r.id for r in rows]
        key = f"signups-{ids[0]}-{ids[-1]}-d{(rows[0].dispatches or 0) + 1}"
        conn.execute(
            inbound_events.update()
            .where(c.id.in_(ids))
            .values(status="dispatched", dispatched_at=now, dispatches=c.dispatches + 1, run_key=key)
        )
    return Dispatch(key, ids)


def dispatched(engine: sa.Engine) -> list[Dispatch]:
    """Batches handed to Dagster and not finished, by run key."""
    c = inbound_events.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(c.run_key, c.id).where(c.status == "dispatched").order_by(c.id)).all()
    batches: dict[str, list[int]] = {}
    for key, event_id in rows:
        batches.setdefault(key or f"signups-{event_id}-unknown", []).append(event_id)
    return [Dispatch(key, ids) for key, ids in batches.items()]


def requeue(engine: sa.Engine, batch: Dispatch, why: str) -> int:
    """The batch's run never started (canceled while queued, failed to launch): not an attempt.

    Its events wait for the next batch; one that has been launched MAX_LAUNCHES times without a run
    ever starting is dead, with the reason. Returns how many went back to waiting.
    """
    c = inbound_events.c
    mine = sa.and_(c.id.in_(batch.ids), c.status == "dispatched", c.run_key == batch.run_key)
    with engine.begin() as conn:
        conn.execute(
            inbound_events.update()
            .where(mine, c.dispatches - c.attempts >= MAX_LAUNCHES)
            .values(status="dead", last_error=f"{MAX_LAUNCHES} runs were requested and none started; last: {why}")
        )
        return conn.execute(inbound_events.update().where(mine).values(status="pending", last_error=why)).rowcount


def note_run_failed(
    engine: sa.Engine, batch: Dispatch, why: str, now: dt.datetime, max_attempts: int = DEFAULT_MAX_ATTEMPTS
) -> None:
    """The batch's run started and ended without finishing these events: one failed attempt each."""
    c = inbound_events.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(c.id).where(c.id.in_(batch.ids), c.status == "dispatched", c.run_key == batch.run_key)
        ).scalars().all()
    for event_id in rows:
        mark_failed(engine, event_id, why, now, max_attempts=max_attempts, only_if_dispatched=batch.run_key)


# --- the enrollment run's side -----------------------------------------------------------------


def load(engine: sa.Engine, ids: list[int]) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(inbound_events).where(inbound_events.c.id.in_(ids)).order_by(inbound_events.c.id)))


def mark_done(engine: sa.Engine, event_id: int, now: dt.datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            inbound_events.update()
            .where(inbound_events.c.id == event_id)
            .values(status="done", done_at=now, last_error=None, next_attempt_at=None)
        )


def backoff(attempts: int) -> dt.timedelta:
    """30 s, 2 min, 8 min, 32 min, ... capped at 2 h."""
    return dt.timedelta(seconds=min(30 * 4 ** max(attempts - 1, 0), 7200))


def mark_failed(
    engine: sa.Engine,
    event_id: int,
    error: str,
    now: dt.datetime,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    only_if_dispatched: str | None = None,
) -> str:
    """Record a failed try; returns the new status (``retry`` or ``dead``)."""
    c = inbound_events.c
    with engine.begin() as conn:
        current = conn.execute(sa.select(c.attempts, c.status, c.run_key).where(c.id == event_id)).one()
        if only_if_dispatched is not None and (current.status != "dispatched" or current.run_key != only_if_dispatched):
            return current.status  # finished or re-dispatched meanwhile
        attempts = current.attempts + 1
        status = "dead" if attempts >= max_attempts else "retry"
        conn.execute(
            inbound_events.update()
            .where(c.id == event_id)
            .values(
                status=status,
                attempts=attempts,
                last_error=error[:4000],
                next_attempt_at=None if status == "dead" else now + backoff(attempts),
            )
        )
        return status


def dead_events(engine: sa.Engine) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(inbound_events).where(inbound_events.c.status == "dead").order_by(inbound_events.c.id)))


def replay(engine: sa.Engine, event_id: int, now: dt.datetime) -> bool:
    """Give a dead (or failed) event a fresh set of attempts; the sensor picks it up on its next tick."""
    c = inbound_events.c
    with engine.begin() as conn:
        result = conn.execute(
            inbound_events.update()
            .where(c.id == event_id, c.status.in_(["dead", "retry"]))
            .values(status="retry", attempts=0, next_attempt_at=now)
        )
        return result.rowcount == 1


def depth(engine: sa.Engine) -> dict[str, int]:
    """Events per status, for /healthz and the UI."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(inbound_events.c.status, sa.func.count()).group_by(inbound_events.c.status)).all()
    return {status: count for status, count in rows}


def payload_of(engine: sa.Engine, event_id: int) -> str | None:
    """The stored JSON text of one event (the intake compares a repeated idempotency key's body with it)."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(inbound_events.c.payload).where(inbound_events.c.id == event_id)
        ).scalar_one_or_none()
