"""The ``emails_due`` asset's whole path (load + compute) for 1,000,000 sequences, on SQLite and PostgreSQL.

What is timed is ``xmas_pipeline.due_report.due_report``, the function the asset body is: plan the
sequences that have no ledger rows yet (none here: an indexed look that finds nothing), read what the
day owes from the ledger (``ledger.owed`` with ``carry_over=True``, the live day, which also picks up
every earlier step still owed) and compute the asset's metadata. The day is 2026-12-08 and "now" is
13:00 Toronto on it, the live day at mid-day.

The data (not timed): 1,000,000 nurture sequences with signups spread over 2026-11-20..12-10, each with
its 7 ledger rows (7,000,000 rows) due on the journey's day offsets inside its 08:00-20:00 send window.
Steps due before "now" are mostly sent, some external, skipped, late, held, failed or still
scheduled/claimed (the carry-over); 7 % of sequences exited part-way (their steps since then skipped),
those with everything final are completed. Rows are stored in signup order, as enrollment writes them.
Rendered messages and profiles are left empty (a real ledger holds kilobytes of JSON there, which
slows full scans such as the baseline's, not the indexed read).

Baseline: a plain-Python loop over the same store: read every ledger row of the journeys (no
index-friendly window) and the sequences' segments, filter and count row by row, sort what is owed for
the preview. Timed whole, on SQLite, and checked to give the same counts, groups and preview as ours.
``speedup`` = loop_s / sqlite_s.

The asset path runs 3 times in one fresh child process per store and the median counts (every run is
printed; the first pays for a cold statement cache, and on a shared machine for whoever else is
busy). Each measurement runs in its own child process, so ``peak_rss_mb`` (the largest of our two) is the
asset path's own, not the data generator's. Last line JSON: sequences, sqlite_s, postgres_s,
peak_rss_mb, loop_s, speedup. Targets: <= 5 s on each store, <= 1.5 GB.

    .venv/bin/python bench/due.py [--sequences N] [--keep DIR] [--pg URL|none]
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import io
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import pgdb  # noqa: E402
from xmas_pipeline.campaign.journey import load_journeys_from  # noqa: E402
from xmas_pipeline.settings import DEFAULT_CAMPAIGNS_DIR  # noqa: E402

N = 1_000_000
DAY = dt.date(2026, 12, 8)
NOW = dt.datetime(2026, 12, 8, 18, 0, tzinfo=dt.timezone.utc)  # 13:00 in Toronto
PG_URL = os.environ.get("XMAS_BENCH_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/bench_due")
RUNS = 3  # the asset path, this many times in one process (Dagster runs it in process every tick): median
CHUNK = 100_000  # sequences generated and loaded at a time (700,000 ledger rows)
EST = np.timedelta64(5, "h")  # Toronto is on EST for the whole window (DST ended 2026-11-01)


def journeys():
    return load_journeys_from(None, DEFAULT_CAMPAIGNS_DIR)


# --- data ---------------------------------------------------------------------------------------------


def _iso(values: np.ndarray) -> np.ndarray:
    """datetime64 -> the text SQLAlchemy stores on SQLite and Postgres reads ('YYYY-MM-DD HH:MM:SS.ffffff')."""
    return np.char.replace(np.datetime_as_string(values.astype("datetime64[us]"), unit="us"), "T", " ")


def generate(n: int, home, seed: int = 11):
    """Yield (sequences, deliveries) frames, ``CHUNK`` sequences at a time, in signup order."""
    rng = np.random.default_rng(seed)
    name = home.name
    offsets = np.array([s.day_offset for s in home.steps], dtype="int64")
    steps = len(offsets)
    now = np.datetime64(NOW.replace(tzinfo=None), "us")
    first = np.datetime64("2026-11-20T05:00:00", "us")  # midnight in Toronto
    spread = int(np.timedelta64(20, "D") / np.timedelta64(1, "us"))
    signups = np.sort(first + rng.integers(0, spread, n).astype("timedelta64[us]"))
    keys = np.array([f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**63, (n, 2))])
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        m = hi - lo
        key = keys[lo:hi]
        signup = signups[lo:hi]
        email = np.char.add(np.char.add("lead", np.arange(lo, hi).astype(str)), "@example.com")
        seq_no = np.array([int(k[:14], 16) for k in key], dtype="int64")
        segment = rng.choice(["CRITICAL", "URGENT", "OPTIMIZE"], m, p=[0.3, 0.4, 0.3])

        # Due times: the day offsets, then into the 08:00-20:00 window (step 1 is exempt).
        due = signup[:, None] + (offsets * 86400 * 1_000_000).astype("timedelta64[us]")[None, :]
        local = due - EST
        day0 = local.astype("datetime64[D]").astype("datetime64[us]")
        hour = (local - day0) / np.timedelta64(1, "h")
        eight = day0 + np.timedelta64(8, "h") + EST
        moved = np.where(hour < 8, eight, np.where(hour >= 20, eight + np.timedelta64(1, "D"), due))
        moved[:, 0] = due[:, 0]
        due = moved

        # What happened to each step whose time came.
        u = rng.random((m, steps))
        status = np.select(
            [u < 0.94, u < 0.95, u < 0.975, u < 0.98, u < 0.982, u < 0.985, u < 0.9945],
            ["sent", "external", "skipped", "late", "held", "failed", "scheduled"],
            "claimed",
        ).astype(object)
        reason = np.select([status == "skipped", status == "late", status == "held", status == "failed"],
                           ["suppressed: unsubscribed", "late: reached 2 days later", "provider unclear",
                            "provider timeout"], "").astype(object)
        exits = (rng.random(m) < 0.07) & (signup < now)
        exit_at = signup + (rng.random(m) * ((now - signup) / np.timedelta64(1, "us"))).astype("timedelta64[us]")
        after_exit = exits[:, None] & (due >= exit_at[:, None]) & (due < now)
        status[after_exit] = "skipped"
        reason[after_exit] = "sequence exited: unsubscribed"
        future = due >= now
        status[future] = "scheduled"
        reason[future] = ""
        open_ = np.isin(status, ["scheduled", "failed", "claimed"])
        seq_status = np.where(exits, "exited", np.where(open_.any(axis=1), "active", "completed"))

        flat = status.ravel()
        sent = np.isin(flat, ["sent", "external"])
        due_flat = due.ravel()
        sent_at = np.where(sent, _iso(due_flat + np.timedelta64(90, "s")), None)
        late_ok = np.where((flat == "failed") & (rng.random(m * steps) < 0.1), 1, None)
        claimed = flat == "claimed"
        step_no = np.tile(np.arange(1, steps + 1), m)
        key_flat = np.repeat(key, steps)
        deliveries = pd.DataFrame({
            "sequence_key": key_flat,
            "seq_no": np.repeat(seq_no, steps),
            "campaign": name,
            "segment": np.repeat(segment, steps),  # the ledger's copy of its sequence's segment (the funnel's)
            "step": step_no,
            "template": np.char.add("email_", step_no.astype(str)),
            "email": np.repeat(email, steps),
            "idempotency_key": np.char.add(np.char.add(np.char.add("xmas-", key_flat), "-s"), step_no.astype(str)),
            "status": flat,
            "reason": np.where(reason.ravel() == "", None, reason.ravel()),
            "due_at": _iso(due_flat),
            "late_by_s": np.where(flat == "late", 172800, None),
            "late_ok": late_ok,
            "claim_token": np.where(claimed, "c0ffee", None),
            "claimed_at": np.where(claimed, _iso(np.full(m * steps, now - np.timedelta64(60, "s"))), None),
            "attempts": np.where(flat == "scheduled", 0, 1),
            "provider": np.where(sent, np.where(flat == "sent", "resend", "website"), None),
            "provider_id": np.where(flat == "sent", np.char.add("msg-", np.arange(m * steps).astype(str)), None),
            "sent_at": sent_at,
            "crm_synced": np.where(sent, 1, 0),
        })
        sequences = pd.DataFrame({
            "sequence_key": key,
            "seq_no": seq_no,
            "email": email,
            "campaign": name,
            "first_name": "Lead",
            "segment": segment,
            "red_systems": 0, "orange_systems": 0, "yellow_systems": 0, "green_systems": 0,
            "signup_at": _iso(signup),
            "status": seq_status,
            "exit_reason": np.where(exits, "unsubscribed", None),
            "updated_at": _iso(signup),
            "planned_at": _iso(signup),
        })
        yield sequences, deliveries


def _secondary_indexes():
    from xmas_pipeline.store.schema import metadata

    return [i for t in metadata.sorted_tables for i in t.indexes if not i.unique]


def load_sqlite(path: Path, n: int, home) -> None:
    """Bulk load: tables from the schema, secondary indexes dropped during the load and rebuilt after."""
    import sqlalchemy as sa

    from xmas_pipeline.store.db import upgrade_schema
    from xmas_pipeline.store.schema import metadata

    engine = sa.create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    conn = sqlite3.connect(path)
    conn.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; PRAGMA cache_size=-1000000;")
    for index in _secondary_indexes():
        conn.execute(f"DROP INDEX IF EXISTS {index.name}")
    for sequences, deliveries in generate(n, home):
        for table, frame in (("sequences", sequences), ("deliveries", deliveries)):
            cols = ", ".join(frame.columns)
            marks = ", ".join("?" * len(frame.columns))
            rows = frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None)
            conn.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)
        conn.commit()
    conn.close()
    upgrade_schema(engine)  # recreates the indexes the schema names, as on any deployment
    engine.dispose()


def load_postgres(url: str, n: int, home) -> None:
    """Bulk load with COPY; secondary indexes rebuilt after, then ANALYZE (autovacuum would do it)."""
    import sqlalchemy as sa

    from xmas_pipeline.store.db import upgrade_schema
    from xmas_pipeline.store.schema import metadata

    engine = sa.create_engine(url)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for index in _secondary_indexes():
            cur.execute(f"DROP INDEX IF EXISTS {index.name}")
        for sequences, deliveries in generate(n, home):
            for table, frame in (("sequences", sequences), ("deliveries", deliveries)):
                buf = io.StringIO()
                frame.to_csv(buf, index=False, header=False, na_rep="\\N")
                buf.seek(0)
                cur.copy_expert(f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buf)
            raw.commit()
        raw.commit()
    finally:
        raw.close()
    upgrade_schema(engine)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    engine.dispose()


# --- measurements, each in a child process -------------------------------------------------------------


def _rss_mb() -> float:
    """This process's peak RSS. Not getrusage: Linux carries ru_maxrss over exec, so a child would
    report its parent's (the data generator's) peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_ours(url: str) -> dict:
    """The asset's body, timed; then the deliveries asset's read (owed + dues) for information."""
    from xmas_pipeline.campaign.journey import ExitReason
    from xmas_pipeline.due_report import due_report, window
    from xmas_pipeline.store import funnel, ledger
    from xmas_pipeline.store.db import engine_for

    js = journeys()
    engine = engine_for(url)  # the production engine (pragmas, schema check), made before the clock starts
    runs = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        report = due_report(engine, js, DAY, NOW, day_seconds=86400)
        runs.append(time.perf_counter() - t0)
    seconds = sorted(runs)[len(runs) // 2]
    rss = _rss_mb()
    start, end, live = window(js.home, DAY, NOW)
    t0 = time.perf_counter()
    frame = ledger.owed(engine, js.names, start, end, carry_over=live)
    owed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    dues = ledger.dues(frame)
    dues_s = time.perf_counter() - t0
    # The other thing every delivery tick refreshes: the campaign_funnel asset's query, over the whole ledger.
    t0 = time.perf_counter()
    counts = funnel.compute(engine, js.names, NOW,
                            booking_goal=[j.name for j in js if ExitReason.BOOKED_CALL in j.exits]).totals()
    funnel_s = time.perf_counter() - t0
    return {
        "seconds": seconds, "runs": runs, "peak_rss_mb": rss, "owed_s": owed_s, "dues_s": dues_s, "dues": len(dues),
        "funnel_s": funnel_s, "funnel_rss_mb": _rss_mb(), "funnel": counts,
        "due": report.due, "carried_over": report.carried_over, "sendable_now": report.sendable_now,
        "over_max_lateness": report.over_max_lateness, "recorded_late": report.recorded_late,
        "planned": report.sequences_planned,
        "groups": [list(g) for g in report.by_journey_step_and_segment],
        "preview": [int(r["id"]) for r in report.preview],
    }


def child_loop(path: str) -> dict:
    """The plain-Python way over the same SQLite file: every row of the journeys, one at a time."""
    from xmas_pipeline.due_report import PREVIEW_ROWS, window
    from xmas_pipeline.store import ledger

    js = journeys()
    utc = dt.timezone.utc
    t0 = time.perf_counter()
    start, end, live = window(js.home, DAY, NOW)
    max_late = {j.name: j.late_send.max_lateness for j in js}
    window_statuses = {*ledger.OPEN, ledger.LATE}
    conn = sqlite3.connect(path)
    segment = dict(conn.execute("SELECT sequence_key, segment FROM sequences"))
    marks = ", ".join("?" * len(js.names))
    rows = conn.execute(
        f"SELECT id, sequence_key, email, campaign, step, template, due_at, status, late_ok FROM deliveries "
        f"WHERE campaign IN ({marks})", js.names)
    owed = []
    for row_id, key, email, campaign, step, template, due_text, status, late_ok in rows:
        if status not in window_statuses or due_text is None:
            continue
        due_at = dt.datetime.fromisoformat(due_text).replace(tzinfo=utc)
        if start <= due_at < end or (live and due_at < start and status in ledger.OPEN):
            owed.append((due_at, row_id, email, campaign, segment[key], step, template, status, bool(late_ok)))
    owed.sort()
    counts = collections.Counter()
    groups = collections.Counter()
    for due_at, _, _, campaign, seg, step, _, status, late_ok in owed:
        counts["carried_over" if due_at < start else "due"] += 1
        late = status == ledger.LATE
        counts["recorded_late"] += late
        if due_at <= NOW and not late:
            over = not late_ok and NOW - due_at > max_late[campaign]
            counts["over_max_lateness"] += over
            counts["sendable_now"] += not over
        groups[(campaign, step, seg)] += 1
    conn.close()
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds, "peak_rss_mb": _rss_mb(), **{k: counts[k] for k in
        ("due", "carried_over", "sendable_now", "over_max_lateness", "recorded_late")},
        "groups": [[j, n, s, c] for (j, n, s), c in sorted(groups.items())],
        "preview": [r[1] for r in owed[:PREVIEW_ROWS]],
    }


