"""Assets: the CRM mirror, the templates, and each campaign day's due emails and deliveries.

Sending follows time, not the calendar page. ``emails_due(day)`` records what a day owes and
``deliveries(day)`` what went out that day; but the run for *today* (what the schedule asks for) also
carries over every step from earlier days that is still owed, so a step due at 23:50 goes at the
00:00 tick even though that tick belongs to the next day. A run for a past day (a backfill) sends what
that day still owes; steps later than the journey's ``max_lateness`` go only with ``send_late: true``.
"""

import datetime as dt

import dagster as dg
import pandas as pd

from xmas_pipeline.campaign.journey import ExitReason, Journeys
from xmas_pipeline.campaign.rendering import check_template
from xmas_pipeline.campaign.timetable import local_time
from xmas_pipeline.crm.base import CRMSchemaError
from xmas_pipeline.delivery import DeliveryReport, deliver
from xmas_pipeline.due_report import PREVIEW_COLUMNS, PREVIEW_ROWS, due_report, window
from xmas_pipeline.orchestration.jobs import NOTION_POOL
from xmas_pipeline.orchestration.partitions import daily_partitions
from xmas_pipeline.orchestration.resources import XmasResource
from xmas_pipeline.orchestration.ticks import ticks_before
from xmas_pipeline.settings import Settings
from xmas_pipeline.store import funnel as funnel_store
from xmas_pipeline.store import ledger, mirror
from xmas_pipeline.store.schema import contacts as contacts_table
from xmas_pipeline.store.schema import sequences as sequences_table
from xmas_pipeline.sync import SyncReport, sync_contacts, sync_sequences

GROUP = "campaign"


class MirrorConfig(dg.Config):
    full_resync: bool = False  # re-read every row instead of what changed since the last sync


class DeliveriesConfig(dg.Config):
    send_late: bool = False  # also send steps later than the campaign's late_send.max_lateness (backfills)


def _table(rows: list[dict], columns: list[str]) -> dg.MetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: ("" if r.get(c) is None else str(r.get(c))) for c in columns}) for r in rows[:PREVIEW_ROWS]],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns]),
    )


def _counts_md(pairs: list[tuple], headers: list[str]) -> dg.MetadataValue:
    if not pairs:
        return dg.MetadataValue.md("_none_")
    return dg.MetadataValue.md(pd.DataFrame(pairs, columns=headers).to_markdown(index=False))


def _store_kind(settings: Settings) -> str:
    return "postgres" if settings.database_url.startswith("postgres") else "sqlite"


