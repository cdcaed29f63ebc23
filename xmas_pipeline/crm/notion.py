"""The Notion CRM: contacts, one sequence row per (email, campaign), and the templates database.

API version 2025-09-03: each database is resolved once to its data source; rows are read with
``data_sources.query`` and created under a ``data_source_id`` parent. Creates are made safe to repeat
by their natural key stored in the page (the contact's email; the sequence's email + campaign): a
retried create first looks that key up. Duplicate rows left by older systems are resolved
deterministically (the oldest page wins), never by whatever Notion lists first.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Callable, Iterator

from xmas_pipeline.campaign.journey import Journey
from xmas_pipeline.campaign.records import ContactRecord, SequenceRecord, SequenceUpdate, TemplateRecord
from xmas_pipeline.campaign.tokens import sequence_key
from xmas_pipeline.crm.base import SchemaProblem
from xmas_pipeline.crm.notion_api import NotionCaller, make_client, notion_budget
from xmas_pipeline.crm.notion_schema import Prop, mapping

MAX_TEXT = 2000  # Notion's limit per rich-text item
PAGE_SIZE = 100
SCHEMA_TTL_S = 300.0

# Per process: a database's data source never changes, and a schema verified a moment ago need not
# cost three more calls per run. A run in a fresh process (Dagster's default) checks anew.
_source_cache: dict[tuple[str, str], str] = {}
_schema_cache: dict[tuple, tuple[float, list, dict]] = {}


# --- property values ----------------------------------------------------------------------------


def text_items(value: str | None) -> list[dict]:
    """Rich text in 2,000-character items (Notion refuses longer ones); at most 100 items."""
    value = value or ""
    chunks = [value[i : i + MAX_TEXT] for i in range(0, len(value), MAX_TEXT)][:100]
    return [{"type": "text", "text": {"content": chunk}} for chunk in chunks]


def to_notion(prop: Prop, value: Any) -> dict:
    if prop.type in ("title", "rich_text"):
        return {prop.type: text_items(None if value is None else str(value))}
    if prop.type == "email":
        return {"email": value or None}
    if prop.type == "number":
        return {"number": value}
    if prop.type == "select":
        return {"select": {"name": str(value)} if value else None}
    if prop.type == "date":
        return {"date": {"start": value.isoformat()} if value else None}
    if prop.type == "checkbox":
        return {"checkbox": bool(value)}
    raise ValueError(f"unsupported Notion property type {prop.type}")


def from_notion(prop: dict | None) -> Any:
    if not prop:
        return None
    kind = prop.get("type")
    value = prop.get(kind)
    if kind in ("title", "rich_text"):
        return "".join(item.get("plain_text") or item.get("text", {}).get("content", "") for item in value or [])
    if kind == "select":
        return value.get("name") if value else None
    if kind == "date":
        return _instant(value.get("start")) if value else None
    return value


def _instant(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


# --- the backend --------------------------------------------------------------------------------


class NotionCRM:
    name = "notion"

    def __init__(
        self,
        caller: NotionCaller,
        *,
        contacts_db: str,
        sequences_db: str,
        templates_db: str | None,
        campaign: Journey,
    ):
        self.api = caller
        self.client = caller.client
        self.campaign = campaign
        overrides = campaign.notion_properties
        self.props = {db: mapping(db, overrides) for db in ("contacts", "sequences", "templates")}
        # The templates database only matters when the campaign reads its templates from Notion.
        uses_templates = campaign.template_source == "notion"
        if uses_templates and not templates_db:
            raise ValueError("the campaign reads templates from Notion (template_source: notion): "
                             "set XMAS_NOTION_TEMPLATES_DB to the templates database id")
        self.database_ids = {"contacts": contacts_db, "sequences": sequences_db,
                             "templates": templates_db if uses_templates else None}
        self._titles: dict[str, str | None] = {}

    @classmethod
    def from_settings(cls, settings, campaign: Journey, sleep: Callable[[float], None] | None = None) -> "NotionCRM":
        client = make_client(settings.notion_token, settings.notion_api_url)
        caller = NotionCaller(client, notion_budget(settings),
                              retry_base_s=settings.notion_retry_base_s)
        if sleep is not None:
            caller.sleep = sleep
        return cls(
            caller,
            contacts_db=settings.notion_contacts_db,
            sequences_db=settings.notion_sequences_db,
            templates_db=settings.notion_templates_db,
            campaign=campaign,
        )

    # -- data sources and schema -----------------------------------------------------------------

    def source(self, database: str) -> str:
        """The data source of a database, resolved once per process (a data source id is accepted too)."""
        db_id = self.database_ids[database]
        key = (self._token, db_id)
        if key not in _source_cache:
            try:
                found = self.api.call("databases.retrieve", self.client.databases.retrieve, database_id=db_id)
                _source_cache[key] = found["data_sources"][0]["id"]
            except LookupError:
                self.api.call("data_sources.retrieve", self.client.data_sources.retrieve, data_source_id=db_id)
                _source_cache[key] = db_id
        return _source_cache[key]

    @property
    def _token(self) -> str:
        return str(getattr(self.client.options, "auth", "") or "")

    def check_schema(self) -> list[SchemaProblem]:
        """Every missing or mistyped property, in one list (a clean result is reused for five minutes)."""
        key = (self._token, tuple(sorted((k, v or "") for k, v in self.database_ids.items())),
               tuple(sorted((db, tuple(sorted((f, p.name, p.type) for f, p in props.items()))) for db, props in self.props.items())))
        cached = _schema_cache.get(key)
        if cached and time.monotonic() - cached[0] < SCHEMA_TTL_S:
            self._titles.update(cached[2])
            return list(cached[1])
        problems = self._check_schema_now()
        if not problems:
            _schema_cache[key] = (time.monotonic(), problems, dict(self._titles))
        return problems

    def _check_schema_now(self) -> list[SchemaProblem]:
        problems: list[SchemaProblem] = []
        for database, props in self.props.items():
            if not self.database_ids[database]:
                continue
            label = f"{database} database ({self.database_ids[database]})"
            try:
                schema = self.api.call(
                    "data_sources.retrieve", self.client.data_sources.retrieve, data_source_id=self.source(database)
                )["properties"]
            except (LookupError, PermissionError) as exc:
                problems.append(SchemaProblem(database=label, property="*", problem=f"cannot be read: {exc}"))
                continue
            types = {name: p.get("type") for name, p in schema.items()}
            self._titles[database] = next((n for n, t in types.items() if t == "title"), None)
            for prop in props.values():
                if prop.name not in types:
                    problems.append(SchemaProblem(database=label, property=prop.name, problem=f"is missing (expected {prop.type})"))
                elif types[prop.name] != prop.type:
                    problems.append(
                        SchemaProblem(database=label, property=prop.name, problem=f"is {types[prop.name]}, expected {prop.type}")
                    )
        return problems

    def _query(self, database: str, filter: dict | None = None, sorts: list | None = None,
               first_only: bool = False) -> Iterator[dict]:
        kwargs: dict[str, Any] = {"data_source_id": self.source(database), "page_size": 10 if first_only else PAGE_SIZE}
        if filter:
            kwargs["filter"] = filter
        if sorts:
            kwargs["sorts"] = sorts
        while True:
            page = self.api.call("data_sources.query", self.client.data_sources.query, **kwargs)
            yield from page["results"]
            if first_only or not page.get("has_more") or not page.get("next_cursor"):
                return
            kwargs["start_cursor"] = page["next_cursor"]

    def _oldest(self, database: str, filter: dict) -> dict | None:
        """The oldest page matching ``filter``; same-minute ties (Notion rounds times) broken by page id."""
        pages = list(self._query(database, filter, [{"timestamp": "created_time", "direction": "ascending"}], True))
        return min(pages, key=lambda p: (p["created_time"], p["id"]), default=None)

    # -- contacts ----------------------------------------------------------------------------------

    def _contact_properties(self, contact: ContactRecord) -> dict:
        p = self.props["contacts"]
        values = {
            "email": contact.email,
            "first_name": contact.first_name,
            "business_name": contact.business_name,
            "segment": contact.segment,
            "assessment_score": contact.assessment_score,
            "campaign_status": contact.campaign_status,
            "booking_status": contact.booking_status,
            "call_date": contact.call_date,
        }
        return {p[field].name: to_notion(p[field], value) for field, value in values.items()}

    def _contact_filter(self, email: str) -> dict:
        prop = self.props["contacts"]["email"]
        return {"property": prop.name, prop.type: {"equals": email}}

    def contact_from_page(self, page: dict) -> ContactRecord | None:
        p, props = self.props["contacts"], page["properties"]
        email = from_notion(props.get(p["email"].name))
        if not email:
            return None
        return ContactRecord(
            email=email,
            first_name=from_notion(props.get(p["first_name"].name)) or "",
            business_name=from_notion(props.get(p["business_name"].name)) or None,
            segment=from_notion(props.get(p["segment"].name)),
            assessment_score=from_notion(props.get(p["assessment_score"].name)),
            campaign_status=from_notion(props.get(p["campaign_status"].name)),
            booking_status=from_notion(props.get(p["booking_status"].name)),
            call_date=from_notion(props.get(p["call_date"].name)),
            crm_id=page["id"],
            edited_at=_instant(page.get("last_edited_time")),
        )

    def save_contact(self, contact: ContactRecord, maybe_exists: bool = False) -> ContactRecord:
        properties = self._contact_properties(contact)
        if not contact.crm_id and maybe_exists:
            found = self._oldest("contacts", self._contact_filter(contact.email))
            contact = contact.model_copy(update={"crm_id": found["id"]}) if found else contact
        if contact.crm_id:
            self.api.call("pages.update", self.client.pages.update, page_id=contact.crm_id, properties=properties)
            return contact
        page = self.api.create(
            "pages.create",
            self.client.pages.create,
            lambda: self._oldest("contacts", self._contact_filter(contact.email)),
            parent={"type": "data_source_id", "data_source_id": self.source("contacts")},
            properties=properties,
        )
        return contact.model_copy(update={"crm_id": page["id"]})

    def contacts_changed_since(self, since: dt.datetime | None) -> Iterator[ContactRecord]:
        for page in self._changed("contacts", since):
            record = self.contact_from_page(page)
            if record is not None:
                yield record

    def _changed(self, database: str, since: dt.datetime | None, extra: dict | None = None) -> Iterator[dict]:
        clauses = []
        if since is not None:
            clauses.append({"timestamp": "last_edited_time", "last_edited_time": {"on_or_after": since.isoformat()}})
        if extra:
            clauses.append(extra)
        filter = clauses[0] if len(clauses) == 1 else ({"and": clauses} if clauses else None)
        # Oldest first: when duplicates share a key, the mirror keeps the page listed first... so
        # we sort by creation and let callers keep the first occurrence of each key.
        yield from self._query(database, filter, [{"timestamp": "created_time", "direction": "ascending"}])

    # -- sequences ---------------------------------------------------------------------------------

    def _sequence_filter(self, email: str, campaign: str) -> dict:
        p = self.props["sequences"]
        return {"and": [
            {"property": p["email"].name, p["email"].type: {"equals": email}},
            {"property": p["campaign"].name, "select": {"equals": campaign}},
        ]}

    def create_sequence(self, sequence: SequenceRecord, maybe_exists: bool = False) -> SequenceRecord:
        if maybe_exists:
            found = self._oldest("sequences", self._sequence_filter(sequence.email, sequence.campaign))
            if found is not None:
                return sequence.model_copy(update={"crm_id": found["id"]})
        p = self.props["sequences"]
        values = {
            "email": sequence.email,
            "first_name": sequence.first_name,
            "business_name": sequence.business_name,
            "campaign": sequence.campaign,
            "sequence_type": sequence.sequence_type,
            "segment": sequence.segment,
            "assessment_score": sequence.assessment_score,
            "red_systems": sequence.red_systems,
            "orange_systems": sequence.orange_systems,
            "yellow_systems": sequence.yellow_systems,
            "green_systems": sequence.green_systems,
            "signup_date": sequence.signup_at,
            "completed": sequence.completed,
            **{f"email_{n}_sent": at for n, at in sequence.steps_sent.items()},
        }
        properties = {p[field].name: to_notion(p[field], value) for field, value in values.items()}
        title = self._titles.get("sequences")
        if title and title not in properties:
            properties[title] = {"title": text_items(f"{sequence.first_name} · {sequence.campaign}")}
        page = self.api.create(
            "pages.create",
            self.client.pages.create,
            lambda: self._oldest("sequences", self._sequence_filter(sequence.email, sequence.campaign)),
            parent={"type": "data_source_id", "data_source_id": self.source("sequences")},
            properties=properties,
        )
        return sequence.model_copy(update={"crm_id": page["id"]})

    def sequence_from_page(self, page: dict) -> SequenceRecord | None:
        p, props = self.props["sequences"], page["properties"]
        email = from_notion(props.get(p["email"].name))
        campaign = from_notion(props.get(p["campaign"].name))
        if not email or not campaign:
            return None
        email = email.strip().lower()

        def number(field: str) -> int:
            return int(from_notion(props.get(p[field].name)) or 0)

        sent = {n: from_notion(props.get(p[f"email_{n}_sent"].name)) for n in range(1, 8)}
        return SequenceRecord(
            sequence_key=sequence_key(email, campaign),
            email=email,
            campaign=campaign,
            first_name=from_notion(props.get(p["first_name"].name)) or "",
            business_name=from_notion(props.get(p["business_name"].name)) or None,
            segment=from_notion(props.get(p["segment"].name)) or "",  # unknown stays unknown
            assessment_score=from_notion(props.get(p["assessment_score"].name)),
            red_systems=number("red_systems"),
            orange_systems=number("orange_systems"),
            yellow_systems=number("yellow_systems"),
            green_systems=number("green_systems"),
            signup_at=from_notion(props.get(p["signup_date"].name)) or _instant(page["created_time"]),
            steps_sent={n: at for n, at in sent.items() if at is not None},
            completed=bool(from_notion(props.get(p["completed"].name))),
            crm_id=page["id"],
            edited_at=_instant(page.get("last_edited_time")),
        )

    def sequences_changed_since(self, since: dt.datetime | None, campaign: str) -> Iterator[SequenceRecord]:
        extra = {"property": self.props["sequences"]["campaign"].name, "select": {"equals": campaign}}
        for page in self._changed("sequences", since, extra):
            record = self.sequence_from_page(page)
            if record is not None:
                yield record

    def update_sequences(self, updates: list[SequenceUpdate]) -> None:
        p = self.props["sequences"]
        for update in updates:
            if not update.crm_id or update.crm_id.startswith("local:"):
                continue
            properties = {p[f"email_{n}_sent"].name: to_notion(p[f"email_{n}_sent"], at) for n, at in update.steps_sent.items()}
            if update.completed is not None:
                properties[p["completed"].name] = to_notion(p["completed"], update.completed)
            if properties:
                self.api.call("pages.update", self.client.pages.update, page_id=update.crm_id, properties=properties)

    # -- templates ---------------------------------------------------------------------------------

    def templates_changed_since(self, since: dt.datetime | None) -> Iterator[TemplateRecord]:
        if not self.database_ids["templates"]:
            return
        p = self.props["templates"]
        for page in self._changed("templates", since):
            props = page["properties"]
            name = from_notion(props.get(p["name"].name))
            if not name:
                continue
            yield TemplateRecord(
                name=name.strip(),
                subject=from_notion(props.get(p["subject"].name)) or "",
                html=from_notion(props.get(p["html"].name)) or "",
                active=(from_notion(props.get(p["status"].name)) or "Active") == "Active",
                edited_at=_instant(page.get("last_edited_time")),
            )
