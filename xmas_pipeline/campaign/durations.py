"""Durations as people read them in reports: ``1 d 6 h 10 min``. (Parsing lives with the journey file.)"""

from __future__ import annotations

import datetime as dt


def describe(delta: dt.timedelta) -> str:
    """``1 d 6 h 10 min`` for reports: whole minutes, largest units first."""
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{mins} min" if mins else ""]
    return " ".join(p for p in parts if p) or "under a minute"
