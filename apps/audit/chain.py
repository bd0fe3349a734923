"""The audit hash chain's canonical encoding (version 1). Pure: no Django, no I/O.

    hash(row) = SHA-256( canonical JSON of the row's chained fields, `prev_hash` included )

The encoding is frozen: `verify_audit` recomputes it from the rows as PostgreSQL returns them,
possibly years later, so a value must encode the same whether it comes from the Python object
that was written or from the column read back. Hence:
- JSON with sorted keys, no whitespace, ASCII only (`\\uXXXX` escapes);
- every number (int, float, Decimal) as its normalized decimal (`1`, `1.5`, `1E+16`): jsonb
  keeps numbers as decimals, so `1.0` may come back as `1.0` or `1e16` as `10000000000000000`;
- timestamps in UTC, ISO 8601 with microseconds; IP addresses as the hex of their packed bytes
  (inet's and Python's text forms of IPv6 differ);
- the row id is not chained (a sequence value, assigned after the hash); `chain_seq` is.

Changing any of this needs a new version (and `verify_audit` that knows both).
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import ipaddress
import json
from collections.abc import Mapping
from typing import Any

GENESIS_HASH = "0" * 64
# Exact for any number jsonb can hold (its numerics have at most ~147,000 digits before the point).
_EXACT = decimal.Context(prec=200_000, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
CHAINED_FIELDS = (
    "chain_seq", "prev_hash", "created_at", "actor_type", "actor_label", "actor_user_id", "actor_key_id", "action",
    "target_type", "target_id", "target_repr", "api_key_id", "before", "after", "reason", "client_ip", "request_id",
)


def _number(value: int | float | decimal.Decimal) -> str:
    number = decimal.Decimal(repr(value)) if isinstance(value, float) else decimal.Decimal(value)
    if not number.is_finite():
        raise ValueError(f"audit values must be finite numbers, not {value!r}")
    return "0" if number.is_zero() else str(number.normalize(_EXACT))


def _encode(value: Any) -> str:
    if value is None or isinstance(value, bool | str):
        return json.dumps(value, ensure_ascii=True)
    if isinstance(value, int | float | decimal.Decimal):
        return _number(value)
    if isinstance(value, Mapping):
        items = sorted((str(k), v) for k, v in value.items())
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=True)}:{_encode(v)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    raise TypeError(f"cannot chain a {type(value).__name__} in an audit row")


def _timestamp(value: dt.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ip(value: str | None) -> str | None:
    return None if not value else ipaddress.ip_address(value).packed.hex()


def canonical_row(row: Mapping[str, Any]) -> bytes:
    """The bytes that are hashed for one audit row (a mapping with every CHAINED_FIELDS key)."""
    fields = {name: row[name] for name in CHAINED_FIELDS}
    fields["created_at"] = _timestamp(fields["created_at"])
    fields["client_ip"] = _ip(fields["client_ip"])
    return ("v1:" + _encode(fields)).encode("ascii")


def row_hash(row: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_row(row)).hexdigest()
