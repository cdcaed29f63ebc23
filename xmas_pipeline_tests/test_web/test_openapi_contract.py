"""The intake keeps every promise of its OpenAPI schema: schemathesis, run as a user would (its CLI,
every check, against a real uvicorn on loopback), finds no 5xx, no undocumented status, no body or
header that breaks the schema, no valid request refused and no invalid one accepted.

Bounded to about a minute: a fixed seed and a fixed number of examples per operation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from xmas_pipeline.settings import PROJECT_ROOT, load_settings
from xmas_pipeline.store.db import engine_for, reset_for_tests
from xmas_pipeline.store.schema import inbound_events, suppressions
from xmas_pipeline.web.app import create_app
from xmas_pipeline_tests.conftest import PINNED_NOW, UvicornThread
from xmas_pipeline_tests.test_web.test_intake import add_sequence, client_for, fresh_secret

__all__ = ["client_for"]  # the fixture, shared with test_intake

SCHEMATHESIS = [sys.executable, "-m", "schemathesis.cli"]
CONFIG = """\
hooks = "xmas_pipeline_tests.test_web.schemathesis_hooks"
seed = 20261105

# Every run the same: no crash replays from a cache, no example database carried between runs.
[cache]
enabled = false

[generation]
database = "none"

# Half the unsubscribe requests carry a real token (so 200 is reached), half whatever schemathesis draws.
[dictionaries.tokens]
values = [{token}]

[parameters]
"path.token" = {{ dictionary = "tokens", probability = 0.5 }}
"""


@pytest.mark.timeout(300)
def test_the_intake_keeps_every_promise_of_its_openapi_schema(tmp_path: Path):
    # SQLite only: this test is about the HTTP contract, and one run keeps `make test` inside its budget.
    url = f"sqlite:///{tmp_path / 'xmas.db'}"
    reset_for_tests(url)
    settings = load_settings(
        {
            "XMAS_HOME": str(tmp_path / "home"),
            "XMAS_DATABASE_URL": url,
            "XMAS_NOW": PINNED_NOW,
            "XMAS_UNSUBSCRIBE_SECRET": "schemathesis-test-secret",
            "RESEND_WEBHOOK_SECRET": fresh_secret(),  # without it /webhook/resend answers 503 by design
            "XMAS_CAL_SECRET": "schemathesis-cal-secret",  # likewise /webhook/cal
        }
    )
    token = add_sequence(settings)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(token=json.dumps(token)))
    report = tmp_path / "schemathesis.txt"

    with UvicornThread(create_app(settings)) as server, report.open("w") as out:
        finished = subprocess.run(
            [*SCHEMATHESIS, "--config-file", str(config), "--no-color", "run", f"{server.url}/openapi.json",
             "--checks", "all", "--max-examples", "40", "--workers", "1", "--request-timeout", "20"],
            # One worker: in CPython 3.11.7, ast.parse (which Hypothesis calls to describe its strategies)
            # is not thread-safe and now and then fails with "AST constructor recursion depth mismatch".
            # Run from tmp_path so nothing lands in the repository; the hooks module is found by path.
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
            stdout=out, stderr=subprocess.STDOUT, timeout=240,
        )  # fmt: skip
    output = report.read_text()
    assert finished.returncode == 0, output[-6000:]
    assert "No issues found" in output or "passed" in output, output[-3000:]

    # It really reached the app's core, not only its refusals.
    with engine_for(settings.database_url).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(inbound_events)).scalar_one() > 0
        assert conn.execute(sa.select(suppressions.c.source)).scalars().all() != []


def test_every_answer_is_documented_with_its_body(client_for):
    client, _ = client_for()
    paths = client.get("/openapi.json").json()["paths"]
    statuses = {(method.upper(), path): sorted(op["responses"]) for path, ops in paths.items() for method, op in ops.items()}
    assert statuses == {
        ("POST", "/webhook/christmas-signup"): ["202", "401", "409", "413", "415", "422", "503"],
        ("GET", "/healthz"): ["200", "503"],
        ("GET", "/u/{token}"): ["200", "404", "503"],
        ("POST", "/u/{token}"): ["200", "404", "503"],
        ("POST", "/webhook/resend"): ["200", "401", "413", "415", "422", "503"],
        ("POST", "/webhook/cal"): ["200", "202", "400", "401", "413", "415", "503"],
        ("POST", "/webhook/event"): ["202", "401", "409", "413", "415", "422", "503"],
    }
    for path, ops in paths.items():
        for op in ops.values():
            for status, answer in op["responses"].items():
                assert [media["schema"] for media in answer["content"].values()], (status, answer)
                if status == "503" and path != "/healthz":  # a retry is what the sender should do
                    assert answer["headers"]["Retry-After"]["required"] is True
    signup = paths["/webhook/christmas-signup"]["post"]
    [key] = [p for p in signup["parameters"] if p["name"] == "Idempotency-Key"]
    assert key["schema"]["pattern"] == "^[!-~]{1,128}$" and "409" in key["description"]