def build_assets(journeys: Journeys, settings: Settings) -> list:
    partitions = daily_partitions(journeys)
    notion = settings.crm == "notion"
    store = _store_kind(settings)
    mirror_kinds = {"notion", store} if notion else {store}
    mirror_pool = NOTION_POOL if notion else None

    @dg.asset(group_name=GROUP, kinds=mirror_kinds, pool=mirror_pool)
    def contacts(context: dg.AssetExecutionContext, config: MirrorConfig, xmas: XmasResource) -> dg.MaterializeResult:
        """Contacts mirrored from the CRM into the local database (counts by segment and booking status)."""
        ctx = xmas.delivery(run_id=context.run_id)
        report = sync_contacts(ctx.engine, ctx.crm, ctx.clock.now(), full=config.full_resync)
        return dg.MaterializeResult(
            metadata={
                "fetched_from_crm": report.fetched,
                "by_segment": _counts_md(mirror.counts_by(ctx.engine, contacts_table, "segment"), ["segment", "contacts"]),
                "by_booking_status": _counts_md(
                    mirror.counts_by(ctx.engine, contacts_table, "booking_status"), ["booking status", "contacts"]
                ),
            }
        )

    @dg.asset(
        group_name=GROUP,
        deps=[contacts],
        kinds=mirror_kinds,
        pool=mirror_pool,
        check_specs=[dg.AssetCheckSpec("crm_agrees_with_ledger", asset="sequences",
                                       description="No step the CRM shows as sent while our own send of it is in flight.")],
    )
    def sequences(context: dg.AssetExecutionContext, config: MirrorConfig, xmas: XmasResource) -> dg.MaterializeResult:
        """Email sequences mirrored from the CRM (counts by segment and status; steps sent elsewhere are recorded)."""
        ctx = xmas.delivery(run_id=context.run_id)
        report = SyncReport()
        for journey in ctx.journeys:
            one = sync_sequences(ctx.engine, ctx.crm, journey, ctx.clock.now(), full=config.full_resync)
            report.fetched += one.fetched
            report.disagreements.extend(one.disagreements)
        for problem in report.disagreements:
            context.log.warning(problem)
        return dg.MaterializeResult(
            metadata={
                "fetched_from_crm": report.fetched,
                "disagreements": len(report.disagreements),
                "by_journey_segment_and_status": _counts_md(
                    mirror.counts_by(ctx.engine, sequences_table, "campaign", "segment", "status"),
                    ["journey", "segment", "status", "sequences"],
                ),
            },
            # A disagreement is reported, never "fixed" by sending again.
            check_results=[
                dg.AssetCheckResult(
                    check_name="crm_agrees_with_ledger",
                    passed=not report.disagreements,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={"disagreements": dg.MetadataValue.md("\n".join(f"- {d}" for d in report.disagreements) or "none")},
                )
            ],
        )

    @dg.asset(
        group_name=GROUP,
        kinds={"jinja"},
        check_specs=[dg.AssetCheckSpec("templates_contract", asset="templates", blocking=True,
                                       description="Every step's template exists, is not empty and uses only provided variables.")],
    )
    def templates(xmas: XmasResource) -> dg.MaterializeResult:
        """The email templates each step sends, checked against the variable contract before anything is sent."""
        ctx = xmas.delivery()
        problems, rows = [], []
        for journey in ctx.journeys:
            for step in journey.steps:
                found = ctx.templates.get(step.template)
                step_problems = check_template(found, step.template)
                problems.extend(f"{journey.name} step {step.number}: {p}" for p in step_problems)
                rows.append({"journey": journey.name, "step": step.number, "template": step.template,
                             "subject": found.subject if found else "",
                             "status": "ok" if not step_problems else "; ".join(step_problems)})
        return dg.MaterializeResult(
            metadata={"templates": _table(rows, ["journey", "step", "template", "subject", "status"]),
                      "problems": len(problems)},
            check_results=[
                dg.AssetCheckResult(
                    check_name="templates_contract",
                    passed=not problems,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none")},
                )
            ],
        )

    @dg.asset(group_name=GROUP, partitions_def=partitions, deps=[sequences], kinds={"pandas", store})
    def emails_due(context: dg.AssetExecutionContext, xmas: XmasResource) -> dg.MaterializeResult:
        """What this campaign day owes: its steps not yet sent (today's run also lists earlier days' leftovers)."""
        ctx = xmas.delivery(run_id=context.run_id)
        report = due_report(ctx.engine, ctx.journeys, dt.date.fromisoformat(context.partition_key), ctx.clock.now(),
                            day_seconds=ctx.clock.day_seconds)
        return dg.MaterializeResult(
            metadata={
                "due": report.due,
                "carried_over": report.carried_over,
                "sendable_now": report.sendable_now,
                "over_max_lateness": report.over_max_lateness,  # the next delivery run records these as late
                "recorded_late": report.recorded_late,
                "sequences_planned": report.sequences_planned,
                "by_journey_step_and_segment": _counts_md(report.by_journey_step_and_segment,
                                                          ["journey", "step", "segment", "emails"]),
                "preview": _table(report.preview, PREVIEW_COLUMNS),
            }
        )

    # templates is upstream so that its blocking templates_contract check, when it fails, stops the
    # sends in the same run (Dagster skips every step downstream of a failed blocking check).
    @dg.asset(
        group_name=GROUP,
        partitions_def=partitions,
        deps=[emails_due, templates],
        kinds={"email"},
        pool="mail",
        check_specs=[dg.AssetCheckSpec("all_due_emails_sent", asset="deliveries",
                                       description="Every email whose time came this run was sent, or skipped or recorded late with a reason.")],
    )
    def deliveries(
        context: dg.AssetExecutionContext, config: DeliveriesConfig, xmas: XmasResource
    ) -> dg.MaterializeResult:
        """Sends every step whose time has come (today's run: from any day), once each, and records what went out this day."""
        ctx = xmas.delivery(run_id=context.run_id)
        problems = ctx.crm.check_schema()
        if problems:
            raise CRMSchemaError(problems)
        now = ctx.clock.now()
        day = dt.date.fromisoformat(context.partition_key)
        start, end, live = window(ctx.campaign, day, now)
        due = ledger.owed(ctx.engine, ctx.journeys.names, start, end, carry_over=live)
        report = deliver(ctx, ledger.dues(due), send_late=config.send_late)
        for error in report.crm_errors:
            context.log.warning(error)
        metadata = _delivery_metadata(ctx, report, start, end)
        if report.stopped and report.configuration_error:
            raise dg.Failure(
                description=f"Stopped sending, nothing was lost: fix the mail setup, then the next run retries. {report.stopped}",
                metadata=metadata,
            )
        if report.stopped:
            context.log.warning(f"stopped early: {report.stopped}")
        trouble = report.failed + report.in_doubt + report.held
        return dg.MaterializeResult(
            metadata=metadata,
            check_results=[
                dg.AssetCheckResult(
                    check_name="all_due_emails_sent",
                    passed=not trouble and not report.lost,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={
                        "failed": len(report.failed),
                        "in_doubt": len(report.in_doubt),
                        "held": len(report.held),
                        "lost_claims": len(report.lost),
                        "what_to_do": "Failed steps are retried by the next run once the cause (see not_sent) is fixed; "
                        "in-doubt sends resume by themselves after the claim lease; held ones need a person: check "
                        "the provider's log, then `xmas retry --held`.",
                    },
                )
            ],
        )

    return [contacts, sequences, templates, emails_due, deliveries]


