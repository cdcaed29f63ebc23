"""When each step of a sequence falls due, computed for whole tables at once with pandas.

A step is due at ``anchor + day_offset * day_length`` where the anchor is the enrollment time (or the
moment the website says it sent email 1). ``emails_due(day)`` is every step due inside that calendar day
of the campaign timezone that is not finished in the ledger, belongs to an active sequence and falls
before the campaign end.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from xmas_pipeline.campaign.models import Campaign

DUE_COLUMNS = ["sequence_key", "email", "segment", "step", "template", "due_at"]


def day_bounds(campaign: Campaign, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The UTC instants where ``day`` starts and ends in the campaign timezone (DST-correct)."""
    tz = campaign.tz
    start = dt.datetime.combine(day, dt.time.min, tzinfo=tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min, tzinfo=tz)
    return start.astimezone(dt.timezone.utc), end.astimezone(dt.timezone.utc)


def campaign_day(campaign: Campaign, instant: dt.datetime) -> dt.date:
    return instant.astimezone(campaign.tz).date()


def due_at(campaign: Campaign, anchor: dt.datetime, step: int, day_seconds: int = 86400) -> dt.datetime:
    """The one-row version, for reports; the vectorized path below must agree with it."""
    return anchor + dt.timedelta(seconds=campaign.step(step).day_offset * day_seconds)


def _ns(instant: dt.datetime) -> np.int64:
    return np.int64(pd.Timestamp(instant).value)


def compute_emails_due(
    campaign: Campaign,
    sequences: pd.DataFrame,
    finished: pd.DataFrame,
    day: dt.date,
    day_seconds: int = 86400,
) -> pd.DataFrame:
    """Steps due on ``day``.

    Args:
        sequences: columns sequence_key, email, segment, status, anchor_ns (UTC epoch nanoseconds).
        finished: columns sequence_key, step: ledger rows that need no further sending
            (sent, sent elsewhere, skipped for good).
    Returns:
        DUE_COLUMNS, sorted by due time, one row per (sequence, step).
    """
    start_ns, end_ns = (_ns(b) for b in day_bounds(campaign, day))
    campaign_end_ns = _ns(campaign.end)
    active = sequences[sequences["status"].to_numpy() == "active"]
    anchors = active["anchor_ns"].to_numpy(dtype=np.int64)
    day_ns = np.int64(day_seconds) * np.int64(1_000_000_000)

    pieces = []
    for step in campaign.steps:  # a handful of steps; each pass is vectorized over all sequences
        at = anchors + np.int64(round(step.day_offset * day_ns))
        hit = (at >= start_ns) & (at < end_ns) & (at < campaign_end_ns)
        if not hit.any():
            continue
        rows = active.loc[hit, ["sequence_key", "email", "segment"]].copy()
        rows["step"] = step.number
        rows["template"] = step.template
        rows["due_ns"] = at[hit]
        pieces.append(rows)
    if not pieces:
        return _empty_due()
    due = pd.concat(pieces, ignore_index=True)

    if len(finished):
        done = pd.MultiIndex.from_frame(finished[["sequence_key", "step"]].astype({"step": "int64"}))
        mine = pd.MultiIndex.from_frame(due[["sequence_key", "step"]].astype({"step": "int64"}))
        due = due[~mine.isin(done)]

    due = due.sort_values(["due_ns", "sequence_key", "step"], kind="stable").reset_index(drop=True)
    due["due_at"] = pd.to_datetime(due["due_ns"], utc=True)
    due["step"] = due["step"].astype("int64")
    return due[DUE_COLUMNS]


def _empty_due() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sequence_key": pd.Series(dtype="object"),
            "email": pd.Series(dtype="object"),
            "segment": pd.Series(dtype="object"),
            "step": pd.Series(dtype="int64"),
            "template": pd.Series(dtype="object"),
            "due_at": pd.Series(dtype="datetime64[ns, UTC]"),
        }
    )
