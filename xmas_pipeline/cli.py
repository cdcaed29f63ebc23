"""The `xmas` command: run the system, inspect and steer the campaign without reading code."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from xmas_pipeline.settings import PROJECT_ROOT, Settings, SettingsError, load_settings

DAGSTER_YAML = """\
# Written by `xmas run` for the embedded default (SQLite in this folder). Production: deploy/dagster.yaml.
telemetry:
  enabled: false
# One step at a time per pool: `notion` steps share Notion's ~3 requests/s, `mail` steps the provider's limit.
concurrency:
  pools:
    default_limit: 1
# Runs whose process died give their pool slots back instead of blocking the queue.
run_monitoring:
  enabled: true
  free_slots_after_run_end_seconds: 30
"""


def _print(text: str = "") -> None:
    print(text, flush=True)


# --- xmas run ------------------------------------------------------------------------------------


def _stop(procs: list[subprocess.Popen], grace: float = 20.0) -> None:
    """SIGINT each process group, then SIGTERM, then SIGKILL: dagster dev needs its own group to hear it."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        alive = [p for p in procs if p.poll() is None]
        if not alive:
            return
        for p in alive:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        while time.time() < deadline and any(p.poll() is None for p in alive):
            time.sleep(0.1)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    import sqlalchemy as sa

    from xmas_pipeline.settings import private_dir
    from xmas_pipeline.store.db import engine_for

    private_dir(settings.home)  # 0700: the database, the secret and the outbox hold personal data
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    dagster_yaml = settings.dagster_home / "dagster.yaml"
    if not dagster_yaml.exists():
        dagster_yaml.write_text(DAGSTER_YAML)
    settings.outbox_dir.mkdir(parents=True, exist_ok=True)
    engine_for(settings.database_url)  # create the tables before either process races to do it

    # The unsubscribe secret (generated once into its 0600 file) reaches Dagster as an environment
    # variable, so its resource holds an EnvVar: the UI and run config show the name, never the value.
    env = {
        **os.environ,
        "DAGSTER_HOME": str(settings.dagster_home),
        "XMAS_HOME": str(settings.home),
        "XMAS_UNSUBSCRIBE_SECRET": settings.unsubscribe_secret,
    }
    bin_dir = Path(sys.executable).parent
    intake = [sys.executable, "-m", "uvicorn", "--factory", "xmas_pipeline.web.app:create_app",
              "--host", args.host, "--port", str(args.port), "--log-level", "warning"]
    dagster = [str(bin_dir / "dagster"), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
               "-h", args.host, "-p", str(args.dagster_port)]
    procs = [
        subprocess.Popen(intake, cwd=PROJECT_ROOT, env=env, start_new_session=True),
        subprocess.Popen(dagster, cwd=PROJECT_ROOT, env=env, start_new_session=True),
    ]
    stopping = {"why": None}

    def on_signal(signum, _frame):
        stopping["why"] = signal.Signals(signum).name

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    base = f"http://{args.host}:{args.port}"
    database = sa.engine.make_url(settings.database_url).render_as_string(hide_password=True)
    _print(f"""
xmas_pipeline is starting ({settings.crm} CRM, {settings.mailer} mailer, database {database})
  intake   {base}   (API docs: {base}/docs, health: {base}/healthz)
  dagster  http://{args.host}:{args.dagster_port}   (ready in ~15 s; signup_sensor and delivery_schedule run by default)
  outbox   {settings.outbox_dir}

Post a signup:
  curl -sS -X POST {base}/webhook/christmas-signup -H 'Content-Type: application/json' \\
    -d '{{"email": "sarah@example.com", "first_name": "Sarah", "business_name": "Sarah\\u2019s Salon", "red_systems": 2, "orange_systems": 1, "assessment_score": 48}}'

Email 1 lands in the outbox within ~30 s. Ctrl-C stops everything.
""")
    parent = os.getppid()
    exit_code = 0
    try:
        while stopping["why"] is None:
            for p in procs:
                if p.poll() is not None:
                    _print(f"{' '.join(p.args[:3])} exited with {p.returncode}; stopping the rest")
                    stopping["why"], exit_code = "child exit", 1
            if os.getppid() != parent:  # `make` was killed: don't outlive it
                stopping["why"] = "parent exit"
            time.sleep(0.5)
    finally:
        _print(f"stopping ({stopping['why']}) ...")
        _stop(procs)
    return exit_code


