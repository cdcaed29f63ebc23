"""Notion-only behaviour of the CRM: repeat-safe creates, which failures are retried, long text,
duplicate rows and the rate budget. All against the emulator over real HTTP; sleeps are recorded, not slept.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Iterator

import pytest
from notion_client.errors import APIResponseError

from xmas_pipeline.crm.notion import MAX_TEXT, NotionCRM, to_notion
from xmas_pipeline.crm.notion_api import MAX_ATTEMPTS, NotionCaller, NotionUnavailable, RateBudget
from xmas_pipeline.store import mirror
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.sync import sync_contacts, sync_sequences, sync_templates
from xmas_pipeline_tests.fakes.notion import NotionEmulator
from xmas_pipeline_tests.fakes.notion_setup import data_source, xmas_databases
from xmas_pipeline_tests.test_crm.test_contract import CAMPAIGN, T0, TestClock, contact, sequence

UTC = dt.timezone.utc




@pytest.fixture
def clock() -> TestClock:
    return TestClock(T0)


@pytest.fixture
def emulator(clock) -> Iterator[NotionEmulator]:
    with NotionEmulator(retry_after=0, now=clock) as emu:
        yield emu


@pytest.fixture
def settings(make_settings, emulator):
    return make_settings(**xmas_databases(emulator))


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def crm(settings, emulator, sleeps) -> NotionCRM:
    crm = NotionCRM.from_settings(settings, CAMPAIGN, sleep=sleeps.append)
    assert crm.check_schema() == []  # resolves the data sources, so the counts below are the operation's own
    emulator.reset_counts()
    return crm


def source(emulator: NotionEmulator, crm: NotionCRM, database: str) -> str:
    return data_source(emulator, crm.database_ids[database])


def statuses(emulator: NotionEmulator, endpoint: str) -> list[int]:
    return [status for name, _, status in emulator.history if name == endpoint]


# --- creates whose outcome is unknown ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["contacts", "sequences"])
def test_a_create_whose_response_is_lost_is_not_made_twice(crm, emulator, kind) -> None:
    emulator.fail_next(500, after_write=True)  # the page is created, the answer is a 500
    if kind == "contacts":
        crm_id = crm.save_contact(contact()).crm_id
    else:
        crm_id = crm.create_sequence(sequence()).crm_id

    pages = emulator.pages(source(emulator, crm, kind))
    assert [p["id"] for p in pages] == [crm_id]  # one page, and the id handed back is that page
    assert statuses(emulator, "pages.create") == [500]  # the retry looked the key up instead of creating again
    assert statuses(emulator, "data_sources.query") == [200]


def test_a_create_refused_before_any_effect_is_made_once_on_retry(crm, emulator) -> None:
    emulator.fail_next(503)  # refused before the write: the lookup finds nothing, so it creates
    saved = crm.save_contact(contact())
    pages = emulator.pages(source(emulator, crm, "contacts"))
    assert [p["id"] for p in pages] == [saved.crm_id]
    assert statuses(emulator, "pages.create") == [503, 200]
    assert statuses(emulator, "data_sources.query") == [200]


# --- what is retried, and what is not ---------------------------------------------------------------


def test_429_is_retried_after_the_advertised_retry_after(crm, emulator, sleeps) -> None:
    crm.save_contact(contact())
    emulator.reset_counts()
    emulator.fail_next(429)

    assert [c.email for c in crm.contacts_changed_since(None)] == ["ann.lee@example.com"]
    assert statuses(emulator, "data_sources.query") == [429, 200]
    assert emulator.rate_limited == 1 and crm.api.rate_limited == 1
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.25  # Retry-After: 0, plus at most 0.25 s of jitter


def test_5xx_and_529_on_reads_are_retried(crm, emulator, sleeps) -> None:
    crm.create_sequence(sequence())
    emulator.reset_counts()
    emulator.fail_next(500, 503, 504, 529)

    assert [s.email for s in crm.sequences_changed_since(None, CAMPAIGN.name)] == ["ann.lee@example.com"]
    assert statuses(emulator, "data_sources.query") == [500, 503, 504, 529, 200]
    assert len(sleeps) == 4  # one backoff per failure


def test_a_page_that_keeps_failing_gives_up_after_max_attempts(crm, emulator) -> None:
    emulator.fail_next(*[503] * MAX_ATTEMPTS)
    with pytest.raises(NotionUnavailable, match="the run can be retried"):
        list(crm.contacts_changed_since(None))
    assert statuses(emulator, "data_sources.query") == [503] * MAX_ATTEMPTS


def test_a_validation_error_is_not_retried_and_surfaces(crm, emulator, sleeps) -> None:
    emulator.fail_next(400)
    with pytest.raises(APIResponseError) as info:
        list(crm.contacts_changed_since(None))
    assert info.value.status == 400 and info.value.code == "validation_error"
    assert statuses(emulator, "data_sources.query") == [400]

    emulator.fail_next(400)  # on a create: no retry, no lookup, no page
    with pytest.raises(APIResponseError):
        crm.save_contact(contact())
    assert statuses(emulator, "pages.create") == [400]
    assert statuses(emulator, "data_sources.query") == [400]
    assert emulator.pages(source(emulator, crm, "contacts")) == []
    assert sleeps == []


# --- long text -------------------------------------------------------------------------------------


def test_long_template_html_is_written_in_chunks_and_read_back_whole(emulator, settings) -> None:
    # The templates database is only used by campaigns that keep their templates in Notion.
    crm = NotionCRM.from_settings(settings, CAMPAIGN.model_copy(update={"template_source": "notion"}))
    assert crm.check_schema() == []
    html = "".join(f"<p>Paragraph {i:04d}: the holiday rush is coming, is your shop ready?</p>" for i in range(80))[:5000]
    assert len(html) == 5000
    p = crm.props["templates"]
    crm.client.pages.create(
        parent={"type": "data_source_id", "data_source_id": crm.source("templates")},
        properties={
            p["name"].name: to_notion(p["name"], "email_3"),
            p["subject"].name: to_notion(p["subject"], "Three weeks left, {{first_name}}"),
            p["html"].name: to_notion(p["html"], html),
            p["status"].name: to_notion(p["status"], "Active"),
        },
    )
    [page] = emulator.pages(source(emulator, crm, "templates"))
    items = page["properties"][p["html"].name]["rich_text"]
    assert [len(i["plain_text"]) for i in items] == [MAX_TEXT, MAX_TEXT, 1000]

    [template] = crm.templates_changed_since(None)
    assert (template.name, template.subject, template.html, template.active) == (
        "email_3", "Three weeks left, {{first_name}}", html, True,
    )
    engine = engine_for(settings.database_url)  # and the mirror keeps it whole too
    sync_templates(engine, crm, T0)
    assert [t.html for t in mirror.load_templates(engine)] == [html]


def test_long_text_written_by_the_crm_is_chunked(crm, emulator) -> None:
    name = "Ö" * 4500  # a business name far over one rich-text item
    saved = crm.save_contact(contact(business_name=name))
    [page] = emulator.pages(source(emulator, crm, "contacts"))
    assert [len(i["plain_text"]) for i in page["properties"]["Business Name"]["rich_text"]] == [2000, 2000, 500]
    [got] = crm.contacts_changed_since(None)
    assert got.business_name == name and got.crm_id == saved.crm_id


# --- duplicate rows left by older systems ------------------------------------------------------------


def seed_contact(crm: NotionCRM, clock: TestClock, at: dt.datetime, **fields) -> str:
    """A contact page created directly (as an older system would have), at ``at``."""
    clock.value = at
    record = contact(**fields)
    page = crm.client.pages.create(
        parent={"type": "data_source_id", "data_source_id": crm.source("contacts")},
        properties=crm._contact_properties(record),
    )
    return page["id"]


def test_duplicate_contacts_resolve_to_the_oldest_page(crm, emulator, clock, settings) -> None:
    oldest = seed_contact(crm, clock, T0, first_name="Oldest", booking_status="Booked")
    newer = seed_contact(crm, clock, T0 + dt.timedelta(minutes=5), first_name="Newer")
    assert oldest != newer
    # Notion lists newest first by default: resolving by "whatever comes first" would pick the newer page.

    engine = engine_for(settings.database_url)
    for _ in range(2):  # and the same page on every sync
        sync_contacts(engine, crm, T0, full=True)
        got = mirror.get_contact(engine, "ann.lee@example.com")
        assert (got.crm_id, got.first_name, got.booking_status) == (oldest, "Oldest", "Booked")

    # A create retried after a failure looks the key up: it finds the oldest page and makes none.
    emulator.fail_next(500)
    assert crm.save_contact(contact(first_name="Third")).crm_id == oldest
    assert len(emulator.pages(source(emulator, crm, "contacts"))) == 2


def test_duplicate_sequences_resolve_to_the_oldest_page(crm, emulator, clock, settings) -> None:
    clock.value = T0
    oldest = crm.create_sequence(sequence(first_name="Oldest")).crm_id
    clock.value = T0 + dt.timedelta(minutes=3)
    newer = crm.create_sequence(sequence(first_name="Newer")).crm_id
    assert oldest != newer

    engine = engine_for(settings.database_url)
    sync_sequences(engine, crm, CAMPAIGN, T0, full=True)
    [row] = mirror.sequences_for_email(engine, "ann.lee@example.com")
    assert (row["crm_id"], row["first_name"]) == (oldest, "Oldest")


# --- the rate budget ----------------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_budget_spaces_calls_at_its_rate() -> None:
    fake = FakeTime()
    budget = RateBudget(10, clock=fake.clock, sleep=fake.sleep)
    start = fake.now
    stamps = []
    for _ in range(20):
        budget.acquire()
        stamps.append(fake.now)
    assert budget.calls == 20
    assert fake.now - start >= 1.9 - 1e-9  # 20 calls at 10/s: the first is free, then 19 x 0.1 s
    assert all(b - a >= 0.1 - 1e-9 for a, b in zip(stamps, stamps[1:]))


def test_the_budget_is_shared_by_threads_in_real_time() -> None:
    budget = RateBudget(40)
    caller = NotionCaller(None, budget)  # type: ignore[arg-type]  # no request is made: only the budget is taken

    def work() -> None:
        for _ in range(5):
            caller.call("noop", lambda: None)

    started = time.monotonic()
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.calls == 20 and caller.calls == {"noop": 20}
    assert time.monotonic() - started >= 19 / 40 - 0.02  # 20 calls at 40/s, across 4 threads


# --- a retried event whose first attempt reached Notion but not the mirror ------------------------


def test_a_retried_event_finds_the_rows_its_first_attempt_made(crm, emulator) -> None:
    first_contact = crm.save_contact(contact())
    first_sequence = crm.create_sequence(sequence())
    # The run died before the mirror learned of them; the retry says so and looks before creating.
    again_contact = crm.save_contact(contact(), maybe_exists=True)
    again_sequence = crm.create_sequence(sequence(), maybe_exists=True)
    assert again_contact.crm_id == first_contact.crm_id
    assert again_sequence.crm_id == first_sequence.crm_id
    assert len(emulator.pages(source(emulator, crm, "contacts"))) == 1
    assert len(emulator.pages(source(emulator, crm, "sequences"))) == 1


# --- a stop reaches the marketers' view -----------------------------------------------------------


def test_an_unsubscribe_shows_in_notion_after_the_next_run(settings, emulator) -> None:
    from xmas_pipeline.backends import delivery_context
    from xmas_pipeline.delivery import sync_crm
    from xmas_pipeline.store import suppressions
    from xmas_pipeline_tests.test_delivery.helpers import enroll

    enroll(settings, "quit@example.com")
    suppressions.suppress(engine_for(settings.database_url), "quit@example.com", "unsubscribed", "test", settings.clock.now())
    ctx = delivery_context(settings)
    assert sync_crm(ctx) == []
    [contact_page] = emulator.pages(source(emulator, ctx.crm, "contacts"))
    [sequence_page] = emulator.pages(source(emulator, ctx.crm, "sequences"))
    assert contact_page["properties"]["Christmas Campaign Status"]["select"]["name"] == "Unsubscribed"
    assert sequence_page["properties"]["Sequence Completed"]["checkbox"] is True
    emulator.reset_counts()
    assert sync_crm(ctx) == [] and emulator.total_requests == 0  # told once
