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
from xmas_pipeline.campaign.tokens import sequence_number

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
        sequences: columns sequence_key, email, segment, status, anchor_ns (UTC epoch nanoseconds),
            and seq_no (``tokens.sequence_number``; derived from the key when absent).
        finished: columns sequence_key, step (and seq_no): ledger rows that need no further sending
            (sent, sent elsewhere, skipped for good).
    Returns:
        DUE_COLUMNS, sorted by due time, one row per (sequence, step).

    Works on integer arrays throughout; strings are only gathered for the rows returned.
    """
    start_ns, end_ns = (_ns(b) for b in day_bounds(campaign, day))
    campaign_end_ns = _ns(campaign.end)
    day_ns = np.int64(day_seconds) * np.int64(1_000_000_000)
    offsets = np.array([round(s.day_offset * day_ns) for s in campaign.steps], dtype=np.int64)
    if not len(sequences) or not len(offsets):
        return _empty_due()

    anchors = sequences["anchor_ns"].to_numpy(dtype=np.int64)
    # Only anchors within the longest offset before the day can have a step on it.
    rows = np.flatnonzero((anchors >= start_ns - offsets.max()) & (anchors < end_ns))
    rows = rows[sequences["status"].to_numpy()[rows] == "active"]
    base = anchors[rows]
    last_ns = min(end_ns, campaign_end_ns)  # inside the day and before the campaign end

    pos_parts, step_parts, at_parts = [], [], []
    for number, offset in enumerate(offsets, start=1):  # a handful of steps, each vectorized over all rows
        at = base + offset
        hit = (at >= start_ns) & (at < last_ns)
        pos_parts.append(rows[hit])
        step_parts.append(np.full(int(hit.sum()), number, dtype=np.int64))
        at_parts.append(at[hit])
    pos = np.concatenate(pos_parts)
    steps = np.concatenate(step_parts)
    due_ns = np.concatenate(at_parts)
    if not len(pos):
        return _empty_due()

    if len(finished):
        # Anti-join on int64 codes (sequence number, step); each hit is confirmed on the full key, so a
        # collision of two 56-bit numbers can only list a finished step, which the ledger then refuses.
        fin_steps = finished["step"].to_numpy(dtype=np.int64)
        done_codes = pd.Index(_numbers(finished) * 8 + fin_steps)
        rows_of_code = np.arange(len(done_codes))
        if not done_codes.is_unique:  # only on a number collision
            first = ~done_codes.duplicated()
            done_codes, rows_of_code = done_codes[first], rows_of_code[first]
        my_codes = _numbers(sequences)[pos] * 8 + steps
        found = done_codes.get_indexer(my_codes)
        hits = np.flatnonzero(found >= 0)
        finished_keys = finished["sequence_key"].to_numpy()[rows_of_code[found[hits]]]
        my_keys = sequences["sequence_key"].to_numpy()[pos[hits]]
        drop = np.zeros(len(pos), dtype=bool)
        drop[hits[finished_keys == my_keys]] = True
        pos, steps, due_ns = pos[~drop], steps[~drop], due_ns[~drop]

    order = np.argsort(due_ns, kind="stable")
    pos, steps, due_ns = pos[order], steps[order], due_ns[order]
    templates = np.array([s.template for s in campaign.steps], dtype=object)
    return pd.DataFrame(
        {  # .array.take keeps each column's dtype without re-checking 200k strings one by one
            "sequence_key": sequences["sequence_key"].array.take(pos),
            "email": sequences["email"].array.take(pos),
            "segment": sequences["segment"].array.take(pos),
            "step": steps,
            "template": templates[steps - 1],
            "due_at": pd.DatetimeIndex(due_ns.view("datetime64[ns]")).tz_localize("UTC"),
        }
    )


def _numbers(frame: pd.DataFrame) -> np.ndarray:
    """The frame's int64 sequence numbers (stored as seq_no; derived from the key when absent)."""
    if "seq_no" in frame.columns:
        return frame["seq_no"].to_numpy(dtype=np.int64)
    return np.fromiter((sequence_number(k) for k in frame["sequence_key"]), dtype=np.int64, count=len(frame))


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