# --- xmas events ---------------------------------------------------------------------------------


def cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    from xmas_pipeline.campaign.clock import wall_now
    from xmas_pipeline.store import inbound
    from xmas_pipeline.store.db import engine_for

    engine = engine_for(settings.database_url)
    if args.replay is not None:
        if inbound.replay(engine, args.replay, wall_now()):
            _print(f"event {args.replay} will be retried on the signup sensor's next tick")
            return 0
        _print(f"event {args.replay} is not dead or failed (see `xmas events --dead`); nothing changed")
        return 1
    if args.dead:
        rows = inbound.dead_events(engine)
        if not rows:
            _print("no dead events")
        for row in rows:
            _print(f"{row.id:>6}  {row.email:<40} attempts={row.attempts}  received {row.received_at:%Y-%m-%d %H:%M}Z")
            _print(f"        error: {row.last_error}")
        if rows:
            _print("\nFix the cause, then: xmas events --replay ID")
        return 0
    depth = inbound.depth(engine)
    _print("inbound events by status: " + (", ".join(f"{k}={v}" for k, v in sorted(depth.items())) or "none"))
    return 0


# --- xmas contact --------------------------------------------------------------------------------


def _fmt(ts: dt.datetime | None, tz) -> str:
    return ts.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z") if ts else "-"


def cmd_contact(args: argparse.Namespace, settings: Settings) -> int:
    from xmas_pipeline.campaign.loader import load_campaign
    from xmas_pipeline.campaign.timetable import due_at
    from xmas_pipeline.store import ledger, mirror, suppressions
    from xmas_pipeline.store.db import engine_for

    engine = engine_for(settings.database_url)
    campaign = load_campaign(settings.campaign_file)
    tz = campaign.tz
    email = args.email.strip().lower()
    contact = mirror.get_contact(engine, email)
    seqs = mirror.sequences_for_email(engine, email)
    if contact is None and not seqs:
        _print(f"no contact or sequence for {email}")
        return 1
    if contact:
        _print(f"contact   {contact.email}  {contact.first_name}  ({contact.business_name or 'no business name'})")
        _print(f"          segment {contact.segment}, booking {contact.booking_status}, campaign status {contact.campaign_status}, crm id {contact.crm_id}")
    supp = suppressions.suppressed(engine, [email])
    if supp:
        _print(f"SUPPRESSED ({supp[email]}): no email will be sent to this address")
    for c in suppressions.consent_for(engine, email):
        withdrawn = f", withdrawn {_fmt(c.withdrawn_at, tz)}" if c.withdrawn_at else ""
        _print(f"consent   {c.kind} for {c.campaign} at {_fmt(c.consented_at, tz)} via {c.source}; ip {c.client_ip or '-'}, agent {c.user_agent or '-'}{withdrawn}")
    rows = {(r.sequence_key, r.step): r for r in ledger.rows_for(engine, email=email)}
    now = settings.clock.now()
    for seq in seqs:
        exit = f" ({seq['exit_reason']})" if seq["exit_reason"] else ""
        _print(f"sequence  {seq['campaign']}: {seq['status']}{exit}, segment {seq['segment']}, anchored {_fmt(seq['signup_at'], tz)}")
        for step in campaign.steps:
            when = due_at(campaign, seq["signup_at"], step.number, settings.day_seconds)
            row = rows.get((seq["sequence_key"], step.number))
            if row is not None and row.status == "sent":
                event = f", {row.event}" if row.event else ""
                line = f"sent {_fmt(row.sent_at, tz)} via {row.provider} id {row.provider_id}{event}: {row.subject}"
            elif row is not None and row.status == "external":
                line = f"sent elsewhere {_fmt(row.sent_at, tz)} ({row.reason})"
            elif row is not None and row.status == "skipped":
                line = f"skipped: {row.reason}"
            elif row is not None and row.status == "failed":
                line = f"failed (will be retried): {row.reason}"
            elif row is not None and row.status == "claimed":
                line = f"sending since {_fmt(row.claimed_at, tz)} (resumed automatically if that run died)"
            elif seq["status"] != "active":
                line = f"will not be sent: sequence {seq['status']}{exit}"
            elif email in supp:
                line = f"will not be sent: suppressed ({supp[email]})"
            elif when >= campaign.end:
                line = "will not be sent: expired (due after the campaign end)"
            elif when <= now:
                line = f"due since {_fmt(when, tz)} (goes with the next delivery run)"
            else:
                line = f"scheduled for {_fmt(when, tz)}"
            _print(f"  step {step.number}  {line}")
    return 0


