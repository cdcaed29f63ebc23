"""A rate budget shared by every process of a deployment, kept in one row of the local database.

Notion allows an integration about 3 requests/s on average, whichever process sends them. A budget
per process lets an enrollment run and a delivery run spend 3/s each, and Notion answers 429. Here
each call reserves the next free slot of one shared schedule (GCRA, the "virtual scheduling" form of a
token bucket): one short transaction reads the row's ``next_free`` instant under a write lock, hands
the caller ``max(now, next_free - tolerance)`` and moves ``next_free`` on by ``1/rate``. The caller then
sleeps until its slot, outside any transaction. Whoever reserves first goes first, across processes and
hosts, and nobody polls.

- SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock before the row is read; the clock is this
  host's wall clock, read while the lock is held (every writer of a SQLite file is on one host).
- PostgreSQL: ``SELECT ... FOR UPDATE`` locks the row; the clock is the database's ``clock_timestamp()``,
  read after the lock, so processes on hosts whose clocks disagree still share one schedule.

A database that cannot be reached raises ``RateBudgetUnavailable``: running unlimited would earn 429s
for every process of the deployment, so no call is made instead.
"""

from __future__ import annotations

import hashlib
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from xmas_pipeline.store.schema import rate_buckets

# A slot further ahead than this means the clock jumped back (or a host rebooted with a monotonic
# clock): start the schedule afresh rather than make everyone wait for a time that will not come.
MAX_AHEAD_S = 300.0


class RateBudgetUnavailable(RuntimeError):
    """The shared budget's database cannot be reached, so no call may be made."""


def bucket_name(kind: str, secret: str) -> str:
    """A bucket per integration, named without storing its secret (a hash prefix tells them apart)."""
    return f"{kind}:{hashlib.sha256(secret.encode()).hexdigest()[:16]}"


class Slot(NamedTuple):
    at: float  # when the call may go (epoch seconds on the bucket's clock)
    wait: float  # seconds from the reservation until then (0 or less: go now)


class SharedRateBudget:
    """At most ``rate`` calls per second on average, across every process that uses the same row.

    ``burst`` slots may be taken at once after an idle spell (1 = evenly spaced calls, which keeps
    network jitter from ever looking like a burst to the provider).
    """

    def __init__(self, engine: sa.Engine, name: str, rate: float, burst: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.engine = engine
        self.name = name
        self.rate = rate
        self.interval = 1.0 / rate
        self.tolerance = (max(burst, 1.0) - 1.0) * self.interval
        self._sleep = sleep
        self._postgres = engine.dialect.name == "postgresql"
        self._sqlite = engine.dialect.name == "sqlite"
        if not (self._postgres or self._sqlite):
            raise ValueError(f"the shared rate budget supports SQLite and PostgreSQL, not {engine.dialect.name}")
        self._insert = postgresql.insert if self._postgres else sqlite.insert
        self._lock = threading.Lock()  # guards the counters below
        self.calls = 0
        self.waited_s = 0.0

    # -- reserving a slot, pausing everyone ----------------------------------------------------------------------

    def acquire(self) -> None:
        """Wait for this caller's slot (raises RateBudgetUnavailable when the database cannot be reached)."""
        wait = self.reserve().wait
        with self._lock:
            self.calls += 1
            self.waited_s += max(wait, 0.0)
        if wait > 0:
            self._sleep(wait)

    def reserve(self) -> Slot:
        """Take the next slot of the shared schedule (without waiting for it)."""
        with self._transaction() as conn:
            next_free, now = self._locked(conn)
            slot = max(now, next_free - self.tolerance)
            self._store(conn, max(next_free, slot) + self.interval)
        return Slot(at=slot, wait=slot - now)

    def pause(self, seconds: float) -> None:
        """The provider said "slow down" (429 + Retry-After): nobody in the deployment calls before then."""
        with self._transaction() as conn:
            next_free, now = self._locked(conn)
            self._store(conn, max(next_free, now + min(seconds, MAX_AHEAD_S)))

    # -- storage ---------------------------------------------------------------------------------

    def _locked(self, conn: sa.Connection) -> tuple[float, float]:
        """The row's next free instant and "now", read in that order once the row is ours."""
        query = sa.select(rate_buckets.c.next_free).where(rate_buckets.c.name == self.name)
        if self._postgres:
            query = query.with_for_update()
        next_free = conn.execute(query).scalar_one_or_none()
        if next_free is None:  # the first call ever: a concurrent first caller's row wins, ours is ignored
            conn.execute(self._insert(rate_buckets).values(name=self.name, next_free=0.0).on_conflict_do_nothing())
            next_free = conn.execute(query).scalar_one()
        if self._postgres:
            now = float(conn.execute(sa.text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one())
        else:  # SQLite: BEGIN IMMEDIATE already holds the write lock, and every writer is on this host
            now = time.time()
        return (now if next_free - now > MAX_AHEAD_S else next_free), now

    def _store(self, conn: sa.Connection, next_free: float) -> None:
        conn.execute(rate_buckets.update().where(rate_buckets.c.name == self.name).values(next_free=next_free))

    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """A short write transaction on the bucket row."""
        try:
            if self._sqlite:
                # pysqlite would open a deferred transaction (a read lock first, upgraded later, which
                # can deadlock two writers); at the driver's autocommit level we say BEGIN IMMEDIATE.
                with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    try:
                        yield conn
                    except BaseException:
                        conn.exec_driver_sql("ROLLBACK")
                        raise
                    conn.exec_driver_sql("COMMIT")
            else:
                with self.engine.begin() as conn:
                    yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise RateBudgetUnavailable(
                f"the shared rate budget {self.name!r} lives in the local database "
                f"({self.engine.url.render_as_string(hide_password=True)}), which cannot be used: {exc}. "
                "No call was made (running unlimited would be refused by the provider for every process). "
                "Check XMAS_DATABASE_URL and that the database is up; then retry the run."
            ) from exc