def build_funnel(deliveries_asset, settings: Settings) -> dg.AssetsDefinition:
    """The campaign funnel, refreshed by the delivery job after ``deliveries`` (unpartitioned: the whole campaign)."""

    @dg.asset(group_name=GROUP, deps=[deliveries_asset], kinds={_store_kind(settings)})
    def campaign_funnel(xmas: XmasResource) -> dg.MaterializeResult:
        """Per journey, step and segment: enrolled, due, sent, opened, clicked, skipped (why), late, failed, stopped, booked."""
        settings = xmas.settings()
        journeys = settings.journeys()
        funnel = funnel_store.compute(
            xmas.engine(), journeys.names, settings.clock.now(),
            booking_goal=[j.name for j in journeys if ExitReason.BOOKED_CALL in j.exits],
        )
        return dg.MaterializeResult(
            metadata={
                **funnel.totals(),  # plain ints: Dagster plots each over the materializations
                "funnel": dg.MetadataValue.md(funnel_store.markdown(funnel)),
                "skipped_by_reason": dg.MetadataValue.md(funnel_store.skipped_markdown(funnel)),
                "about_opens": funnel_store.OPENS_NOTE,
            }
        )

    return campaign_funnel


def _delivery_metadata(ctx, report: DeliveryReport, start: dt.datetime, end: dt.datetime) -> dict:
    """What this run did, and what the ledger says went out this day (email 1 and CLI sends included)."""
    campaign = ctx.campaign
    went_out = ledger.sent_between(ctx.engine, ctx.journeys.names, start, end)
    not_sent = ledger.not_sent_between(ctx.engine, ctx.journeys.names, start, end)
    by_step = pd.Series([(r.campaign, r.step) for r in went_out], dtype="object").value_counts().sort_index()
    return {
        "sent_this_day": len(went_out),
        "sent_by_this_run": len(report.sent),
        "skipped": len(report.skipped),
        "late": len(report.late),
        "failed": len(report.failed),
        "in_doubt": len(report.in_doubt),
        "held": len(report.held),
        "resumed": report.resumed,
        "already_sent_or_in_progress": report.already_done,
        "not_yet_due": report.not_yet_due,
        "sent_this_day_by_journey_and_step": _counts_md([(j, n, count) for (j, n), count in by_step.items()],
                                                         ["journey", "step", "emails"]),
        "sent_this_day_list": _table(
            [{"email": r.email, "journey": r.campaign, "step": r.step, "subject": r.subject,
              "sent_at": local_time(campaign, r.sent_at),
              "by": "enrollment or CLI" if (r.run_id or "cli").startswith("cli") else r.run_id[:8],
              **_lineage(r)} for r in went_out],
            ["email", "journey", "step", "subject", "sent_at", "by", "event_id", "template", "run_id", "provider_id"],
        ),
        "not_sent": _table(
            [{"email": r.email, "journey": r.campaign, "step": r.step, "status": r.status, "reason": r.reason,
              "due_at": local_time(campaign, r.due_at)} for r in not_sent],
            ["email", "journey", "step", "status", "due_at", "reason"],
        ),
    }


def _lineage(row) -> dict:
    """Where a sent message came from: the inbound event, the template version, the run, the provider's id."""
    return {
        "event_id": row.event_id,
        "template": f"{row.template}@{row.template_hash}" if row.template_hash else row.template,
        "run_id": row.run_id,
        "provider_id": row.provider_id,
    }


def build_overdue_check(deliveries_asset, cron: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=deliveries_asset,
        name="no_overdue_steps",
        description="No step has been due for longer than two schedule ticks without being sent, skipped "
        "with a reason or recorded late.",
    )
    def no_overdue_steps(xmas: XmasResource) -> dg.AssetCheckResult:
        """Fails the moment a step that should have gone is still owed two ticks after its time."""
        ctx = xmas.delivery()
        campaign = ctx.campaign
        now = ctx.clock.now()
        two_ticks_ago = ticks_before(cron, campaign.timezone, now, 2)[-1]
        count, rows = ledger.overdue(ctx.engine, ctx.journeys.names, two_ticks_ago)
        unplanned = sum(len(ledger.unplanned(ctx.engine, j.name, limit=100)) for j in ctx.journeys)
        listing = "\n".join(
            f"- {r.email} {r.campaign} step {r.step}: due {local_time(campaign, r.due_at)}, {r.status}"
            + (f" ({r.reason})" if r.reason else "") for r in rows
        )
        return dg.AssetCheckResult(
            passed=count == 0 and unplanned == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "overdue_steps": count,
                "unplanned_sequences": unplanned,
                "threshold": local_time(campaign, two_ticks_ago),
                "overdue": dg.MetadataValue.md(listing or "none"),
                "what_to_do": "A step still owed two ticks after its time was missed by the schedule or keeps failing: "
                "read its reason above and the last delivery run's log; fix the cause and the next tick sends it "
                "(or `xmas send-due`). Steps over max_lateness are recorded late instead.",
            },
        )

    return no_overdue_steps
