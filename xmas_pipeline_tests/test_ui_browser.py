"""The Dagster UI in a real browser: what a marketer and an ops person see after a morning of signups.

Starts `make run`'s stack for real (`xmas run` on a fresh XMAS_HOME: intake + `dagster dev`), posts four
signups, waits for the signup_sensor's enrollment runs, launches today's delivery run, then opens the pages
in Debian's Chromium through Playwright and checks the numbers they render:

- `emails_due`, partition of the day: due 3, sendable now 2, the step × segment table;
- `deliveries`, same partition: 2 sent, 1 not yet due, nothing failed;
- `delivery_schedule`: its cron, timezone, target job and next tick;
- `campaign_funnel`: leads enrolled, sent, late and the journey x step x segment table.

Screenshots go to `<tmp>/screenshots/` and are copied to `xmas_pipeline_tests/artifacts/screenshots/`.
Runs when Chromium is installed (`apt-get install chromium`; `.ci/run` installs it); skipped otherwise,
unless XMAS_TEST_CHROMIUM names the browser, in which case a missing one fails the test.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa

from xmas_pipeline.settings import PROJECT_ROOT
from xmas_pipeline_tests.conftest import free_port
from xmas_pipeline_tests.test_run import processes_with, wait_for

CHROMIUM = os.environ.get("XMAS_TEST_CHROMIUM") or "/usr/bin/chromium"
# What Debian's chromium needs to run headless in a container without reaching out to the network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "screenshots"

TZ = ZoneInfo("America/Toronto")  # the campaign's timezone
NOW = "2026-12-01T10:00:00-05:00"  # the campaign clock, pinned: a weekday morning inside the campaign
DAY = "2026-12-01"
PAGE_TIMEOUT_MS = 60_000

SIGNUPS = [
    # Sarah is new: email 1 goes at enrollment, so it is not due any more by the time the day is computed.
    {"email": "sarah@example.com", "first_name": "Sarah", "red_systems": 2},
    # The website sent email 1 to these three earlier: email 2 or 3 falls on DAY (9:00, 9:00, 15:00 local).
    {"email": "omar@example.com", "first_name": "Omar", "orange_systems": 3, "email_1_sent_at": "2026-11-29T09:00:00-05:00"},
    {"email": "dev@example.com", "first_name": "Dev", "red_systems": 1, "email_1_sent_at": "2026-11-28T09:00:00-05:00"},
    {"email": "lena@example.com", "first_name": "Lena", "email_1_sent_at": "2026-11-29T15:00:00-05:00"},
]


def _browser_or_skip() -> None:
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("XMAS_TEST_CHROMIUM"):
        pytest.fail(f"XMAS_TEST_CHROMIUM={CHROMIUM} does not exist: install it (apt-get install -y chromium)")
    pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` to run the browser test (.ci/run does)")


def delivery_cron() -> str:
    """A daily send that cannot tick while the test runs (so the pages show the run the test launched)."""
    now = dt.datetime.now(TZ)
    hour = 6 if not (5 <= now.hour <= 6) else 18
    return f"0 {hour} * * *"


# --- the stack ------------------------------------------------------------------------------------


class Stack:
    """`xmas run` on a fresh home: the same command `make run` starts."""

    def __init__(self, home: Path, log: Path):
        self.home, self.log = home, log
        self.port, self.dagster_port = free_port(), free_port()
        self.cron = delivery_cron()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XMAS_", "DAGSTER_"))}
        env.update({"XMAS_HOME": str(home), "XMAS_NOW": NOW, "XMAS_SENSOR_INTERVAL": "2",
                    "XMAS_DELIVERY_CRON": self.cron})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xmas_pipeline.cli", "run", "--port", str(self.port),
             "--dagster-port", str(self.dagster_port)],
            cwd=PROJECT_ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        )

    @property
    def intake(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dagster(self) -> str:
        return f"http://127.0.0.1:{self.dagster_port}"

    def alive(self) -> None:
        if self.proc.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])
            raise AssertionError(f"`xmas run` exited with {self.proc.returncode}:\n{tail}")

    def up(self, url: str) -> bool:
        self.alive()
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def graphql(self, query: str, **variables) -> dict:
        body = httpx.post(f"{self.dagster}/graphql", json={"query": query, "variables": variables}, timeout=30).json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def runs(self, job: str) -> list[dict]:
        query = """query($job: String!) { runsOrError(filter: {pipelineName: $job}) {
            ... on Runs { results { runId status } } } }"""
        return self.graphql(query, job=job)["runsOrError"]["results"]

    def sequences(self) -> int:
        engine = sa.create_engine(f"sqlite:///{self.home / 'xmas.db'}")
        try:
            with engine.connect() as conn:
                return conn.execute(sa.text("SELECT count(*) FROM sequences")).scalar()
        finally:
            engine.dispose()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        wait_for(lambda: processes_with(f"XMAS_HOME={self.home}") == [], 60, "every process `xmas run` started to stop")


# --- the browser ------------------------------------------------------------------------------------


class UI:
    """One browser tab on the Dagster UI, with the few moves the checks need."""

    def __init__(self, page, base: str, shots: Path):
        self.page, self.base, self.shots = page, base, shots

    def open(self, path: str, ready_text: str) -> None:
        """Go to a page and wait until ``ready_text`` shows (the UI fills pages in after load)."""
        self.page.goto(self.base + path, timeout=PAGE_TIMEOUT_MS)
        self.page.get_by_text(ready_text, exact=True).first.wait_for(timeout=PAGE_TIMEOUT_MS)

    def metadata(self, label: str) -> str:
        """The value cell of a metadata row (asset partition pages: label | value)."""
        row = self.page.locator("tr").filter(has=self.page.get_by_text(label, exact=True)).first
        row.wait_for(timeout=PAGE_TIMEOUT_MS)
        return row.locator("td").nth(1).inner_text().strip()

    def row(self, label: str) -> str:
        """A label | value row of a definition page (schedules), as one line of text."""
        row = self.page.locator("tr").filter(has=self.page.get_by_text(label, exact=True)).first
        row.wait_for(timeout=PAGE_TIMEOUT_MS)
        return " ".join(row.inner_text().split())

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        # Animations finished first: a dialog caught mid fade-in leaves the page showing through it.
        self.page.screenshot(path=str(path), full_page=True, animations="disabled")
        return path


# --- what each page must show -------------------------------------------------------------------------


def check_emails_due_partition(ui: UI, stack: Stack) -> None:
    """Ops: what goes out today, to whom. Omar (2), Dev (3) are due at 9:00, Lena (2) at 15:00; Dev's
    step 2 (due yesterday 09:00, before he was enrolled) is carried over, but 25 h late: over the
    24 h max_lateness, so the run records it late instead of sending it."""
    ui.open(f"/assets/emails_due?view=partitions&partition={DAY}", "sendable_now")
    assert ui.metadata("due") == "3"
    assert ui.metadata("carried_over") == "1"
    assert ui.metadata("sendable_now") == "2"
    assert ui.metadata("over_max_lateness") == "1"
    table = ui.metadata("by_journey_step_and_segment").replace("Christmas 2026", "Christmas-2026").split()
    assert table[:4] == ["journey", "step", "segment", "emails"]
    assert sorted(zip(table[5::4], table[6::4], table[7::4])) == [
        ("2", "OPTIMIZE", "1"), ("2", "URGENT", "2"), ("3", "URGENT", "1")]
    preview = ui.metadata("preview")
    assert all(email in preview for email in ("omar@example.com", "dev@example.com", "lena@example.com"))
    assert "sarah@example.com" not in preview  # her email 1 went at enrollment
    ui.shot("emails_due-partition")


def check_deliveries_partition(ui: UI, stack: Stack) -> None:
    """Ops: what went out today: this run's two, and Sarah's email 1 sent at enrollment; Dev's late step 2
    is recorded late; Lena's waits for 15:00."""
    ui.open(f"/assets/deliveries?view=partitions&partition={DAY}", "not_yet_due")
    assert ui.metadata("sent_by_this_run") == "2"
    assert ui.metadata("late") == "1"
    assert ui.metadata("sent_this_day") == "3"
    assert ui.metadata("not_yet_due") == "1"
    assert ui.metadata("failed") == "0" and ui.metadata("skipped") == "0"
    sent = ui.metadata("sent_this_day_list")
    assert all(e in sent for e in ("omar@example.com", "dev@example.com", "sarah@example.com"))
    assert "lena@example.com" not in sent
    ui.shot("deliveries-partition")


