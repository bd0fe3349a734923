"""Human durations for commands and admin forms: `90d`, `12h`, `30m`, `2w`."""

import datetime as dt
import re

_DURATION_RE = re.compile(r"^([1-9][0-9]{0,5})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_DURATION = dt.timedelta(days=3650)


def parse_duration(text: str) -> dt.timedelta:
    """Parse `<n><unit>`; raise ValueError with a readable message otherwise."""
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 90d, 12h, 30m, 2w or 45s.")
    amount, unit = match.groups()
    duration = dt.timedelta(**{_UNITS[unit]: int(amount)})
    if duration > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than {MAX_DURATION.days} days.")
    return duration
