"""Schemathesis hooks for the intake's schema test (loaded by name from its config file).

`email_1_sent_at` is an RFC 3339 date-time "not before 2000 and not more than a day in the future":
JSON Schema has no way to say the second half, so valid values are drawn from that window here
(against the test's pinned clock). Likewise a `timezone` is drawn from the IANA names. Invalid ones
still come from schemathesis's own negative data.
"""

from __future__ import annotations

import datetime as dt

import schemathesis
from hypothesis import strategies as st

from xmas_pipeline.campaign.clock import parse_instant
from xmas_pipeline.campaign.zones import _zone_names
from xmas_pipeline_tests.conftest import PINNED_NOW

LATEST = parse_instant(PINNED_NOW).astimezone(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(hours=23)
OFFSETS = ["Z", "z", "+00:00", "-05:00", "+05:30", "-23:00"]


@st.composite
def instants_in_the_window(draw) -> str:
    # Drawn in UTC, then written in a random offset: the same instant, however it is spelled.
    moment = draw(st.datetimes(min_value=dt.datetime(2000, 1, 2), max_value=LATEST))
    offset = draw(st.sampled_from(OFFSETS))
    if offset.lower() == "z":
        return moment.isoformat(timespec="seconds") + offset
    sign, hours, minutes = (-1 if offset[0] == "-" else 1), int(offset[1:3]), int(offset[4:6])
    local = moment + sign * dt.timedelta(hours=hours, minutes=minutes)
    return local.isoformat(timespec="seconds") + offset


schemathesis.openapi.format("date-time", instants_in_the_window())

# A signup's `timezone` is an IANA name: JSON Schema cannot list the rule, so valid ones come from the list.
schemathesis.openapi.format("iana-time-zone", st.sampled_from(sorted(_zone_names().values())))
