"""Log formats: one JSON object per line in production, readable lines in development.

Every record gets the current request id (`RequestIdFilter`), so any line written while serving a
request joins up with its request line and its audit rows. Anything that looks like an API key
(`mmk_...`) is redacted from every line, whatever logged it: a token pasted into a URL or an error
message must not reach the logs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any

from apps.gateway.identity import request_id_var

_TOKEN_RE = re.compile(r"mmk_[0-9A-Za-z]{4,}(?:_[0-9A-Za-z]*)?")
REDACTED = "mmk_[redacted]"
# The request line's fields (apps.gateway.observe), in the order a person reads them.
REQUEST_FIELDS = ("request_id", "transport", "method", "path", "operation", "status", "duration_ms",
                  "key_id", "client")


def redact(text: str) -> str:
    return _TOKEN_RE.sub(REDACTED, text)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", request fields..., "exception"}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in REQUEST_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


class PlainFormatter(logging.Formatter):
    """`time LEVEL logger: message [op=... key=... client=... rid=...]` for a person at a terminal."""

    CONTEXT = (("operation", "op"), ("key_id", "key"), ("client", "client"), ("request_id", "rid"))

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{short}={getattr(record, name)}" for name, short in self.CONTEXT
                           if getattr(record, name, None) is not None)
        line = super().format(record)
        return redact(f"{line} [{context}]" if context else line)
