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
# No newsletter/community pop-up on the first UI visit.
nux:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 10
    # Delivery runs (the schedule's and backfills') take at most 4 run slots, so an enrollment run
    # (email 1) always finds one; enrollment runs also carry dagster/priority and jump the queue.
    tag_concurrency_limits:
      - key: xmas/kind
        value: delivery
        limit: 4
  # One step at a time per pool: `notion` steps (only with XMAS_CRM=notion) share Notion's ~3 requests/s,
  # `mail` steps the provider's limit.
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


# The README shows this same signup; a test keeps the two identical.
SIGNUP_CURL = """\
curl -sS -X POST {base}/webhook/christmas-signup -H 'Content-Type: application/json' \\
  -d '{{"email": "sarah@example.com", "first_name": "Sarah", "business_name": "Harbour Salon", "assessment_score": 48, "red_systems": 2, "orange_systems": 3, "yellow_systems": 2, "green_systems": 1, "weakest_system_1": "CREW", "weakest_system_2": "ENGINE"}}'"""


def run_banner(settings: Settings, host: str, port: int, dagster_port: int) -> str:
    """What `xmas run` prints once it has started: where things are and how to post a signup."""
    import sqlalchemy as sa

    base = f"http://{host}:{port}"
    curl = SIGNUP_CURL.format(base=base).replace("\n", "\n  ")
    database = sa.engine.make_url(settings.database_url).render_as_string(hide_password=True)
    use_home = ""
    if settings.home != PROJECT_ROOT / ".xmas":  # `xmas contact` & co. must read this state, not .xmas/
        exports = f"XMAS_HOME={settings.home}" + (f" XMAS_DAY_SECONDS={settings.day_seconds}" if settings.day_seconds != 86400 else "")
        found = " (`make demo`'s are found without it while it runs)" if settings.home == DEMO_HOME else ""
        use_home = f"\nFor `xmas` commands in another terminal: export {exports}{found}"
    return f"""
xmas_pipeline is starting ({settings.crm} CRM, {settings.mailer} mailer, database {database})
  intake   {base}   (API docs: {base}/docs, health: {base}/healthz)
  dagster  http://{host}:{dagster_port}   (ready in ~15 s; signup_sensor and delivery_schedule run by default)
  outbox   {settings.outbox_dir}

Post a signup:
  {curl}

Email 1 lands in the outbox within ~30 s. Ctrl-C stops everything.{use_home}
"""


SUPERSEDED_DEV = "ignore:Function `dev_command` is superseded"


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
        # `dagster dev` warns on every start that `dg dev` supersedes it; we run plain dagster on purpose.
        # Matched by message, so no module is imported to read the filter; the user's own filters stay.
        "PYTHONWARNINGS": ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), SUPERSEDED_DEV])),
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

    _print(run_banner(settings, args.host, args.port, args.dagster_port))
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


def step_state(row, seq, *, suppressed: str | None, now: dt.datetime, campaign, tz) -> str:
    """What has happened, or will actually happen, to one step: the words `xmas contact` prints."""
    from xmas_pipeline.campaign.durations import describe
    from xmas_pipeline.campaign.timetable import campaign_day

    if row is None:
        return "not planned yet: the next delivery run plans it"
    day = campaign_day(campaign, row.due_at) if row.due_at else None
    if row.status == "sent":
        event = f", {row.event}" if row.event else ""
        return f"sent {_fmt(row.sent_at, tz)} via {row.provider} id {row.provider_id}{event}: {row.subject}"
    if row.status == "external":
        return f"sent elsewhere {_fmt(row.sent_at, tz)} ({row.reason})"
    if row.status == "skipped":
        return f"skipped: {row.reason}"
    if row.status == "late":
        return f"not sent, late: {row.reason}. To send it: backfill {day} with send_late: true (or `xmas send-due --day {day} --send-late`)"
    if row.status == "expired":
        return f"will not be sent: {row.reason}"
    if row.status == "held":
        return f"held for a person: {row.reason}"
    if row.status == "claimed":
        return f"being sent since {_fmt(row.claimed_at, tz)} (resumed automatically if that run died)"
    exit = f" ({seq['exit_reason']})" if seq["exit_reason"] else ""
    if seq["status"] not in ("active",):
        return f"will not be sent: sequence {seq['status']}{exit}; recorded as skipped when it falls due"
    if suppressed:
        return f"will not be sent: suppressed ({suppressed}); recorded as skipped when it falls due"
    failed = f"failed last time ({row.reason}); " if row.status == "failed" else ""
    if row.due_at > now:
        return f"{failed}scheduled for {_fmt(row.due_at, tz)}"
    late_by = now - row.due_at
    max_late = campaign.late_send.max_lateness
    if late_by > max_late and not row.late_ok:
        return (f"{failed}due since {_fmt(row.due_at, tz)}, {describe(late_by)} ago, over max_lateness {describe(max_late)}: "
                f"the next delivery tick records it late instead of sending it; backfill {day} with send_late: true to send it")
    return f"{failed}due since {_fmt(row.due_at, tz)}: goes with the next delivery tick"


