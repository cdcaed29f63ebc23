"""The Notion emulator, driven only through the real notion-client (raw httpx for header checks).

The shape tests replay the recorded real Notion exchanges (shared/reference/notion-recordings) against
the emulator and compare key sets, value types and statuses. They read the committed copy in
``xmas_pipeline_tests/fakes/notion_shapes/recorded_shapes.json``; when the cassettes are present
(``<repo>/../shared/reference/notion-recordings``) a drift test checks the copy still matches them.
Regenerate the copy with: ``python -m xmas_pipeline_tests.test_fakes.test_notion_emulator``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from notion_client import APIErrorCode, APIResponseError, Client
from notion_client.client import RetryOptions
from notion_client.errors import UnknownHTTPResponseError
from notion_client.helpers import collect_paginated_api

from xmas_pipeline_tests.fakes.notion import DROP, NotionEmulator, normalize_id

REPO = Path(__file__).resolve().parents[2]
CASSETTES = REPO.parent / "shared" / "reference" / "notion-recordings"
SHAPES_FILE = REPO / "xmas_pipeline_tests" / "fakes" / "notion_shapes" / "recorded_shapes.json"
UTC = dt.timezone.utc

SCHEMA: dict[str, Any] = {
    "Name": {"title": {}},
    "Email": {"email": {}},
    "Notes": {"rich_text": {}},
    "Website": {"url": {}},
    "Phone": {"phone_number": {}},
    "Score": {"number": {"format": "number"}},
    "Subscribed": {"checkbox": {}},
    "Segment": {"select": {"options": [{"name": "hot", "color": "red"}, {"name": "warm"}, {"name": "cold"}]}},
    "Tags": {"multi_select": {"options": [{"name": "a"}, {"name": "b"}]}},
    "Signed Up": {"date": {}},
    "Created": {"created_time": {}},
}

# name, email, notes, website, phone, score, subscribed, segment, signed up
ROWS: list[tuple[Any, ...]] = [
    ("Ann", "ann@example.com", "likes cats", "https://ann.example", "+1 555 0100", 10, True, "hot", "2024-12-01"),
    ("Bob", "bob@example.org", "", None, None, 55.5, False, "warm", "2024-12-05T10:00:00Z"),
    ("Cy", "cy@example.com", "Cats and dogs", "https://cy.example", None, None, True, None, None),
    ("Dee", None, "dogs", None, "+44 20", 99, False, "cold", "2024-11-30"),
]


def text(content: str) -> list[dict[str, Any]]:
    return [{"text": {"content": content}}]


def row_properties(row: tuple[Any, ...]) -> dict[str, Any]:
    name, email, notes, website, phone, score, subscribed, segment, signed_up = row
    return {
        "Name": {"title": text(name)},
        "Email": {"email": email},
        "Notes": {"rich_text": text(notes) if notes else []},
        "Website": {"url": website},
        "Phone": {"phone_number": phone},
        "Score": {"number": score},
        "Subscribed": {"checkbox": subscribed},
        "Segment": {"select": {"name": segment} if segment else None},
        "Signed Up": {"date": {"start": signed_up} if signed_up else None},
    }


def names(pages: list[dict[str, Any]]) -> list[str]:
    return ["".join(t["plain_text"] for t in p["properties"]["Name"]["title"]) for p in pages]


@pytest.fixture
def emu() -> Iterator[NotionEmulator]:
    with NotionEmulator(retry_after=0) as emulator:
        yield emulator


@pytest.fixture
def client(emu: NotionEmulator) -> Iterator[Client]:
    notion = Client(auth=emu.token, base_url=emu.base_url, retry=False)
    yield notion
    notion.close()


def create_db(client: Client, emu: NotionEmulator, schema: dict[str, Any] | None = None) -> tuple[str, str]:
    database = client.databases.create(
        parent={"type": "page_id", "page_id": emu.root_page_id},
        title=text("Contacts"),
        initial_data_source={"properties": schema or SCHEMA},
    )
    return database["id"], database["data_sources"][0]["id"]


@pytest.fixture
def seeded(client: Client, emu: NotionEmulator) -> str:
    """A data source holding ROWS (created in order Ann, Bob, Cy, Dee)."""
    _db, ds = create_db(client, emu)
    for row in ROWS:
        client.pages.create(parent={"data_source_id": ds}, properties=row_properties(row))
    return ds


def api_error(call: Any, *args: Any, **kwargs: Any) -> APIResponseError:
    with pytest.raises(APIResponseError) as info:
        call(*args, **kwargs)
    return info.value


# ---------------------------------------------------------------------------------------------
# Databases, data sources, pages
# ---------------------------------------------------------------------------------------------

def test_database_create_retrieve_and_schema(client: Client, emu: NotionEmulator) -> None:
    db_id, ds_id = create_db(client, emu)
    database = client.databases.retrieve(db_id.replace("-", ""))  # ids work without dashes
    assert database["object"] == "database"
    assert database["data_sources"] == [{"id": ds_id, "name": "Contacts"}]
    assert database["parent"] == {"type": "page_id", "page_id": emu.root_page_id}

    source = client.data_sources.retrieve(ds_id)
    props = source["properties"]
    assert set(props) == set(SCHEMA)
    assert props["Name"]["id"] == "title"
    for name, prop in props.items():
        assert prop["name"] == name
        assert set(prop) == {"id", "name", "description", "type", prop["type"]}
    assert props["Email"]["type"] == "email"
    assert props["Score"]["number"] == {"format": "number"}
    segment = props["Segment"]["select"]["options"]
    assert [o["name"] for o in segment] == ["hot", "warm", "cold"]
    assert segment[0]["color"] == "red" and all(o["id"] for o in segment)
    assert source["parent"] == {"type": "database_id", "database_id": db_id}
    assert emu.counts["databases.create"] == 1 and emu.counts["databases.retrieve"] == 1


def test_database_create_requires_existing_parent_and_one_title(client: Client, emu: NotionEmulator) -> None:
    error = api_error(client.databases.create, parent={"page_id": "0" * 32}, title=text("x"))
    assert error.code == APIErrorCode.ObjectNotFound and error.status == 404
    error = api_error(client.databases.create, parent={"page_id": emu.root_page_id}, title=text("x"),
                      initial_data_source={"properties": {"Email": {"email": {}}}})
    assert error.code == APIErrorCode.ValidationError
    # No schema at all gives Notion's default "Name" title property.
    database = client.databases.create(parent={"page_id": emu.root_page_id}, title=text("Bare"))
    source = client.data_sources.retrieve(database["data_sources"][0]["id"])
    assert list(source["properties"]) == ["Name"]


def test_page_create_shape_and_parents(client: Client, emu: NotionEmulator) -> None:
    db_id, ds_id = create_db(client, emu)
    page = client.pages.create(parent={"type": "data_source_id", "data_source_id": ds_id},
                               properties=row_properties(ROWS[0]))
    assert page["object"] == "page"
    assert normalize_id(page["id"]) == page["id"]
    assert page["parent"] == {"type": "data_source_id", "data_source_id": ds_id, "database_id": db_id}
    assert page["in_trash"] is False and page["archived"] is False and page["is_locked"] is False
    assert page["created_by"] == {"object": "user", "id": page["created_by"]["id"]}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:00\.000Z", page["created_time"])
    props = page["properties"]
    assert set(props) == set(SCHEMA)  # every schema property comes back, filled or empty
    assert props["Name"]["title"] == [{
        "type": "text", "text": {"content": "Ann", "link": None},
        "annotations": {"bold": False, "italic": False, "strikethrough": False, "underline": False,
                        "code": False, "color": "default"},
        "plain_text": "Ann", "href": None,
    }]
    assert props["Email"] == {"id": props["Email"]["id"], "type": "email", "email": "ann@example.com"}
    assert props["Score"]["number"] == 10 and props["Subscribed"]["checkbox"] is True
    assert props["Segment"]["select"]["name"] == "hot" and props["Segment"]["select"]["color"] == "red"
    assert set(props["Segment"]["select"]) == {"id", "name", "color"}
    assert props["Signed Up"]["date"] == {"start": "2024-12-01", "end": None, "time_zone": None}
    assert props["Tags"]["multi_select"] == []
    assert props["Created"]["created_time"] == page["created_time"]

    # The other parent forms: bare data_source_id, database_id (first data source), no dashes.
    second = client.pages.create(parent={"data_source_id": ds_id.replace("-", "")}, properties={})
    third = client.pages.create(parent={"database_id": db_id}, properties={"Name": {"title": text("Via db")}})
    assert second["parent"]["data_source_id"] == third["parent"]["data_source_id"] == ds_id
    assert second["properties"]["Email"]["email"] is None and second["properties"]["Name"]["title"] == []
    assert client.pages.retrieve(page["id"].replace("-", ""))["id"] == page["id"]
    assert len(emu.pages(ds_id)) == 3


def test_unknown_select_option_is_added_to_schema(client: Client, emu: NotionEmulator) -> None:
    _db, ds = create_db(client, emu)
    page = client.pages.create(parent={"data_source_id": ds},
                               properties={"Segment": {"select": {"name": "lukewarm"}},
                                           "Tags": {"multi_select": [{"name": "a"}, {"name": "new"}]}})
    options = client.data_sources.retrieve(ds)["properties"]["Segment"]["select"]["options"]
    assert [o["name"] for o in options] == ["hot", "warm", "cold", "lukewarm"]
    assert page["properties"]["Segment"]["select"]["id"] == options[-1]["id"]
    tags = client.data_sources.retrieve(ds)["properties"]["Tags"]["multi_select"]["options"]
    assert [o["name"] for o in tags] == ["a", "b", "new"]
    # Selecting by option id works too.
    again = client.pages.create(parent={"data_source_id": ds}, properties={"Segment": {"select": {"id": options[0]["id"]}}})
    assert again["properties"]["Segment"]["select"]["name"] == "hot"


def test_write_validation(client: Client, emu: NotionEmulator) -> None:
    _db, ds = create_db(client, emu)
    parent = {"data_source_id": ds}
    error = api_error(client.pages.create, parent=parent, properties={"Nope": {"email": "x@y.z"}})
    assert error.code == APIErrorCode.ValidationError and error.status == 400
    assert str(error) == "Nope is not a property that exists."

    too_long = api_error(client.pages.create, parent=parent, properties={"Notes": {"rich_text": text("x" * 2001)}})
    assert too_long.code == APIErrorCode.ValidationError and "2000" in str(too_long)
    too_many = api_error(client.pages.create, parent=parent,
                         properties={"Notes": {"rich_text": [{"text": {"content": "x"}}] * 101}})
    assert too_many.code == APIErrorCode.ValidationError and "100" in str(too_many)
    wrong_type = api_error(client.pages.create, parent=parent, properties={"Score": {"number": "ten"}})
    assert wrong_type.code == APIErrorCode.ValidationError
    mismatched = api_error(client.pages.create, parent=parent, properties={"Email": {"rich_text": text("a")}})
    assert str(mismatched) == "Email is expected to be email."
    assert emu.pages(ds) == []  # a rejected write creates nothing, not even select options

    # The limits are inclusive.
    ok = client.pages.create(parent=parent, properties={
        "Notes": {"rich_text": [{"text": {"content": "x" * 2000}}] * 100}})
    assert len(ok["properties"]["Notes"]["rich_text"]) == 100


def test_update_merges_and_trash(client: Client, emu: NotionEmulator, seeded: str) -> None:
    ann = next(p for p in emu.pages(seeded) if names([p]) == ["Ann"])
    updated = client.pages.update(ann["id"], properties={"Score": {"number": 11}, "Segment": {"select": None}})
    assert updated["properties"]["Score"]["number"] == 11
    assert updated["properties"]["Segment"]["select"] is None
    assert updated["properties"]["Email"]["email"] == "ann@example.com"  # untouched properties stay

    error = api_error(client.pages.update, ann["id"], properties={"Ghost": {"number": 1}})
    assert str(error) == "Ghost is not a property that exists."

    trashed = client.pages.update(ann["id"], in_trash=True)
    assert trashed["in_trash"] is True and trashed["archived"] is True
    assert "Ann" not in names(client.data_sources.query(seeded)["results"])
    assert names(client.data_sources.query(seeded, in_trash=True)["results"]) == ["Ann"]
    assert client.pages.retrieve(ann["id"])["in_trash"] is True  # still retrievable
    locked = api_error(client.pages.update, ann["id"], properties={"Score": {"number": 12}})
    assert locked.code == APIErrorCode.ValidationError and "archived" in str(locked)

    restored = client.pages.update(ann["id"], in_trash=False, properties={"Score": {"number": 12}})
    assert restored["in_trash"] is False and restored["properties"]["Score"]["number"] == 12
    bob = next(p for p in emu.pages(seeded) if names([p]) == ["Bob"])
    client.pages.update(bob["id"], archived=True)  # the deprecated flag trashes too
    assert len(emu.pages(seeded)) == 3 and len(emu.pages(seeded, include_trashed=True)) == 4


def test_data_source_update_schema(client: Client, emu: NotionEmulator) -> None:
    _db, ds = create_db(client, emu)
    source = client.data_sources.update(ds, title=text("People"), properties={
        "Campaign": {"select": {"options": [{"name": "xmas-2026"}]}},
        "Notes": None,
        "Phone": {"name": "Mobile"},
    })
    props = source["properties"]
    assert "Notes" not in props and "Phone" not in props
    assert props["Mobile"]["type"] == "phone_number"
    assert props["Campaign"]["select"]["options"][0]["name"] == "xmas-2026"
    assert source["title"][0]["plain_text"] == "People"
    page = client.pages.create(parent={"data_source_id": ds}, properties={"Mobile": {"phone_number": "+1 2"}})
    assert page["properties"]["Mobile"]["phone_number"] == "+1 2"


# ---------------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------------

FILTER_CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"property": "Email", "email": {"equals": "ann@example.com"}}, {"Ann"}),
    ({"property": "Email", "email": {"does_not_equal": "ann@example.com"}}, {"Bob", "Cy", "Dee"}),
    ({"property": "Email", "email": {"contains": "example.com"}}, {"Ann", "Cy"}),
    ({"property": "Email", "email": {"starts_with": "bob@"}}, {"Bob"}),
    ({"property": "Email", "email": {"ends_with": ".org"}}, {"Bob"}),
    ({"property": "Email", "email": {"is_empty": True}}, {"Dee"}),
    ({"property": "Email", "email": {"is_not_empty": True}}, {"Ann", "Bob", "Cy"}),
    ({"property": "Notes", "rich_text": {"contains": "cats"}}, {"Ann"}),  # case-sensitive
    ({"property": "Notes", "rich_text": {"does_not_contain": "dogs"}}, {"Ann", "Bob"}),
    ({"property": "Notes", "rich_text": {"starts_with": "Cats"}}, {"Cy"}),
    ({"property": "Notes", "rich_text": {"is_empty": True}}, {"Bob"}),
    ({"property": "Name", "title": {"equals": "Cy"}}, {"Cy"}),
    ({"property": "Website", "url": {"starts_with": "https://"}}, {"Ann", "Cy"}),
    ({"property": "Phone", "phone_number": {"is_not_empty": True}}, {"Ann", "Dee"}),
    ({"property": "Phone", "phone_number": {"equals": "+44 20"}}, {"Dee"}),
    ({"property": "Score", "number": {"equals": 10}}, {"Ann"}),
    ({"property": "Score", "number": {"does_not_equal": 10}}, {"Bob", "Cy", "Dee"}),
    ({"property": "Score", "number": {"greater_than": 50}}, {"Bob", "Dee"}),
    ({"property": "Score", "number": {"less_than": 10}}, set()),
    ({"property": "Score", "number": {"greater_than_or_equal_to": 99}}, {"Dee"}),
    ({"property": "Score", "number": {"less_than_or_equal_to": 55.5}}, {"Ann", "Bob"}),
    ({"property": "Score", "number": {"is_empty": True}}, {"Cy"}),
    ({"property": "Subscribed", "checkbox": {"equals": True}}, {"Ann", "Cy"}),
    ({"property": "Subscribed", "checkbox": {"does_not_equal": True}}, {"Bob", "Dee"}),
    ({"property": "Segment", "select": {"equals": "hot"}}, {"Ann"}),
    ({"property": "Segment", "select": {"does_not_equal": "hot"}}, {"Bob", "Cy", "Dee"}),
    ({"property": "Segment", "select": {"is_empty": True}}, {"Cy"}),
    ({"property": "Segment", "select": {"is_not_empty": True}}, {"Ann", "Bob", "Dee"}),
    ({"property": "Signed Up", "date": {"equals": "2024-12-01"}}, {"Ann"}),
    ({"property": "Signed Up", "date": {"equals": "2024-12-05"}}, {"Bob"}),  # a date-time falls in its day
    ({"property": "Signed Up", "date": {"before": "2024-12-01"}}, {"Dee"}),
    ({"property": "Signed Up", "date": {"after": "2024-12-01"}}, {"Bob"}),
    ({"property": "Signed Up", "date": {"on_or_before": "2024-12-01"}}, {"Ann", "Dee"}),
    ({"property": "Signed Up", "date": {"on_or_after": "2024-12-05T10:00:00Z"}}, {"Bob"}),
    ({"property": "Signed Up", "date": {"after": "2024-12-05T10:00:00.000+00:00"}}, set()),
    ({"property": "Signed Up", "date": {"is_empty": True}}, {"Cy"}),
    ({"property": "Signed Up", "date": {"is_not_empty": True}}, {"Ann", "Bob", "Dee"}),
    ({"and": [{"property": "Subscribed", "checkbox": {"equals": True}},
              {"property": "Email", "email": {"contains": "example.com"}}]}, {"Ann", "Cy"}),
    ({"or": [{"property": "Segment", "select": {"equals": "hot"}},
             {"property": "Score", "number": {"greater_than": 90}}]}, {"Ann", "Dee"}),
    ({"and": [{"or": [{"property": "Segment", "select": {"equals": "hot"}},
                      {"property": "Segment", "select": {"equals": "cold"}}]},
              {"or": [{"property": "Subscribed", "checkbox": {"equals": True}},
                      {"and": [{"property": "Score", "number": {"greater_than": 90}},
                               {"property": "Phone", "phone_number": {"is_not_empty": True}}]}]}]},
     {"Ann", "Dee"}),
]


def test_query_filters(client: Client, emu: NotionEmulator, seeded: str) -> None:
    # One test looping over the cases keeps the seeding cost to once.
    for query_filter, expected in FILTER_CASES:
        results = client.data_sources.query(seeded, filter=query_filter)["results"]
        assert set(names(results)) == expected, query_filter


def test_query_filter_by_property_id_and_filter_properties(client: Client, emu: NotionEmulator, seeded: str) -> None:
    email_id = client.data_sources.retrieve(seeded)["properties"]["Email"]["id"]
    results = client.data_sources.query(seeded, filter={"property": email_id, "email": {"equals": "cy@example.com"}},
                                        filter_properties=[email_id])["results"]
    assert len(results) == 1 and list(results[0]["properties"]) == ["Email"]


def test_query_validation(client: Client, emu: NotionEmulator, seeded: str) -> None:
    error = api_error(client.data_sources.query, seeded, filter={"property": "Nope", "email": {"equals": "x"}})
    assert error.code == APIErrorCode.ValidationError
    assert str(error) == "Could not find property with name or id: Nope"
    nested = {"property": "Nope", "number": {"equals": 1}}
    assert api_error(client.data_sources.query, seeded, filter={"or": [nested]}).code == APIErrorCode.ValidationError
    bad_op = api_error(client.data_sources.query, seeded, filter={"property": "Score", "number": {"contains": 1}})
    assert bad_op.code == APIErrorCode.ValidationError
    bad_sort = api_error(client.data_sources.query, seeded, sorts=[{"property": "Nope", "direction": "ascending"}])
    assert bad_sort.code == APIErrorCode.ValidationError
    too_big = api_error(client.data_sources.query, seeded, page_size=101)
    assert too_big.code == APIErrorCode.ValidationError and too_big.status == 400
    missing = api_error(client.data_sources.query, "1" * 32)
    assert missing.code == APIErrorCode.ObjectNotFound


def test_query_sorts(client: Client, emu: NotionEmulator, seeded: str) -> None:
    def order(sorts: list[dict[str, Any]] | None = None) -> list[str]:
        kwargs = {"sorts": sorts} if sorts is not None else {}
        return names(client.data_sources.query(seeded, **kwargs)["results"])

    assert order() == ["Dee", "Cy", "Bob", "Ann"]  # default: created_time descending, newest first
    assert order([{"property": "Score", "direction": "ascending"}]) == ["Ann", "Bob", "Dee", "Cy"]  # empty last
    assert order([{"property": "Score", "direction": "descending"}]) == ["Dee", "Bob", "Ann", "Cy"]
    assert order([{"property": "Name", "direction": "ascending"}]) == ["Ann", "Bob", "Cy", "Dee"]
    # Selects sort by the schema's option order (hot, warm, cold), not alphabetically.
    assert order([{"property": "Segment", "direction": "ascending"}]) == ["Ann", "Bob", "Dee", "Cy"]
    assert order([{"property": "Signed Up", "direction": "ascending"}]) == ["Dee", "Ann", "Bob", "Cy"]
    assert order([{"property": "Subscribed", "direction": "descending"},
                  {"property": "Name", "direction": "ascending"}]) == ["Ann", "Cy", "Bob", "Dee"]


def test_timestamps_round_down_to_the_minute_and_filter(client: Client, emu: NotionEmulator) -> None:
    _db, ds = create_db(client, emu)
    emu.now = lambda: dt.datetime(2024, 12, 1, 12, 34, 56, 789000, tzinfo=UTC)
    first = client.pages.create(parent={"data_source_id": ds}, properties={"Name": {"title": text("First")}})
    assert first["created_time"] == first["last_edited_time"] == "2024-12-01T12:34:00.000Z"
    emu.now = lambda: dt.datetime(2024, 12, 1, 12, 40, 10, tzinfo=UTC)
    second = client.pages.create(parent={"data_source_id": ds}, properties={"Name": {"title": text("Second")}})
    emu.now = lambda: dt.datetime(2024, 12, 1, 13, 5, 59, tzinfo=UTC)
    edited = client.pages.update(first["id"], properties={"Score": {"number": 1}})
    assert edited["created_time"] == "2024-12-01T12:34:00.000Z"
    assert edited["last_edited_time"] == "2024-12-01T13:05:00.000Z"
    assert edited["properties"]["Created"]["created_time"] == "2024-12-01T12:34:00.000Z"

    def since(moment: str, stamp: str = "last_edited_time") -> list[str]:
        query = {"timestamp": stamp, stamp: {"on_or_after": moment}}
        return names(client.data_sources.query(ds, filter=query)["results"])

    assert since("2024-12-01T13:05:00Z") == ["First"]
    # Rounding means an edit at 13:05:59 is invisible to "since 13:05:30": sync must overlap.
    assert since("2024-12-01T13:05:30Z") == []
    assert set(since("2024-12-01T12:40:00Z")) == {"First", "Second"}
    before = {"timestamp": "created_time", "created_time": {"before": "2024-12-01T12:40:00Z"}}
    assert names(client.data_sources.query(ds, filter=before)["results"]) == ["First"]
    by_edit = client.data_sources.query(ds, sorts=[{"timestamp": "last_edited_time", "direction": "ascending"}])
    assert names(by_edit["results"]) == ["Second", "First"]
    by_created = client.data_sources.query(ds, sorts=[{"property": "Created", "direction": "ascending"}])
    assert names(by_created["results"]) == ["First", "Second"]
    assert second["id"] in [p["id"] for p in emu.pages(ds)]


def test_pagination_over_250_pages(client: Client, emu: NotionEmulator) -> None:
    _db, ds = create_db(client, emu)
    for i in range(250):
        client.pages.create(parent={"data_source_id": ds}, properties={"Score": {"number": i}})
    emu.reset_counts()
    first = client.data_sources.query(ds, page_size=100)
    assert len(first["results"]) == 100 and first["has_more"] is True
    assert normalize_id(first["next_cursor"]) == first["next_cursor"]
    default = client.data_sources.query(ds)  # page_size defaults to 100
    assert len(default["results"]) == 100
    emu.reset_counts()

    pages = collect_paginated_api(client.data_sources.query, data_source_id=ds, page_size=100,
                                  sorts=[{"property": "Score", "direction": "ascending"}])
    assert [p["properties"]["Score"]["number"] for p in pages] == list(range(250))
    assert emu.counts["data_sources.query"] == 3
    last = client.data_sources.query(ds, page_size=100, start_cursor=pages[200]["id"],
                                     sorts=[{"property": "Score", "direction": "ascending"}])
    assert len(last["results"]) == 50 and last["has_more"] is False and last["next_cursor"] is None
    empty = client.data_sources.query(ds, filter={"property": "Score", "number": {"less_than": 0}})
    assert empty["results"] == [] and empty["has_more"] is False and empty["next_cursor"] is None


# ---------------------------------------------------------------------------------------------
# Errors, versions, rate limits, faults
# ---------------------------------------------------------------------------------------------

ERROR_KEYS = {"object", "status", "code", "message", "request_id"}


def test_error_shapes(client: Client, emu: NotionEmulator) -> None:
    wrong = Client(auth="ntn_wrong", base_url=emu.base_url, retry=False)
    unauthorized = api_error(wrong.pages.retrieve, emu.root_page_id)
    assert unauthorized.code == APIErrorCode.Unauthorized and unauthorized.status == 401
    body = json.loads(unauthorized.body)
    assert set(body) == ERROR_KEYS and body["object"] == "error" and body["message"] == "API token is invalid."

    not_found = api_error(client.pages.retrieve, "2" * 32)
    assert not_found.code == APIErrorCode.ObjectNotFound and not_found.status == 404
    assert not_found.request_id
    bad_id = api_error(client.pages.retrieve, "not-an-id")
    assert bad_id.code == APIErrorCode.ValidationError
    bad_url = api_error(client.request, path="nowhere", method="GET")
    assert bad_url.code == APIErrorCode.InvalidRequestURL and str(bad_url) == "Invalid request URL."

    for status, code in [(429, APIErrorCode.RateLimited), (500, APIErrorCode.InternalServerError),
                         (503, APIErrorCode.ServiceUnavailable), (504, APIErrorCode.GatewayTimeout),
                         (409, APIErrorCode.ConflictError)]:
        emu.fail_next(status)
        error = api_error(client.pages.retrieve, emu.root_page_id)
        assert (error.status, error.code) == (status, code)
        assert set(json.loads(error.body)) == ERROR_KEYS
    emu.fail_next(529)
    with pytest.raises(UnknownHTTPResponseError) as overload:
        client.pages.retrieve(emu.root_page_id)
    assert overload.value.status == 529 and json.loads(overload.value.body)["code"] == "service_overload"


def test_header_level_errors_and_versions(emu: NotionEmulator) -> None:
    url = f"{emu.base_url}/v1/pages/{emu.root_page_id}"
    auth = {"Authorization": f"Bearer {emu.token}"}
    missing = httpx.get(url, headers=auth)
    assert missing.status_code == 400 and missing.json()["code"] == "missing_version"
    assert set(missing.json()) == ERROR_KEYS
    assert missing.headers["content-type"].startswith("application/json")
    no_auth = httpx.get(url, headers={"Notion-Version": "2025-09-03"})
    assert no_auth.status_code == 401 and no_auth.json()["code"] == "unauthorized"
    bad_version = httpx.get(url, headers={**auth, "Notion-Version": "1999-01-01"})
    assert bad_version.status_code == 400 and bad_version.json()["code"] == "validation_error"

    old = httpx.get(url, headers={**auth, "Notion-Version": "2022-06-28"})
    assert old.status_code == 200 and "archived" in old.json()
    new = httpx.get(url, headers={**auth, "Notion-Version": "2026-03-11"})
    assert new.status_code == 200 and "archived" not in new.json() and new.json()["in_trash"] is False

    invalid_json = httpx.post(f"{emu.base_url}/v1/pages", content=b"{nope",
                              headers={**auth, "Notion-Version": "2025-09-03", "Content-Type": "application/json"})
    assert invalid_json.status_code == 400 and invalid_json.json()["code"] == "invalid_json"


def test_rate_limit_answers_429_with_retry_after(emu: NotionEmulator) -> None:
    emu.rate_limit = 2  # bucket of 2, refilled at 2/s
    notion = Client(auth=emu.token, base_url=emu.base_url, retry=False)
    statuses = []
    for _ in range(6):
        try:
            notion.pages.retrieve(emu.root_page_id)
            statuses.append(200)
        except APIResponseError as error:
            assert error.code == APIErrorCode.RateLimited
            assert error.headers["retry-after"] == "0"
            statuses.append(error.status)
    assert statuses[:2] == [200, 200] and statuses.count(429) >= 3
    assert emu.rate_limited == statuses.count(429)
    assert emu.counts["pages.retrieve"] == 6  # every request is counted, answered or not

    emu.retry_after = 1
    limited = httpx.get(f"{emu.base_url}/v1/pages/{emu.root_page_id}",
                        headers={"Authorization": f"Bearer {emu.token}", "Notion-Version": "2025-09-03"})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    time.sleep(0.6)  # the bucket refills
    assert notion.pages.retrieve(emu.root_page_id)["object"] == "page"
    emu.rate_limit = None
    assert all(notion.pages.retrieve(emu.root_page_id) for _ in range(5))


def test_client_retries_injected_429_and_get_503(emu: NotionEmulator) -> None:
    # A 503 carries no Retry-After, so keep the client's back-off short.
    retrying = Client(auth=emu.token, base_url=emu.base_url,
                      retry=RetryOptions(max_retries=2, initial_retry_delay_ms=10))
    _db, ds = emu.create_database("Seeded", {"Name": "title", "Email": "email"})
    emu.fail_next(429)
    page = retrying.pages.create(parent={"data_source_id": ds}, properties={"Email": {"email": "a@b.c"}})
    assert emu.counts["pages.create"] == 2 and emu.rate_limited == 1
    assert len(emu.pages(ds)) == 1  # the 429 happened before the write
    emu.fail_next(503)
    assert retrying.pages.retrieve(page["id"])["id"] == page["id"]
    assert emu.counts["pages.retrieve"] == 2
    emu.fail_next(500)
    with pytest.raises(APIResponseError):  # POST is not retried on 5xx by notion-client
        retrying.pages.create(parent={"data_source_id": ds}, properties={})
    assert emu.counts["pages.create"] == 3 and len(emu.pages(ds)) == 1


def test_fault_injection(client: Client, emu: NotionEmulator) -> None:
    _db, ds = emu.create_database("Faults", {"Name": "title", "Email": "email"})
    emu.fail_ratio, emu.fail_statuses = 1.0, [500]
    error = api_error(client.pages.create, parent={"data_source_id": ds}, properties={"Email": {"email": "x@y.z"}})
    assert error.code == APIErrorCode.InternalServerError
    assert emu.pages(ds) == []  # a fault answers before the write
    emu.fail_ratio = 0.0

    emu.fail_after_write_ratio, emu.fail_after_write_statuses = 1.0, [503]
    error = api_error(client.pages.create, parent={"data_source_id": ds}, properties={"Email": {"email": "x@y.z"}})
    assert error.code == APIErrorCode.ServiceUnavailable
    assert len(emu.pages(ds)) == 1  # ...but this one was written: the ambiguous case
    assert client.data_sources.query(ds)["results"]  # reads are not affected by after-write faults
    emu.fail_after_write_ratio = 0.0
    emu.fail_next(500, after_write=True)
    api_error(client.pages.update, emu.pages(ds)[0]["id"], properties={"Email": {"email": "new@y.z"}})
    assert emu.pages(ds)[0]["properties"]["Email"]["email"] == "new@y.z"

    emu.drop_ratio = 1.0
    with pytest.raises(httpx.TransportError):
        client.pages.retrieve(emu.root_page_id)
    emu.drop_ratio = 0.0
    emu.fail_next(DROP)
    with pytest.raises(httpx.TransportError):
        client.pages.retrieve(emu.root_page_id)
    assert emu.history[-1][2] == 0

    emu.delay_s = 0.2
    started = time.monotonic()
    client.pages.retrieve(emu.root_page_id)
    assert time.monotonic() - started >= 0.2
    emu.delay_s = 0.0

    counts = dict(emu.counts)
    assert counts["pages.create"] == 2 and counts["pages.retrieve"] == 3 and counts["pages.update"] == 1
    emu.reset_counts()
    assert emu.counts == {} and emu.rate_limited == 0 and emu.history == []


def test_faults_are_deterministic_per_seed() -> None:
    def run(seed: int) -> list[int]:
        with NotionEmulator(seed=seed, retry_after=0, fail_ratio=0.5, fail_statuses=[429, 500, 503]) as emu:
            notion = Client(auth=emu.token, base_url=emu.base_url, retry=False)
            for _ in range(30):
                try:
                    notion.pages.retrieve(emu.root_page_id)
                except APIResponseError:
                    pass
            statuses = [status for _endpoint, _request, status in emu.history]
            assert emu.rate_limited == statuses.count(429)
            assert emu.counts["pages.retrieve"] == 30
            return statuses

    first = run(7)
    assert first == run(7)
    assert {200, 429, 500, 503} <= set(first)
    assert first != run(8)


def test_concurrent_writers(emu: NotionEmulator) -> None:
    _db, ds = emu.create_database("Busy", {"Name": "title", "Score": "number"})

    def writer(offset: int) -> None:
        with Client(auth=emu.token, base_url=emu.base_url, retry=False) as notion:
            for i in range(25):
                notion.pages.create(parent={"data_source_id": ds}, properties={"Score": {"number": offset + i}})

    threads = [threading.Thread(target=writer, args=(100 * n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = emu.pages(ds)
    assert len(rows) == 200 and len({row["id"] for row in rows}) == 200
    assert emu.counts["pages.create"] == 200


def test_python_helpers(emu: NotionEmulator) -> None:
    db_id, ds_id = emu.create_database("Helpers", {"Name": "title", "Stage": {"select": {"options": [{"name": "a"}]}}})
    notion = Client(auth=emu.token, base_url=emu.base_url, retry=False)
    assert notion.databases.retrieve(db_id)["data_sources"][0]["id"] == ds_id
    assert emu.data_source(ds_id)["properties"]["Stage"]["select"]["options"][0]["name"] == "a"
    page = notion.pages.create(parent={"data_source_id": ds_id}, properties={"Name": {"title": text("p")}})
    assert emu.page(page["id"])["id"] == page["id"] and emu.total_requests == 2


def test_standalone_main_serves() -> None:
    process = subprocess.Popen([sys.executable, "-u", "-m", "xmas_pipeline_tests.fakes.notion", "--port", "0",
                                "--rate-limit", "3", "--token", "ntn_cli"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        printed: dict[str, str] = {}
        for line in process.stdout:  # type: ignore[union-attr]
            key, _, value = line.strip().partition(": ")
            printed[key] = value
            if line.startswith("serving"):
                break
        assert printed["token"] == "ntn_cli"
        notion = Client(auth=printed["token"], base_url=printed["base_url"], retry=False)
        assert notion.pages.retrieve(printed["parent_page_id"])["object"] == "page"
    finally:
        process.terminate()
        process.wait(timeout=5)


# ---------------------------------------------------------------------------------------------
# Shapes against the real recordings
# ---------------------------------------------------------------------------------------------

ENDPOINTS = [
    ("POST", r"/v1/pages", "pages.create"),
    ("GET", r"/v1/pages/[^/]+", "pages.retrieve"),
    ("PATCH", r"/v1/pages/[^/]+", "pages.update"),
    ("POST", r"/v1/databases", "databases.create"),
    ("GET", r"/v1/databases/[^/]+", "databases.retrieve"),
    ("POST", r"/v1/data_sources", "data_sources.create"),
    ("GET", r"/v1/data_sources/[^/]+", "data_sources.retrieve"),
    ("PATCH", r"/v1/data_sources/[^/]+", "data_sources.update"),
    ("POST", r"/v1/data_sources/[^/]+/query", "data_sources.query"),
]


def shape_of(value: Any) -> Any:
    """A JSON value's structure: dicts keep keys, lists keep their first item's shape, scalars a type name."""
    if isinstance(value, dict):
        return {key: shape_of(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape_of(value[0])] if value else []
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, (int, float)) else "string"


def kind_of(shape: Any) -> str:
    return "object" if isinstance(shape, dict) else "array" if isinstance(shape, list) else shape


def shapes_from_cassettes(folder: Path) -> list[dict[str, Any]]:
    """The recorded interactions the emulator implements, as replayable requests plus response shapes."""
    import yaml

    entries = []
    for cassette in sorted(folder.glob("*.yaml")):
        recorded = yaml.safe_load(cassette.read_text())
        for index, interaction in enumerate(recorded["interactions"]):
            request, response = interaction["request"], interaction["response"]
            if not request["uri"].startswith("https://api.notion.com/"):
                continue  # e.g. mock.httpstatus.io: not Notion
            path = request["uri"].removeprefix("https://api.notion.com")
            status = response["status"]["code"]
            endpoint = next((name for method, pattern, name in ENDPOINTS
                             if method == request["method"] and re.fullmatch(pattern, path)), None)
            if status >= 400:
                endpoint = "error"  # errors are replayed whatever the endpoint (auth comes before routing)
            if endpoint is None:
                continue  # search, blocks.delete: not emulated
            body = json.loads(response["body"]["string"])
            ids = [body.get("id")] + [source["id"] for source in body.get("data_sources", [])]
            entries.append({
                "source": f"{cassette.name}#{index}", "endpoint": endpoint, "method": request["method"],
                "path": path, "request_body": json.loads(request["body"]) if request["body"] else None,
                "unauthorized": status == 401, "status": status, "response_ids": [i for i in ids if i],
                "shape": shape_of(body),
            })
    return entries


def load_shapes() -> list[dict[str, Any]]:
    assert SHAPES_FILE.exists(), f"missing {SHAPES_FILE}: regenerate it from the cassettes"
    return json.loads(SHAPES_FILE.read_text())["interactions"]


def test_shape_copy_matches_cassettes() -> None:
    if not CASSETTES.is_dir():
        pytest.skip(f"{CASSETTES} not present; the committed copy {SHAPES_FILE.name} is the reference")
    assert load_shapes() == shapes_from_cassettes(CASSETTES), "regenerate notion_shapes/recorded_shapes.json"


def differences(recorded: Any, emulated: Any, path: str = "$") -> list[str]:
    """Where two shapes disagree: key sets, then value kinds, recursively (lists by their first item)."""
    if kind_of(recorded) != kind_of(emulated):
        return [f"{path}: recorded {kind_of(recorded)}, emulator {kind_of(emulated)}"]
    found: list[str] = []
    if isinstance(recorded, dict):
        if set(recorded) != set(emulated):
            found.append(f"{path}: keys recorded-only {sorted(set(recorded) - set(emulated))}, "
                         f"emulator-only {sorted(set(emulated) - set(recorded))}")
        for key in set(recorded) & set(emulated):
            found += differences(recorded[key], emulated[key], f"{path}.{key}")
    elif isinstance(recorded, list) and recorded and emulated:
        found += differences(recorded[0], emulated[0], f"{path}[0]")
    return found


def replace_ids(value: Any, mapping: dict[str, str], default: str) -> Any:
    """Recorded ids -> the emulator's; an id never seen before is the recordings' shared root page."""
    if isinstance(value, dict):
        return {key: replace_ids(item, mapping, default) for key, item in value.items()}
    if isinstance(value, list):
        return [replace_ids(item, mapping, default) for item in value]
    if isinstance(value, str) and normalize_id(value):
        return mapping.get(normalize_id(value), default)
    return value


def test_shapes_match_recordings(emu: NotionEmulator) -> None:
    notion = Client(auth=emu.token, base_url=emu.base_url, retry=False)
    stranger = Client(auth="ntn_not_the_token", base_url=emu.base_url, retry=False)
    mapping: dict[str, str] = {}
    recorded_page_keys: set[str] = set()
    checked: set[str] = set()
    for entry in load_shapes():
        path = "/".join(replace_ids(part, mapping, emu.root_page_id) for part in entry["path"].split("/"))
        body = replace_ids(entry["request_body"], mapping, emu.root_page_id)
        caller = stranger if entry["unauthorized"] else notion
        try:
            answer = caller.request(path=path.removeprefix("/v1/"), method=entry["method"], body=body)
            status = 200
        except APIResponseError as error:
            answer, status = json.loads(error.body), error.status
        assert status == entry["status"], entry["source"]
        problems = differences(entry["shape"], shape_of(answer))
        assert not problems, f"{entry['source']} ({entry['endpoint']}): {problems}"
        emulated_ids = [answer.get("id")] + [source["id"] for source in answer.get("data_sources", [])]
        for recorded_id, emulated_id in zip(entry["response_ids"], emulated_ids):
            mapping[normalize_id(recorded_id)] = emulated_id  # type: ignore[index]
        if entry["endpoint"].startswith("pages."):
            recorded_page_keys = set(entry["shape"])
        checked.add(entry["endpoint"])
    assert checked >= {"pages.create", "pages.retrieve", "pages.update", "databases.create", "databases.retrieve",
                       "data_sources.create", "data_sources.retrieve", "data_sources.update",
                       "data_sources.query", "error"}

    # The recordings only hold child pages of pages; rows of a data source have the same keys.
    _db, ds = emu.create_database("Rows", {"Name": "title", "Email": "email"})
    row = notion.pages.create(parent={"data_source_id": ds}, properties={"Email": {"email": "a@b.c"}})
    assert set(row) == recorded_page_keys
    listed = notion.data_sources.query(ds)
    assert set(listed["results"][0]) == recorded_page_keys - {"request_id"}


if __name__ == "__main__":
    # Regenerate the committed copy of the recorded shapes.
    SHAPES_FILE.parent.mkdir(parents=True, exist_ok=True)
    SHAPES_FILE.write_text(json.dumps({
        "_note": ("Generated from shared/reference/notion-recordings (real Notion API 2025-09-03 exchanges "
                  "recorded by ramnes/notion-sdk-py tests/cassettes, MIT; tokens redacted there) by "
                  "python -m xmas_pipeline_tests.test_fakes.test_notion_emulator. No secrets: request bodies, "
                  "ids and the structure of each response, not its values."),
        "interactions": shapes_from_cassettes(CASSETTES),
    }, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {SHAPES_FILE}")
