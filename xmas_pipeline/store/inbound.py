"""The inbound queue: signups land here durably before any Notion or mail work happens.

Life of an event: ``pending`` (inserted by the intake) → ``dispatched`` (a run was requested for it) →
``done``; a failed try goes to ``retry`` with a backoff, and after ``max_attempts`` tries to ``dead``,
from where ``xmas events --replay ID`` brings it back.
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


def new_event_ids(engine: sa.Engine, after_id: int, limit: int) -> list[int]:
    """Ids above the sensor's cursor, oldest first; whatever their status (a re-evaluated tick sees the same)."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(inbound_events.c.id)
                .where(inbound_events.c.id > after_id)
                .order_by(inbound_events.c.id)
                .limit(limit)
            ).scalars()
        )


def events_to_retry(engine: sa.Engine, now: dt.datetime, stale_after: dt.timedelta, limit: int) -> list[int]:
    """Failed events whose backoff has passed, and dispatched ones whose run never finished them."""
    c = inbound_events.c
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(c.id)
                .where(
                    sa.or_(
                        sa.and_(c.status == "retry", c.next_attempt_at <= now),
                        sa.and_(c.status == "dispatched", c.dispatched_at < now - stale_after),
                    )
                )
                .order_by(c.id)
                .limit(limit)
            ).scalars()
        )


def mark_dispatched(engine: sa.Engine, ids: list[int], now: dt.datetime) -> dict[int, int]:
    """Count a dispatch for each id and return its new dispatch number (used in retry run keys)."""
    c = inbound_events.c
    with engine.begin() as conn:
        conn.execute(
            inbound_events.update()
            .where(c.id.in_(ids), c.status.in_(["pending", "retry", "dispatched"]))
            .values(status="dispatched", dispatched_at=now, dispatches=c.dispatches + 1)
        )
        return dict(conn.execute(sa.select(c.id, c.dispatches).where(c.id.in_(ids))).all())


def note_stale(engine: sa.Engine, ids: list[int], max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> list[int]:
    """A dispatched event whose run vanished counts as a failed attempt; returns the ids still worth a try."""
    c = inbound_events.c
    with engine.begin() as conn:
        conn.execute(
            inbound_events.update()
            .where(c.id.in_(ids), c.status == "dispatched")
            .values(attempts=c.attempts + 1, last_error="its run did not finish (crashed, or never started)")
        )
        conn.execute(
            inbound_events.update()
            .where(c.id.in_(ids), c.status == "dispatched", c.attempts >= max_attempts)
            .values(status="dead")
        )
        return list(conn.execute(sa.select(c.id).where(c.id.in_(ids), c.status != "dead")).scalars())


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
    engine: sa.Engine, event_id: int, error: str, now: dt.datetime, max_attempts: int = DEFAULT_MAX_ATTEMPTS
) -> str:
    """Record a failed try; returns the new status (``retry`` or ``dead``)."""
    c = inbound_events.c
    with engine.begin() as conn:
        attempts = conn.execute(sa.select(c.attempts).where(c.id == event_id)).scalar_one() + 1
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
