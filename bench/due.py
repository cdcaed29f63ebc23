"""emails_due for 1,000,000 sequences: the vectorized computation next to a per-row Python loop.

Prints human lines, then one JSON line: sequences, seconds, peak_rss_mb, loop_seconds, speedup.
The loop is timed on a sample and scaled up (it would take minutes on the full set); the sample size
is printed so the extrapolation is visible.
"""

from __future__ import annotations

import datetime as dt
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xmas_pipeline.campaign.loader import load_campaign  # noqa: E402
from xmas_pipeline.campaign.timetable import compute_emails_due, day_bounds  # noqa: E402
from xmas_pipeline.campaign.tokens import sequence_number  # noqa: E402
from xmas_pipeline.settings import DEFAULT_CAMPAIGN_FILE  # noqa: E402

N = 1_000_000
LOOP_SAMPLE = 100_000
DAY = dt.date(2026, 12, 8)


def make_data(n: int, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-11-20T00:00:00Z").value
    anchors = start + rng.integers(0, 20 * 86400, n, dtype=np.int64) * 1_000_000_000
    keys = [f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**63, (n, 2))]  # hex like real sequence keys
    sequences = pd.DataFrame(
        {
            "sequence_key": keys,
            "seq_no": [sequence_number(k) for k in keys],  # stored in the database beside the key
            "email": [f"lead{i}@example.com" for i in range(n)],
            "segment": rng.choice(["CRITICAL", "URGENT", "OPTIMIZE"], n),
            "status": rng.choice(["active", "active", "active", "exited", "completed"], n),
            "anchor_ns": anchors,
        }
    )
    done = rng.choice(n, n // 3, replace=False)
    finished = pd.DataFrame(
        {
            "sequence_key": sequences["sequence_key"].to_numpy()[done],
            "seq_no": sequences["seq_no"].to_numpy()[done],
            "step": rng.integers(1, 8, len(done)),
        }
    )
    return sequences, finished


def loop_due(campaign, sequences: pd.DataFrame, finished: pd.DataFrame, day: dt.date) -> list[tuple]:
    """The per-row way: what the original system would do, one sequence and step at a time."""
    start, end = day_bounds(campaign, day)
    done = set(zip(finished["sequence_key"], finished["step"]))
    out = []
    for row in sequences.itertuples(index=False):
        if row.status != "active":
            continue
        anchor = pd.Timestamp(row.anchor_ns, tz="UTC").to_pydatetime()
        for step in campaign.steps:
            when = anchor + dt.timedelta(days=step.day_offset)
            if start <= when < end and when < campaign.end and (row.sequence_key, step.number) not in done:
                out.append((row.sequence_key, step.number, when))
    return out


def main() -> None:
    campaign = load_campaign(DEFAULT_CAMPAIGN_FILE)
    sequences, finished = make_data(N)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    t0 = time.perf_counter()
    due = compute_emails_due(campaign, sequences, finished, DAY)
    seconds = time.perf_counter() - t0
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    sample, sample_done = sequences.iloc[:LOOP_SAMPLE], finished
    t0 = time.perf_counter()
    looped = loop_due(campaign, sample, sample_done, DAY)
    loop_sample_s = time.perf_counter() - t0
    loop_seconds = loop_sample_s * N / LOOP_SAMPLE

    check = compute_emails_due(campaign, sample, sample_done, DAY)
    assert len(check) == len(looped), (len(check), len(looped))  # both ways agree on the sample

    print(f"emails_due({DAY}) over {N:,} sequences: {len(due):,} due in {seconds:.3f} s, peak RSS {peak_rss:.0f} MB "
          f"(data alone {base_rss:.0f} MB)")
    print(f"per-row loop: {loop_sample_s:.2f} s for {LOOP_SAMPLE:,} sequences -> {loop_seconds:.1f} s for {N:,} "
          f"(scaled); speedup {loop_seconds / seconds:.0f}x; both agree on the sample ({len(looped):,} due)")
    print(json.dumps({
        "sequences": N,
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(peak_rss, 1),
        "loop_seconds": round(loop_seconds, 2),
        "speedup": round(loop_seconds / seconds, 1),
    }))


if __name__ == "__main__":
    main()