def lineage(row, events: list, tz) -> str | None:
    """Where a message came from (event, template version, run, provider id) and what the provider said since."""
    if row is None or (row.status != "sent" and not row.message):  # never rendered: nothing to trace
        return None
    template = f"{row.template}@{row.template_hash}" if row.template_hash else (row.template or "-")
    seen = ", ".join(f"{e.kind} {_fmt(e.occurred_at, tz)}" for e in events)
    return (f"event {row.event_id if row.event_id is not None else '-'}, template {template}, run {row.run_id or '-'}, "
            f"provider id {row.provider_id or '-'}" + (f"; provider events: {seen}" if seen else ""))


def cmd_contact(args: argparse.Namespace, settings: Settings) -> int:
    from xmas_pipeline.store import engagement, ledger, mirror, suppressions
    from xmas_pipeline.store.db import engine_for

    engine = engine_for(settings.database_url)
    journeys = settings.journeys()
    tz = journeys.home.tz
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
    withdrawn = {c.campaign: c.withdrawn_at for c in suppressions.consent_for(engine, email) if c.withdrawn_at}
    for c in suppressions.consent_history(engine, email):
        note = f", withdrawn {_fmt(withdrawn[c.campaign], tz)}" if c.campaign in withdrawn else ""
        _print(f"consent   {c.kind} for {c.campaign} at {_fmt(c.consented_at, tz)} via {c.source}; ip {c.client_ip or '-'}, agent {c.user_agent or '-'}{note}")
    rows = {(r.sequence_key, r.step): r for r in ledger.rows_for(engine, email=email)}
    events: dict[int, list] = {}
    for e in engagement.events_for(engine, [r.id for r in rows.values()]):
        events.setdefault(e.delivery_id, []).append(e)
    now = settings.clock.now()
    for seq in seqs:
        exit = f" ({seq['exit_reason']})" if seq["exit_reason"] else ""
        journey = journeys.by_name.get(seq["campaign"])
        call = f", call {_fmt(seq['event_at'], tz)}" if seq["event_at"] else ""
        _print(f"sequence  {seq['campaign']}: {seq['status']}{exit}, segment {seq['segment'] or '-'}, "
               f"started {_fmt(seq['signup_at'], tz)}{call}")
        if journey is None:
            _print(f"  (no journey file named {seq['campaign']!r} is loaded; its steps are not shown)")
            continue
        for step in journey.steps:
            row = rows.get((seq["sequence_key"], step.number))
            state = step_state(row, seq, suppressed=supp.get(email), now=now, campaign=journey, tz=tz)
            _print(f"  step {step.number}  {state}")
            if (origin := lineage(row, events.get(row.id, []) if row is not None else [], tz)) is not None:
                _print(f"          lineage: {origin}")
    return 0


# --- xmas send-due, retry, stop, unsubscribe ------------------------------------------------------


def cli_run_id() -> str:
    """A run id of its own per command: two `xmas` commands at once each write back only their own sends."""
    return f"cli-{os.urandom(4).hex()}"


