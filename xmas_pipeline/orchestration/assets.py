"""Assets: the CRM mirror, the templates, and each campaign day's due emails and deliveries."""


import datetime as dt

import dagster as dg
import pandas as pd

from xmas_pipeline.campaign.models import Campaign
from xmas_pipeline.campaign.rendering import check_template
from xmas_pipeline.campaign.timetable import compute_emails_due
from xmas_pipeline.crm.base import CRMSchemaError
from xmas_pipeline.delivery import deliver
from xmas_pipeline.orchestration.partitions import daily_partitions
from xmas_pipeline.orchestration.resources import XmasResource
from xmas_pipeline.store import ledger, mirror
from xmas_pipeline.store.ledger import Due
from xmas_pipeline.store.schema import contacts as contacts_table
from xmas_pipeline.store.schema import sequences as sequences_table
from xmas_pipeline.sync import sync_contacts, sync_sequences

GROUP = "campaign"
PREVIEW_ROWS = 50


class MirrorConfig(dg.Config):
    full_resync: bool = False  # re-read every row instead of what changed since the last sync


def _table(rows: list[dict], columns: list[str]) -> dg.MetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: ("" if r.get(c) is None else str(r.get(c))) for c in columns}) for r in rows[:PREVIEW_ROWS]],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns]),
    )


def _counts_md(pairs: list[tuple], headers: list[str]) -> dg.MetadataValue:
    if not pairs:
        return dg.MetadataValue.md("_none_")
    return dg.MetadataValue.md(pd.DataFrame(pairs, columns=headers).to_markdown(index=False))


def build_assets(campaign: Campaign) -> list:
    partitions = daily_partitions(campaign)

    @dg.asset(group_name=GROUP, kinds={"notion", "sqlite"}, pool="notion")
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
        kinds={"notion", "sqlite"},
        pool="notion",
        check_specs=[dg.AssetCheckSpec("crm_agrees_with_ledger", asset="sequences",
                                       description="No step the CRM shows as sent while our own send of it is in flight.")],
    )
    def sequences(context: dg.AssetExecutionContext, config: MirrorConfig, xmas: XmasResource) -> dg.MaterializeResult:
        """Email sequences mirrored from the CRM (counts by segment and status; steps sent elsewhere are recorded)."""
        ctx = xmas.delivery(run_id=context.run_id)
        report = sync_sequences(ctx.engine, ctx.crm, ctx.campaign, ctx.clock.now(), full=config.full_resync)
        for problem in report.disagreements:
            context.log.warning(problem)
        return dg.MaterializeResult(
            metadata={
                "fetched_from_crm": report.fetched,
                "disagreements": len(report.disagreements),
                "by_segment_and_status": _counts_md(
                    mirror.counts_by(ctx.engine, sequences_table, "segment", "status"), ["segment", "status", "sequences"]
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
        for step in ctx.campaign.steps:
            found = ctx.templates.get(step.template)
            step_problems = check_template(found, step.template)
            problems.extend(f"step {step.number}: {p}" for p in step_problems)
            rows.append({"step": step.number, "template": step.template, "subject": found.subject if found else "",
                         "status": "ok" if not step_problems else "; ".join(step_problems)})
        return dg.MaterializeResult(
            metadata={"templates": _table(rows, ["step", "template", "subject", "status"]), "problems": len(problems)},
            check_results=[
                dg.AssetCheckResult(
                    check_name="templates_contract",
                    passed=not problems,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none")},
                )
            ],
        )

    @dg.asset(group_name=GROUP, partitions_def=partitions, deps=[sequences], kinds={"pandas"})
    def emails_due(context: dg.AssetExecutionContext, xmas: XmasResource) -> pd.DataFrame:
        """The steps scheduled on this campaign day that are not yet sent, for active sequences, before the campaign end."""
        ctx = xmas.delivery(run_id=context.run_id)
        day = dt.date.fromisoformat(context.partition_key)
        due = compute_emails_due(
            ctx.campaign,
            mirror.sequences_frame(ctx.engine, ctx.campaign.name),
            ledger.finished_steps(ctx.engine),
            day,
            day_seconds=ctx.clock.day_seconds,
        )
        now = pd.Timestamp(ctx.clock.now())
        context.add_output_metadata(
            {
                "due": len(due),
                "sendable_now": int((due["due_at"] <= now).sum()),
                "by_step_and_segment": _counts_md(
                    list(due.groupby(["step", "segment"]).size().reset_index().itertuples(index=False, name=None)),
                    ["step", "segment", "emails"],
                ),
                "preview": _table(due.assign(due_at=due["due_at"].astype(str)).to_dict("records"),
                                  ["email", "step", "segment", "template", "due_at"]),
            }
        )
        return due

    @dg.asset(
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"email"},
        pool="mail",
        check_specs=[dg.AssetCheckSpec("all_due_emails_sent", asset="deliveries",
                                       description="Every email whose time came was sent or deliberately skipped.")],
    )
    def deliveries(context: dg.AssetExecutionContext, xmas: XmasResource, emails_due: pd.DataFrame) -> dg.MaterializeResult:
        """Sends this day's due emails whose time has come, once each, and records them in the ledger."""
        ctx = xmas.delivery(run_id=context.run_id)
        problems = ctx.crm.check_schema()
        if problems:
            raise CRMSchemaError(problems)
        due = [
            Due(r.sequence_key, int(r.step), r.email, r.due_at.to_pydatetime())
            for r in emails_due.itertuples(index=False)
        ]
        report = deliver(ctx, due)
        for error in report.crm_errors:
            context.log.warning(error)
        if report.stopped:
            raise dg.Failure(description=f"Stopped sending: {report.stopped}", metadata={"sent": len(report.sent)})
        by_step = pd.DataFrame(report.sent or [], columns=["email", "step", "subject", "provider_id"])
        return dg.MaterializeResult(
            metadata={
                "sent": len(report.sent),
                "skipped": len(report.skipped),
                "failed": len(report.failed),
                "in_doubt": len(report.in_doubt),
                "resumed": report.resumed,
                "already_sent": report.already_done,
                "not_yet_due": report.not_yet_due,
                "sent_by_step": _counts_md(
                    list(by_step.groupby("step").size().reset_index().itertuples(index=False, name=None)), ["step", "emails"]
                ),
                "sent_to": _table(report.sent, ["email", "step", "subject", "provider_id"]),
                "skipped_or_failed": _table(
                    [dict(r, reason=r.get("reason") or r.get("error")) for r in report.skipped + report.failed],
                    ["email", "step", "reason"],
                ),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="all_due_emails_sent",
                    passed=not report.failed and not report.in_doubt,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={
                        "failed": len(report.failed),
                        "in_doubt": len(report.in_doubt),
                        "what_to_do": "Failed steps are retried by the next run once the cause (see skipped_or_failed) "
                        "is fixed; in-doubt sends resume by themselves after the claim lease.",
                    },
                )
            ],
        )

    return [contacts, sequences, templates, emails_due, deliveries]
