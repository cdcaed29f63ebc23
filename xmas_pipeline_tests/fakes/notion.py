"""A Notion API emulator: a real HTTP server on loopback that ``notion_client.Client`` talks to.

Why a server and not a mock: the pipeline's retry, pagination and error handling live partly in
notion-client 3.1.0 (it retries 429s, parses error bodies, appends ``/v1/``). Only real HTTP exercises
that code. Point the client at it with ``Client(auth=emu.token, base_url=emu.base_url)``.

The response shapes copy the recorded real exchanges in ``shared/reference/notion-recordings``
(API version 2025-09-03, data sources). Behaviour that the recordings or Notion's docs do not pin
down is chosen here and documented where it is implemented:

- Default query order (no ``sorts``): ``created_time`` descending, ties broken by creation order
  (newest first). Explicit sorts fall back to that order on ties. Empty values sort last.
- ``next_cursor`` is the id of the first page of the next batch (like Notion). A cursor whose page
  no longer matches the query gives 400 ``validation_error``.
- Text filters are case-sensitive (Notion does not document this; see ``text_case_sensitive``).
- ``in_trash: true`` in a query body returns only trashed pages; by default trashed pages are excluded.
- Version ``2026-03-11`` responses omit the deprecated ``archived`` key; requests may still send it.
- Supported property types: title, rich_text, email, url, phone_number, number, checkbox, select,
  status, multi_select, date, created_time, last_edited_time. Others are rejected with a clear 400.

Rate limit: like Notion's, it belongs to the integration, and the emulator serves one integration (one
token), so ``rate_limit`` is one budget shared by every client, connection and process that talks to it.
``rate_limited`` counts the 429s it answered, ``throttled`` those the limit itself caused (not injected),
and ``request_times`` / ``busiest()`` show the arrival rate the limit saw.

Standalone: ``python -m xmas_pipeline_tests.fakes.notion --port 8700 [--rate-limit 3]``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import functools
import importlib
import json
import random
import re
import socket
import string
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.timezone.utc
DEFAULT_TOKEN = "ntn_emulator_token"
SUPPORTED_VERSIONS = ("2022-06-28", "2025-09-03", "2026-03-11")
# The one integration user every object is created/edited by.
BOT_USER_ID = "7775f3a3-893f-43fa-b625-460c61094c78"
COLORS = ("default", "gray", "brown", "orange", "yellow", "green", "blue", "purple", "pink", "red")
TEXT_TYPES = ("title", "rich_text", "email", "url", "phone_number")
SUPPORTED_TYPES = TEXT_TYPES + (
    "number", "checkbox", "select", "status", "multi_select", "date", "created_time", "last_edited_time",
)
READ_ONLY_TYPES = ("created_time", "last_edited_time")
WRITE_ENDPOINTS = frozenset({
    "databases.create", "data_sources.create", "data_sources.update", "pages.create", "pages.update",
})
DATE_OPS = ("equals", "before", "after", "on_or_before", "on_or_after", "is_empty", "is_not_empty")
MAX_BODY_BYTES = 500 * 1024
# Error codes and messages for statuses the fault injector can produce.
FAULTS: dict[int, tuple[str, str]] = {
    400: ("validation_error", "Injected validation error."),
    409: ("conflict_error", "Conflict occurred while saving. Please try again."),
    429: ("rate_limited", "You have been rate limited. Please try again in a few minutes."),
    500: ("internal_server_error", "Unexpected error occurred."),
    502: ("internal_server_error", "Bad gateway."),
    503: ("service_unavailable", "Notion is unavailable, please try again later."),
    504: ("gateway_timeout", "Gateway timeout."),
    529: ("service_overload", "The service is overloaded, please try again later."),
}
DROP = "drop"  # for fail_next(): close the connection without answering


class NotionError(Exception):
    """An error answered as Notion's JSON error object."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def _validation(message: str) -> NotionError:
    return NotionError(400, "validation_error", message)


def _not_found(kind: str, object_id: str) -> NotionError:
    return NotionError(
        404, "object_not_found",
        f"Could not find {kind} with ID: {object_id}. "
        "Make sure the relevant pages and databases are shared with your integration.",
    )


def _js(value: Any) -> str:
    """A value as Notion quotes it in validation messages."""
    return "undefined" if value is _MISSING else json.dumps(value)


_MISSING = object()


# ---------------------------------------------------------------------------------------------
# Time and ids
# ---------------------------------------------------------------------------------------------

def _utc_now() -> dt.datetime:
    return dt.datetime.now(UTC)


def _minute(value: dt.datetime) -> dt.datetime:
    """Pages and data sources expose times rounded DOWN to the minute (see the recordings)."""
    return value.astimezone(UTC).replace(second=0, microsecond=0)


def _iso_z(value: dt.datetime) -> str:
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _iso_offset(value: dt.datetime) -> str:
    """Databases expose milliseconds and '+00:00' (recorded: 2026-07-04T09:09:08.209+00:00)."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def _dashed(hex32: str) -> str:
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"


def normalize_id(value: Any) -> str | None:
    """A Notion id with or without dashes, as the dashed lowercase form; None if it is no UUID."""
    if not isinstance(value, str):
        return None
    hex32 = value.replace("-", "").lower()
    if len(hex32) != 32 or any(c not in string.hexdigits for c in hex32):
        return None
    return _dashed(hex32)


def _parse_iso(value: Any, where: str) -> tuple[dt.datetime, bool]:
    """An ISO 8601 date or date-time as (aware UTC datetime, is_date_only); naive times are UTC."""
    if not isinstance(value, str):
        raise _validation(f"body failed validation: {where} should be a string, instead was `{_js(value)}`.")
    text = value.strip()
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            return dt.datetime(day.year, day.month, day.day, tzinfo=UTC), True
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _validation(f"body failed validation: {where} should be a valid ISO 8601 date string, "
                          f"instead was `{_js(value)}`.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC), False


# A date value as an interval [lo, hi): a day covers 24 h, an instant covers 1 microsecond.
Interval = tuple[dt.datetime, dt.datetime]
_INSTANT = dt.timedelta(microseconds=1)


def _interval(start: dt.datetime, date_only: bool) -> Interval:
    return (start, start + (dt.timedelta(days=1) if date_only else _INSTANT))


# ---------------------------------------------------------------------------------------------
# Stored objects
# ---------------------------------------------------------------------------------------------

@dataclass
class _Database:
    id: str
    parent_page_id: str
    title: list[dict[str, Any]]
    created: dt.datetime
    last_edited: dt.datetime
    data_source_ids: list[str] = field(default_factory=list)
    description: list[dict[str, Any]] = field(default_factory=list)
    is_inline: bool = False
    in_trash: bool = False
    is_locked: bool = False
    icon: Any = None
    cover: Any = None


@dataclass
class _DataSource:
    id: str
    database_id: str
    title: list[dict[str, Any]]
    # name -> {"id", "name", "description", "type", "config"}; insertion order = display order.
    props: dict[str, dict[str, Any]]
    created: dt.datetime
    last_edited: dt.datetime
    in_trash: bool = False
    icon: Any = None
    cover: Any = None


@dataclass
class _Page:
    id: str
    seq: int  # creation order; breaks ties between pages created in the same minute
    created: dt.datetime  # already rounded to the minute
    last_edited: dt.datetime  # already rounded to the minute
    data_source_id: str | None = None  # set for rows of a data source
    parent_page_id: str | None = None  # set for child pages of a page
    values: dict[str, Any] = field(default_factory=dict)  # property id -> stored response value
    icon: Any = None
    cover: Any = None
    in_trash: bool = False
    is_locked: bool = False


# Pages that are children of pages (or of the workspace) have exactly one property: "title".
_PAGE_SCHEMA: dict[str, dict[str, Any]] = {
    "title": {"id": "title", "name": "title", "description": None, "type": "title", "config": {}},
}


# ---------------------------------------------------------------------------------------------
# Rich text and property values
# ---------------------------------------------------------------------------------------------

_DEFAULT_ANNOTATIONS = {
    "bold": False, "italic": False, "strikethrough": False, "underline": False, "code": False, "color": "default",
}


def rich_text(content: str) -> list[dict[str, Any]]:
    """A response-shaped rich text array holding one plain text item (or none for '')."""
    if not content:
        return []
    return [{
        "type": "text", "text": {"content": content, "link": None},
        "annotations": dict(_DEFAULT_ANNOTATIONS), "plain_text": content, "href": None,
    }]


def plain_text(items: list[dict[str, Any]] | None) -> str:
    return "".join(item.get("plain_text", "") for item in items or [])


def _convert_rich_text(raw: Any, where: str) -> list[dict[str, Any]]:
    """Request rich text -> response rich text, with Notion's size limits (2000 chars, 100 items)."""
    if not isinstance(raw, list):
        raise _validation(f"body failed validation: {where} should be an array, instead was `{_js(raw)}`.")
    if len(raw) > 100:
        raise _validation(f"body failed validation: {where}.length should be ≤ `100`, instead was `{len(raw)}`.")
    items = []
    for i, item in enumerate(raw):
        here = f"{where}[{i}]"
        if not isinstance(item, dict) or item.get("type", "text") != "text" or not isinstance(item.get("text"), dict):
            raise _validation(f"body failed validation: {here} should be a text rich text item "
                              f"(the emulator supports only type text), instead was `{_js(item)}`.")
        content = item["text"].get("content", _MISSING)
        if not isinstance(content, str):
            raise _validation(f"body failed validation: {here}.text.content should be a string, "
                              f"instead was `{_js(content)}`.")
        if len(content) > 2000:
            raise _validation(f"body failed validation: {here}.text.content.length should be ≤ `2000`, "
                              f"instead was `{len(content)}`.")
        link = item["text"].get("link")
        if link is not None:
            url = link.get("url") if isinstance(link, dict) else None
            if not isinstance(url, str) or len(url) > 2000:
                raise _validation(f"body failed validation: {here}.text.link.url should be a string of at most "
                                  f"2000 characters, instead was `{_js(url)}`.")
            link = {"url": url}
        annotations = dict(_DEFAULT_ANNOTATIONS)
        if isinstance(item.get("annotations"), dict):
            annotations.update({k: v for k, v in item["annotations"].items() if k in _DEFAULT_ANNOTATIONS})
        items.append({
            "type": "text", "text": {"content": content, "link": link}, "annotations": annotations,
            "plain_text": content, "href": link["url"] if link else None,
        })
    return items


