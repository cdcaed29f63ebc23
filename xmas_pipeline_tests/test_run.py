"""`xmas run` (what `make run` calls): real intake and real `dagster dev`; a posted signup's email 1
reaches the outbox; SIGTERM stops every process it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from xmas_pipeline.settings import PROJECT_ROOT
from xmas_pipeline_tests.conftest import free_port


def processes_with(marker: str) -> list[int]:
    """PIDs whose environment names our XMAS_HOME: everything `xmas run` started, however deep."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc to find the processes")
def test_xmas_run_enrolls_a_signup_and_stops_everything_on_sigterm(tmp_path):
    home = tmp_path / "home"
    port, dagster_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("XMAS_")}
    env.update({"XMAS_HOME": str(home), "XMAS_SENSOR_INTERVAL": "2"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "xmas_pipeline.cli", "run", "--port", str(port), "--dagster-port", str(dagster_port)],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def up(url):
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(lambda: up(f"{base}/healthz"), 60, "the intake")
        answer = httpx.post(f"{base}/webhook/christmas-signup",
                            json={"email": "sarah@example.com", "first_name": "Sarah", "red_systems": 2})
        assert answer.status_code == 202
        posted = time.time()
        emails = wait_for(lambda: list((home / "outbox").glob("*-s1.eml")), 90, "email 1 in the outbox")
        print(f"email 1 in the outbox {time.time() - posted:.1f} s after the POST")
        assert len(emails) == 1 and "sarah@example.com" in emails[0].read_text()
        assert up(f"http://127.0.0.1:{dagster_port}/server_info")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0
    output = proc.stdout.read()
    assert "curl -sS -X POST" in output and "SupersessionWarning" not in output, output[-3000:]
    wait_for(lambda: processes_with(f"XMAS_HOME={home}") == [], 60, "every process `xmas run` started to stop")