def check_delivery_schedule(ui: UI, stack: Stack) -> None:
    """Ops: when the daily send runs, for which job and timezone, and when it runs next."""
    ui.open("/locations/xmas_pipeline/schedules/delivery_schedule", "Execution timezone")
    hour = int(stack.cron.split()[1])
    assert f"({stack.cron})" in ui.row("Schedule")
    assert ui.row("Execution timezone").endswith("America/Toronto")
    assert "daily_delivery_job" in ui.row("Target")
    now = dt.datetime.now(TZ)
    nxt = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    if nxt <= now:
        nxt += dt.timedelta(days=1)
    expected = f"{nxt:%b} {nxt.day}, {nxt.hour % 12 or 12}:00:00 {'AM' if nxt.hour < 12 else 'PM'}"
    assert expected in ui.row("Next tick"), (expected, ui.row("Next tick"))
    ui.shot("delivery_schedule")


def check_campaign_funnel(ui: UI, stack: Stack) -> None:
    """Marketing: the whole campaign after the run. Four leads; sent: Sarah's email 1, the website's three
    (sent elsewhere), Omar's email 2 and Dev's email 3; Dev's email 2 recorded late; nothing skipped."""
    ui.open("/assets/campaign_funnel?view=events", "about_opens")
    assert ui.metadata("enrolled") == "4"
    assert ui.metadata("sent") == "6"
    assert ui.metadata("late") == "1"
    assert ui.metadata("skipped") == "0"
    assert "approximate" in ui.metadata("about_opens")
    ui.shot("campaign_funnel_totals")
    # The table opens in a dialog. Email 2 x URGENT: Omar's sent, Dev's late (enrolled, due, sent, delivered,
    # opened, clicked, skipped, late).
    ui.page.locator("tr").filter(has=ui.page.get_by_text("funnel", exact=True)).first.get_by_text("Show Markdown").click()
    dialog = ui.page.get_by_role("dialog")
    dialog.get_by_text("booked call").first.wait_for(timeout=PAGE_TIMEOUT_MS)
    table = " ".join(dialog.inner_text().split())
    assert "Christmas 2026 email 2 URGENT 2 2 1 0 0 0 0 1" in table, table
    ui.page.set_viewport_size({"width": 1400, "height": 1400})  # the dialog is taller than the window
    ui.shot("campaign_funnel")


