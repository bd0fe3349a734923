"""Conversions between messages and the Python values services and validators take, shared by the
apps' rpc.py. Values go in as REST's JSON would carry them, so they meet the same validators."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, overload

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
    """A message as the dict REST's JSON body would decode to: fields with presence only when set,
    timestamps as aware datetimes, maps as dicts (omitted when empty), lists, scalars as they are."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.has_presence and not message.HasField(field.name):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if value:
                out[field.name] = dict(value)
        elif field.is_repeated:
            out[field.name] = [plain(v) if isinstance(v, Message) else v for v in value]
        elif isinstance(value, Timestamp):
            out[field.name] = value.ToDatetime(tzinfo=dt.UTC)
        elif isinstance(value, Message):
            out[field.name] = plain(value)
        else:
            out[field.name] = value
    return out


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
