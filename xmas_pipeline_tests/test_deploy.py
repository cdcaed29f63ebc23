"""deploy/dagster.yaml boots: `dagster-daemon run` and `dagster-webserver` on PostgreSQL storage, the queued
run coordinator and pools, with the intake as its own uvicorn process and the campaign's database on
Postgres too (a separate database). A posted signup is enrolled by a run the real signup_sensor launches
from the daemon; a daily_delivery_job run submitted through the webserver's GraphQL API is dequeued by the
daemon and sends email 2 to a lead whose email 1 the website had sent two days before.

Needs PostgreSQL (XMAS_TEST_DATABASE_URL); creates `<that database>_dagster` for Dagster's storage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from xmas_pipeline.settings import PROJECT_ROOT
from xmas_pipeline.store.db import dispose_all, reset_for_tests
from xmas_pipeline_tests.conftest import free_port
from xmas_pipeline_tests.test_run import processes_with, wait_for

TEST_DATABASE_URL = os.environ.get("XMAS_TEST_DATABASE_URL")
# A fixed campaign clock inside the campaign (Dagster's partitions follow the real date, which is later).
NOW = "2026-12-01T10:00:00-05:00"
DAY = "2026-12-01"
LOCATION, REPOSITORY = "xmas_pipeline", "__repository__"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not TEST_DATABASE_URL, reason="needs PostgreSQL: set XMAS_TEST_DATABASE_URL (CI sets it)"),
    pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc to check that every process stopped"),
]


def fresh_database(url: sa.URL, name: str) -> None:
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()


def graphql(port: int, query: str, **variables) -> dict:
    answer = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query, "variables": variables}, timeout=30)
    body = answer.json()
    assert not body.get("errors"), body["errors"]
    return body["data"]


RUNS = """query($job: String!) { runsOrError(filter: {pipelineName: $job}) {
  ... on Runs { results { runId status tags { key value } } } } }"""


def runs_of(port: int, job: str) -> list[dict]:
    return graphql(port, RUNS, job=job)["runsOrError"]["results"]


class Services:
    """The production processes, each in its own process group so a signal reaches its children."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env, self.logs, self.procs = env, logs, []

    def start(self, name: str, argv: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "w")
        self.procs.append((name, subprocess.Popen(argv, cwd=PROJECT_ROOT, env=self.env, stdout=log,
                                                  stderr=subprocess.STDOUT, start_new_session=True)))

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 40) -> str:
        return "\n".join((self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            for _, proc in self.procs:
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, sig)
                    except ProcessLookupError:
                        pass
            deadline = time.time() + grace
            while time.time() < deadline and any(p.poll() is None for _, p in self.procs):
                time.sleep(0.2)


def test_the_production_instance_enrolls_and_delivers_on_postgres(tmp_path: Path) -> None:
    url = sa.make_url(TEST_DATABASE_URL)
    dagster_db = f"{url.database}_dagster"
    fresh_database(url, dagster_db)
    reset_for_tests(TEST_DATABASE_URL)  # the campaign's database: empty tables
    dispose_all()

    home = tmp_path / "home"
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    # deploy/dagster.yaml as shipped; only its port follows the test server's when that is not 5432.
    config = (PROJECT_ROOT / "deploy" / "dagster.yaml").read_text()
    if (url.port or 5432) != 5432:
        config = config.replace("port: 5432", f"port: {url.port}")
    (dagster_home / "dagster.yaml").write_text(config)

    intake_port, web_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XMAS_", "DAGSTER_"))}
    env.update({
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_USER": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "",
        "DAGSTER_PG_DB": dagster_db,
        "XMAS_HOME": str(home),
        "XMAS_DATABASE_URL": TEST_DATABASE_URL,
        "XMAS_NOW": NOW,
        "XMAS_SENSOR_INTERVAL": "2",
        "XMAS_UNSUBSCRIBE_SECRET": "deploy-test-unsubscribe-secret",
        "XMAS_PUBLIC_URL": f"http://127.0.0.1:{intake_port}",
    })
    bin_dir = Path(sys.executable).parent
    services = Services(env, tmp_path)
    started = time.time()
    try:
        services.start("intake", [sys.executable, "-m", "uvicorn", "--factory", "xmas_pipeline.web.app:create_app",
                                  "--host", "127.0.0.1", "--port", str(intake_port), "--log-level", "warning"])
        services.start("webserver", [str(bin_dir / "dagster-webserver"), "-w", "workspace.yaml",
                                     "-h", "127.0.0.1", "-p", str(web_port)])
        services.start("daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"])

        def up(address: str) -> bool:
            services.check_alive()
            try:
                return httpx.get(address, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(lambda: up(f"http://127.0.0.1:{intake_port}/healthz"), 60, "the intake")

        # A new lead, and one whose email 1 the website sent two days ago: email 2 is due this morning.
        intake = f"http://127.0.0.1:{intake_port}/webhook/christmas-signup"
        new = httpx.post(intake, json={"email": "sarah@example.com", "first_name": "Sarah", "red_systems": 2})
        earlier = httpx.post(intake, json={"email": "omar@example.com", "first_name": "Omar", "orange_systems": 3,
                                           "email_1_sent_at": "2026-11-29T09:00:00-05:00"})
        assert new.status_code == earlier.status_code == 202

        outbox = home / "outbox"
        emails = wait_for(lambda: services.check_alive() or list(outbox.glob("*-s1.eml")), 90, "email 1 in the outbox")
        assert len(emails) == 1 and "sarah@example.com" in emails[0].read_text()
        wait_for(lambda: up(f"http://127.0.0.1:{web_port}/server_info"), 90, "dagster-webserver")
        enrolled = wait_for(lambda: [r for r in runs_of(web_port, "enroll_signups_job") if r["status"] == "SUCCESS"],
                            60, "a successful enrollment run")
        assert {"key": "dagster/sensor_name", "value": "signup_sensor"} in enrolled[0]["tags"]

        # The delivery: submitted through GraphQL, queued, launched by the daemon's run queue; like every
        # run of this project it executes its steps in the run's own process.
        from dagster_graphql import DagsterGraphQLClient

        client = DagsterGraphQLClient("127.0.0.1", port_number=web_port)
        run_id = client.submit_job_execution("daily_delivery_job", repository_location_name=LOCATION,
                                             repository_name=REPOSITORY, tags={"dagster/partition": DAY},
                                             run_config={})
        status = wait_for(lambda: services.check_alive() or _finished(client, run_id), 120, "the delivery run")
        assert status == "SUCCESS", services.tail("daemon")
        [second] = list(outbox.glob("*-s2.eml"))
        assert "omar@example.com" in second.read_text()
        assert len(list(outbox.glob("*-s1.eml"))) == 1  # Omar's email 1 was the website's, and Sarah's went once

        # The instance is the one deploy/dagster.yaml describes: queued runs, pools with a limit of 1.
        instance = graphql(web_port, """{ instance { runQueuingSupported runLauncher { name }
            concurrencyLimits { concurrencyKey limit }
            daemonHealth { allDaemonStatuses { daemonType healthy required } } } }""")["instance"]
        assert instance["runQueuingSupported"] and instance["runLauncher"]["name"] == "DefaultRunLauncher"
        # The local CRM needs no `notion` pool (email 1 must not queue behind deliveries); `mail` has limit 1.
        assert {"concurrencyKey": "mail", "limit": 1} in instance["concurrencyLimits"], instance
        assert not any(c["concurrencyKey"] == "notion" for c in instance["concurrencyLimits"]), instance
        unhealthy = [d for d in instance["daemonHealth"]["allDaemonStatuses"] if d["required"] and not d["healthy"]]
        assert not unhealthy, services.tail("daemon")
        # Both runs live in Dagster's Postgres storage, and the campaign's ledger in its own database.
        storage = sa.create_engine(url.set(database=dagster_db))
        with storage.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")).scalar() >= 2
        storage.dispose()
        print(f"enrollment and delivery on the production instance in {time.time() - started:.0f} s")
    finally:
        services.stop()
        dispose_all()
    wait_for(lambda: processes_with(f"XMAS_HOME={home}") == [], 60, "every process of the deployment to stop")


def _finished(client, run_id: str) -> str | None:
    status = client.get_run_status(run_id).value
    return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None
