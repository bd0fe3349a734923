"""gRPC request messages from the client's payloads (dicts with the .proto field names), fast.

`json_format.ParseDict` is exact but slow: ~19 ms for a 1,000-attempt batch, half of it `strptime`
in `Timestamp.FromJsonString`. `message_from_dict` builds the same message with the message
constructors for the shapes the client sends: str, int, bool and float values of the field's type,
RFC 3339 text as isoformat() writes it for timestamps, dicts of strings for maps, lists for repeated
fields, None for unset.
Anything else (JSON field names, numbers as text, an unknown field, a value out of range, a message
type with a oneof or another well-known type) goes to ParseDict, which builds the message or raises
its own error. Either way the result is exactly what ParseDict alone gives
(tests/clients/test_messages.py compares the two on every request type and on the edge cases).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp


class _Unusual(Exception):  # noqa: N818  # not an error: a value the fast path leaves to ParseDict
    pass


M = TypeVar("M", bound=Message)


def message_from_dict(message_class: type[M], payload: Any) -> M:
    """`json_format.ParseDict(payload, message_class())`, without its cost on the usual shapes."""
    build = _builder(message_class.DESCRIPTOR)
    if build is not None:
        try:
            return build(payload)  # type: ignore[return-value]  # built from message_class's own descriptor
        except (_Unusual, ValueError, TypeError, OverflowError):  # e.g. an int64 out of range
            pass
    return json_format.ParseDict(payload, message_class())


Convert = Callable[[Any], Any]


@functools.cache
def _builder(descriptor: Descriptor) -> Callable[[Any], Message] | None:
    """A function building `descriptor`'s message from a dict, or None when ParseDict must do it."""
    if any(len(oneof.fields) > 1 for oneof in descriptor.oneofs):  # ParseDict refuses two members set
        return None
    names = {field.name for field in descriptor.fields}
    if any(field.json_name != field.name and field.json_name in names for field in descriptor.fields):
        return None  # ParseDict would read that key as the other field's JSON name
    fields: dict[str, Convert] = {}
    for field in descriptor.fields:
        convert = _converter(field)
        if convert is None:
            return None
        fields[field.name] = convert
    message_class = message_factory.GetMessageClass(descriptor)

    def build(value: Any) -> Message:
        if type(value) is not dict:
            raise _Unusual
        values = {}
        for name, item in value.items():
            convert = fields.get(name)
            if convert is None:  # a JSON name (ParseDict takes those too) or no such field
                raise _Unusual
            if item is not None:  # ParseDict: null leaves the field unset
                values[name] = convert(item)
        return message_class(**values)

    return build


def _converter(field: FieldDescriptor) -> Convert | None:
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        key, value = message_type.fields_by_name["key"], message_type.fields_by_name["value"]
        return _string_map if _scalar(key) is _text and _scalar(value) is _text else None
    if message_type is None:
        one = _scalar(field)
    elif message_type.full_name == "google.protobuf.Timestamp":
        one = _timestamp
    elif message_type.full_name.startswith("google.protobuf."):  # other well-known types: their own JSON
        return None
    else:
        one = _message(message_type)
    if one is None or not field.is_repeated:
        return one
    return _repeated(one)


def _scalar(field: FieldDescriptor) -> Convert | None:
    if field.type == FieldDescriptor.TYPE_STRING:
        return _text
    if field.cpp_type in (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_INT64,
                          FieldDescriptor.CPPTYPE_UINT32, FieldDescriptor.CPPTYPE_UINT64):
        return _integer  # its range is checked by the constructor (ValueError: ParseDict's turn)
    if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return _boolean
    if field.cpp_type == FieldDescriptor.CPPTYPE_DOUBLE:
        return _double
    return None  # bytes, float, enum: not in the client's requests


_SURROGATE = re.compile("[\ud800-\udfff]")  # ParseDict refuses unpaired ones; any is left to it


def _text(value: Any) -> str:
    if type(value) is str and (value.isascii() or _SURROGATE.search(value) is None):
        return value
    raise _Unusual


def _integer(value: Any) -> int:
    if type(value) is int:
        return value
    raise _Unusual


def _boolean(value: Any) -> bool:
    if type(value) is bool:
        return value
    raise _Unusual


def _double(value: Any) -> float:
    if type(value) is float and math.isfinite(value):
        return value
    if type(value) is int:
        return float(value)  # OverflowError past a double's range: ParseDict raises it too
    raise _Unusual


def _string_map(value: Any) -> dict[str, str]:
    if type(value) is not dict:
        raise _Unusual
    for key, item in value.items():
        _text(key)
        _text(item)
    return value


def _repeated(one: Convert) -> Convert:
    def convert(value: Any) -> list[Any]:
        if type(value) is not list:
            raise _Unusual
        return [one(item) for item in value]

    return convert


def _message(descriptor: Descriptor) -> Convert:
    def convert(value: Any) -> Message:
        build = _builder(descriptor)  # looked up when used: a message type may contain itself
        if build is None:
            raise _Unusual
        return build(value)

    return convert


# What Timestamp.FromJsonString accepts, in the form Python's isoformat() writes it: two-digit fields,
# upper-case T, up to 6 fractional digits, Z or a ±hh:mm offset. Other spellings go to ParseDict.
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)\Z")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_SECONDS_MIN, _SECONDS_MAX = -62135596800, 253402300799  # 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z


def _timestamp(value: Any) -> Timestamp:
    """Timestamp.FromJsonString's result: seconds since the epoch of the time less its offset, and
    the fraction in nanoseconds (for up to 6 digits, exactly its microseconds x 1000)."""
    if type(value) is not str or _RFC3339.match(value) is None:
        raise _Unusual
    # ValueError (ParseDict's turn) for what datetime refuses: 02-30, 24:00, :60, an offset of +00:99.
    since = dt.datetime.fromisoformat(value) - _EPOCH
    seconds = since.days * 86400 + since.seconds
    if not _SECONDS_MIN <= seconds <= _SECONDS_MAX:
        raise _Unusual
    return Timestamp(seconds=seconds, nanos=since.microseconds * 1000)
