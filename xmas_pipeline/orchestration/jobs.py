"""Jobs: enroll a batch of signups; send a campaign day's mail."""

import dagster as dg

from xmas_pipeline.enrollment import enroll_events
from xmas_pipeline.orchestration.resources import XmasResource

ENROLL_JOB = "enroll_signups_job"
DELIVERY_JOB = "daily_delivery_job"
# Only Notion has a rate budget worth queueing for; with the local CRM a pool would only make email 1
# wait behind delivery and backfill runs.
NOTION_POOL = "notion"


class EnrollConfig(dg.Config):
    event_ids: list[int]


def build_enroll_job(crm: str) -> dg.JobDefinition:
    @dg.op(name="enroll_signups", pool=NOTION_POOL if crm == "notion" else None)
    def enroll_signups(context: dg.OpExecutionContext, config: EnrollConfig, xmas: XmasResource) -> dg.Output:
        """Classify, upsert the contact, create the sequence, record consent and send email 1 for each event."""
        ctx = xmas.delivery(run_id=context.run_id)
        report = enroll_events(ctx, config.event_ids)
        for failure in report.failed:
            context.log.warning(f"event {failure['event_id']} ({failure['email']}) {failure['status']}: {failure['error']}")
        if report.delivery.stopped:
            context.log.error(f"email 1 not sent: {report.delivery.stopped}")
        return dg.Output(
            None,
            metadata={
                "events": len(config.event_ids),
                "enrolled": len(report.enrolled),
                "repeat_signups": len(report.repeats),
                "failed": len(report.failed),
                "email_1_sent": len(report.delivery.sent),
                "email_1_failed": len(report.delivery.failed),
                "enrolled_leads": dg.MetadataValue.md(
                    "\n".join(f"- {e['email']}: {e['segment']}" for e in report.enrolled[:50]) or "_none_"
                ),
            },
        )

    # In-process: one op; a process per step would re-import the code location (seconds of email 1's wait).
    @dg.job(name=ENROLL_JOB, description="Enroll queued signups: contact, sequence, consent, email 1.",
            tags={"xmas/kind": "enrollment"}, executor_def=dg.in_process_executor)
    def enroll_signups_job():
        enroll_signups()

    return enroll_signups_job


def delivery_job(assets_selection):
    return dg.define_asset_job(
        DELIVERY_JOB,
        selection=assets_selection,
        description="Mirror the CRM, check templates, list the day's due emails and send every step whose time has come.",
        tags={"xmas/kind": "delivery"},
        # The steps run one after another anyway; a process each would re-import the code location per step
        # and, on a small host, take CPU from the enrollment runs that send email 1.
        executor_def=dg.in_process_executor,
    )
