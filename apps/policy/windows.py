"""Calendar-aligned cap windows in POLICY_TIMEZONE. No scheduled reset job: a new window
simply starts a new ledger row."""

from __future__ import annotations

import datetime as dt
from functools import cache
from zoneinfo import ZoneInfo

from django.conf import settings

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def policy_zone() -> ZoneInfo:
    return _zone(settings.POLICY_TIMEZONE)


def window_start(window: str, now: dt.datetime, zone: ZoneInfo | None = None) -> dt.datetime:
    """The UTC instant at which the window containing `now` began."""
    if window == "total":
        return EPOCH
    local = now.astimezone(zone or policy_zone())
    if window == "minute":
        start = local.replace(second=0, microsecond=0)  # keeps `fold` in a repeated hour
    elif window == "hour":
        start = local.replace(minute=0, second=0, microsecond=0)
    else:
        day = local.date()
        if window == "week":
            day -= dt.timedelta(days=day.weekday())  # weeks start on Monday
        elif window == "month":
            day = day.replace(day=1)
        elif window != "day":
            raise ValueError(f"unknown window {window!r}")
        start = dt.datetime.combine(day, dt.time(0), tzinfo=local.tzinfo)  # local midnight, DST-aware
    return start.astimezone(dt.UTC)