# --- xmas send-due, stop, unsubscribe -----------------------------------------------------------


def cmd_send_due(args: argparse.Namespace, settings: Settings) -> int:
    from xmas_pipeline.backends import delivery_context
    from xmas_pipeline.campaign.timetable import campaign_day, compute_emails_due
    from xmas_pipeline.delivery import deliver
    from xmas_pipeline.store import ledger, mirror
    from xmas_pipeline.store.ledger import Due

    ctx = delivery_context(settings, run_id="cli")
    day = dt.date.fromisoformat(args.day) if args.day else campaign_day(ctx.campaign, ctx.clock.now())
    due = compute_emails_due(
        ctx.campaign, mirror.sequences_frame(ctx.engine, ctx.campaign.name), ledger.finished_steps(ctx.engine),
        day, day_seconds=ctx.clock.day_seconds,
    )
    report = deliver(ctx, [Due(r.sequence_key, int(r.step), r.email, r.due_at.to_pydatetime()) for r in due.itertuples()])
    _print(f"{day}: {len(due)} due, {len(report.sent)} sent, {len(report.skipped)} skipped, "
           f"{len(report.failed)} failed, {len(report.in_doubt)} in doubt, {report.not_yet_due} not yet due")
    for f in report.failed:
        _print(f"  failed {f['email']} step {f['step']}: {f['error']}")
    if report.stopped:
        _print(f"stopped early: {report.stopped}")
        return 2
    return 1 if report.failed or report.in_doubt else 0


def cmd_stop(args: argparse.Namespace, settings: Settings) -> int:
    from xmas_pipeline.store import mirror, suppressions
    from xmas_pipeline.store.db import engine_for

    engine = engine_for(settings.database_url)
    email = args.email.strip().lower()
    if args.unsubscribe:
        suppressions.suppress(engine, email, "unsubscribed", "xmas stop --unsubscribe", settings.clock.now())
        _print(f"{email} is suppressed and every active sequence of theirs is stopped")
        return 0
    keys = [s["sequence_key"] for s in mirror.sequences_for_email(engine, email) if s["status"] == "active"]
    if not keys:
        _print(f"{email} has no active sequence; nothing changed")
        return 1
    mirror.set_status(engine, keys, "exited", args.reason, settings.clock.now())
    _print(f"stopped {len(keys)} sequence(s) of {email}: {args.reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xmas", description="Run and steer the holiday email campaign.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start intake and Dagster on the embedded default (Ctrl-C stops both)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--dagster-port", type=int, default=3000)
    run.set_defaults(func=cmd_run)

    events = sub.add_parser("events", help="the inbound signup queue: counts, dead events, replay")
    events.add_argument("--dead", action="store_true", help="list events that failed every attempt, with their error")
    events.add_argument("--replay", type=int, metavar="ID", help="give a dead event a fresh set of attempts")
    events.set_defaults(func=cmd_events)

    contact = sub.add_parser("contact", help="consent, sequence and each step's status for one address")
    contact.add_argument("email")
    contact.set_defaults(func=cmd_contact)

    send = sub.add_parser("send-due", help="send what is due on a campaign day now, without Dagster")
    send.add_argument("--day", help="YYYY-MM-DD in the campaign timezone (default: today)")
    send.set_defaults(func=cmd_send_due)

    stop = sub.add_parser("stop", help="stop a contact's sequences (e.g. they booked by phone)")
    stop.add_argument("email")
    stop.add_argument("--reason", default="stopped by ops")
    stop.add_argument("--unsubscribe", action="store_true", help="also suppress the address for good")
    stop.set_defaults(func=cmd_stop)

    _add_notion_commands(sub)
    return parser


def _add_notion_commands(sub) -> None:
    try:
        from xmas_pipeline.crm.notion_admin import add_notion_commands
    except ImportError:
        return
    add_notion_commands(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        return args.func(args, settings)
    except SettingsError as exc:
        print(f"xmas: configuration problem: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
