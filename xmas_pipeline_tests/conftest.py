"""Shared fixtures: a database per test (SQLite, and Postgres when XMAS_TEST_DATABASE_URL is set), settings."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from xmas_pipeline.settings import Settings, load_settings
from xmas_pipeline.store.db import reset_for_tests

PINNED_NOW = "2026-11-05T10:00:00-05:00"  # in the past, after the campaign's first partition


def _database_params() -> list:
    params = ["sqlite"]
    if os.environ.get("XMAS_TEST_DATABASE_URL"):
        params.append("postgres")
    return params


@pytest.fixture(autouse=True)
def fresh_notion_caches():
    """crm/notion.py caches data-source ids and a clean schema check per process: never across tests."""
    from xmas_pipeline.crm import notion

    notion._schema_cache.clear()
    notion._source_cache.clear()
    yield
    notion._schema_cache.clear()
    notion._source_cache.clear()


@pytest.fixture(autouse=True)
def no_leftover_dagster_instance():
    """A test-built schedule context opens an instance from its ref and leaves it as Dagster's "current"
    one; once that instance is gone, the next test that builds definitions fails. Forget it after each test."""
    yield
    from dagster._core.storage.defs_state.base import _current_storage

    _current_storage.set(None)


@pytest.fixture(params=_database_params())
def database_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'xmas.db'}"
    else:
        url = os.environ["XMAS_TEST_DATABASE_URL"]
    reset_for_tests(url)
    return url


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """The environment a test runs the pipeline with; tests add or change keys, then call make_settings."""
    return {
        "XMAS_HOME": str(tmp_path / "home"),
        "XMAS_DATABASE_URL": database_url,
        "XMAS_NOW": PINNED_NOW,
        "XMAS_UNSUBSCRIBE_SECRET": "test-unsubscribe-secret",
    }


@pytest.fixture
def make_settings(env):
    def make(**overrides: str) -> Settings:
        return load_settings({**env, **overrides})

    return make


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class UvicornThread:
    """A real uvicorn server on loopback, in a thread."""

    def __init__(self, app, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "UvicornThread":
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("uvicorn did not start within 20 s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
