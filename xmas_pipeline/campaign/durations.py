"""Durations as a marketer writes them in a campaign file: ``24h``, ``90m``, ``2d``, ``1d12h``, ``0``."""

from __future__ import annotations

import datetime as dt
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(value: object) -> dt.timedelta:
    """A non-negative duration from ``"1d12h"``-style text, a timedelta, or a number of seconds."""
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError("a duration is text such as 24h, 90m or 2d, not true/false")
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if text == "0":
            return dt.timedelta(0)
        parts = _PART.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"{value!r} is not a duration; write e.g. 24h, 90m, 2d or 1d12h")
        seconds = sum(float(n) * _UNIT[u] for n, u in parts)
    else:
        raise ValueError(f"{value!r} is not a duration; write e.g. 24h, 90m, 2d or 1d12h")
    if not seconds == seconds or seconds < 0 or seconds > 366 * 86400:  # NaN, negative, absurd
        raise ValueError(f"{value!r} is not a duration between 0 and a year")
    return dt.timedelta(seconds=seconds)


def describe(delta: dt.timedelta) -> str:
    """``1 d 6 h 10 min`` for reports: whole minutes, largest units first."""
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{mins} min" if mins else ""]
    return " ".join(p for p in parts if p) or "under a minute"
