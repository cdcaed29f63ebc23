"""Email 1 latency under `make run`, with and without a 3-day backfill running (issue 7: p95 <= 30 s).

Starts the real stack (`xmas run`: uvicorn intake + `dagster dev` with its daemon) on a fresh home,
enrolls some leads so delivery runs have work, then measures the time from each signup's POST (202)
to its email 1 landing in the outbox:
  - baseline: 20 signups, one a second, nothing else running;
  - loaded:   the same while a 3-day backfill of daily_delivery_job (launched through GraphQL, run by
              the daemon) and the delivery schedule are running.
The whole path a lead waits on is timed: intake commit, sensor tick, queued run, run process start,
enrollment, outbox write. The last line is JSON.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SIGNUPS = 20
SEED = 60  # leads enrolled first, so the backfilled days and the schedule have mail to send
BACKFILL_DAYS = ["2026-11-28", "2026-11-29", "2026-11-30"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def launch_backfill(dagster: str) -> str:
    query = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
        __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
    params = {"selector": {"partitionSetName": "daily_delivery_job_partition_set",
                           "repositorySelector": {"repositoryName": "__repository__", "repositoryLocationName": "xmas_pipeline"}},
              "partitionNames": BACKFILL_DAYS}
    answer = httpx.post(f"{dagster}/graphql", json={"query": query, "variables": {"p": params}}, timeout=30).json()
    result = answer["data"]["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise SystemExit(f"backfill not launched: {result}")
    return result["backfillId"]


def backfill_status(dagster: str, backfill_id: str) -> str:
    query = "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }"
    answer = httpx.post(f"{dagster}/graphql", json={"query": query, "variables": {"id": backfill_id}}, timeout=30).json()
    return answer["data"]["partitionBackfillOrError"].get("status", "?")


def backfill_runs(dagster: str, backfill_id: str) -> list[dict]:
    query = """query($f: RunsFilter) { runsOrError(filter: $f) { ... on Runs { results { runId status } } } }"""
    answer = httpx.post(f"{dagster}/graphql", json={"query": query, "variables": {
        "f": {"tags": [{"key": "dagster/backfill", "value": backfill_id}]}}}, timeout=30).json()
    return answer["data"]["runsOrError"]["results"]


def measure(intake: str, outbox: Path, prefix: str) -> list[float]:
    """POST one signup a second; the seconds from each 202 to its email 1 in the outbox."""
    posted: dict[str, float] = {}
    for i in range(SIGNUPS):
        email = f"{prefix}{i}@example.com"
        answer = httpx.post(f"{intake}/webhook/christmas-signup", json={"email": email, "first_name": "Lee"}, timeout=30)
        assert answer.status_code == 202, answer.text
        posted[email] = time.time()
        time.sleep(1)
    landed: dict[str, float] = {}

    def all_landed() -> bool:
        for path in outbox.glob("*-s1.eml"):
            text = path.read_text(errors="replace")
            for email in posted:
                if email not in landed and f"To: {email}" in text:
                    landed[email] = path.stat().st_mtime
        return len(landed) == len(posted)

    wait_for(all_landed, 240, f"{prefix} email 1s")
    return [landed[e] - posted[e] for e in posted]


def summary(latencies: list[float]) -> dict:
    ordered = sorted(latencies)
    return {"p50_s": round(statistics.median(ordered), 1),
            "p95_s": round(ordered[max(0, int(round(0.95 * len(ordered))) - 1)], 1),
            "max_s": round(ordered[-1], 1)}


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="xmas-latency-"))
    port, dagster_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("XMAS_")}
    env.update({"XMAS_HOME": str(home)})
    proc = subprocess.Popen([sys.executable, "-m", "xmas_pipeline.cli", "run", "--port", str(port),
                             "--dagster-port", str(dagster_port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    intake, dagster = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{dagster_port}"
    try:
        wait_for(lambda: up(f"{intake}/healthz"), 90, "the intake")
        wait_for(lambda: up(f"{dagster}/server_info"), 120, "dagster")
        outbox = home / "outbox"
        for i in range(SEED):  # leads whose follow-ups give the delivery runs real work
            httpx.post(f"{intake}/webhook/christmas-signup", json={"email": f"seed{i}@example.com", "first_name": "Sam",
                       "email_1_sent_at": f"2026-11-2{5 + i % 3}T10:00:00Z"}, timeout=30)
        time.sleep(20)
        baseline = measure(intake, outbox, "calm")
        backfill = launch_backfill(dagster)
        started = time.time()
        # Measure while the backfill's runs are really there: wait for the daemon to launch the first.
        wait_for(lambda: backfill_runs(dagster, backfill), 120, "the backfill's first run")
        loaded = measure(intake, outbox, "busy")
        runs = backfill_runs(dagster, backfill)
        status = backfill_status(dagster, backfill)
        print(f"baseline (nothing else running): {summary(baseline)}")
        print(f"during a 3-day backfill ({backfill}: {len(runs)} runs launched by then, "
              f"{sorted(r['status'] for r in runs)}; backfill {status} {time.time() - started:.0f} s after launch): "
              f"{summary(loaded)}")
        print(json.dumps({"signups": SIGNUPS, **{f"baseline_{k}": v for k, v in summary(baseline).items()},
                          **summary(loaded), "backfill_runs": len(runs), "target_p95_s": 30}))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