def _empty_value(prop: dict[str, Any]) -> Any:
    kind = prop["type"]
    if kind in ("title", "rich_text", "multi_select"):
        return []
    if kind == "checkbox":
        return False
    if kind == "status":
        # Like Notion, a new row gets the status property's first (default) option.
        options = prop["config"].get("options", [])
        return _option_value(options[0]) if options else None
    return None


def _option_value(option: dict[str, Any]) -> dict[str, Any]:
    return {"id": option["id"], "name": option["name"], "color": option["color"]}


# ---------------------------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------------------------

class NotionEmulator:
    """An in-memory Notion workspace served over HTTP on loopback.

    Every knob is a plain attribute and may be changed while the server runs.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: float | None = None,
        rate_burst: float | None = None,
        retry_after: int = 1,
        fail_ratio: float = 0.0,
        fail_statuses: Iterable[int] = (500,),
        fail_after_write_ratio: float = 0.0,
        fail_after_write_statuses: Iterable[int] = (500, 503),
        drop_ratio: float = 0.0,
        delay_s: float = 0.0,
        seed: int = 0,
        now: Callable[[], dt.datetime] | None = None,
        text_case_sensitive: bool = True,
        verbose: bool = False,
    ) -> None:
        self.token = token
        self.host = host
        self.port = port
        # Requests per second for the integration, across all clients (token bucket); None = unlimited.
        # The bucket holds `rate_burst` tokens (default: one second's worth, at least 1) so short
        # bursts pass like on Notion.
        self.rate_limit = rate_limit
        self.rate_burst = rate_burst
        self.retry_after = retry_after  # seconds advertised in Retry-After on every 429
        self.fail_ratio = fail_ratio  # share of requests answered with a fault BEFORE any effect
        self.fail_statuses = list(fail_statuses)
        self.fail_after_write_ratio = fail_after_write_ratio  # share of writes applied, then answered 5xx
        self.fail_after_write_statuses = list(fail_after_write_statuses)
        self.drop_ratio = drop_ratio  # share of requests whose connection is closed without an answer
        self.delay_s = delay_s  # added latency per request
        self.rng = random.Random(seed)  # decides faults; ids come from a separate generator
        self.now: Callable[[], dt.datetime] = now or _utc_now
        self.text_case_sensitive = text_case_sensitive
        self.verbose = verbose

        self.counts: collections.Counter[str] = collections.Counter()
        self.rate_limited = 0  # 429 answers sent (rate limit or injected)
        self.throttled = 0  # 429 answers caused by rate_limit itself
        self.request_times: list[float] = []  # time.monotonic() of every request's arrival
        self.history: list[tuple[str, str, int]] = []  # (endpoint, "METHOD /path", status or 0 if dropped)

        self._lock = threading.RLock()
        self._id_rng = random.Random(f"ids-{seed}")
        self._fault_queue: collections.deque[tuple[int | str, bool]] = collections.deque()
        self._buckets: dict[str, tuple[float, float]] = {}  # token -> (tokens left, monotonic time)
        self._seq = 0
        self._databases: dict[str, _Database] = {}
        self._data_sources: dict[str, _DataSource] = {}
        self._pages: dict[str, _Page] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # A page shared with the integration, to hold databases (like a real workspace page).
        self.root_page_id = self.create_parent_page("Emulator root")

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> NotionEmulator:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer((self.host, self.port), _Handler)
        server.daemon_threads = True
        server.emulator = self  # type: ignore[attr-defined]
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="notion-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> NotionEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """For ``Client(base_url=...)``: no trailing slash (the client appends ``/v1/``)."""
        return f"http://{self.host}:{self.port}"

    # -- test helpers ----------------------------------------------------------------------------

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.rate_limited = 0
            self.throttled = 0
            self.request_times.clear()
            self.history.clear()

    @property
    def total_requests(self) -> int:
        return sum(self.counts.values())

    def busiest(self, window_s: float = 1.0) -> int:
        """The most requests that arrived within any ``window_s`` seconds (all clients together)."""
        with self._lock:
            times = sorted(self.request_times)
        most, first = 0, 0
        for last, stamp in enumerate(times):
            while stamp - times[first] >= window_s:
                first += 1
            most = max(most, last - first + 1)
        return most

    def fail_next(self, *faults: int | str, after_write: bool = False) -> None:
        """Queue deterministic faults for the next requests: HTTP statuses, or ``DROP`` ("drop").

        With ``after_write=True`` the faults apply to the next WRITE requests only, after the
        write took effect (the ambiguous case); reads pass untouched.
        """
        with self._lock:
            for fault in faults:
                self._fault_queue.append((fault, after_write))

    def create_parent_page(self, title: str, parent_page_id: str | None = None) -> str:
        """A plain page (child of the workspace, or of ``parent_page_id``) to hold databases."""
        with self._lock:
            page = self._new_page(parent_page_id=parent_page_id)
            page.values["title"] = rich_text(title)
            return page.id

    def create_database(
        self,
        title: str,
        properties_schema: dict[str, Any],
        *,
        parent_page_id: str | None = None,
    ) -> tuple[str, str]:
        """Seed a database with one data source directly; returns (database_id, data_source_id).

        ``properties_schema`` uses the API's request form (``{"Email": {"email": {}}}``) or the
        shorthand ``{"Email": "email"}``.
        """
        schema = {name: ({spec: {}} if isinstance(spec, str) else spec) for name, spec in properties_schema.items()}
        with self._lock:
            database, source = self._create_database(
                parent_page_id or self.root_page_id, rich_text(title), schema, where="properties_schema")
            return database.id, source.id

    def pages(self, data_source_id: str, *, include_trashed: bool = False) -> list[dict[str, Any]]:
        """The rows of a data source as API page objects, in creation order (oldest first)."""
        ds_id = normalize_id(data_source_id)
        with self._lock:
            if ds_id not in self._data_sources:
                raise KeyError(f"no data source {data_source_id}")
            rows = [p for p in self._pages.values()
                    if p.data_source_id == ds_id and (include_trashed or not p.in_trash)]
            rows.sort(key=lambda p: p.seq)
            return [self._render_page(p, "2025-09-03") for p in rows]

    def page(self, page_id: str) -> dict[str, Any]:
        with self._lock:
            return self._render_page(self._get_page(page_id, "page_id"), "2025-09-03")

    def data_source(self, data_source_id: str) -> dict[str, Any]:
        with self._lock:
            return self._render_data_source(self._get_data_source(data_source_id, "data_source_id"), "2025-09-03")

    # -- ids and clock -------------------------------------------------------------------------

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))

    def _now(self) -> dt.datetime:
        value = self.now()
        if value.tzinfo is None:  # be forgiving with test clocks: naive means UTC
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def _new_page(self, *, data_source_id: str | None = None, parent_page_id: str | None = None) -> _Page:
        self._seq += 1
        stamp = _minute(self._now())
        page = _Page(id=self._new_id(), seq=self._seq, created=stamp, last_edited=stamp,
                     data_source_id=data_source_id, parent_page_id=parent_page_id)
        self._pages[page.id] = page
        return page

    # -- lookups -----------------------------------------------------------------------------

    def _norm(self, value: Any, where: str) -> str:
        object_id = normalize_id(value)
        if object_id is None:
            raise _validation(f"{where} should be a valid uuid, instead was `{_js(value)}`.")
        return object_id

    def _get_page(self, raw_id: Any, where: str) -> _Page:
        page_id = self._norm(raw_id, where)
        if page_id not in self._pages:
            raise _not_found("page", page_id)
        return self._pages[page_id]

    def _get_database(self, raw_id: Any, where: str) -> _Database:
        db_id = self._norm(raw_id, where)
        if db_id not in self._databases:
            raise _not_found("database", db_id)
        return self._databases[db_id]

    def _get_data_source(self, raw_id: Any, where: str) -> _DataSource:
        ds_id = self._norm(raw_id, where)
        if ds_id not in self._data_sources:
            raise _not_found("data_source", ds_id)
        return self._data_sources[ds_id]

    @staticmethod
    def _find_prop(schema: dict[str, dict[str, Any]], key: Any) -> dict[str, Any] | None:
        """A property by name, else by id (Notion accepts both everywhere)."""
        if not isinstance(key, str):
            return None
        if key in schema:
            return schema[key]
        for prop in schema.values():
            if prop["id"] == key:
                return prop
        return None

    def _schema_of(self, page: _Page) -> dict[str, dict[str, Any]]:
        return self._data_sources[page.data_source_id].props if page.data_source_id else _PAGE_SCHEMA

    # -- schema --------------------------------------------------------------------------------

    def _new_prop_id(self, taken: set[str]) -> str:
        alphabet = string.ascii_letters + string.digits
        while True:
            prop_id = "".join(self._id_rng.choice(alphabet) for _ in range(4))
            if prop_id not in taken and prop_id != "title":
                return prop_id

    def _build_options(self, raw: Any, where: str, *, kind: str) -> list[dict[str, Any]]:
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise _validation(f"body failed validation: {where} should be an array, instead was `{_js(raw)}`.")
        options: list[dict[str, Any]] = []
        for i, spec in enumerate(raw):
            name = spec.get("name") if isinstance(spec, dict) else None
            if not isinstance(name, str) or not name:
                raise _validation(f"body failed validation: {where}[{i}].name should be a non-empty string, "
                                  f"instead was `{_js(name)}`.")
            self._check_option_name(name, kind)
            if any(o["name"] == name for o in options):
                raise _validation(f"Duplicate option name `{name}` in {where}.")
            color = spec.get("color") or COLORS[len(options) % len(COLORS)]
            if color not in COLORS:
                raise _validation(f"body failed validation: {where}[{i}].color should be one of {list(COLORS)}, "
                                  f"instead was `{_js(color)}`.")
            options.append({"id": spec.get("id") or self._new_id(), "name": name, "color": color,
                            "description": spec.get("description")})
        return options

    @staticmethod
    def _check_option_name(name: str, kind: str) -> None:
        # Notion refuses commas in select names (a comma separates options in its UI) and caps length.
        if "," in name and kind in ("select", "multi_select"):
            raise _validation(f"Select option names cannot contain commas: `{name}`.")
        if len(name) > 100:
            raise _validation(f"Option names are limited to 100 characters: `{name[:20]}…`.")

    def _build_config(self, kind: str, spec: dict[str, Any], where: str,
                      previous: dict[str, Any] | None = None) -> dict[str, Any]:
        raw = spec.get(kind) or {}
        if not isinstance(raw, dict):
            raise _validation(f"body failed validation: {where}.{kind} should be an object, instead was `{_js(raw)}`.")
        if kind in ("select", "multi_select", "status"):
            if "options" not in raw and previous is not None:
                return previous
            options = self._build_options(raw.get("options"), f"{where}.{kind}.options", kind=kind)
            if kind != "status":
                return {"options": options}
            if not options:  # Notion's defaults for a new status property
                options = self._build_options(
                    [{"name": "Not started", "color": "default"}, {"name": "In progress", "color": "blue"},
                     {"name": "Done", "color": "green"}], where, kind=kind)
            return {"options": options, "groups": [
                {"id": self._new_id(), "name": "To-do", "color": "gray", "option_ids": [o["id"] for o in options]},
            ]}
        if kind == "number":
            return {"format": raw.get("format", "number")}
        return {}

    def _build_schema(self, raw: Any, where: str) -> dict[str, dict[str, Any]]:
        """Request-form properties -> stored schema. Exactly one title property, like Notion."""
        if not isinstance(raw, dict):
            raise _validation(f"body failed validation: {where} should be an object, instead was `{_js(raw)}`.")
        schema: dict[str, dict[str, Any]] = {}
        for name, spec in raw.items():
            kind = self._prop_type(spec, f"{where}.{name}")
            prop_id = "title" if kind == "title" else self._new_prop_id({p["id"] for p in schema.values()})
            schema[name] = {"id": prop_id, "name": name, "description": spec.get("description"), "type": kind,
                            "config": self._build_config(kind, spec, f"{where}.{name}")}
        titles = [p for p in schema.values() if p["type"] == "title"]
        if len(titles) != 1:
            raise _validation(f"A data source must have exactly one title property; {where} has {len(titles)}.")
        return schema

    @staticmethod
    def _prop_type(spec: Any, where: str) -> str:
        if not isinstance(spec, dict):
            raise _validation(f"body failed validation: {where} should be an object, instead was `{_js(spec)}`.")
        kind = spec.get("type")
        if kind is None:
            kinds = [k for k in spec if k not in ("name", "description", "id", "type")]
            kind = kinds[0] if len(kinds) == 1 else None
        if kind is None:
            raise _validation(f"body failed validation: {where} should define exactly one property type.")
        if kind not in SUPPORTED_TYPES:
            raise _validation(f"Property type `{kind}` at {where} is not supported by the Notion emulator "
                              f"(supported: {', '.join(SUPPORTED_TYPES)}).")
        return kind

    def _create_database(self, parent_page_id: str, title: list[dict[str, Any]], schema_raw: Any,
                         *, where: str) -> tuple[_Database, _DataSource]:
        if parent_page_id not in self._pages:
            raise _not_found("page", parent_page_id)
        schema = self._build_schema(schema_raw, where)
        now = self._now()
        database = _Database(id=self._new_id(), parent_page_id=parent_page_id, title=title,
                             created=now, last_edited=now)
        source = _DataSource(id=self._new_id(), database_id=database.id, title=title, props=schema,
                             created=_minute(now), last_edited=_minute(now))
        database.data_source_ids.append(source.id)
        self._databases[database.id] = database
        self._data_sources[source.id] = source
        return database, source

    def _update_schema(self, source: _DataSource, raw: Any) -> None:
        """PATCH data source properties: null removes, {"name"} renames, a type (re)defines, new adds."""
        if not isinstance(raw, dict):
            raise _validation(f"body failed validation: body.properties should be an object, instead was `{_js(raw)}`.")
        props = {name: dict(prop) for name, prop in source.props.items()}  # copy: all-or-nothing
        for key, spec in raw.items():
            where = f"body.properties.{key}"
            current = self._find_prop(props, key)
            if spec is None:
                if current is None:
                    raise _validation(f"{key} is not a property that exists.")
                if current["type"] == "title":
                    raise _validation("Cannot delete the title property.")
                del props[current["name"]]
                continue
            if not isinstance(spec, dict):
                raise _validation(f"body failed validation: {where} should be an object or `null`, instead was `{_js(spec)}`.")
            # Any key besides name/description/id is a type definition (validated by _prop_type).
            has_type = any(k not in ("name", "description", "id") for k in spec)
            if current is None:
                kind = self._prop_type(spec, where)
                if kind == "title":
                    raise _validation("A data source must have exactly one title property.")
                name = spec.get("name") or key
                props[name] = {"id": self._new_prop_id({p["id"] for p in props.values()}), "name": name,
                               "description": spec.get("description"), "type": kind,
                               "config": self._build_config(kind, spec, where)}
                continue
            updated = dict(current)
            if has_type:
                kind = self._prop_type(spec, where)
                if (kind == "title") != (current["type"] == "title"):
                    raise _validation("A data source must have exactly one title property.")
                same = kind == current["type"]
                updated["config"] = self._build_config(kind, spec, where, current["config"] if same else None)
                updated["type"] = kind
            if "description" in spec:
                updated["description"] = spec["description"]
            new_name = spec.get("name") or current["name"]
            if new_name != current["name"] and new_name in props:
                raise _validation(f"A property named {new_name} already exists.")
            updated["name"] = new_name
            # Rebuild to keep display order while renaming.
            props = {(new_name if n == current["name"] else n): (updated if n == current["name"] else p)
                     for n, p in props.items()}
        source.props = props

    # -- property values ---------------------------------------------------------------------------

    def _convert_value(self, prop: dict[str, Any], raw: Any, where: str,
                       new_options: dict[tuple[str, str], dict[str, Any]]) -> Any:
        """Request value -> stored (response-shaped) value. Raises before anything is written."""
        kind, name = prop["type"], prop["name"]
        if kind in READ_ONLY_TYPES:
            raise _validation(f"{name} is a {kind} property and cannot be written.")
        # Titles and rich text may come as a bare array (the recordings create pages like that).
        if isinstance(raw, list) and kind in ("title", "rich_text", "multi_select"):
            value = raw
        elif isinstance(raw, dict) and kind in raw:
            value = raw[kind]
        else:
            raise _validation(f"{name} is expected to be {kind}.")
        where = f"{where}.{kind}"
        if kind in ("title", "rich_text"):
            return _convert_rich_text(value, where)
        if kind in ("email", "url", "phone_number"):
            limit = {"email": 200, "url": 2000, "phone_number": 200}[kind]
            if value is not None and not isinstance(value, str):
                raise _validation(f"body failed validation: {where} should be a string or `null`, "
                                  f"instead was `{_js(value)}`.")
            if value is not None and len(value) > limit:
                raise _validation(f"body failed validation: {where}.length should be ≤ `{limit}`, "
                                  f"instead was `{len(value)}`.")
            return value or None
        if kind == "number":
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise _validation(f"body failed validation: {where} should be a number or `null`, "
                                  f"instead was `{_js(value)}`.")
            return value
        if kind == "checkbox":
            if not isinstance(value, bool):
                raise _validation(f"body failed validation: {where} should be a boolean, instead was `{_js(value)}`.")
            return value
        if kind in ("select", "status"):
            if value is None:
                return None
            return self._resolve_option(prop, value, where, new_options)
        if kind == "multi_select":
            if not isinstance(value, list):
                raise _validation(f"body failed validation: {where} should be an array, instead was `{_js(value)}`.")
            if len(value) > 100:
                raise _validation(f"body failed validation: {where}.length should be ≤ `100`, instead was `{len(value)}`.")
            return [self._resolve_option(prop, v, f"{where}[{i}]", new_options) for i, v in enumerate(value)]
        if kind == "date":
            if value is None:
                return None
            if not isinstance(value, dict) or "start" not in value:
                raise _validation(f"body failed validation: {where} should be an object with a start, or `null`, "
                                  f"instead was `{_js(value)}`.")
            _parse_iso(value["start"], f"{where}.start")
            if value.get("end") is not None:
                _parse_iso(value["end"], f"{where}.end")
            time_zone = value.get("time_zone")
            if time_zone is not None:
                try:
                    ZoneInfo(time_zone)
                except (ZoneInfoNotFoundError, ValueError, TypeError):
                    raise _validation(f"body failed validation: {where}.time_zone is not a known time zone: "
                                      f"`{_js(time_zone)}`.") from None
            return {"start": value["start"], "end": value.get("end"), "time_zone": time_zone}
        raise _validation(f"{name} has unsupported type {kind}.")  # unreachable: schema types are checked

    def _resolve_option(self, prop: dict[str, Any], value: Any, where: str,
                        new_options: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
        options = prop["config"].get("options", [])
        if not isinstance(value, dict) or not ({"name", "id"} & set(value)):
            raise _validation(f"body failed validation: {where} should be an object with a name or id, "
                              f"instead was `{_js(value)}`.")
        if "id" in value and "name" not in value:
            for option in options:
                if option["id"] == value["id"]:
                    return _option_value(option)
            raise _validation(f"Option id `{value['id']}` does not exist for property {prop['name']}.")
        name = value["name"]
        if not isinstance(name, str) or not name:
            raise _validation(f"body failed validation: {where}.name should be a non-empty string, "
                              f"instead was `{_js(name)}`.")
        for option in options:
            if option["name"] == name:
                return _option_value(option)
        if prop["type"] == "status":
            # Status options cannot be created through the API.
            raise _validation(f"Invalid status option `{name}` for property {prop['name']}.")
        key = (prop["id"], name)
        if key not in new_options:
            # Like Notion: writing an unknown select name adds it to the schema's options.
            self._check_option_name(name, prop["type"])
            color = COLORS[(len(options) + sum(k[0] == prop["id"] for k in new_options)) % len(COLORS)]
            new_options[key] = {"id": self._new_id(), "name": name, "color": color, "description": None}
        return _option_value(new_options[key])

    def _write_properties(self, page: _Page, raw: Any, *, creating: bool) -> None:
        """Validate every value first, then apply them all: a 400 never leaves a partial write."""
        if raw is None:
            return
        if not isinstance(raw, dict):
            raise _validation(f"body failed validation: body.properties should be an object, instead was `{_js(raw)}`.")
        schema = self._schema_of(page)
        new_options: dict[tuple[str, str], dict[str, Any]] = {}
        converted: dict[str, Any] = {}
        for key, value in raw.items():
            prop = self._find_prop(schema, key)
            if prop is None:
                raise _validation(f"{key} is not a property that exists.")
            converted[prop["id"]] = self._convert_value(prop, value, f"body.properties.{key}", new_options)
        for (prop_id, _name), option in new_options.items():
            prop = next(p for p in schema.values() if p["id"] == prop_id)
            prop["config"].setdefault("options", []).append(option)
        if creating:
            for prop in schema.values():
                if prop["type"] not in READ_ONLY_TYPES:
                    page.values.setdefault(prop["id"], _empty_value(prop))
        page.values.update(converted)

    # -- rendering -----------------------------------------------------------------------------

    @staticmethod
    def _user() -> dict[str, str]:
        return {"object": "user", "id": BOT_USER_ID}

    def _render_prop_value(self, page: _Page, prop: dict[str, Any]) -> dict[str, Any]:
        kind = prop["type"]
        if kind == "created_time":
            value: Any = _iso_z(page.created)
        elif kind == "last_edited_time":
            value = _iso_z(page.last_edited)
        else:
            value = page.values.get(prop["id"], _empty_value(prop))
        return {"id": prop["id"], "type": kind, kind: json.loads(json.dumps(value))}  # deep copy

    def _render_page(self, page: _Page, version: str, only: set[str] | None = None) -> dict[str, Any]:
        schema = self._schema_of(page)
        properties = {name: self._render_prop_value(page, prop) for name, prop in schema.items()
                      if only is None or name in only or prop["id"] in only}
        if page.data_source_id:
            source = self._data_sources[page.data_source_id]
            parent: dict[str, Any] = {"type": "data_source_id", "data_source_id": source.id,
                                      "database_id": source.database_id}
        elif page.parent_page_id:
            parent = {"type": "page_id", "page_id": page.parent_page_id}
        else:
            parent = {"type": "workspace", "workspace": True}
        title_prop = next(p for p in schema.values() if p["type"] == "title")
        slug = re.sub(r"[^A-Za-z0-9]+", "-", plain_text(page.values.get(title_prop["id"]))).strip("-")
        hex_id = page.id.replace("-", "")
        # Same keys, in the same order, as the recorded page objects.
        body: dict[str, Any] = {
            "object": "page", "id": page.id,
            "created_time": _iso_z(page.created), "last_edited_time": _iso_z(page.last_edited),
            "created_by": self._user(), "last_edited_by": self._user(),
            "cover": page.cover, "icon": page.icon, "parent": parent,
            "in_trash": page.in_trash, "is_archived": page.in_trash, "is_locked": page.is_locked,
            "properties": properties,
            "url": f"https://app.notion.com/p/{slug + '-' if slug else ''}{hex_id}", "public_url": None,
            "archived": page.in_trash,
        }
        if version >= "2026-03-11":
            del body["archived"]  # removed in 2026-03-11 (use in_trash)
        return body

    def _render_database(self, database: _Database, version: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "object": "database", "id": database.id, "title": database.title, "description": database.description,
            "parent": {"type": "page_id", "page_id": database.parent_page_id},
            "is_inline": database.is_inline, "in_trash": database.in_trash, "is_locked": database.is_locked,
            "created_time": _iso_offset(database.created), "last_edited_time": _iso_offset(database.last_edited),
            "data_sources": [{"id": ds_id, "name": plain_text(self._data_sources[ds_id].title)}
                             for ds_id in database.data_source_ids],
            "icon": database.icon, "cover": database.cover,
            "url": f"https://app.notion.com/p/{database.id.replace('-', '')}", "public_url": None,
            "archived": database.in_trash,
        }
        if version >= "2026-03-11":
            del body["archived"]
        return json.loads(json.dumps(body))

    def _render_data_source(self, source: _DataSource, version: str) -> dict[str, Any]:
        database = self._databases[source.database_id]
        properties = {}
        for name, prop in source.props.items():
            properties[name] = {"id": prop["id"], "name": name, "description": prop["description"],
                                "type": prop["type"], prop["type"]: prop["config"]}
        body: dict[str, Any] = {
            "object": "data_source", "id": source.id, "cover": source.cover, "icon": source.icon,
            "created_time": _iso_z(source.created), "created_by": self._user(), "last_edited_by": self._user(),
            "last_edited_time": _iso_z(source.last_edited), "title": source.title, "description": [],
            "is_inline": database.is_inline, "properties": properties,
            "parent": {"type": "database_id", "database_id": database.id},
            "database_parent": {"type": "page_id", "page_id": database.parent_page_id},
            "url": f"https://app.notion.com/p/{database.id.replace('-', '')}", "public_url": None,
            "in_trash": source.in_trash, "archived": source.in_trash,
        }
        if version >= "2026-03-11":
            del body["archived"]
        return json.loads(json.dumps(body))

    # -- endpoint handlers (called under the lock) ------------------------------------------------

    def _databases_create(self, body: dict[str, Any], params: list[str], version: str) -> tuple[dict[str, Any], bool]:
        parent = body.get("parent", _MISSING)
        if not isinstance(parent, dict) or "page_id" not in parent:
            raise _validation(f"body failed validation: body.parent.page_id should be defined, "
                              f"instead was `{_js(parent)}`.")
        page_id = self._norm(parent["page_id"], "body failed validation: body.parent.page_id")
        title = _convert_rich_text(body.get("title", []), "body.title")
        # 2025-09-03 puts the schema under initial_data_source; 2022-06-28 had it at the top level.
        initial = body.get("initial_data_source")
        if isinstance(initial, dict) and "properties" in initial:
            schema_raw = initial["properties"]
        elif "properties" in body:
            schema_raw = body["properties"]
        else:
            schema_raw = {"Name": {"title": {}}}  # Notion's default schema
        database, _source = self._create_database(page_id, title, schema_raw,
                                                  where="body.initial_data_source.properties")
        database.description = _convert_rich_text(body.get("description", []), "body.description")
        database.is_inline = bool(body.get("is_inline", False))
        database.icon, database.cover = body.get("icon"), body.get("cover")
        return self._render_database(database, version), True

    def _databases_retrieve(self, body: dict[str, Any], params: list[str], version: str) -> tuple[dict[str, Any], bool]:
        database = self._get_database(params[0], "path failed validation: path.database_id")
        return self._render_database(database, version), False

    def _data_sources_create(self, body: dict[str, Any], params: list[str], version: str) -> tuple[dict[str, Any], bool]:
        parent = body.get("parent", _MISSING)
        if not isinstance(parent, dict) or "database_id" not in parent:
            raise _validation(f"body failed validation: body.parent.database_id should be defined, "
                              f"instead was `{_js(parent)}`.")
        database = self._get_database(parent["database_id"], "body failed validation: body.parent.database_id")
        schema = self._build_schema(body.get("properties", {"Name": {"title": {}}}), "body.properties")
        stamp = _minute(self._now())
        title = _convert_rich_text(body.get("title", []), "body.title")
        source = _DataSource(id=self._new_id(), database_id=database.id, title=title, props=schema,
                             created=stamp, last_edited=stamp, icon=body.get("icon"))
        self._data_sources[source.id] = source
        database.data_source_ids.append(source.id)
        return self._render_data_source(source, version), True

    def _data_sources_retrieve(self, body: dict[str, Any], params: list[str], version: str) -> tuple[dict[str, Any], bool]:
        source = self._get_data_source(params[0], "path failed validation: path.data_source_id")
        return self._render_data_source(source, version), False

    def _data_sources_update(self, body: dict[str, Any], params: list[str], version: str) -> tuple[dict[str, Any], bool]:
        source = self._get_data_source(params[0], "path failed validation: path.data_source_id")
        title = _convert_rich_text(body["title"], "body.title") if "title" in body else None
        if "properties" in body:
            self._update_schema(source, body["properties"])
        if title is not None:
            source.title = title
        if "icon" in body:
            source.icon = body["icon"]
        for flag in ("in_trash", "archived"):
            if flag in body:
                source.in_trash = bool(body[flag])
        source.last_edited = _minute(self._now())
        return self._render_data_source(source, version), True

    def _data_sources_query(self, body: dict[str, Any], params: list[str], version: str,
                            query: dict[str, list[str]] | None = None) -> tuple[dict[str, Any], bool]:
        source = self._get_data_source(params[0], "path failed validation: path.data_source_id")
        page_size = body.get("page_size", 100)
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 100:
            bound = "≤ `100`" if isinstance(page_size, int) and page_size > 100 else "an integer between 1 and 100"
            raise _validation(f"body failed validation: body.page_size should be {bound}, "
                              f"instead was `{_js(page_size)}`.")
        predicate = self._compile_filter(body["filter"], source, 0) if body.get("filter") is not None else None
        compare = self._compile_sorts(body.get("sorts"), source)
        only_trashed = bool(body.get("in_trash") or body.get("archived"))
        rows = [p for p in self._pages.values()
                if p.data_source_id == source.id and p.in_trash == only_trashed
                and (predicate is None or predicate(p))]
        rows.sort(key=functools.cmp_to_key(compare))
        start = 0
        cursor = body.get("start_cursor")
        if cursor is not None:
            cursor_id = normalize_id(cursor)
            ids = [p.id for p in rows]
            if cursor_id not in ids:
                raise _validation(f"start_cursor provided is invalid: {cursor}")
            start = ids.index(cursor_id)
        batch = rows[start:start + page_size]
        has_more = start + page_size < len(rows)
        only = self._filter_properties(query or {}, source)
        return {
            "object": "list", "results": [self._render_page(p, version, only) for p in batch],
            "next_cursor": rows[start + page_size].id if has_more else None, "has_more": has_more,
            "type": "page_or_data_source", "page_or_data_source": {},
        }, False

    def _filter_properties(self, query: dict[str, list[str]], source: _DataSource) -> set[str] | None:
        wanted = query.get("filter_properties") or query.get("filter_properties[]")
        if not wanted:
            return None
        for key in wanted:
            if self._find_prop(source.props, key) is None:
                raise _validation(f"Could not find property with name or id: {key}")
        return set(wanted)

    def _pages_create(self, body: dict[str, Any], params: list[str], version: str) -> tuple[dict[str, Any], bool]:
        parent = body.get("parent", _MISSING)
        if not isinstance(parent, dict):
            raise _validation(f"body failed validation: body.parent should be an object, instead was `{_js(parent)}`.")
        where = "body failed validation: body.parent"
        if "data_source_id" in parent:
            source = self._get_data_source(parent["data_source_id"], f"{where}.data_source_id")
            page = _Page(id="", seq=0, created=dt.datetime.min, last_edited=dt.datetime.min,
                         data_source_id=source.id)
        elif "database_id" in parent:
            # Allowed for single-source databases under 2025-09-03: maps to the first data source.
            database = self._get_database(parent["database_id"], f"{where}.database_id")
            page = _Page(id="", seq=0, created=dt.datetime.min, last_edited=dt.datetime.min,
                         data_source_id=database.data_source_ids[0])
        elif "page_id" in parent:
            parent_page = self._get_page(parent["page_id"], f"{where}.page_id")
            page = _Page(id="", seq=0, created=dt.datetime.min, last_edited=dt.datetime.min,
                         parent_page_id=parent_page.id)
        else:
            raise _validation(f"body failed validation: body.parent should have a data_source_id, database_id "
                              f"or page_id, instead was `{_js(parent)}`.")
        # Validate on a scratch page so a 400 creates nothing, then register it.
        self._write_properties(page, body.get("properties", {}), creating=True)
        real = self._new_page(data_source_id=page.data_source_id, parent_page_id=page.parent_page_id)
        real.values = page.values
        real.icon, real.cover = body.get("icon"), body.get("cover")
        return self._render_page(real, version), True

    def _pages_retrieve(self, body: dict[str, Any], params: list[str], version: str,
                        query: dict[str, list[str]] | None = None) -> tuple[dict[str, Any], bool]:
        page = self._get_page(params[0], "path failed validation: path.page_id")
        wanted = (query or {}).get("filter_properties")
        return self._render_page(page, version, set(wanted) if wanted else None), False

    def _pages_update(self, body: dict[str, Any], params: list[str], version: str) -> tuple[dict[str, Any], bool]:
        page = self._get_page(params[0], "path failed validation: path.page_id")
        trash: bool | None = None
        for flag in ("in_trash", "archived"):
            if flag in body:
                if not isinstance(body[flag], bool):
                    raise _validation(f"body failed validation: body.{flag} should be a boolean, "
                                      f"instead was `{_js(body[flag])}`.")
                trash = body[flag]
        if page.in_trash and trash is not False and body.get("properties"):
            raise _validation("Can't edit block that is archived. You must unarchive the block before editing.")
        scratch = _Page(id=page.id, seq=page.seq, created=page.created, last_edited=page.last_edited,
                        data_source_id=page.data_source_id, parent_page_id=page.parent_page_id,
                        values=dict(page.values))
        self._write_properties(scratch, body.get("properties"), creating=False)
        page.values = scratch.values
        if "icon" in body:
            page.icon = body["icon"]
        if "cover" in body:
            page.cover = body["cover"]
        if "is_locked" in body:
            page.is_locked = bool(body["is_locked"])
        if trash is not None:
            page.in_trash = trash
        page.last_edited = _minute(self._now())
        return self._render_page(page, version), True

    # -- filters and sorts ---------------------------------------------------------------------------

    def _compile_filter(self, raw: Any, source: _DataSource, depth: int) -> Callable[[_Page], bool]:
        if not isinstance(raw, dict):
            raise _validation(f"body failed validation: body.filter should be an object, instead was `{_js(raw)}`.")
        for compound in ("and", "or"):
            if compound in raw:
                items = raw[compound]
                if not isinstance(items, list):
                    raise _validation(f"body failed validation: body.filter.{compound} should be an array.")
                if depth > 2:
                    raise _validation("Filters can be nested at most two levels deep.")
                preds = [self._compile_filter(item, source, depth + 1) for item in items]
                if compound == "and":
                    return lambda page: all(pred(page) for pred in preds)
                return lambda page: any(pred(page) for pred in preds)
        if "timestamp" in raw:
            stamp = raw["timestamp"]
            if stamp not in ("created_time", "last_edited_time"):
                raise _validation(f"body failed validation: body.filter.timestamp should be `created_time` or "
                                  f"`last_edited_time`, instead was `{_js(stamp)}`.")
            test = self._date_test(raw.get(stamp), f"body.filter.{stamp}")
            return lambda page: test(_interval(getattr(page, "created" if stamp == "created_time" else "last_edited"),
                                               False))
        if "property" not in raw:
            raise _validation("body failed validation: body.filter should be a property, timestamp or compound filter.")
        prop = self._find_prop(source.props, raw["property"])
        if prop is None:
            raise _validation(f"Could not find property with name or id: {raw['property']}")
        kinds = [k for k in raw if k not in ("property", "type")]
        if len(kinds) != 1:
            raise _validation(f"body failed validation: the filter on {prop['name']} should have exactly one type key.")
        kind, ptype = kinds[0], prop["type"]
        compatible = (kind == ptype or (kind in TEXT_TYPES and ptype in TEXT_TYPES)
                      or (kind == "date" and ptype in READ_ONLY_TYPES))
        if not compatible:
            raise _validation(f"body failed validation: filter type `{kind}` does not match property "
                              f"{prop['name']} of type `{ptype}`.")
        condition = raw[kind]
        where = f"body.filter.{kind}"
        if ptype in TEXT_TYPES:
            return self._text_test(condition, where, prop)
        if ptype == "date" or ptype in READ_ONLY_TYPES:
            test = self._date_test(condition, where)
            return lambda page: test(self._date_interval(page, prop))
        op, arg = self._single_op(condition, where)
        value_of = functools.partial(self._value, prop=prop)
        if op in ("is_empty", "is_not_empty"):
            self._require(arg is True, where, op, arg, "`true`")
            if ptype == "checkbox":
                raise _validation(f"body failed validation: {where}.{op} is not a checkbox filter.")
            empty = (lambda v: v in (None, [])) if op == "is_empty" else (lambda v: v not in (None, []))
            return lambda page: empty(value_of(page))
        if ptype == "number":
            ops = {"equals": lambda v: v == arg, "does_not_equal": lambda v: v != arg,
                   "greater_than": lambda v: v > arg, "less_than": lambda v: v < arg,
                   "greater_than_or_equal_to": lambda v: v >= arg, "less_than_or_equal_to": lambda v: v <= arg}
            self._require(op in ops, where, op, arg, f"one of {sorted(ops)}")
            self._require(isinstance(arg, (int, float)) and not isinstance(arg, bool), where, op, arg, "a number")
            # An empty number only satisfies does_not_equal (assumption; Notion does not document it).
            return lambda page: (op == "does_not_equal") if value_of(page) is None else ops[op](value_of(page))
        if ptype == "checkbox":
            self._require(op in ("equals", "does_not_equal"), where, op, arg, "equals or does_not_equal")
            self._require(isinstance(arg, bool), where, op, arg, "a boolean")
            return lambda page: (value_of(page) == arg) == (op == "equals")
        if ptype in ("select", "status"):
            self._require(op in ("equals", "does_not_equal"), where, op, arg, "equals, does_not_equal, is_empty or is_not_empty")
            names = arg if isinstance(arg, list) else [arg]
            self._require(all(isinstance(n, str) for n in names), where, op, arg, "a string")
            return lambda page: ((value_of(page) or {}).get("name") in names) == (op == "equals")
        if ptype == "multi_select":
            self._require(op in ("contains", "does_not_contain"), where, op, arg, "contains or does_not_contain")
            self._require(isinstance(arg, str), where, op, arg, "a string")
            return lambda page: (arg in [o["name"] for o in value_of(page)]) == (op == "contains")
        raise _validation(f"Filtering on {ptype} properties is not supported by the Notion emulator.")

    @staticmethod
    def _single_op(condition: Any, where: str) -> tuple[str, Any]:
        if not isinstance(condition, dict) or len(condition) != 1:
            raise _validation(f"body failed validation: {where} should be an object with exactly one operator, "
                              f"instead was `{_js(condition)}`.")
        return next(iter(condition.items()))

    @staticmethod
    def _require(ok: bool, where: str, op: str, arg: Any, expected: str) -> None:
        if not ok:
            raise _validation(f"body failed validation: {where}.{op} should be {expected}, instead was `{_js(arg)}`.")

    def _value(self, page: _Page, prop: dict[str, Any]) -> Any:
        return page.values.get(prop["id"], _empty_value(prop))

    def _text_of(self, page: _Page, prop: dict[str, Any]) -> str:
        value = self._value(page, prop)
        return plain_text(value) if isinstance(value, list) else (value or "")

    def _text_test(self, condition: Any, where: str, prop: dict[str, Any]) -> Callable[[_Page], bool]:
        op, arg = self._single_op(condition, where)
        if op in ("is_empty", "is_not_empty"):
            self._require(arg is True, where, op, arg, "`true`")
            return lambda page: (self._text_of(page, prop) == "") == (op == "is_empty")
        ops = {"equals": lambda v, a: v == a, "does_not_equal": lambda v, a: v != a,
               "contains": lambda v, a: a in v, "does_not_contain": lambda v, a: a not in v,
               "starts_with": lambda v, a: v.startswith(a), "ends_with": lambda v, a: v.endswith(a)}
        self._require(op in ops, where, op, arg, f"one of {sorted(ops) + ['is_empty', 'is_not_empty']}")
        self._require(isinstance(arg, str), where, op, arg, "a string")

        def test(page: _Page) -> bool:
            value, wanted = self._text_of(page, prop), arg
            if not self.text_case_sensitive:
                value, wanted = value.lower(), wanted.lower()
            return ops[op](value, wanted)
        return test

    def _date_interval(self, page: _Page, prop: dict[str, Any]) -> Interval | None:
        if prop["type"] == "created_time":
            return _interval(page.created, False)
        if prop["type"] == "last_edited_time":
            return _interval(page.last_edited, False)
        value = self._value(page, prop)
        if not value:
            return None
        start, date_only = _parse_iso(value["start"], "date")
        if not date_only and value.get("time_zone"):
            # A start without an offset plus a time_zone is local time in that zone.
            parsed = dt.datetime.fromisoformat(value["start"].replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                start = parsed.replace(tzinfo=ZoneInfo(value["time_zone"])).astimezone(UTC)
        return _interval(start, date_only)

    def _date_test(self, condition: Any, where: str) -> Callable[[Interval | None], bool]:
        """Date operators on intervals: a date-only value is its whole (UTC) day, a date-time an instant."""
        op, arg = self._single_op(condition, where)
        self._require(op in DATE_OPS, where, op, arg, f"one of {list(DATE_OPS)} (relative operators such as "
                                                      "past_week are not supported by the emulator)")
        if op in ("is_empty", "is_not_empty"):
            self._require(arg is True, where, op, arg, "`true`")
            return lambda iv: (iv is None) == (op == "is_empty")
        f_lo, f_hi = _interval(*_parse_iso(arg, f"{where}.{op}"))
        tests: dict[str, Callable[[Interval], bool]] = {
            "equals": lambda iv: iv[0] < f_hi and iv[1] > f_lo,  # overlap
            "before": lambda iv: iv[0] < f_lo,
            "after": lambda iv: iv[0] >= f_hi,
            "on_or_before": lambda iv: iv[0] < f_hi,
            "on_or_after": lambda iv: iv[1] > f_lo,
        }
        return lambda iv: iv is not None and tests[op](iv)

    def _compile_sorts(self, raw: Any, source: _DataSource) -> Callable[[_Page, _Page], int]:
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise _validation(f"body failed validation: body.sorts should be an array, instead was `{_js(raw)}`.")
        keys: list[tuple[Callable[[_Page], Any], bool]] = []
        for i, spec in enumerate(raw):
            if not isinstance(spec, dict):
                raise _validation(f"body failed validation: body.sorts[{i}] should be an object.")
            direction = spec.get("direction", "ascending")
            if direction not in ("ascending", "descending"):
                raise _validation(f"body failed validation: body.sorts[{i}].direction should be `ascending` or "
                                  f"`descending`, instead was `{_js(direction)}`.")
            if "timestamp" in spec:
                stamp = spec["timestamp"]
                if stamp not in ("created_time", "last_edited_time"):
                    raise _validation(f"body failed validation: body.sorts[{i}].timestamp should be `created_time` "
                                      f"or `last_edited_time`, instead was `{_js(stamp)}`.")
                attr = "created" if stamp == "created_time" else "last_edited"
                keys.append(((lambda page, a=attr: getattr(page, a)), direction == "descending"))
                continue
            prop = self._find_prop(source.props, spec.get("property"))
            if prop is None:
                raise _validation(f"Could not find sort property with name or id: {spec.get('property')}")
            keys.append((functools.partial(self._sort_key, prop=prop), direction == "descending"))

        def compare(a: _Page, b: _Page) -> int:
            for key, descending in keys:
                va, vb = key(a), key(b)
                if va is None and vb is None:
                    continue
                if va is None or vb is None:
                    return 1 if va is None else -1  # empty values last, whatever the direction
                result = (va > vb) - (va < vb)
                if result:
                    return -result if descending else result
            # Default order: created_time descending, then newest first.
            return (b.created > a.created) - (b.created < a.created) or b.seq - a.seq
        return compare

    def _sort_key(self, page: _Page, prop: dict[str, Any]) -> Any:
        kind = prop["type"]
        if kind in TEXT_TYPES:
            return self._text_of(page, prop) or None
        if kind in ("date", "created_time", "last_edited_time"):
            interval = self._date_interval(page, prop)
            return interval[0] if interval else None
        value = self._value(page, prop)
        if kind in ("select", "status"):
            # Notion sorts select values by the option order of the schema.
            names = [o["name"] for o in prop["config"].get("options", [])]
            return names.index(value["name"]) if value and value["name"] in names else None
        if kind == "multi_select":
            return ",".join(o["name"] for o in value) or None
        return value  # number (None when empty) and checkbox (False < True)

    # -- HTTP plumbing -----------------------------------------------------------------------------

    _ROUTES: list[tuple[str, re.Pattern[str], str, str]] = [
        ("POST", re.compile(r"^/v1/databases$"), "databases.create", "_databases_create"),
        ("GET", re.compile(r"^/v1/databases/([^/]+)$"), "databases.retrieve", "_databases_retrieve"),
        ("POST", re.compile(r"^/v1/data_sources$"), "data_sources.create", "_data_sources_create"),
        ("GET", re.compile(r"^/v1/data_sources/([^/]+)$"), "data_sources.retrieve", "_data_sources_retrieve"),
        ("PATCH", re.compile(r"^/v1/data_sources/([^/]+)$"), "data_sources.update", "_data_sources_update"),
        ("POST", re.compile(r"^/v1/data_sources/([^/]+)/query$"), "data_sources.query", "_data_sources_query"),
        ("POST", re.compile(r"^/v1/pages$"), "pages.create", "_pages_create"),
        ("GET", re.compile(r"^/v1/pages/([^/]+)$"), "pages.retrieve", "_pages_retrieve"),
        ("PATCH", re.compile(r"^/v1/pages/([^/]+)$"), "pages.update", "_pages_update"),
    ]

    def _route(self, method: str, path: str) -> tuple[str, str | None, list[str]]:
        for route_method, pattern, endpoint, handler in self._ROUTES:
            match = pattern.match(path)
            if match and route_method == method:
                return endpoint, handler, list(match.groups())
        return "unknown", None, []

    def _take_token(self, token: str) -> bool:
        """Token bucket per token: refills at rate_limit/s up to rate_burst."""
        rate = self.rate_limit
        if rate is None:
            return True
        capacity = self.rate_burst if self.rate_burst is not None else max(1.0, float(rate))
        now = time.monotonic()
        tokens, last = self._buckets.get(token, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * rate)
        if tokens >= 1.0:
            self._buckets[token] = (tokens - 1.0, now)
            return True
        self._buckets[token] = (tokens, now)
        return False

    def _next_fault(self, endpoint: str) -> int | str | None:
        """A fault to answer BEFORE the request takes effect (queued first, then random)."""
        if self._fault_queue and not self._fault_queue[0][1]:
            return self._fault_queue.popleft()[0]
        if self.drop_ratio and self.rng.random() < self.drop_ratio:
            return DROP
        if self.fail_ratio and self.fail_statuses and self.rng.random() < self.fail_ratio:
            return self.rng.choice(self.fail_statuses)
        return None

    def _after_write_fault(self) -> int | None:
        if self._fault_queue and self._fault_queue[0][1]:
            fault = self._fault_queue.popleft()[0]
            return fault if isinstance(fault, int) else 500
        if (self.fail_after_write_ratio and self.fail_after_write_statuses
                and self.rng.random() < self.fail_after_write_ratio):
            return self.rng.choice(self.fail_after_write_statuses)
        return None

    def _fault_error(self, status: int) -> NotionError:
        code, message = FAULTS.get(status, ("internal_server_error", "Unexpected error occurred."))
        return NotionError(status, code, message)

    def handle(self, method: str, raw_path: str, headers: Any, raw_body: bytes
               ) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """One request -> (status, JSON body, extra headers), or None to drop the connection."""
        path, _, query_string = raw_path.partition("?")
        endpoint, handler_name, params = self._route(method, path)
        with self._lock:
            self.counts[endpoint] += 1
            self.request_times.append(time.monotonic())
        if self.delay_s:
            time.sleep(self.delay_s)
        try:
            with self._lock:
                auth = headers.get("Authorization") or ""
                if auth != f"Bearer {self.token}":
                    raise NotionError(401, "unauthorized", "API token is invalid.")
                version = headers.get("Notion-Version")
                if not version:
                    raise NotionError(400, "missing_version", "Notion-Version header failed validation: "
                                      "Notion-Version header should be defined, instead was `undefined`.")
                if version not in SUPPORTED_VERSIONS:
                    raise _validation(f"Notion-Version header failed validation: Notion-Version header should be "
                                      f"one of {list(SUPPORTED_VERSIONS)}, instead was `{_js(version)}`.")
                if not self._take_token(self.token):
                    self.throttled += 1
                    raise NotionError(429, "rate_limited",
                                      "You have been rate limited. Please try again in a few minutes.")
                fault = self._next_fault(endpoint)
                if fault == DROP:
                    return None
                if fault is not None:
                    raise self._fault_error(int(fault))
                if handler_name is None:
                    raise NotionError(400, "invalid_request_url", "Invalid request URL.")
                if len(raw_body) > MAX_BODY_BYTES:
                    raise _validation(f"Request body too large: {len(raw_body)} bytes (limit {MAX_BODY_BYTES}).")
                body: Any = {}
                if raw_body.strip():
                    try:
                        body = json.loads(raw_body)
                    except ValueError:
                        raise NotionError(400, "invalid_json", "Error parsing JSON body.") from None
                if not isinstance(body, dict):
                    raise _validation(f"body failed validation: body should be an object, instead was `{_js(body)}`.")
                handler = getattr(self, handler_name)
                query = parse_qs(query_string)
                if handler_name in ("_data_sources_query", "_pages_retrieve"):
                    result, wrote = handler(body, params, version, query)
                else:
                    result, wrote = handler(body, params, version)
                if wrote and endpoint in WRITE_ENDPOINTS:
                    late = self._after_write_fault()
                    if late is not None:
                        raise self._fault_error(late)  # the write above stays applied
                result["request_id"] = str(uuid.uuid4())
                return 200, result, {}
        except NotionError as error:
            return self._error_response(error)
        except Exception as error:  # a bug in the emulator: answer like Notion would, and show it
            traceback.print_exc()
            return self._error_response(NotionError(500, "internal_server_error", f"Emulator bug: {error!r}"))

    def _error_response(self, error: NotionError) -> tuple[int, dict[str, Any], dict[str, str]]:
        headers = dict(error.headers)
        if error.status == 429:
            with self._lock:
                self.rate_limited += 1
            headers["Retry-After"] = str(int(self.retry_after))
        body = {"object": "error", "status": error.status, "code": error.code, "message": error.message,
                "request_id": str(uuid.uuid4())}
        return error.status, body, headers


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like httpx expects from a real API
    server_version = "NotionEmulator/1.0"
    timeout = 60  # free idle keep-alive threads eventually

    def setup(self) -> None:
        super().setup()
        # Without TCP_NODELAY, headers and body go out in two segments and the client's delayed ACK
        # stalls every response by ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _dispatch(self) -> None:
        emulator: NotionEmulator = self.server.emulator  # type: ignore[attr-defined]
        if emulator._server is None:  # stopped: a kept-alive connection must not keep being served
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        answer = emulator.handle(self.command, self.path, self.headers, raw_body)
        endpoint = emulator._route(self.command, self.path.partition("?")[0])[0]
        if answer is None:
            with emulator._lock:
                emulator.history.append((endpoint, f"{self.command} {self.path}", 0))
            # Simulate a dropped connection: no status line at all.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        status, body, headers = answer
        with emulator._lock:
            emulator.history.append((endpoint, f"{self.command} {self.path}", status))
        data = json.dumps(body).encode()
        self.send_response(status, "Service Overloaded" if status == 529 else None)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self._headers_buffer.append(b"\r\n")  # end the headers, then send headers + body in one write
        self._headers_buffer.append(data)
        self.flush_headers()

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.emulator.verbose:  # type: ignore[attr-defined]
            super().log_message(format, *args)


# ---------------------------------------------------------------------------------------------
# Standalone
# ---------------------------------------------------------------------------------------------

# "module:function" taking the emulator and returning {label: id} to print; the lead wires the
# project's seeding here. Missing -> a warning, the emulator still serves.
XMAS_SEED_HOOK = "xmas_pipeline_tests.fakes.notion_setup:xmas_databases"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a Notion API emulator on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700, help="0 picks a free port")
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--rate-limit", type=float, default=None, help="requests/s for all clients together (default unlimited)")
    parser.add_argument("--retry-after", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.add_argument("--with-xmas-schema", action="store_true",
                        help=f"seed the project's databases via {XMAS_SEED_HOOK}")
    args = parser.parse_args(argv)

    emulator = NotionEmulator(args.token, host=args.host, port=args.port, rate_limit=args.rate_limit,
                              retry_after=args.retry_after, seed=args.seed, verbose=args.verbose)
    emulator.start()  # before seeding: a seeding hook may go through the HTTP API
    seeded: dict[str, str] = {}
    if args.with_xmas_schema:
        module_name, _, function_name = XMAS_SEED_HOOK.partition(":")
        try:
            seed = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError):
            print(f"warning: {XMAS_SEED_HOOK} is not available yet; serving without the xmas schema",
                  file=sys.stderr)
        else:
            try:
                seeded = dict(seed(emulator) or {})
            except BaseException:
                emulator.stop()
                raise
    try:
        print(f"token: {emulator.token}")
        print(f"base_url: {emulator.base_url}")
        print(f"parent_page_id: {emulator.root_page_id}")
        exports = {"NOTION_TOKEN": emulator.token, "XMAS_NOTION_API_URL": emulator.base_url}
        # A person trying the Notion path gets Notion's real budget, not the tests' fast settings.
        exports.update({k: v for k, v in seeded.items() if k.startswith("XMAS_NOTION_") and k.endswith("_DB")})
        if seeded:
            exports["XMAS_CRM"] = "notion"
        for label, object_id in seeded.items():
            print(f"{label}: {object_id}")
        print("export " + " ".join(f"{k}={v}" for k, v in exports.items()))
        print("serving; Ctrl-C to stop", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
