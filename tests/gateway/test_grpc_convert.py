"""`plain` (apps/gateway/grpc/convert.py): a request message as the dict REST's JSON would decode
to, which then meets the same validators as REST. It works from a per-message-type plan of the
fields; these tests hold it to the field-by-field definition it replaced (presence, defaults, maps,
repeated fields, timestamps, order) on every ControlPlane request, and hold the errors the telemetry
structs give for a gRPC batch to the ones they give for the same batch as a REST body."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from apps.gateway.grpc.convert import plain
from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2 as pb
from apps.telemetry.validation import (
    AttemptIn,
    BenchmarkIn,
    ItemInvalid,
    RunEventIn,
    convert_item,
    convert_items,
    decode_items,
)
from tests.proto_examples import REQUESTS, example

ATTEMPT: dict[str, Any] = {"model": "gpt-test", "success": True, "input_tokens": 10, "output_tokens": 5,
                           "latency_ms": 50}


def reference_plain(message: Message) -> dict[str, Any]:
    """The definition `plain` had before it was planned per message type: field by field."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.has_presence and not message.HasField(field.name):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if value:
                out[field.name] = dict(value)
        elif field.is_repeated:
            out[field.name] = [reference_plain(v) if isinstance(v, Message) else v for v in value]
        elif isinstance(value, Timestamp):
            out[field.name] = value.ToDatetime(tzinfo=dt.UTC)
        elif isinstance(value, Message):
            out[field.name] = reference_plain(value)
        else:
            out[field.name] = value
    return out


