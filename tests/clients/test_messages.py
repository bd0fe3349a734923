"""The client's request messages (clients/python/modeloman_client/messages.py): `message_from_dict`
must give exactly what `json_format.ParseDict` gives (the same message, or the same error), on
every ControlPlane request and on the edge cases of each kind of field, while building the usual
shapes without ParseDict."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from google.protobuf import json_format
from modeloman_client import messages
from modeloman_client.client import _jsonable
from modeloman_client.messages import message_from_dict

from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2 as pb
from tests.proto_examples import REQUESTS, example


def outcome(build: Any, message_class: type, payload: Any) -> tuple:
    """What building gives: the message's bytes, or the error's type and text."""
    try:
        message = build(message_class, payload)
    except Exception as error:  # noqa: BLE001  # the error is the outcome compared
        return type(error), str(error)
    return "message", message.SerializeToString(deterministic=True)


def parse_dict(message_class: type, payload: Any) -> Any:
    return json_format.ParseDict(payload, message_class())


def assert_same(message_class: type, payload: Any) -> None:
    assert outcome(message_from_dict, message_class, payload) == outcome(parse_dict, message_class, payload)


@pytest.mark.parametrize(("name", "variant"), [(d.name, v) for d in REQUESTS for v in ("defaults", "full")])
def test_every_request_is_built_as_parse_dict_builds_it(name, variant):
    assert_same(getattr(pb, name), example(pb.DESCRIPTOR.message_types_by_name[name], variant))


ATTEMPT = {"model": "gpt-test", "success": True, "input_tokens": 10, "output_tokens": 5, "latency_ms": 50}
EDGES: dict[str, list[Any]] = {
    "time": [
        "2024-01-01T00:00:00Z", "2024-01-01T00:00:00.5Z", "2024-06-30T12:34:56.123456789Z", "2024-01-01T00:00:00.000Z",
        "2024-01-01T00:00:00.1234567891Z", "2024-03-10T02:30:00+05:30", "2024-03-10T02:30:00-08:00",
        "2024-03-10T02:30:00+00:99", "2024-03-10T02:30:00.25-00:00", "1969-12-31T23:59:59.999999999Z",
        "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z", "0001-01-01T00:00:00+00:01",
        "9999-12-31T23:59:59-00:01", "0000-01-01T00:00:00Z", "2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z",
        "2024-02-29T00:00:00Z", "2024-01-01T24:00:00Z", "2024-01-01T00:60:00Z", "2024-01-01T00:00:60Z",
        "2024-01-01T00:00:61Z", "2024-1-1T0:0:0Z", "2024-01-01t00:00:00Z", "2024-01-01T00:00:00z",
        "2024-01-01T00:00:00", "2024-01-01 00:00:00Z", " 2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z ",
        "2024-01-01T00:00:00+0100", "2024-01-01T00:00:00+01", "2024-01-01T00:00:00.Z", "2024-01-01", "", "Z",
        "2024-01-01T00:00:00+24:00", "2024-01-01T00:00:00-23:59", "2024-01-01T00:00:00+00:60",
        "2024-01-01T00:00:00.1234567Z", "2024-01-01T00:00:00.000001Z", "2024-01-01T00:00:00.999999-00:00",
        "2024-01-01T00:00:00.100Z", "2024-01-01T00:00:00+05:30:15", "2024-01-01T00:00Z", "20240101T000000Z",
        "２０２４-01-01T00:00:00Z", 1704067200, 1.5, {"seconds": 1}, [], True,
    ],
    "input_tokens": [0, -1, 2**63 - 1, 2**63, -(2**63) - 1, 10**30, True, False, 1.0, 1.5, "12", " 12", "1e3", "x",
                     [1], {}],
    "model": ["", "é", "日本", "😀", "\ud800", "\udc00", "\ud83d\ude00", "a\x00b", 5, 5.0, True, b"bytes", ["m"],
              {}],
    "success": [True, False, 1, 0, "true", "false", "True", 1.0],
    "attributes": [{}, {"k": "v"}, {"k": ""}, {"": "v"}, {"k": 1}, {"k": None}, {"k": True}, {1: "v"},
                   {"k": "\ud800"}, {"\ud800": "v"}, {"k": ["v"]}, [], [["k", "v"]], "k=v", 0],
    "reported_cost_usd": ["", "0.001", "1,5", 1, 1.5, Decimal("1.5")],
    "run_id": ["", "x", 0],
    "bogus": [1, None],
    "inputTokens": [1, None],
    "latencyMs": [1],
}


@pytest.mark.parametrize(("field", "value"), [(f, v) for f, values in EDGES.items() for v in values])
def test_each_kind_of_field_edge_is_built_or_refused_as_parse_dict_does(field, value):
    assert_same(pb.RecordPromptAttemptsRequest, {"attempts": [ATTEMPT, {**ATTEMPT, field: value}]})
    assert_same(pb.RecordPromptAttemptRequest, {"attempt": {**ATTEMPT, field: value}})


@pytest.mark.parametrize("score", [1, 0, -1, 0.25, 10**308, 10**400, float("nan"), float("inf"), float("-inf"),
                                   "NaN", "Infinity", "-Infinity", "nan", "1.5", True, None])
def test_doubles_are_built_or_refused_as_parse_dict_does(score):
    assert_same(pb.RecordBenchmarkRequest, {"benchmark": {"suite": "s", "model": "m", "score": score}})


@pytest.mark.parametrize("payload", [
    {"attempts": []}, {"attempts": None}, {"attempts": [None]}, {"attempts": [ATTEMPT, None]},
    {"attempts": (ATTEMPT,)}, {"attempts": ATTEMPT}, {"attempts": "x"}, {"attempts": [[]]}, {"attempts": [{}]},
    {"attempt": {}}, {"attempts": [{"attributes": None, "time": None, "model": None}]},
    {"attempts": [ATTEMPT], "inputTokens": 1}, {"attempts": [{**ATTEMPT, "inputTokens": 3}]},
    {"attempts": [{"input_tokens": 1, "inputTokens": 2}]}, [], "attempts", None,
])
def test_containers_are_built_or_refused_as_parse_dict_does(payload):
    assert_same(pb.RecordPromptAttemptsRequest, payload)


@pytest.mark.parametrize("moment", [
    dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC), dt.datetime(2024, 5, 6, tzinfo=dt.UTC),
    dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))),
    dt.datetime(2024, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=1, seconds=30))),
    dt.datetime(2024, 5, 6, 7, 8, 9),  # noqa: DTZ001  # a naive time: refused by both
    dt.date(2024, 5, 6),
])
def test_times_given_as_datetimes_are_built_as_parse_dict_builds_their_text(moment):
    """The client turns datetimes and Decimals into text first (`_jsonable`), for both transports."""
    assert_same(pb.RecordPromptAttemptRequest, _jsonable({"attempt": {**ATTEMPT, "time": moment,
                                                                      "reported_cost_usd": Decimal("0.25")}}))


def test_the_usual_shapes_are_built_without_parse_dict(monkeypatch):
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("ParseDict was used")

    monkeypatch.setattr(messages.json_format, "ParseDict", refuse)
    attempts = [{**ATTEMPT, "time": dt.datetime.now(dt.UTC).isoformat(), "prompt_name": "p", "prompt_version": "v1",
                 "attributes": {"region": "eu", "tier": "é"}, "run_id": "8f0c1f9e-5a7b-4c3d-9e2f-0a1b2c3d4e5f",
                 "reported_cost_usd": "0.001", "error_code": ""}] * 3
    message = message_from_dict(pb.RecordPromptAttemptsRequest, {"attempts": attempts})
    assert len(message.attempts) == 3 and message.attempts[2].attributes["tier"] == "é"
    for name in ("RecordRunEventRequest", "RecordBenchmarkRequest", "AdmitRequest", "StartRunRequest",
                 "FinishRunRequest", "UpsertPolicyCapRequest", "ListPolicyCapsRequest"):
        message_from_dict(getattr(pb, name), example(pb.DESCRIPTOR.message_types_by_name[name], "full"))
    monkeypatch.undo()
    assert_same(pb.RecordPromptAttemptsRequest, {"attempts": attempts})
