"""First names as people write them.

A form gets "ann", "ANN", "Ann", "McDonald" and "de la Cruz". Only the first two are clearly not how
the person would write their name (the caps lock or the phone keyboard decided), so only a name that
arrives all lower-case or all upper-case is title-cased; any mixed casing is the person's own and kept.
"""

from __future__ import annotations

# Inside a name, a letter after one of these starts a new part: Mary-Jane, O'Neil, Ann Marie.
_PART_BREAKS = frozenset(" -'\u2019.")


def _title(name: str) -> str:
    out, start = [], True
    for ch in name:
        out.append(ch.upper() if start else ch.lower())
        start = ch in _PART_BREAKS
    return "".join(out)


def display_first_name(raw: str | None) -> str | None:
    """The name to greet someone by, or None when there is none; casing fixed only when it is all one case."""
    name = " ".join((raw or "").split())
    if not name:
        return None
    if name.islower() or name.isupper():
        return _title(name)
    return name
