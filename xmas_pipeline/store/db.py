"""Connecting to the local database and keeping its tables current, with no manual setup step."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import sqlalchemy as sa

from xmas_pipeline.store.schema import metadata

_engines: dict[str, sa.Engine] = {}
_ready: set[str] = set()
_lock = threading.Lock()


def _on_sqlite_connect(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the intake write while runs read; FULL makes every commit survive power loss.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def engine_for(url: str) -> sa.Engine:
    """One engine per URL per process, with the schema created or upgraded on first use.

    ``hide_parameters``: an error's message names the statement but never its values (emails,
    payloads), so logging a database error never copies personal data into the log.
    """
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                path = sa.engine.make_url(url).database
                if path and path != ":memory:" and not path.startswith("file:"):
                    _private_sqlite_file(Path(path))
                engine = sa.create_engine(
                    url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True
                )
                sa.event.listen(engine, "connect", _on_sqlite_connect)
            else:
                # psycopg2 runs an executemany UPDATE as one round trip per row unless told to batch them;
                # the delivery ledger writes a whole batch of outcomes that way.
                batch = {"executemany_mode": "values_plus_batch"} if sa.engine.make_url(url).get_driver_name() == "psycopg2" else {}
                engine = sa.create_engine(url, pool_pre_ping=True, hide_parameters=True, **batch)
            _engines[url] = engine
        if url not in _ready:
            upgrade_schema(engine)
            _ready.add(url)
        return engine


def _private_sqlite_file(path: Path) -> None:
    """The database holds personal data: its file is 0600 in a folder made 0700 when we create it.

    SQLite gives its -wal and -shm files the main file's mode, so creating the main file first (an
    empty file is an empty database) covers them; files an older version left readable are tightened.
    """
    if not path.parent.is_dir():
        path.parent.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.parent.mkdir(mode=0o700)
            os.chmod(path.parent, 0o700)  # mkdir's mode is filtered by the umask
        except FileExistsError:
            pass
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        try:
            mode = name.stat().st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISREG(mode) and mode & 0o077:
            os.chmod(name, 0o600)


def _fill_segment_copies(conn: sa.Connection) -> None:
    from xmas_pipeline.store.ledger import copy_segments  # the ledger imports this module's neighbours

    copy_segments(conn, None)


# Columns that copy data held elsewhere: filled once when an older database gains them.
_BACKFILLS = {("deliveries", "segment"): _fill_segment_copies}


def upgrade_schema(engine: sa.Engine) -> None:
    """Create missing tables, then add the columns and indexes newer code expects (additive changes only)."""
    metadata.create_all(engine, checkfirst=True)
    inspector = sa.inspect(engine)
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            have = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have:
                    ddl = column.type.compile(dialect=engine.dialect)
                    conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {ddl}'))
                    if (table.name, column.name) in _BACKFILLS:
                        _BACKFILLS[table.name, column.name](conn)
            indexes = {i["name"] for i in inspector.get_indexes(table.name)}
            for index in table.indexes:
                if index.name not in indexes:
                    index.create(conn, checkfirst=True)


def reset_for_tests(url: str) -> sa.Engine:
    """Drop and recreate every table (tests only)."""
    engine = engine_for(url)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    return engine


def dispose_all() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _ready.clear()
