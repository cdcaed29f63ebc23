"""The benches' Postgres: a database of their own on the machine's server, created when missing."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import make_url


def unavailable(url: str) -> str | None:
    """Why ``url`` cannot be measured (None when it can); its database is created if the server lacks it."""
    target = make_url(url)
    try:
        server = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with server.connect() as conn:
            known = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database})
            if known.first() is None:
                conn.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
        server.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no Postgres here"
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    return None
