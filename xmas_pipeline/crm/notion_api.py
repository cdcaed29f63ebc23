"""Calling Notion: one rate budget for the whole deployment, and retries for everything that is safe to repeat.

Every call (reads, creates, updates, the delivery write-back, `xmas notion` commands) takes a slot of
the integration's budget kept in the local database (store/ratelimit.py), so concurrent enrollment and
delivery runs, in as many processes as Dagster launches, together stay inside Notion's ~3 requests/s.
notion-client 3.1 retries 429 itself but not 5xx on POST, not 529 and not timeouts; we turn its
retries off so this module is the one place that decides (and honours ``Retry-After``, which pauses
the whole deployment's budget, not just the caller).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable, Protocol, TypeVar

import httpx
from notion_client import Client
from notion_client.errors import HTTPResponseError, RequestTimeoutError

from xmas_pipeline.store.db import engine_for
from xmas_pipeline.store.ratelimit import SharedRateBudget, bucket_name

log = logging.getLogger(__name__)
T = TypeVar("T")

NOTION_VERSION = "2025-09-03"
RETRY_STATUSES = {409, 429, 500, 502, 503, 504, 529}
MAX_ATTEMPTS = 8


class NotionUnavailable(RuntimeError):
    """Notion kept failing after every retry; nothing is lost, the run can be retried."""


class Budget(Protocol):
    def acquire(self) -> None: ...

    def pause(self, seconds: float) -> None: ...


class RateBudget:
    """A token bucket inside one process (emulator setup, unit tests); runs use ``notion_budget``."""

    def __init__(self, rate: float, burst: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._tokens = self.burst
        self._clock, self._sleep = clock, sleep
        self._last = clock()
        self._lock = threading.Lock()
        self.calls = 0
        self.waited_s = 0.0

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    self.calls += 1
                    return
                wait = (1 - self._tokens) / self.rate
            self.waited_s += wait
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._tokens = min(self._tokens, 1 - seconds * self.rate)


_budgets: dict[tuple[str, str, float], SharedRateBudget] = {}
_budgets_lock = threading.Lock()


def notion_budget(settings) -> SharedRateBudget:
    """The deployment's budget for this integration token, shared through the local database.

    One object per (database, token, rate) in a process, so its counters cover every caller here.
    """
    key = (settings.database_url, settings.notion_token or "", settings.notion_rate)
    with _budgets_lock:
        if key not in _budgets:
            _budgets[key] = SharedRateBudget(engine_for(settings.database_url),
                                             bucket_name("notion", settings.notion_token or ""), settings.notion_rate)
        return _budgets[key]


def make_client(token: str, base_url: str, timeout_s: float = 30.0) -> Client:
    return Client(auth=token, base_url=base_url.rstrip("/"), notion_version=NOTION_VERSION,
                  timeout_ms=int(timeout_s * 1000), retry=False)


def _retry_after(exc: HTTPResponseError) -> float | None:
    value = exc.headers.get("retry-after") if exc.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, HTTPResponseError):
        return exc.status in RETRY_STATUSES
    return isinstance(exc, (RequestTimeoutError, httpx.TransportError))


class NotionCaller:
    """Runs API calls inside the rate budget, retrying failures that are safe to repeat."""

    def __init__(self, client: Client, budget: Budget, sleep: Callable[[float], None] = time.sleep,
                 max_attempts: int = MAX_ATTEMPTS, retry_base_s: float = 0.5):
        self.client = client
        self.retry_base_s = retry_base_s
        self.budget = budget
        self.sleep = sleep
        self.max_attempts = max_attempts
        self.calls: dict[str, int] = {}
        self.rate_limited = 0

    def _wait(self, attempt: int, exc: BaseException) -> None:
        delay = min(self.retry_base_s * 2 ** attempt, 30.0) * random.uniform(0.5, 1.0)  # backoff with jitter
        if isinstance(exc, HTTPResponseError):
            if exc.status == 429:
                self.rate_limited += 1
            after = _retry_after(exc)
            if after is not None:
                delay = after + random.uniform(0, 0.25)
                if exc.status == 429:
                    self.budget.pause(after)  # every process waits it out, not only this caller
        log.info("Notion call failed (%s); retrying in %.2f s", exc, delay)
        self.sleep(delay)

    def once(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self.budget.acquire()
        self.calls[name] = self.calls.get(name, 0) + 1
        return fn(*args, **kwargs)

    def call(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A call that is safe to repeat (reads, and updates that set values)."""
        for attempt in range(self.max_attempts):
            try:
                return self.once(name, fn, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - filtered just below
                if not retryable(exc) or attempt == self.max_attempts - 1:
                    raise _explain(name, exc) from exc
                self._wait(attempt, exc)
        raise AssertionError("unreachable")

    def create(self, name: str, fn: Callable[..., T], lookup: Callable[[], T | None], **kwargs: Any) -> T:
        """A create made safe to repeat: before any retry, look for the page the failed attempt may have made."""
        for attempt in range(self.max_attempts):
            if attempt:
                existing = lookup()
                if existing is not None:
                    return existing
            try:
                return self.once(name, fn, **kwargs)
            except Exception as exc:  # noqa: BLE001
                if not retryable(exc) or attempt == self.max_attempts - 1:
                    raise _explain(name, exc) from exc
                self._wait(attempt, exc)
        raise AssertionError("unreachable")


def _explain(name: str, exc: BaseException) -> Exception:
    if retryable(exc):
        return NotionUnavailable(f"Notion {name} kept failing after {MAX_ATTEMPTS} attempts: {exc}. Nothing was "
                                 "lost; the run can be retried (the signup sensor retries events by itself).")
    if isinstance(exc, HTTPResponseError) and exc.status == 401:
        return PermissionError(f"Notion {name}: the token was refused (401). Check NOTION_TOKEN.")
    if isinstance(exc, HTTPResponseError) and exc.status == 404:
        return LookupError(f"Notion {name}: not found (404). Check the database ids and that the integration "
                           "is shared with each database (Notion: ••• → Connections).")
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))
