"""One suite of CRM behaviour, run against both backends through the protocol.

``local``: ``LocalCRM`` — its tables ARE the CRM, so every write goes through the same path enrollment
uses (the CRM call, then ``store.mirror``), and sent steps are recorded in the delivery ledger the way
delivery records them. ``notion``: ``NotionCRM.from_settings`` against the Notion emulator (real HTTP)
with the project's three databases; the emulator's clock is the test's clock, so edit times (rounded
down to the minute by Notion) are under control.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterator

import pytest
import sqlalchemy as sa

from xmas_pipeline.campaign.loader import load_campaign
from xmas_pipeline.campaign.tokens import sequence_key
from xmas_pipeline.crm.base import CRM, ContactRecord, SequenceRecord, SequenceUpdate
from xmas_pipeline.crm.local import LocalCRM
from xmas_pipeline.crm.notion import NotionCRM
from xmas_pipeline.settings import DEFAULT_CAMPAIGN_FILE
from xmas_pipeline.store import ledger, mirror
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.planning import plan_rows
from xmas_pipeline_tests.fakes.notion import NotionEmulator
from xmas_pipeline_tests.fakes.notion_setup import data_source, xmas_databases

UTC = dt.timezone.utc
CAMPAIGN = load_campaign(DEFAULT_CAMPAIGN_FILE)  # "Christmas 2026"
T0 = dt.datetime(2026, 11, 5, 15, 0, 20, tzinfo=UTC)  # 10:00:20 in Toronto


class TestClock:
    """The time the emulator stamps on pages and the time mirror writes are stamped with."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, start: dt.datetime):
        self.value = start

    def __call__(self) -> dt.datetime:
        return self.value


@dataclass
class Backend:
    kind: str
    crm: CRM
    engine: sa.Engine
    clock: TestClock
    emulator: NotionEmulator | None = None

    def at(self, when: dt.datetime) -> "Backend":
        self.clock.value = when
        return self

    # The write paths, exactly as enrollment and delivery take them ---------------------------------

    def save_contact(self, contact: ContactRecord) -> ContactRecord:
        """enrollment.enroll_one: ``crm.save_contact`` then ``mirror.upsert_contacts``."""
        saved = self.crm.save_contact(contact)
        mirror.upsert_contacts(self.engine, [saved], self.clock())
        return saved

    def create_sequence(self, sequence: SequenceRecord) -> SequenceRecord:
        """enrollment.enroll_one: ``crm.create_sequence`` then ``mirror.insert_sequence``."""
        created = self.crm.create_sequence(sequence)
        with self.engine.begin() as conn:
            mirror.insert_sequence(conn, created, {"first_name": created.first_name}, self.clock())
            plan_rows(conn, CAMPAIGN, sequence_key=created.sequence_key, email=created.email,
                      trigger_at=created.signup_at, day_seconds=86400, now=self.clock())
        return created

    def record_sends(self, seq: SequenceRecord, sent: dict[int, dt.datetime], completed: bool) -> None:
        """delivery: claim + mark_sent in the ledger, completion in the sequences table, then the
        coalesced write-back ``crm.update_sequences`` (one update for the sequence)."""
        rows = {r.step: r.id for r in ledger.rows_for(self.engine, email=seq.email)}
        for step, at in sent.items():
            token = ledger.new_token()
            claims = ledger.claim(self.engine, [rows[step]], token=token, wall=at, lease=ledger.DEFAULT_LEASE, run_id=None)
            assert not ledger.settle(self.engine, token, [(claims[0].id, ledger.sent("outbox", f"outbox-{step}", at))])
        if completed:
            mirror.set_status(self.engine, [seq.sequence_key], "completed", None, self.clock())
        self.crm.update_sequences(
            [SequenceUpdate(sequence_key=seq.sequence_key, crm_id=seq.crm_id, steps_sent=sent,
                            completed=True if completed else None)]
        )

    # Reads, through the protocol -------------------------------------------------------------------

    def contacts(self, since: dt.datetime | None = None) -> list[ContactRecord]:
        return list(self.crm.contacts_changed_since(since))

    def sequences(self, since: dt.datetime | None = None, campaign: str = CAMPAIGN.name) -> list[SequenceRecord]:
        return list(self.crm.sequences_changed_since(since, campaign))




@pytest.fixture(params=["local", "notion"])
def backend(request, make_settings, database_url) -> Iterator[Backend]:
    clock = TestClock(T0)
    engine = engine_for(database_url)
    if request.param == "local":
        yield Backend("local", LocalCRM(engine), engine, clock)
        return
    with NotionEmulator(retry_after=0, now=clock) as emulator:
        settings = make_settings(**xmas_databases(emulator))
        crm = NotionCRM.from_settings(settings, CAMPAIGN, sleep=lambda s: None)
        yield Backend("notion", crm, engine, clock, emulator)


def contact(email: str = "ann.lee@example.com", **fields) -> ContactRecord:
    values = dict(
        email=email, first_name="Ann", business_name="Lee's Bakery", segment="URGENT", assessment_score=72.5,
        campaign_status="Nurture Sequence", booking_status="Not Booked",
    )
    return ContactRecord(**{**values, **fields})