PAGES = [check_emails_due_partition, check_deliveries_partition, check_delivery_schedule, check_campaign_funnel]


# --- the test ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc to check that every process stopped")
def test_the_dagster_ui_shows_the_days_numbers_in_a_real_browser(tmp_path: Path) -> None:
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    shots = tmp_path / "screenshots"
    shots.mkdir()
    started = time.time()
    stack = Stack(tmp_path / "home", tmp_path / "xmas-run.log")
    try:
        wait_for(lambda: stack.up(f"{stack.intake}/healthz"), 60, "the intake")
        for signup in SIGNUPS:  # the sensor picks them up as soon as Dagster is up
            assert httpx.post(f"{stack.intake}/webhook/christmas-signup", json=signup).status_code == 202
        wait_for(lambda: stack.up(f"{stack.dagster}/server_info"), 120, "dagster dev")
        wait_for(lambda: stack.sequences() == len(SIGNUPS) and stack.runs("enroll_signups_job")
                 and all(r["status"] == "SUCCESS" for r in stack.runs("enroll_signups_job")),
                 120, "the enrollment runs")
        assert len(list((stack.home / "outbox").glob("*-s1.eml"))) == 1  # Sarah's; the others' came from the website

        # Today's delivery, as the schedule's run would do it (the job runs its steps in the run's process).
        from dagster_graphql import DagsterGraphQLClient

        run_id = DagsterGraphQLClient("127.0.0.1", port_number=stack.dagster_port).submit_job_execution(
            "daily_delivery_job", repository_location_name="xmas_pipeline", repository_name="__repository__",
            tags={"dagster/partition": DAY}, run_config={})
        status = wait_for(lambda: next((r["status"] for r in stack.runs("daily_delivery_job") if r["runId"] == run_id
                                        and r["status"] in ("SUCCESS", "FAILURE", "CANCELED")), None),
                          120, "the delivery run")
        assert status == "SUCCESS"

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=PAGE_TIMEOUT_MS)
            try:
                context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US",
                                              timezone_id="America/Toronto")
                # The UI greets a first visit with a newsletter dialog; this browser has seen it.
                context.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")
                ui = UI(context.new_page(), stack.dagster, shots)
                for check in PAGES:
                    try:
                        check(ui, stack)
                    except Exception:
                        ui.shot(f"FAILED-{check.__name__}")  # what the page showed instead
                        raise
            finally:
                browser.close()
        print(f"browser checks done {time.time() - started:.0f} s after start")
    finally:
        stack.stop()
        if any(shots.glob("*.png")):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            for shot in shots.glob("*.png"):
                shutil.copy2(shot, ARTIFACTS / shot.name)
    assert len(list(shots.glob("*.png"))) == len(PAGES) + 1  # one per page checked, two of the funnel
