"""OutboxSender: one file per idempotency key, atomic overwrite on retry."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from xmas_pipeline.mail.base import OutgoingMessage
from xmas_pipeline.mail.message import message_id_for
from xmas_pipeline.mail.outbox import OutboxSender


def make(key: str, subject: str = "Hello") -> OutgoingMessage:
    return OutgoingMessage(
        key=key,
        to="Ada <ada@example.com>",
        from_="Shop <shop@example.com>",
        subject=subject,
        text="hi",
        html="<p>hi</p>",
        message_id=message_id_for(key, "example.com"),
        headers={"List-Unsubscribe": "<https://example.com/u/t1>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    )


def test_retry_with_same_key_overwrites(tmp_path: Path):
    outbox = OutboxSender(tmp_path / "out")
    first = outbox.send("b1", [make("xmas-ab12-s3", "first try")])
    again = outbox.send("b1", [make("xmas-ab12-s3", "second try")])
    assert first[0].ok and first[0].provider_id == "xmas-ab12-s3.eml" == again[0].provider_id
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["xmas-ab12-s3.eml"]  # no duplicate, no temp file left behind
    parsed = email.message_from_bytes((tmp_path / "out" / files[0]).read_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "second try"
    assert parsed["X-Idempotency-Key"] == "xmas-ab12-s3"
    assert parsed.get_content_type() == "multipart/alternative"


def test_batch_writes_one_file_per_message_with_safe_names(tmp_path: Path):
    outbox = OutboxSender(tmp_path)
    results = outbox.send("b2", [make("k-1"), make("k-2"), make("../evil/key")])
    assert [r.ok for r in results] == [True, True, True]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and "k-1.eml" in names and "k-2.eml" in names
    assert all(p.parent == tmp_path for p in tmp_path.iterdir())  # "../" could not escape the folder
    assert outbox.max_batch == 100 and outbox.name == "outbox"
