"""Secrets stay secret: files only their owner can read, no token in a real server's access log, and
no secret value anywhere in what Dagster shows (its repository snapshot: the UI's resource page, run
config and logs are built from it)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from dagster._core.remote_representation.external_data import RepositorySnap, ResourceConfigEnvVarSnap
from dagster_shared.serdes import serialize_value

from xmas_pipeline.definitions import build_definitions
from xmas_pipeline.orchestration.resources import XmasResource
from xmas_pipeline.settings import PROJECT_ROOT, load_settings
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.store.schema import suppressions
from xmas_pipeline_tests.conftest import free_port
from xmas_pipeline_tests.test_web.test_intake import SIGNUP, add_sequence, rows


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    """The most permissive umask: modes must come from the code, not from a careful shell."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_home_secret_and_database_are_private_whatever_the_umask(tmp_path, open_umask):
    home = tmp_path / "deep" / "home"
    settings = load_settings({"XMAS_HOME": str(home)})  # no XMAS_UNSUBSCRIBE_SECRET: generated once
    secret_file = home / "unsubscribe.secret"
    assert mode(home) == 0o700 and mode(secret_file) == 0o600
    assert settings.unsubscribe_secret == secret_file.read_text() and len(settings.unsubscribe_secret) >= 40
    assert load_settings({"XMAS_HOME": str(home)}).unsubscribe_secret == settings.unsubscribe_secret
    assert [p.name for p in home.iterdir()] == ["unsubscribe.secret"]  # no temporary file left behind

    with engine_for(settings.database_url).begin() as conn:  # WAL mode: -wal and -shm appear beside it
        conn.execute(suppressions.insert().values(email="a@example.com", reason="unsubscribed", source="test",
                                                  created_at=settings.clock.now()))  # fmt: skip
    files = sorted(home.glob("xmas.db*"))
    assert {p.name for p in files} >= {"xmas.db", "xmas.db-wal", "xmas.db-shm"}
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_a_database_folder_is_created_private(tmp_path, open_umask):
    database = tmp_path / "elsewhere" / "xmas.db"
    engine_for(f"sqlite:///{database}")
    assert mode(database.parent) == 0o700 and mode(database) == 0o600


def test_files_an_older_version_left_readable_are_tightened(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "unsubscribe.secret").write_text("kept-from-last-season\n")
    (home / "xmas.db").touch()
    for path in home.iterdir():
        path.chmod(0o644)
    settings = load_settings({"XMAS_HOME": str(home)})
    engine_for(settings.database_url)
    assert settings.unsubscribe_secret == "kept-from-last-season"  # links already sent keep working
    assert mode(home / "unsubscribe.secret") == 0o600 and mode(home / "xmas.db") == 0o600


def test_the_access_log_of_a_real_server_holds_no_token(settings, env, tmp_path):
    token = add_sequence(settings)
    port = free_port()
    log_path = tmp_path / "intake.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "xmas_pipeline.web.app:create_app",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"],
            cwd=PROJECT_ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, log_path.read_text()
            time.sleep(0.1)
        assert httpx.get(f"{base}/u/{token}").status_code == 200
        assert httpx.get(f"{base}/u/{token}?utm=mail").status_code == 200
        assert httpx.post(f"{base}/u/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
        assert httpx.post(f"{base}/u/not-a-token").status_code == 404
        assert httpx.post(f"{base}/webhook/christmas-signup", json=SIGNUP).status_code == 202
    finally:
        server.terminate()
        server.wait(20)
    log = log_path.read_text()
    key, _, signature = token.partition(".")
    assert key not in log and signature not in log and "not-a-token" not in log
    assert '"GET /u/[token] HTTP/1.1" 200' in log and '"GET /u/[token]?utm=mail HTTP/1.1" 200' in log
    assert '"POST /u/[token] HTTP/1.1" 200' in log and '"POST /u/[token] HTTP/1.1" 404' in log
    assert '"POST /webhook/christmas-signup HTTP/1.1" 202' in log  # the rest of the log is untouched
    assert rows(settings, suppressions)[0].source == "one-click"


SECRETS = {
    "NOTION_TOKEN": "ntn_notion-token-value-0001",
    "XMAS_SMTP_PASSWORD": "smtp-password-value-0002",
    "RESEND_API_KEY": "re_resend-key-value-0003",
    "XMAS_UNSUBSCRIBE_SECRET": "unsubscribe-secret-value-0004",
}
DATABASE_PASSWORD = "database-password-value-0005"


@pytest.mark.parametrize("unsubscribe_secret_from", ["environment", "file"])
def test_the_resource_config_dagster_shows_holds_no_secret_value(monkeypatch, tmp_path, unsubscribe_secret_from):
    home = tmp_path / "home"
    environment = {
        **SECRETS,
        "XMAS_HOME": str(home),
        "XMAS_DATABASE_URL": f"postgresql+psycopg2://xmas:{DATABASE_PASSWORD}@127.0.0.1:5432/xmas",
        "XMAS_CRM": "notion",
        "XMAS_MAILER": "smtp",
        "XMAS_SMTP_HOST": "127.0.0.1",
        "XMAS_SMTP_USER": "mailer",
    }
    if unsubscribe_secret_from == "file":
        del environment["XMAS_UNSUBSCRIBE_SECRET"]
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    secret_values = [*SECRETS.values(), DATABASE_PASSWORD, settings.unsubscribe_secret]

    snapshot = RepositorySnap.from_def(build_definitions(settings).get_repository_def())
    shown = serialize_value(snapshot)
    assert [value for value in secret_values if value in shown] == []
    [resource] = [r for r in snapshot.resources if r.name == "xmas"]
    env_vars = {k: v.name for k, v in resource.configured_values.items() if isinstance(v, ResourceConfigEnvVarSnap)}
    expected = {"notion_token": "NOTION_TOKEN", "smtp_password": "XMAS_SMTP_PASSWORD",
                "resend_api_key": "RESEND_API_KEY", "database_url": "XMAS_DATABASE_URL"}  # fmt: skip
    if unsubscribe_secret_from == "environment":
        expected["unsubscribe_secret"] = "XMAS_UNSUBSCRIBE_SECRET"
    assert env_vars == expected
    assert "mailer" in shown  # what is not secret is still shown

    # And a run still gets every value: Dagster resolves the variables, the file is read at run time.
    live = XmasResource.from_settings(settings, secrets_from_env=True).process_config_and_initialize().settings()
    assert live.unsubscribe_secret == settings.unsubscribe_secret
    assert (live.notion_token, live.smtp_password) == (SECRETS["NOTION_TOKEN"], SECRETS["XMAS_SMTP_PASSWORD"])
    assert sa.engine.make_url(live.database_url).password == DATABASE_PASSWORD
