"""A sender that writes each message as an ``.eml`` file: for dry runs, previews and local development."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

from xmas_pipeline.mail.base import OutgoingMessage, SendError, SendResult
from xmas_pipeline.mail.message import build_mime, safe_header, safe_key, to_bytes


class OutboxSender:
    """Write one ``<key>.eml`` per message into ``folder``; a retry with the same key overwrites the file."""

    max_batch = 100
    name = "outbox"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path_for(self, key: str) -> Path:
        """The file a message with idempotency key ``key`` is written to."""
        return self.folder / f"{safe_key(key)}.eml"

    def send(self, batch_key: str, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if len(messages) > self.max_batch:
            raise ValueError(f"outbox takes at most {self.max_batch} messages per call, got {len(messages)}")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SendError(f"cannot create outbox folder {self.folder}: {exc}") from exc
        results = []
        for msg in messages:
            mime = build_mime(msg)
            # Same header the SMTP sender adds, so an .eml shows exactly what would go on the wire.
            mime["X-Idempotency-Key"] = safe_header(msg.key)
            path = self.path_for(msg.key)
            try:
                _write_atomically(path, to_bytes(mime))
            except OSError as exc:
                raise SendError(f"cannot write {path}: {exc}") from exc
            results.append(SendResult(key=msg.key, provider_id=path.name))
        return results


def _write_atomically(path: Path, data: bytes) -> None:
    # Temp file in the same folder + os.replace: readers never see half a message, and a retry
    # replaces the earlier file instead of adding a second one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")  # never matches *.eml
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
