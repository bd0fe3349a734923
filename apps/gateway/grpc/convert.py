"""Conversions between messages and the Python values services and validators take, shared by the
apps' rpc.py. Values go in as REST's JSON would carry them, so they meet the same validators."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, overload

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from apps.gateway.errors import NotFound
from apps.gateway.rest.serializers import validated as validated  # the same input serializers as REST, built once

MONEY = Decimal("0.000001")


@overload
def timestamp(moment: dt.datetime) -> Timestamp: ...
@overload
def timestamp(moment: None) -> None: ...
@overload
def timestamp(moment: dt.datetime | None) -> Timestamp | None: ...
def timestamp(moment: dt.datetime | None) -> Timestamp | None:
    """A Timestamp, or None (the field stays unset) for a missing time."""
    if moment is None:
        return None
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def money(amount: Decimal | None) -> str | None:
    """A decimal string with six places, as REST renders money; None leaves the field unset."""
    return None if amount is None else str(Decimal(amount).quantize(MONEY))


def plain(message: Message) -> dict[str, Any]:
    """A message as the dict REST's JSON body would decode to, its fields in .proto order: fields
    with presence only when set, timestamps as aware datetimes, maps as dicts (omitted when empty),
    lists, scalars as they are. A timestamp no datetime can hold (seconds or nanos out of the
    Timestamp range) becomes text that is no RFC 3339 time, so the validators refuse it as they
    refuse such text over REST, naming the field."""
    out: dict[str, Any] = {}
    for name, kind in _fields(message.DESCRIPTOR):
        if kind is _VALUE:
            out[name] = getattr(message, name)
        elif kind is _MAP:
            value = getattr(message, name)
            if value:
                out[name] = {key: value[key] for key in value}  # twice as fast as dict(value.items())
        elif kind is _LIST:
            out[name] = list(getattr(message, name))
        elif kind is _MESSAGE_LIST:
            out[name] = [plain(item) for item in getattr(message, name)]
        elif message.HasField(name):
            value = getattr(message, name)
            out[name] = (value if kind is _OPTIONAL else _datetime(value) if kind is _TIMESTAMP
                         else plain(value))
    return out


# The kinds of field `plain` tells apart (module constants: an Enum member lookup per field per
# message would cost more than the rest of the loop).
_VALUE = "a scalar without presence: always there"
_OPTIONAL = "a scalar with presence"
_TIMESTAMP = "a google.protobuf.Timestamp"
_MESSAGE = "another message"
_MAP = "a map"
_LIST = "a repeated scalar"
_MESSAGE_LIST = "a repeated message"


@functools.cache
def _fields(descriptor: Descriptor) -> tuple[tuple[str, str], ...]:
    """Each field's name and kind, worked out once per message type (not once per field per call)."""
    fields = []
    for field in descriptor.fields:
        message_type = field.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            kind = _MAP
        elif field.is_repeated:
            kind = _MESSAGE_LIST if message_type is not None else _LIST
        elif message_type is not None:
            kind = _TIMESTAMP if message_type.full_name == Timestamp.DESCRIPTOR.full_name else _MESSAGE
        else:
            kind = _OPTIONAL if field.has_presence else _VALUE
        fields.append((field.name, kind))
    return tuple(fields)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_SECONDS_MIN, _SECONDS_MAX = -62135596800, 253402300799  # 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z


def _datetime(value: Timestamp) -> dt.datetime | str:
    """`value.ToDatetime(tzinfo=dt.UTC)` (the same arithmetic, nanos cut to micros), at a third of
    its cost; out of range, text that is no time (ToDatetime would raise ValueError: INTERNAL)."""
    seconds, nanos = value.seconds, value.nanos
    if not (_SECONDS_MIN <= seconds <= _SECONDS_MAX and 0 <= nanos < 1_000_000_000):
        return f"{seconds}s {nanos}ns is out of the Timestamp range"
    return _EPOCH + dt.timedelta(0, seconds, nanos // 1000)


def message_from_row(message_class: type[Message], row: Mapping[str, Any]) -> Message:
    """A message from a row of values (`QuerySet.values()`): None leaves a field unset, datetimes
    become Timestamps, decimals decimal strings, UUIDs their text."""
    message = message_class()
    for name, value in row.items():
        if value is None:
            continue
        if isinstance(value, dt.datetime):
            getattr(message, name).FromDatetime(value)
        elif isinstance(value, list):
            getattr(message, name).extend(value)
        elif isinstance(value, Decimal):
            setattr(message, name, str(value))
        elif isinstance(value, uuid.UUID):
            setattr(message, name, str(value))
        else:
            setattr(message, name, value)
    return message


def run_id(text: str) -> uuid.UUID:
    """A run id from a message. REST's route only matches a UUID, so anything else is the same
    404 `run_not_found` as a run that does not exist."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise NotFound("No such run.", code="run_not_found") from None