def sequence(email: str = "ann.lee@example.com", campaign: str = CAMPAIGN.name, **fields) -> SequenceRecord:
    values = dict(
        sequence_key=sequence_key(email, campaign), email=email, campaign=campaign, first_name="Ann",
        business_name="Lee's Bakery", segment="CRITICAL", assessment_score=41.0, red_systems=2, orange_systems=1,
        yellow_systems=3, green_systems=4, signup_at=dt.datetime(2026, 11, 5, 10, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    )
    return SequenceRecord(**{**values, **fields})


def comparable(record) -> dict:
    """Everything but the CRM's own edit stamp (the local CRM has none)."""
    return record.model_dump(exclude={"edited_at"})


# --- contacts --------------------------------------------------------------------------------------


def test_a_saved_contact_comes_back_lower_cased_with_every_field(backend: Backend) -> None:
    saved = backend.save_contact(contact(email="  Ann.Lee@Example.COM "))
    assert saved.crm_id

    [got] = backend.contacts(None)
    assert got.email == "ann.lee@example.com"
    assert comparable(got) == comparable(contact(crm_id=saved.crm_id))


def test_updating_a_known_contact_changes_it_in_place(backend: Backend) -> None:
    saved = backend.save_contact(contact())
    other = backend.save_contact(contact(email="bob@example.com", first_name="Bob"))
    changed = contact(
        crm_id=saved.crm_id, first_name="Annie", business_name="Lee & Daughters", segment="CRITICAL",
        assessment_score=12.0, campaign_status="Pre-Call Prep", booking_status="Booked",
    )
    assert backend.save_contact(changed).crm_id == saved.crm_id

    records = {r.email: r for r in backend.contacts(None)}
    assert sorted(records) == ["ann.lee@example.com", "bob@example.com"]  # no second Ann
    assert comparable(records["ann.lee@example.com"]) == comparable(changed)
    assert comparable(records["bob@example.com"]) == comparable(other)
    if backend.emulator is not None:
        source = data_source(backend.emulator, backend.crm.database_ids["contacts"])
        assert len(backend.emulator.pages(source)) == 2


# --- sequences -------------------------------------------------------------------------------------


def test_a_created_sequence_comes_back_with_its_key_anchor_and_scores(backend: Backend) -> None:
    created = backend.create_sequence(sequence())
    assert created.crm_id
    backend.create_sequence(sequence(campaign="Easter 2027"))  # another campaign: not listed below

    [got] = backend.sequences(None)
    expected = sequence(crm_id=created.crm_id)
    assert got.sequence_key == expected.sequence_key
    assert got.signup_at == expected.signup_at  # the same instant (offsets may differ)
    assert (got.assessment_score, got.red_systems, got.orange_systems, got.yellow_systems, got.green_systems) == (
        41.0, 2, 1, 3, 4,
    )
    assert comparable(got) == comparable(expected)
    assert got.steps_sent == {} and got.completed is False


def test_sent_steps_and_completion_are_visible_on_the_next_read(backend: Backend) -> None:
    created = backend.create_sequence(sequence())
    t1 = dt.datetime(2026, 11, 5, 15, 0, 5, tzinfo=UTC)
    t2 = dt.datetime(2026, 11, 7, 15, 0, 9, tzinfo=UTC)
    if backend.emulator is not None:
        backend.emulator.reset_counts()

    backend.at(t2 + dt.timedelta(seconds=30)).record_sends(created, {1: t1, 2: t2}, completed=True)

    if backend.emulator is not None:  # the write-back is coalesced: one call for the sequence
        assert dict(backend.emulator.counts) == {"pages.update": 1}
    [got] = backend.sequences(None)
    assert got.steps_sent == {1: t1, 2: t2}
    assert got.completed is True


# --- incremental reads -----------------------------------------------------------------------------


def test_changed_since_returns_only_rows_edited_at_or_after_the_instant(backend: Backend) -> None:
    first, second, edit = T0, T0 + dt.timedelta(minutes=7, seconds=20), T0 + dt.timedelta(minutes=9, seconds=40)
    # Notion rounds edit times DOWN to the minute: "since" on a minute boundary at or before the second write.
    since = second.replace(second=0)
    ann = backend.at(first).save_contact(contact())
    backend.at(second).save_contact(contact(email="bob@example.com", first_name="Bob"))
    backend.at(first).create_sequence(sequence())
    backend.at(second).create_sequence(sequence(email="bob@example.com", first_name="Bob"))

    assert [c.email for c in backend.contacts(since)] == ["bob@example.com"]
    assert [s.email for s in backend.sequences(since)] == ["bob@example.com"]
    assert sorted(c.email for c in backend.contacts(None)) == ["ann.lee@example.com", "bob@example.com"]
    assert sorted(s.email for s in backend.sequences(None)) == ["ann.lee@example.com", "bob@example.com"]
    assert backend.contacts(edit + dt.timedelta(minutes=1)) == []

    backend.at(edit).save_contact(contact(crm_id=ann.crm_id, booking_status="Booked"))  # an edit counts too
    assert sorted(c.email for c in backend.contacts(since)) == ["ann.lee@example.com", "bob@example.com"]
    assert [c.email for c in backend.contacts(edit.replace(second=0))] == ["ann.lee@example.com"]


# --- schema ----------------------------------------------------------------------------------------


def test_check_schema_is_empty_on_a_correct_schema(backend: Backend) -> None:
    assert backend.crm.check_schema() == []


def test_templates(backend: Backend) -> None:
    """No templates here: the local CRM keeps none (files do), an empty Notion templates database lists none."""
    assert list(backend.crm.templates_changed_since(None)) == []
