"""The signup queue on PostgreSQL under concurrent writers: nothing stranded, nothing doubled.

A real intake with four uvicorn workers takes 3,000 distinct signups over 64 concurrent connections
while the signup sensor ticks (as the daemon would, every few seconds) and its enrollment runs execute.
With several workers, ids are handed out at insert and committed in any order; the sensor finds work by
status, so an event that commits late is still picked up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from xmas_pipeline.definitions import build_definitions
from xmas_pipeline.settings import PROJECT_ROOT
from xmas_pipeline.store import inbound
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.store.schema import deliveries, inbound_events, sequences
from xmas_pipeline_tests.conftest import free_port
from xmas_pipeline_tests.daemon import DaemonSim, definitions_for

SIGNUPS = 3000
CONNECTIONS = 64


@pytest.fixture
def intake(env, database_url, tmp_path):
    if not database_url.startswith("postgres"):
        pytest.skip("the multi-worker intake test needs PostgreSQL (set XMAS_TEST_DATABASE_URL)")
    port = free_port()
    log = open(tmp_path / "intake.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "xmas_pipeline.web.app:create_app", "--workers", "4",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=PROJECT_ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail(f"intake did not start: {(tmp_path / 'intake.log').read_text()}")
    try:
        yield url
    finally:
        process.terminate()
        process.wait(20)
        log.close()


@pytest.mark.slow
def test_every_signup_from_a_four_worker_intake_is_enrolled_once(intake, settings, make_settings):
    engine = engine_for(settings.database_url)
    answers: list[int] = []
    lock = threading.Lock()

    def post(indexes: range) -> None:
        with httpx.Client(base_url=intake, timeout=30) as client:  # one keep-alive connection per thread
            for i in indexes:
                status = client.post("/webhook/christmas-signup",
                                     json={"email": f"pg{i}@example.com", "first_name": "Pat", "red_systems": i % 3}).status_code
                with lock:
                    answers.append(status)

    chunks = [range(c, SIGNUPS, CONNECTIONS) for c in range(CONNECTIONS)]
    defs = definitions_for(settings)
    with dg.instance_for_test() as instance, ThreadPoolExecutor(CONNECTIONS) as pool:
        daemon = DaemonSim(defs, instance, lambda at: make_settings(XMAS_NOW=at.isoformat()))
        posting = [pool.submit(post, chunk) for chunk in chunks]
        now = settings.clock.now()
        deadline = time.time() + 600
        while time.time() < deadline:  # the sensor ticks while the signups pour in, then until quiet
            daemon.tick(now)
            depth = inbound.depth(engine)
            if all(f.done() for f in posting) and set(depth) <= {"done"}:
                break
        for f in posting:
            f.result()

    assert answers.count(202) == SIGNUPS
    with engine.connect() as conn:
        assert conn.execute(sa.select(inbound_events.c.status, sa.func.count()).group_by(inbound_events.c.status)).all() == [("done", SIGNUPS)]
        assert conn.execute(sa.select(sa.func.count()).select_from(sequences)).scalar_one() == SIGNUPS
        per_email = conn.execute(
            sa.select(deliveries.c.email, sa.func.count()).where(deliveries.c.step == 1, deliveries.c.status == "sent")
            .group_by(deliveries.c.email)
        ).all()
    assert len(per_email) == SIGNUPS and {n for _, n in per_email} == {1}
    assert len(list(settings.outbox_dir.glob("*-s1.eml"))) == SIGNUPS
    assert not daemon.skipped_keys or all(k.startswith("signups-") for k in daemon.skipped_keys)