def cmd_send_due(args: argparse.Namespace, settings: Settings) -> int:
    from xmas_pipeline.backends import delivery_context
    from xmas_pipeline.campaign.timetable import campaign_day, day_bounds
    from xmas_pipeline.delivery import deliver
    from xmas_pipeline.planning import plan_unplanned
    from xmas_pipeline.store import ledger

    ctx = delivery_context(settings, run_id=cli_run_id())
    now = ctx.clock.now()
    today = campaign_day(ctx.campaign, now)
    try:
        day = dt.date.fromisoformat(args.day) if args.day else today
    except ValueError:
        _print(f"--day {args.day!r} is not a date; write YYYY-MM-DD")
        return 2
    plan_unplanned(ctx.engine, ctx.journeys, day_seconds=ctx.clock.day_seconds, now=now)
    start, end = day_bounds(ctx.campaign, day)
    due = ledger.owed(ctx.engine, ctx.journeys.names, start, end, carry_over=day >= today)
    report = deliver(ctx, ledger.dues(due), send_late=args.send_late)
    _print(f"{day}: {len(due)} owed, {len(report.sent)} sent, {len(report.skipped)} skipped, {len(report.late)} late, "
           f"{len(report.failed)} failed, {len(report.in_doubt)} in doubt, {report.not_yet_due} not yet due")
    for f in report.failed:
        _print(f"  failed {f['email']} step {f['step']}: {f['error']}")
    if report.late:
        _print(f"  {len(report.late)} step(s) over max_lateness recorded late; send them with --send-late")
    if report.stopped:
        _print(f"stopped early: {report.stopped}")
        return 2
    return 1 if report.failed or report.in_doubt else 0


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    from xmas_pipeline.campaign.timetable import day_bounds
    from xmas_pipeline.store import ledger
    from xmas_pipeline.store.db import engine_for

    statuses = [s for s, wanted in (("skipped", args.skipped), ("held", args.held)) if wanted]
    if not statuses:
        _print("say what to put back: --skipped and/or --held (see `xmas retry --help`)")
        return 2
    campaign = settings.journeys().home
    start = end = None
    if args.day:
        try:
            start, end = day_bounds(campaign, dt.date.fromisoformat(args.day))
        except ValueError:
            _print(f"--day {args.day!r} is not a date; write YYYY-MM-DD")
            return 2
    rows = ledger.put_back(engine_for(settings.database_url), statuses, reason_contains=args.reason, due_from=start, due_to=end)
    for r in rows[:50]:
        _print(f"  {r.email} step {r.step} ({r.status}: {r.reason})")
    if len(rows) > 50:
        _print(f"  ... and {len(rows) - 50} more")
    _print(f"{len(rows)} step(s) put back; the next delivery tick sends them (or run `xmas send-due`)")
    return 0


# --- xmas preview, test-send -----------------------------------------------------------------------


def _journey_and_profile(args: argparse.Namespace, settings: Settings, ctx):
    """The journey named on the command line, and whose data to render: a real lead's, or a sample's."""
    from xmas_pipeline.campaign.segments import classify
    from xmas_pipeline.campaign.tokens import sequence_key
    from xmas_pipeline.campaign.variables import SAMPLE_SIGNUPS
    from xmas_pipeline.delivery import profile_of
    from xmas_pipeline.store import mirror

    wanted = args.journey.strip().lower()
    journey = next((j for j in ctx.journeys if wanted in (j.name.lower(), j.slug)), None)
    if journey is None:
        names = ", ".join(f"{j.slug} ({j.name})" for j in ctx.journeys)
        raise UsageError(f"no journey {args.journey!r}; the journeys are: {names}")
    if not 1 <= args.step <= len(journey.steps):
        raise UsageError(f"{journey.name} has steps 1 to {len(journey.steps)}; got {args.step}")
    if getattr(args, "email", None):
        email = args.email.strip().lower()
        seq = mirror.get_sequence(ctx.engine, sequence_key(email, journey.name))
        if seq is not None:
            return journey, email, profile_of(seq), seq["segment"], seq["event_at"], seq["timezone"]
        contact = mirror.get_contact(ctx.engine, email)
        if contact is None:
            raise UsageError(f"no contact {email}; try --segment CRITICAL|URGENT|OPTIMIZE for a sample lead")
        profile = {"email": email, "first_name": contact.first_name, "business_name": contact.business_name,
                   "assessment_score": contact.assessment_score}
        return journey, email, profile, contact.segment, contact.call_date, None
    segment = (getattr(args, "segment", None) or "CRITICAL").upper()
    samples = {classify(p.get("red_systems"), p.get("orange_systems")).value: p
               for label, p in SAMPLE_SIGNUPS.items() if label.startswith("full signup")}
    if segment not in samples:
        raise UsageError(f"--segment must be one of {', '.join(samples)}")
    sample = dict(samples[segment])
    call = ctx.clock.now() + dt.timedelta(days=3) if journey.has_reminders else None
    return journey, sample["email"], sample, segment, call, None


class UsageError(Exception):
    """What the person typed cannot work; the message says what would (exit code 2)."""


def _fail(message: str) -> int:
    print(f"xmas: {message}", file=sys.stderr)
    return 2


def cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    from xmas_pipeline.backends import delivery_context
    from xmas_pipeline.campaign.rendering import TemplateError
    from xmas_pipeline.campaign.tokens import sequence_key
    from xmas_pipeline.delivery import message_for

    ctx = delivery_context(settings, run_id="preview")
    journey, email, profile, segment, event_at, tz = _journey_and_profile(args, settings, ctx)
    try:
        message = message_for(ctx, journey, args.step, email=email, sequence_key=sequence_key(email, journey.name),
                              profile=profile, segment=segment, key=f"preview-{journey.slug}-s{args.step}",
                              event_at=event_at, timezone=tz)
    except TemplateError as exc:
        return _fail(f"the template cannot be rendered: {exc}")
    folder = settings.home / "previews"
    folder.mkdir(parents=True, exist_ok=True)
    who = args.email.strip().lower().replace("@", "_at_") if args.email else (args.segment or "CRITICAL").lower()
    stem = folder / f"{journey.slug}-step{args.step}-{who}"
    stem.with_suffix(".html").write_text(message.html, encoding="utf-8")
    stem.with_suffix(".txt").write_text(f"Subject: {message.subject}\n\n{message.text}", encoding="utf-8")
    _print(f"subject: {message.subject}")
    _print(f"html:    {stem.with_suffix('.html')}")
    _print(f"text:    {stem.with_suffix('.txt')}")
    return 0


def cmd_test_send(args: argparse.Namespace, settings: Settings) -> int:
    import uuid

    from xmas_pipeline.backends import delivery_context
    from xmas_pipeline.campaign.rendering import TemplateError
    from xmas_pipeline.campaign.tokens import sequence_key
    from xmas_pipeline.delivery import message_for
    from xmas_pipeline.mail.base import SendError

    ctx = delivery_context(settings, run_id="test-send")
    journey, _, profile, segment, event_at, tz = _journey_and_profile(args, settings, ctx)
    to = args.to.strip()
    try:
        # A key of its own: a test never collides with (or is deduplicated against) a real send.
        message = message_for(ctx, journey, args.step, email=to, sequence_key=sequence_key(to, journey.name),
                              profile=profile, segment=segment, key=f"test-{uuid.uuid4().hex}",
                              event_at=event_at, timezone=tz, subject_prefix="[TEST] ")
    except TemplateError as exc:
        return _fail(f"the template cannot be rendered: {exc}")
    try:
        (result,) = ctx.sender.send(message.key, [message])
    except SendError as exc:
        return _fail(f"{ctx.sender.name} did not take the test email: {exc}")
    if not result.ok:
        return _fail(f"{ctx.sender.name} refused the test email: {result.error}")
    _print(f"sent a test of {journey.name} step {args.step} to {to} via {ctx.sender.name} (id {result.provider_id}); "
           "no ledger row, no CRM write")
    return 0


# What a stop shows in the contact's campaign status (Notion "Christmas Campaign Status").
STOPPED_STATUS = "Stopped"