def run_child(kind: str, target: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, target], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} on {target} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


SAME = ("due", "carried_over", "sendable_now", "over_max_lateness", "recorded_late", "groups", "preview")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=N)
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the SQLite file in this folder")
    parser.add_argument("--pg", default=PG_URL, help="Postgres URL, or 'none'")
    parser.add_argument("--reuse-pg", action="store_true", help="the Postgres database is already loaded")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, target = args.child
        print(json.dumps(child_ours(target) if kind == "ours" else child_loop(target)))
        return

    n, home = args.sequences, journeys().home
    folder = args.keep or Path(tempfile.mkdtemp(prefix="xmas-bench-due-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"due-{n}.db"
    if not path.exists():
        t0 = time.perf_counter()
        load_sqlite(path, n, home)
        print(f"loaded {n:,} sequences, {n * len(home.steps):,} ledger rows into SQLite {path} "
              f"in {time.perf_counter() - t0:.0f} s (not timed)", flush=True)
    sqlite_url = f"sqlite:///{path}"

    ours = run_child("ours", sqlite_url)
    rows = ours["due"] + ours["carried_over"]
    print(f"SQLite: emails_due({DAY}, live, now {NOW:%H:%M} UTC) -> {rows:,} rows ({ours['due']:,} due this day, "
          f"{ours['carried_over']:,} carried over, {ours['sendable_now']:,} sendable now, "
          f"{ours['over_max_lateness']:,} over max lateness) in {ours['seconds']:.2f} s (median; runs "
          f"{', '.join(f'{r:.2f}' for r in ours['runs'])} s), "
          f"peak RSS {ours['peak_rss_mb']:.0f} MB", flush=True)
    print(f"  deliveries' read of the same day: owed() {ours['owed_s']:.2f} s, dues() {ours['dues_s']:.2f} s "
          f"for {ours['dues']:,} Due objects", flush=True)
    print(f"  campaign_funnel over the whole ledger: {ours['funnel_s']:.2f} s, peak RSS {ours['funnel_rss_mb']:.0f} MB "
          f"({ours['funnel']})", flush=True)

    postgres_s, pg_rss, why = None, 0.0, None
    if args.pg != "none":
        why = pgdb.unavailable(args.pg)
    else:
        why = "--pg none"
    if why is None:
        if not args.reuse_pg:
            t0 = time.perf_counter()
            load_postgres(args.pg, n, home)
            print(f"loaded the same into Postgres in {time.perf_counter() - t0:.0f} s (not timed)", flush=True)
        pg = run_child("ours", args.pg)
        for key in SAME:
            assert pg[key] == ours[key], (key, pg[key], ours[key])
        postgres_s, pg_rss = pg["seconds"], pg["peak_rss_mb"]
        print(f"PostgreSQL: same {rows:,} rows in {postgres_s:.2f} s (median; runs "
              f"{', '.join(f'{r:.2f}' for r in pg['runs'])} s), peak RSS {pg_rss:.0f} MB; "
              f"deliveries' read: owed() {pg['owed_s']:.2f} s, dues() {pg['dues_s']:.2f} s; "
              f"campaign_funnel {pg['funnel_s']:.2f} s", flush=True)
        assert pg["funnel"] == ours["funnel"], (pg["funnel"], ours["funnel"])
    else:
        print(f"PostgreSQL not measured: {why}", flush=True)

    loop = run_child("loop", str(path))
    for key in SAME:
        assert loop[key] == ours[key], (key, loop[key], ours[key])
    print(f"plain-Python loop over all {n * len(home.steps):,} ledger rows (SQLite, timed whole): "
          f"{loop['seconds']:.1f} s, same counts, groups and preview; peak RSS {loop['peak_rss_mb']:.0f} MB", flush=True)
    print(json.dumps({
        "sequences": n,
        "sqlite_s": round(ours["seconds"], 3),
        "postgres_s": None if postgres_s is None else round(postgres_s, 3),
        "peak_rss_mb": round(max(ours["peak_rss_mb"], pg_rss), 1),
        "loop_s": round(loop["seconds"], 2),
        "speedup": round(loop["seconds"] / ours["seconds"], 1),
        "funnel_sqlite_s": round(ours["funnel_s"], 3),
        "funnel_postgres_s": None if postgres_s is None else round(pg["funnel_s"], 3),
    }))


if __name__ == "__main__":
    main()
