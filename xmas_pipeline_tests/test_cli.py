"""`xmas contact` answers "did Sarah get email 3?" with reasons, as ops would ask it."""

from __future__ import annotations

import datetime as dt

from xmas_pipeline.backends import delivery_context
from xmas_pipeline.cli import main as xmas
from xmas_pipeline.delivery import deliver
from xmas_pipeline.store import suppressions
from xmas_pipeline.store.db import engine_for
from xmas_pipeline_tests.test_delivery.helpers import enroll
from xmas_pipeline_tests.test_delivery.test_delivery import at, due_on


def run(capsys, monkeypatch, env, *args) -> tuple[int, str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = xmas(list(args))
    return code, capsys.readouterr().out


def test_contact_shows_consent_and_every_step_with_its_reason(settings, make_settings, env, capsys, monkeypatch):
    enroll(settings, "sarah@example.com", first_name="Sarah", red_systems=2)
    later = at(make_settings, settings.clock.now(), 2)
    ctx = delivery_context(later)
    deliver(ctx, due_on(ctx, 2))
    env["XMAS_NOW"] = (settings.clock.now() + dt.timedelta(days=2, hours=1)).isoformat()
    code, out = run(capsys, monkeypatch, env, "contact", "Sarah@Example.com")
    assert code == 0
    assert "consent   express for Christmas 2026" in out and "ip 203.0.113.9" in out
    assert "step 1  sent" in out and "via outbox id xmas-" in out
    assert "step 2  sent" in out
    assert "step 3  scheduled for 2026-11-08 10:00" in out

    suppressions.suppress(engine_for(settings.database_url), "sarah@example.com", "unsubscribed", "test", settings.clock.now())
    code, out = run(capsys, monkeypatch, env, "contact", "sarah@example.com")
    assert "SUPPRESSED (unsubscribed)" in out
    assert "step 3  will not be sent: sequence exited (unsubscribed)" in out


def test_unknown_contact_exits_1(env, capsys, monkeypatch, settings):
    code, out = run(capsys, monkeypatch, env, "contact", "nobody@example.com")
    assert code == 1 and "no contact or sequence" in out


def test_stop_ends_a_sequence_without_suppressing(settings, env, capsys, monkeypatch):
    enroll(settings, "phone@example.com")
    code, out = run(capsys, monkeypatch, env, "stop", "phone@example.com", "--reason", "booked by phone")
    assert code == 0 and "stopped 1 sequence" in out
    code, out = run(capsys, monkeypatch, env, "contact", "phone@example.com")
    assert "sequence  Christmas 2026: exited (booked by phone)" in out
    assert "SUPPRESSED" not in out


def test_bad_configuration_is_named(env, capsys, monkeypatch):
    env["XMAS_NOW"] = "2026-11-05 10:00"  # no offset
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert xmas(["events"]) == 2
    assert "XMAS_NOW" in capsys.readouterr().err


# --- `xmas stop` reaches the CRM the way an unsubscribe does ------------------------------------


def test_stop_reaches_the_local_crm(settings, env, capsys, monkeypatch):
    from xmas_pipeline.crm.local import LocalCRM
    from xmas_pipeline.store import mirror

    enroll(settings, "phone@example.com")
    code, out = run(capsys, monkeypatch, env, "stop", "phone@example.com", "--reason", "booked by phone")
    assert code == 0 and "the local CRM has it: sequence marked done, campaign status Stopped" in out
    engine = engine_for(settings.database_url)
    [contact] = LocalCRM(engine).contacts_changed_since(None)
    assert contact.campaign_status == "Stopped"
    assert mirror.exits_to_sync(engine) == []  # told now, not left for the next delivery run


def notion_env(env, emulator) -> dict:
    from xmas_pipeline_tests.fakes.notion_setup import xmas_databases

    return {**env, **xmas_databases(emulator)}


def notion_pages(emulator, settings, database: str) -> list[dict]:
    from xmas_pipeline.backends import make_crm
    from xmas_pipeline.campaign.loader import load_campaign
    from xmas_pipeline_tests.fakes.notion_setup import data_source

    crm = make_crm(settings, engine_for(settings.database_url), settings.journeys().home)
    return emulator.pages(data_source(emulator, crm.database_ids[database]))


def test_stop_reaches_notion_like_an_unsubscribe(make_settings, env, capsys, monkeypatch):
    from xmas_pipeline_tests.fakes.notion import NotionEmulator

    with NotionEmulator(retry_after=0) as emulator:
        env = notion_env(env, emulator)
        settings = make_settings(**env)
        enroll(settings, "phone@example.com", "quit@example.com")

        code, out = run(capsys, monkeypatch, env, "stop", "phone@example.com", "--reason", "booked by phone")
        assert code == 0 and "the notion CRM has it" in out
        code, out = run(capsys, monkeypatch, env, "stop", "quit@example.com", "--unsubscribe")
        assert code == 0 and "campaign status Unsubscribed" in out

        contacts = {p["properties"]["email"]["email"]: p["properties"] for p in notion_pages(emulator, settings, "contacts")}
        sequences = {p["properties"]["Email"]["email"]: p["properties"] for p in notion_pages(emulator, settings, "sequences")}
        assert contacts["phone@example.com"]["Christmas Campaign Status"]["select"]["name"] == "Stopped"
        assert contacts["quit@example.com"]["Christmas Campaign Status"]["select"]["name"] == "Unsubscribed"
        assert sequences["phone@example.com"]["Sequence Completed"]["checkbox"] is True
        assert sequences["quit@example.com"]["Sequence Completed"]["checkbox"] is True


def test_a_stop_while_notion_is_down_still_stops_and_says_what_the_crm_is_missing(make_settings, env, capsys, monkeypatch):
    from xmas_pipeline.store import mirror
    from xmas_pipeline_tests.fakes.notion import NotionEmulator

    with NotionEmulator(retry_after=0) as emulator:
        env = notion_env(env, emulator)
        settings = make_settings(**env)
        enroll(settings, "phone@example.com")
        emulator.fail_next(*[503] * 20)
        code, out = run(capsys, monkeypatch, env, "stop", "phone@example.com", "--reason", "booked by phone")
        assert code == 1
        assert "stopped 1 sequence(s) of phone@example.com" in out and "the notion CRM was not fully told" in out
        engine = engine_for(settings.database_url)
        [seq] = mirror.sequences_for_email(engine, "phone@example.com")
        assert seq["status"] == "exited"  # no email goes out, whatever the CRM said
        assert [e["email"] for e in mirror.exits_to_sync(engine)] == ["phone@example.com"]  # the next run retries


# --- a newcomer's first hour ----------------------------------------------------------------------


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    """`xmas events | head`: the reader is gone before xmas writes; no BrokenPipeError traceback."""
    import os
    import subprocess
    import sys

    from xmas_pipeline.settings import PROJECT_ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("XMAS_")}
    env.update({"XMAS_HOME": str(tmp_path / "home"), "XMAS_NOW": "2026-11-05T10:00:00-05:00"})
    # The parent closes its end of the pipe at once; xmas needs a second to import before it writes.
    proc = subprocess.Popen([sys.executable, "-m", "xmas_pipeline.cli", "events"], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(60) == 141, stderr
    assert stderr == ""


def test_the_readme_posts_the_same_signup_make_run_prints(settings):
    from xmas_pipeline.cli import run_banner
    from xmas_pipeline.settings import PROJECT_ROOT

    banner = run_banner(settings, "127.0.0.1", 8000, 3000)
    curl = [line.strip() for line in banner.splitlines() if line.strip().startswith(("curl ", "-d '"))]
    readme = [line.strip() for line in (PROJECT_ROOT / "README.md").read_text().splitlines()]
    assert len(curl) == 2
    assert any(readme[i:i + 2] == curl for i in range(len(readme))), "README's curl differs from `make run`'s"


def test_xmas_commands_find_a_running_demo(env, capsys, monkeypatch, tmp_path):
    import os
    import subprocess

    from xmas_pipeline import cli

    demo_home = tmp_path / "demo-home"
    marker = tmp_path / "demo.env"  # what `make demo` writes into .xmas-demo/
    monkeypatch.setattr(cli, "DEMO_ENV_FILE", marker)
    for key in ("XMAS_HOME", "XMAS_DATABASE_URL"):  # a newcomer's shell: nothing set
        env.pop(key)
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    marker.write_text(f"XMAS_HOME={demo_home}\nXMAS_DAY_SECONDS=60\nXMAS_DEMO_PID={os.getpid()}\n")
    assert cli.main(["events"]) == 0
    assert f"using the running demo's state in {demo_home}" in capsys.readouterr().err
    assert (demo_home / "xmas.db").exists()  # the demo's database, not .xmas/

    ended = subprocess.Popen(["true"])
    ended.wait()
    marker.write_text(f"XMAS_HOME={demo_home}\nXMAS_DEMO_PID={ended.pid}\n")
    assert cli.running_demo_env() == {}  # a demo that has stopped leaves its file, not its settings


def test_the_shipped_dagster_yaml_turns_off_the_pop_up_and_is_valid(tmp_path, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    from xmas_pipeline.cli import DAGSTER_YAML
    from xmas_pipeline.settings import PROJECT_ROOT

    (tmp_path / "embedded").mkdir()
    (tmp_path / "embedded" / "dagster.yaml").write_text(DAGSTER_YAML)
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "dagster.yaml").write_text((PROJECT_ROOT / "deploy" / "dagster.yaml").read_text())
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.setenv(name, "x")
    for folder in ("embedded", "deploy"):
        config, _ = dagster_instance_config(str(tmp_path / folder))
        assert config["nux"] == {"enabled": False} and config["telemetry"] == {"enabled": False}


def test_loading_the_definitions_prints_no_beta_warnings():
    import subprocess
    import sys

    from xmas_pipeline.settings import PROJECT_ROOT

    # A fresh interpreter, as a run worker or code server loads the code location, every warning shown.
    out = subprocess.run([sys.executable, "-W", "always", "-c", "import xmas_pipeline.definitions"],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "BetaWarning" not in out.stderr and "PreviewWarning" not in out.stderr
