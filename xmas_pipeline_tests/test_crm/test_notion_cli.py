"""`xmas notion check` and `xmas notion init` through ``cli.main``, and enrollment against a broken schema.

The contacts database here lacks two properties and has one of the wrong type: the check names all
three at once and exits 1; enrollment refuses with the same problems before writing anything.
"""

from __future__ import annotations

import os
import re
from typing import Iterator

import pytest

from xmas_pipeline.backends import delivery_context
from xmas_pipeline.cli import main
from xmas_pipeline.crm.base import CRMSchemaError
from xmas_pipeline.crm.notion_admin import ENV, TITLES, database_schema
from xmas_pipeline.enrollment import enroll_events
from xmas_pipeline.settings import load_settings
from xmas_pipeline.store import inbound
from xmas_pipeline.store.db import engine_for
from xmas_pipeline_tests.fakes.notion import NotionEmulator
from xmas_pipeline_tests.fakes.notion_setup import data_source
from xmas_pipeline_tests.test_delivery.helpers import signup

MISSING = ("Business Name", "Booking Status")
MISTYPED = "Assessment Score"  # a number in the mapping; rich text in this workspace




@pytest.fixture
def emulator() -> Iterator[NotionEmulator]:
    with NotionEmulator(retry_after=0) as emu:
        yield emu


@pytest.fixture
def notion_env(env, emulator) -> dict[str, str]:
    """The test environment selecting Notion through the emulator (no database ids yet)."""
    return {
        **env,
        "XMAS_CRM": "notion",
        "NOTION_TOKEN": emulator.token,
        "XMAS_NOTION_API_URL": emulator.base_url,
        "XMAS_NOTION_RATE": "1000",
        "XMAS_NOTION_RETRY_BASE": "0.01",
    }


@pytest.fixture
def broken_ids(emulator) -> dict[str, str]:
    """Databases created directly: sequences and templates as `init` makes them, contacts damaged."""
    ids = {}
    for database in ("contacts", "sequences", "templates"):
        schema = database_schema(database, {})
        if database == "contacts":
            for name in MISSING:
                del schema[name]
            schema[MISTYPED] = {"rich_text": {}}
        ids[database], _ = emulator.create_database(TITLES[database], schema)
    return ids


def as_env(ids: dict[str, str]) -> dict[str, str]:
    return {ENV[database]: db_id for database, db_id in ids.items()}


def run_cli(monkeypatch, capsys, environ: dict[str, str], *argv: str) -> tuple[int, str]:
    """``xmas *argv`` with exactly ``environ`` as the pipeline's environment; (exit code, stdout + stderr)."""
    for name in list(os.environ):
        if name.startswith("XMAS_") or name == "NOTION_TOKEN":
            monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def problem_lines(output: str) -> list[str]:
    return [line[4:] for line in output.splitlines() if line.startswith("  - ")]


def test_check_names_every_problem_at_once_and_exits_1(monkeypatch, capsys, notion_env, broken_ids) -> None:
    code, out = run_cli(monkeypatch, capsys, {**notion_env, **as_env(broken_ids)}, "notion", "check")
    assert code == 1
    assert "3 problem(s)" in out
    label = f"contacts database ({broken_ids['contacts']})"
    assert sorted(problem_lines(out)) == sorted([
        f"{label}: property 'Business Name' is missing (expected rich_text)",
        f"{label}: property 'Booking Status' is missing (expected select)",
        f"{label}: property 'Assessment Score' is rich_text, expected number",
    ])


def test_init_prints_exports_and_check_passes_on_what_it_made(monkeypatch, capsys, notion_env, emulator) -> None:
    code, out = run_cli(monkeypatch, capsys, notion_env, "notion", "init", "--parent-page", emulator.root_page_id)
    assert code == 0
    exports = dict(re.findall(r"^export (XMAS_NOTION_\w+_DB)=(\S+)$", out, re.M))
    assert sorted(exports) == sorted(ENV.values())
    assert emulator.counts["databases.create"] == 3

    code, out = run_cli(monkeypatch, capsys, {**notion_env, **exports}, "notion", "check")
    assert code == 0, out
    assert "Notion schema OK" in out


def test_check_without_database_ids_says_what_to_set(monkeypatch, capsys, notion_env) -> None:
    code, out = run_cli(monkeypatch, capsys, notion_env, "notion", "check")
    assert code == 2
    assert "XMAS_NOTION_CONTACTS_DB" in out and "xmas notion init" in out


def test_enrollment_on_the_broken_schema_fails_fast_and_writes_nothing(
    monkeypatch, capsys, notion_env, broken_ids, emulator
) -> None:
    _, out = run_cli(monkeypatch, capsys, {**notion_env, **as_env(broken_ids)}, "notion", "check")
    settings = load_settings({**notion_env, **as_env(broken_ids)})
    event_id = signup(settings, "ann@example.com", business_name="Ann's Bakery", assessment_score=55)
    emulator.reset_counts()

    with pytest.raises(CRMSchemaError) as info:
        enroll_events(delivery_context(settings), [event_id])
    assert sorted(str(p) for p in info.value.problems) == sorted(problem_lines(out))
    for line in problem_lines(out):
        assert line in str(info.value)

    assert emulator.counts["pages.create"] == emulator.counts["pages.update"] == 0
    for db_id in broken_ids.values():
        assert emulator.pages(data_source(emulator, db_id)) == []
    [event] = inbound.load(engine_for(settings.database_url), [event_id])
    assert event.status == "pending"  # untouched: the run failed as a whole, the event will be tried again