def ordered(value: Any) -> Any:
    """Dicts as lists of pairs, so that comparing also compares their order (msgspec reports the
    first bad field in the order it meets them)."""
    if isinstance(value, dict):
        return [(k, ordered(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [ordered(v) for v in value]
    return value


MESSAGES = [(descriptor.name, variant) for descriptor in REQUESTS for variant in ("empty", "defaults", "full")]


@pytest.mark.parametrize(("name", "variant"), MESSAGES)
def test_plain_gives_what_the_field_by_field_definition_gave(name, variant):
    descriptor = pb.DESCRIPTOR.message_types_by_name[name]
    message_class = getattr(pb, name)
    message = message_class() if variant == "empty" else json_format.ParseDict(example(descriptor, variant),
                                                                               message_class())
    assert ordered(plain(message)) == ordered(reference_plain(message))


def test_presence_and_defaults_are_those_of_the_message():
    unset = plain(pb.PromptAttempt())
    assert unset == {"model": "", "success": False, "input_tokens": 0, "output_tokens": 0, "latency_ms": 0,
                     "prompt_name": "", "prompt_version": "", "error_code": ""}  # no time, optionals, map
    present = plain(pb.PromptAttempt(reported_cost_usd="", run_id="", time=Timestamp(), attributes={"k": "v"}))
    assert present["reported_cost_usd"] == present["run_id"] == ""
    assert "reservation_id" not in present
    assert present["time"] == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)  # a set epoch is a time, not "absent"
    assert present["attributes"] == {"k": "v"} and type(present["attributes"]) is dict
    assert list(present) == [f.name for f in pb.PromptAttempt.DESCRIPTOR.fields if f.name != "reservation_id"]
    benchmark = plain(pb.Benchmark(passed=0))
    assert benchmark["passed"] == 0 and "total" not in benchmark
    batch = plain(pb.RecordPromptAttemptsRequest())
    assert batch == {"attempts": []}


TIMES = [(0, 0), (0, 999), (0, 1000), (1, 999_999_999), (-1, 1), (-62135596800, 0), (253402300799, 999_999_999),
         (1_700_000_000, 123_456_789)]


@pytest.mark.parametrize(("seconds", "nanos"), TIMES)
def test_timestamps_are_the_aware_datetimes_todatetime_gives(seconds, nanos):
    moment = Timestamp(seconds=seconds, nanos=nanos)
    converted = plain(pb.RunEvent(time=moment))["time"]
    assert converted == moment.ToDatetime(tzinfo=dt.UTC)
    assert converted.tzinfo is dt.UTC


OUT_OF_RANGE = [(-62135596801, 0), (253402300800, 0), (0, -1), (0, 1_000_000_000), (10**15, 0)]


@pytest.mark.parametrize(("seconds", "nanos"), OUT_OF_RANGE)
def test_a_timestamp_out_of_range_is_refused_naming_the_item_and_field(seconds, nanos):
    """ToDatetime raises ValueError for these (which used to end the call INTERNAL); a JSON body
    cannot even write them. They are refused as REST refuses a time that is not RFC 3339."""
    with pytest.raises(ValueError, match="Timestamp is not valid"):
        Timestamp(seconds=seconds, nanos=nanos).ToDatetime(tzinfo=dt.UTC)
    good = pb.PromptAttempt(**ATTEMPT)
    bad = pb.PromptAttempt(**ATTEMPT, time=Timestamp(seconds=seconds, nanos=nanos))
    with pytest.raises(ItemInvalid) as refused:
        convert_items([plain(good), plain(good), plain(bad)], AttemptIn, plural="attempts")
    over_rest = rest_error({"attempts": [ATTEMPT, ATTEMPT, {**ATTEMPT, "time": "not a time"}]}, AttemptIn, "attempts")
    assert described(refused.value) == over_rest == (400, "invalid_item", 2, "time",
                                                     "item 2, field `time`: Invalid RFC3339 encoded datetime")


def rest_error(body: dict, item_type: type, plural: str) -> tuple:
    with pytest.raises(ItemInvalid) as refused:
        decode_items(json.dumps(body).encode(), item_type, plural=plural)
    return described(refused.value)


def described(error: ItemInvalid) -> tuple:
    return error.status, error.code, error.extra.get("index"), error.extra.get("field"), str(error.detail)


BAD_ATTEMPTS: dict[str, dict[str, Any]] = {
    "model": {"model": "bad model!"},
    "empty model": {"model": ""},
    "tokens below 0": {"input_tokens": -5},
    "tokens over the maximum": {"output_tokens": 10**9 + 1},
    "latency": {"latency_ms": 3_600_001},
    "prompt name": {"prompt_name": " leading space"},
    "error code": {"error_code": "UPPER"},
    "cost": {"reported_cost_usd": "1,5"},
    "cost as empty text": {"reported_cost_usd": ""},
    "run id": {"run_id": "not-a-uuid"},
    "reservation id": {"reservation_id": "123"},
    "attribute key": {"attributes": {"bad key": "v"}},
    "NUL in an attribute": {"attributes": {"k": "a\x00b"}},
    "33 attributes": {"attributes": {f"k{i}": "v" for i in range(33)}},
    "two bad fields: the first in .proto order": {"latency_ms": -1, "model": "bad model!"},
}


@pytest.mark.parametrize("case", BAD_ATTEMPTS)
def test_a_bad_attempt_gets_the_same_error_as_over_rest(case):
    """Same status, code, item index, field and message (the message ends where msgspec's path
    begins). REST's body lists fields in .proto order, as a gRPC message always has them."""
    item = {**ATTEMPT, **BAD_ATTEMPTS[case]}
    item = {f.name: item[f.name] for f in pb.PromptAttempt.DESCRIPTOR.fields if f.name in item}
    batch = [ATTEMPT, ATTEMPT, ATTEMPT, item]
    message = json_format.ParseDict({"attempts": batch}, pb.RecordPromptAttemptsRequest())
    with pytest.raises(ItemInvalid) as refused:
        convert_items([plain(attempt) for attempt in message.attempts], AttemptIn, plural="attempts")
    assert described(refused.value) == rest_error({"attempts": batch}, AttemptIn, "attempts")
    assert described(refused.value)[2] == 3


@pytest.mark.parametrize(("item_type", "field", "message", "bad"), [
    (RunEventIn, "event", pb.RunEvent(kind="Not-A-Code"), {"kind": "Not-A-Code"}),
    (RunEventIn, "event", pb.RunEvent(kind="x", message="y" * 4001), {"kind": "x", "message": "y" * 4001}),
    (BenchmarkIn, "benchmark", pb.Benchmark(suite="s", model="m", score=1, passed=-1),
     {"suite": "s", "model": "m", "score": 1.0, "passed": -1}),
])
def test_single_items_get_the_same_error_as_over_rest(item_type, field, message, bad):
    with pytest.raises(ItemInvalid) as refused:
        convert_item(plain(message), item_type)
    with pytest.raises(ItemInvalid) as over_rest:
        decode_items(json.dumps(bad).encode(), item_type, plural=field + "s")
    assert described(refused.value) == described(over_rest.value)