def cmd_stop(args: argparse.Namespace, settings: Settings) -> int:
    """Stop sends at once, then tell the CRM the way an unsubscribe does (sequence completed, contact status)."""
    from xmas_pipeline.backends import delivery_context
    from xmas_pipeline.delivery import sync_crm
    from xmas_pipeline.store import mirror, suppressions

    ctx = delivery_context(settings, run_id=cli_run_id())
    engine, now = ctx.engine, ctx.clock.now()
    email = args.email.strip().lower()
    # The local stop comes first and alone decides what is sent: it must not wait for the CRM.
    if args.unsubscribe:
        suppressions.suppress(engine, email, "unsubscribed", "xmas stop --unsubscribe", now)
        _print(f"{email} is suppressed and every active sequence of theirs is stopped")
    else:
        keys = [s["sequence_key"] for s in mirror.sequences_for_email(engine, email) if s["status"] == "active"]
        if not keys:
            _print(f"{email} has no active sequence; nothing changed")
            return 1
        mirror.set_status(engine, keys, "exited", args.reason, now)
        _print(f"stopped {len(keys)} sequence(s) of {email}: {args.reason}")

    # The same write-back an unsubscribe gets from the next delivery run, done now: the sequence row is
    # marked completed (and an unsubscribe's contact says Unsubscribed). If the CRM is down, that run retries.
    errors = sync_crm(ctx)
    contact = mirror.get_contact(engine, email)
    if not args.unsubscribe and not errors and contact is not None and contact.campaign_status != STOPPED_STATUS:
        try:
            contact = ctx.crm.save_contact(contact.model_copy(update={"campaign_status": STOPPED_STATUS}), maybe_exists=True)
            mirror.upsert_contacts(engine, [contact], now)
        except Exception as exc:  # the stop stands; say what the CRM is missing
            errors.append(f"the contact's campaign status could not be set to {STOPPED_STATUS}: {exc}")
    if errors:
        for error in errors:
            _print(f"the {ctx.crm.name} CRM was not fully told: {error}")
        _print("no email will be sent either way; the next delivery run retries the sequence write-back")
        return 1
    status = contact.campaign_status if contact is not None else "-"
    _print(f"the {ctx.crm.name} CRM has it: sequence marked done, campaign status {status}")
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
    send.add_argument("--day", help="YYYY-MM-DD in the campaign timezone (default: today, which also sends earlier days' leftovers)")
    send.add_argument("--send-late", action="store_true", help="also send steps later than the campaign's max_lateness")
    send.set_defaults(func=cmd_send_due)

    retry = sub.add_parser("retry", help="put skipped or held steps back so the next delivery tick sends them")
    retry.add_argument("--skipped", action="store_true", help="steps skipped (e.g. refused while the setup was wrong)")
    retry.add_argument("--held", action="store_true", help="steps held because the provider's answer was unclear")
    retry.add_argument("--reason", help="only steps whose reason contains this text (case-insensitive)")
    retry.add_argument("--day", help="only steps due on this campaign day (YYYY-MM-DD)")
    retry.set_defaults(func=cmd_retry)

    stop = sub.add_parser("stop", help="stop a contact's sequences (e.g. they booked by phone)")
    stop.add_argument("email")
    stop.add_argument("--reason", default="stopped by ops")
    stop.add_argument("--unsubscribe", action="store_true", help="also suppress the address for good")
    stop.set_defaults(func=cmd_stop)

    preview = sub.add_parser("preview", help="render one step of a journey to HTML and text files (prints the paths)")
    preview.add_argument("journey", help="journey name or slug, e.g. christmas-2026 or pre-call")
    preview.add_argument("step", type=int)
    who = preview.add_mutually_exclusive_group()
    who.add_argument("--email", help="render with this lead's own data")
    who.add_argument("--segment", help="render with a sample lead of this segment (default CRITICAL)")
    preview.set_defaults(func=cmd_preview)

    test_send = sub.add_parser("test-send", help="send one step through the configured mailer, marked [TEST]")
    test_send.add_argument("journey")
    test_send.add_argument("step", type=int)
    test_send.add_argument("--to", required=True, help="where the test goes (nothing is recorded for it)")
    who = test_send.add_mutually_exclusive_group()
    who.add_argument("--email", help="render with this lead's own data")
    who.add_argument("--segment", help="render with a sample lead of this segment (default CRITICAL)")
    test_send.set_defaults(func=cmd_test_send)

    _add_notion_commands(sub)
    return parser


def _add_notion_commands(sub) -> None:
    try:
        from xmas_pipeline.crm.notion_admin import add_notion_commands
    except ImportError:
        return
    add_notion_commands(sub)


# `make demo` runs with its own home and clock, and writes them here with its process id.
DEMO_HOME = PROJECT_ROOT / ".xmas-demo"
DEMO_ENV_FILE = DEMO_HOME / "demo.env"


def running_demo_env() -> dict[str, str]:
    """The settings of a `make demo` that is running now (from DEMO_ENV_FILE), else {}."""
    try:
        lines = DEMO_ENV_FILE.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    values = dict(line.split("=", 1) for line in lines if "=" in line)
    try:
        os.kill(int(values.pop("XMAS_DEMO_PID", "")), 0)
    except (ValueError, ProcessLookupError):
        return {}  # the demo has stopped: its file is left behind, its settings no longer apply
    except PermissionError:
        pass  # alive, but another user's process
    return {k: v for k, v in values.items() if k.startswith("XMAS_")}


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    environ = dict(os.environ)
    if args.command != "run" and not environ.get("XMAS_HOME", "").strip():
        # While `make demo` runs, `xmas contact` & co. look at the demo, not at an empty .xmas/.
        demo = running_demo_env()
        if demo:
            environ = {**demo, **environ}
            print(f"xmas: using the running demo's state in {environ['XMAS_HOME']} (set XMAS_HOME to choose)", file=sys.stderr)
    try:
        settings = load_settings(environ)
        return args.func(args, settings)
    except SettingsError as exc:
        print(f"xmas: configuration problem: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        return _fail(str(exc))


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`xmas contact … | head`): stop quietly, like any shell tool. Python flushes
        # stdout once more at exit, so point it at /dev/null first or that flush prints a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE: what a shell reports for a tool stopped by a closed pipe


if __name__ == "__main__":
    sys.exit(main())
