"""The hot views validate and render with one serializer instance per class (issue 10): the
answers must be exactly those of a fresh serializer per request, also under concurrency."""

import datetime as dt
import threading
import uuid
from decimal import Decimal
from typing import Any

import pytest
from rest_framework import serializers

from apps.gateway.rest.serializers import rendered, validated
from apps.policy.apis import AdmissionsApi, CapInputSerializer, CapsApi, PolicyApi
from apps.policy.ledger import Admission, CapStatus
from apps.telemetry.apis import RunFinishApi, RunsApi

INPUTS = [AdmissionsApi.InputSerializer, PolicyApi.InputSerializer, CapInputSerializer, CapsApi.CreateSerializer,
          RunsApi.InputSerializer, RunFinishApi.InputSerializer]
BODIES: list[Any] = [
    None, [], 5, "text", {},
    {"model": "gpt-4o", "estimated_input_tokens": 10, "estimated_output_tokens": 5},
    {"model": " gpt", "estimated_input_tokens": -1, "estimated_output_tokens": "5", "extra": 1},
    {"model": "gpt", "estimated_input_tokens": 1e3, "estimated_output_tokens": 2.0, "estimated_cost_usd": "0.10"},
    {"subject": "agent", "kill_switch": True, "allowed_models": ["a", "b!"], "max_tokens_per_attempt": None},
    {"metric": "cost_usd", "window": "day", "limit": "1.5", "subject": "project", "mode": "dry_run"},
    {"task": "t", "metadata": {"k": "\x00"}}, {"task": "t", "metadata": {"k": [1, {"a": None}]}},
    {"status": "succeeded"}, {"status": "nope", "metadata": []},
]


def fresh(serializer_class, data):
    serializer = serializer_class(data=data)
    if serializer.is_valid():
        return "valid", dict(serializer.validated_data)
    return "invalid", serializer.errors


def shared(serializer_class, data):
    try:
        return "valid", validated(serializer_class, data)
    except serializers.ValidationError as error:
        return "invalid", error.detail


@pytest.mark.parametrize("serializer_class", INPUTS, ids=lambda c: c.__qualname__)
def test_validation_answers_as_a_fresh_serializer_does(serializer_class):
    for body in BODIES:
        expected = fresh(serializer_class, body)
        assert shared(serializer_class, body) == expected, body
        # And the codes the problem document is built from.
        if expected[0] == "invalid":
            assert (serializers.ValidationError(shared(serializer_class, body)[1]).get_codes()
                    == serializers.ValidationError(expected[1]).get_codes())


def admission(n: int) -> Admission:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=n)
    return Admission(allowed=n % 2 == 0, reasons=[] if n % 2 == 0 else [f"cap_exceeded:{n}"],
                     reservation_id=uuid.UUID(int=n), estimated_cost_usd=Decimal(n) / 1000,
                     caps=[CapStatus(cap_id=n, metric="cost_usd", window="day", window_start=start, mode="enforce",
                                     limit=Decimal(n + 10), used=Decimal(n), reserved=Decimal("0.5"))])


def test_rendering_answers_as_a_fresh_serializer_does():
    output = AdmissionsApi.OutputSerializer
    for n in range(5):
        assert rendered(output, admission(n)) == output(admission(n)).data
    many = [admission(n) for n in range(3)]
    assert rendered(output, many, many=True) == output(many, many=True).data


def test_one_instance_serves_concurrent_requests_without_mixing_them():
    threads, rounds = 8, 300
    barrier = threading.Barrier(threads)
    mixed: list[str] = []

    def work(worker: int) -> None:
        barrier.wait()
        for i in range(rounds):
            n = worker * rounds + i
            body: dict[str, Any] = {"model": f"m{n}", "estimated_input_tokens": n, "estimated_output_tokens": 1}
            if n % 3 == 0:
                body["unknown"] = n
            outcome = shared(AdmissionsApi.InputSerializer, body)
            expected: tuple[str, Any] = ("invalid", {"unknown": ["Unknown field."]}) if n % 3 == 0 else ("valid", {
                "model": f"m{n}", "estimated_input_tokens": n, "estimated_output_tokens": 1})
            if outcome != expected:
                mixed.append(f"input {n}: {outcome}")
            out = rendered(AdmissionsApi.OutputSerializer, admission(n))
            if out["caps"][0]["cap_id"] != n or out["reservation_id"] != str(uuid.UUID(int=n)):
                mixed.append(f"output {n}: {out}")

    pool = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert mixed == []
