"""IANA time zone names, checked: a recipient's zone decides when their email is sent."""

from __future__ import annotations

import zoneinfo
from functools import lru_cache


@lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    # Region/City names (and UTC); bare abbreviations such as EST carry no DST rules for a place.
    names = {n for n in zoneinfo.available_timezones() if "/" in n or n == "UTC"}
    return {n.lower(): n for n in names}


def validate_timezone(name: str) -> str:
    """An IANA time zone name such as ``America/Toronto``, spelled canonically; ValueError otherwise.

    Case is forgiven (``america/toronto``); offsets (``-05:00``), abbreviations (``EST``) and paths are not.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a time zone is required: an IANA name such as America/Toronto")
    found = _zone_names().get(name.strip().lower())
    if found is None:
        raise ValueError(
            f"{name!r} is not an IANA time zone; use a Region/City name such as America/Toronto "
            "or Europe/London (browsers give it as Intl.DateTimeFormat().resolvedOptions().timeZone)"
        )
    return found
