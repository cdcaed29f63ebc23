"""The intake while its database is down: every answer is a 503 with Retry-After (never a 500 with a
traceback), nothing is half-done, no token reaches the log, and the same request succeeds once the
database is back. The outage is real: SQLite's folder disappears, or Postgres's TCP path is cut."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from xmas_pipeline.store.db import engine_for
from xmas_pipeline.store.schema import inbound_events, sequences, suppressions
from xmas_pipeline.web.app import SIGNUP_PATH, create_app
from xmas_pipeline_tests.conftest import free_port
from xmas_pipeline_tests.test_web.test_intake import ACTIVE_EMAIL, SIGNUP, add_sequence, rows


class TcpProxy:
    """A loopback TCP forwarder whose path to the database can be cut and restored (a network outage)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.sockets: list[socket.socket] = []
        self._listen()

    def _listen(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.sockets.clear()

    def restore(self) -> None:
        self._listen()


@pytest.fixture
def outage(make_settings, database_url: str, tmp_path: Path):
    """Settings whose database can be taken away: ``(settings, down)`` where ``down()`` is a context manager."""
    url = sa.engine.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        folder = tmp_path / "db"
        settings = make_settings(XMAS_DATABASE_URL=f"sqlite:///{folder / 'xmas.db'}")

        @contextlib.contextmanager
        def down() -> Iterator[None]:
            engine_for(settings.database_url).dispose()  # open files would outlive the folder
            folder.rename(tmp_path / "db-away")
            try:
                yield
            finally:
                (tmp_path / "db-away").rename(folder)

        yield settings, down
    else:
        proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        settings = make_settings(XMAS_DATABASE_URL=proxied)

        @contextlib.contextmanager
        def down() -> Iterator[None]:
            proxy.cut()
            try:
                yield
            finally:
                proxy.restore()

        yield settings, down
        proxy.cut()
        engine_for(proxied).dispose()


def server_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the server side logged, tracebacks included (the test's own HTTP client logs its URLs)."""
    handler = logging.StreamHandler()
    return "\n".join(handler.format(r) for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))


def token_free(caplog: pytest.LogCaptureFixture, token: str) -> bool:
    key, _, signature = token.partition(".")
    log = server_log(caplog)
    return key not in log and signature not in log


def test_one_click_unsubscribe_during_an_outage_is_503_then_succeeds_on_retry(outage, caplog):
    settings, down = outage
    token = add_sequence(settings)
    caplog.set_level(logging.INFO)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        with down():
            for method in ("GET", "POST"):
                response = client.request(method, f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "60"
                assert "try again" in response.text and "Traceback" not in response.text
        assert any("unsubscribe" in r.getMessage() and "unavailable" in r.getMessage() for r in caplog.records)
        assert token_free(caplog, token)
        assert rows(settings, suppressions) == []  # nothing half-done

        retry = client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})  # what the mail client does
        assert retry.status_code == 200
    [row] = rows(settings, suppressions)
    assert (row.email, row.source) == (ACTIVE_EMAIL, "one-click")
    assert rows(settings, sequences)[0].status == "exited"


def test_signups_and_health_during_an_outage(outage, caplog):
    settings, down = outage
    caplog.set_level(logging.INFO)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        with down():
            signup = client.post(SIGNUP_PATH, json=SIGNUP)
            assert signup.status_code == 503 and signup.headers["retry-after"] == "60"
            health = client.get("/healthz")
            assert health.status_code == 503
            assert health.json() == {"status": "degraded", "database": "unavailable", "writer": "ok", "queue": {}}
        assert client.post(SIGNUP_PATH, json=SIGNUP).json() == {"event_id": 1, "duplicate": False}
        assert client.get("/healthz").json()["status"] == "ok"
    assert "sarah.lee@example.com" not in server_log(caplog).lower()  # statement parameters are never logged
    assert len(rows(settings, inbound_events)) == 1

