"""Throughput of ResendSender against a rate-limited ResendEmulator (not a test).

Sends N distinct messages in sequential calls of up to 100 (the delivery path's shape) to an emulator
limited to 2 requests/s, so the ceiling is 2 x 100 = 200 emails/s. The last line printed is JSON.

    .venv/bin/python bench/send.py [N] [LIMIT]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

# The emulator lives in the test package, which is not installed: import it from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xmas_pipeline.mail.base import OutgoingMessage
from xmas_pipeline.mail.message import message_id_for
from xmas_pipeline.mail.resend import ResendSender
from xmas_pipeline_tests.fakes.resend import ResendEmulator


def make_messages(count: int) -> list[OutgoingMessage]:
    messages = []
    for i in range(count):
        key = f"bench-{i:05d}-s1"
        messages.append(OutgoingMessage(
            key=key,
            to=f"Lead {i} <lead{i}@example.com>",
            from_="Holiday Shop <shop@example.com>",
            subject=f"Season's greetings, lead {i}",
            text=f"Hello lead {i},\nhappy holidays from the shop.\n" * 5,
            html=f"<p>Hello lead {i},</p><p>happy holidays from the shop.</p>" * 5,
            message_id=message_id_for(key, "example.com"),
            headers={
                "List-Unsubscribe": f"<https://example.com/u/{key}-token>, <mailto:unsub@example.com?subject={key}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
            tags={"campaign": "xmas-2026", "step": "s1"},
        ))
    return messages


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    messages = make_messages(count)
    with ResendEmulator(rate_limit=limit) as emu:
        sender = ResendSender(emu.api_key, api_url=emu.api_url)
        failed = 0
        started = time.monotonic()
        for start in range(0, count, sender.max_batch):
            batch = messages[start:start + sender.max_batch]
            failed += sum(not r.ok for r in sender.send(f"bench-run/{start}", batch))
        wall = time.monotonic() - started
        # The run holds the rate budget until its last window resets; count that pacing time, or a run
        # of k windows would be credited with k-1 windows' worth of time.
        elapsed = wall + sender.pacing_delay_s
        ceiling = limit * sender.max_batch
        rate = count / elapsed
        print(f"sent {len(emu.sent)}/{count} emails ({failed} failed) in {emu.requests} requests, "
              f"{emu.rate_limited} rate-limited (429); wall {wall:.2f} s + {elapsed - wall:.2f} s pending "
              f"pacing = {elapsed:.2f} s -> {rate:.1f} emails/s vs ceiling {ceiling}/s")
        print(json.dumps({"emails_per_s": round(rate, 1), "ceiling_per_s": ceiling, "ratio": round(rate / ceiling, 3)}))


if __name__ == "__main__":
    main()
