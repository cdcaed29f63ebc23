"""Group commit: one thread inserts every waiting signup in one transaction, then wakes their requests."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable

import sqlalchemy as sa

from xmas_pipeline.store.inbound import Enqueued, NewEvent, enqueue_many

log = logging.getLogger(__name__)

_STOP = object()
MAX_BATCH = 1000


class WriterStopped(RuntimeError):
    """The writer is not running, so nothing can be made durable."""


class GroupCommitWriter:
    """A single writer thread owning the inbound inserts; a request's future resolves after its commit."""

    def __init__(self, engine: Callable[[], sa.Engine], max_batch: int = MAX_BATCH) -> None:
        self._engine = engine  # a getter, so a database that was down at startup is retried per batch
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0  # commits made, for the bench and tests

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread; must be called from the event loop the requests run on."""
        if self.alive:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="intake-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish everything already submitted, then end the thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    async def submit(self, event: NewEvent) -> Enqueued:
        """Queue one event and wait until the transaction holding it has committed."""
        if not self.alive:
            raise WriterStopped("the intake writer is not running")
        future = asyncio.get_running_loop().create_future()
        self._queue.put((event, future))
        return await future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stopping = False
            # Everything that arrived while the previous commit was syncing goes into this one.
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._commit(batch)
            if stopping:
                return

    def _commit(self, batch: list[tuple[NewEvent, asyncio.Future]]) -> None:
        events = [event for event, _ in batch]
        try:
            outcomes: list[Enqueued | BaseException] = list(enqueue_many(self._engine(), events))
        except Exception as exc:  # noqa: BLE001 - every waiting request must get an answer
            if len(batch) == 1:
                log.exception("intake insert failed")
                outcomes = [exc]
            else:
                # One bad row must not fail its neighbours: retry them one per transaction.
                outcomes = []
                for event in events:
                    try:
                        outcomes.append(enqueue_many(self._engine(), [event])[0])
                    except Exception as one_exc:  # noqa: BLE001
                        log.exception("intake insert failed for %s", event.idempotency_key)
                        outcomes.append(one_exc)
        self.batches += 1
        # One wake-up of the event loop per batch, not one per request.
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(_resolve, [future for _, future in batch], outcomes)
        except RuntimeError:  # the loop closed during shutdown; the rows are committed regardless
            log.warning("event loop closed before %d signups could be answered", len(batch))


def _resolve(futures: list[asyncio.Future], outcomes: list[Enqueued | BaseException]) -> None:
    for future, outcome in zip(futures, outcomes):
        if future.done():  # the client went away; its row is committed all the same
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
