"""The admission's input is decoded by a typed struct on the hot path (`decoded_admission`) and by
`AdmissionsApi.InputSerializer` otherwise (which also writes every error and the OpenAPI schema).
The struct may hand a body to the serializer, but must never take one the serializer refuses, nor
read a value differently."""

import json
import types
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.exceptions import ValidationError

from apps.gateway.rest.serializers import validated
from apps.policy.apis import AdmissionsApi, decoded_admission
from apps.policy.models import MODEL_NAME_RE, Reservation
from tests.factories import AgentFactory, issue_key, make_cap, make_price

# Values on both sides of every rule: names, token counts, decimal strings, and wrong types.
names = st.from_regex(MODEL_NAME_RE, fullmatch=True) | st.sampled_from(
    ["gpt-x\n", " gpt-x", "", "-x", "a" * 129, "a" * 128, "mo\x00del"]) | st.text(max_size=8)
counts = (st.integers(min_value=-2, max_value=2) | st.integers(min_value=10**9 - 1, max_value=10**9 + 1)
          | st.sampled_from([2**64, -(2**63) - 1, 5.0, 1e3, 0.5, -0.0, True, False, "5"]))
amounts = st.from_regex(r"\A[0-9]{1,13}(\.[0-9]{1,7})?\Z", fullmatch=True) | st.sampled_from(
    ["0", "0.000000", "1e3", "-1", " 1", "1.", ".5", "01", "999999999999.999999", "1000000000000",
     "1000000000000.000000", "1000000000000.000001", "0x1", "١"]) | st.sampled_from([1, 1.5, None, True])
run_ids = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()) | st.sampled_from(
    ["", "0" * 32, "{00000000-0000-0000-0000-000000000000}", "urn:uuid:00000000-0000-0000-0000-000000000000",
     "00000000-0000-0000-0000-00000000000", "00000000-0000-0000-0000-000000000000\n", "g" * 8 + "-0000-0000-0000-"
     + "0" * 12]) | st.sampled_from([None, 5, True, 1.5])
values = {"model": names, "estimated_input_tokens": counts, "estimated_output_tokens": counts,
          "estimated_cost_usd": amounts, "run_id": run_ids}
anything = st.none() | st.booleans() | st.integers() | st.text(max_size=4) | st.lists(st.integers(), max_size=2)
# (key, value) pairs written out by hand, so a body may repeat a key (JSON parsers keep the last one).
pairs = st.lists(st.one_of(*(st.tuples(st.just(name), strategy) for name, strategy in values.items()),
                           st.tuples(st.sampled_from(["extra", "Model", "model "]), anything)), max_size=6)


@pytest.fixture
def agent_client(api_client, db):
    """An agent's client, a price for gpt-x and a request cap on the agent."""
    make_price("gpt-x")
    agent = AgentFactory.create()
    make_cap(subject=agent, metric="requests", window="minute", limit="100")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_key(agent=agent).token}")
    return api_client


def body_of(items: list[tuple[str, object]]) -> bytes:
    return ("{" + ",".join(f"{json.dumps(key)}:{json.dumps(value)}" for key, value in items) + "}").encode()


def exactly(fields: dict) -> dict:
    """Values compared with their types and spellings: Decimal("1.5") is not Decimal("1.500000") here."""
    return {name: (type(value), str(value)) for name, value in fields.items()}


def request_with(body: bytes, content_type: str = "application/json"):
    return types.SimpleNamespace(content_type=content_type, body=body)


@settings(max_examples=1500, deadline=None)
@given(pairs)
def test_what_the_struct_takes_the_serializer_takes_with_the_same_values(items):
    body = body_of(items)
    decoded = decoded_admission(request_with(body))
    if decoded is not None:
        assert exactly(decoded) == exactly(validated(AdmissionsApi.InputSerializer, json.loads(body)))


VALID: dict[str, st.SearchStrategy[object]] = {"model": st.from_regex(MODEL_NAME_RE, fullmatch=True),
                                               "estimated_input_tokens": st.integers(0, 10**9),
                                               "estimated_output_tokens": st.integers(0, 10**9)}
OPTIONAL: dict[str, st.SearchStrategy[object]] = {
    "estimated_cost_usd": st.from_regex(r"\A(0|[1-9][0-9]{0,11})(\.[0-9]{1,6})?\Z", fullmatch=True),
    "run_id": st.none() | st.uuids().map(str)}


@settings(max_examples=500, deadline=None)
@given(st.fixed_dictionaries(VALID, optional=OPTIONAL))
def test_every_valid_body_takes_the_struct(fields):
    """The hot path is the common one: nothing the schema allows is left to the serializer."""
    decoded = decoded_admission(request_with(json.dumps(fields).encode()))
    assert decoded is not None
    assert exactly(decoded) == exactly(validated(AdmissionsApi.InputSerializer, fields))


PLAIN = '{"model": "gpt-x", "estimated_input_tokens": 5, "estimated_output_tokens": 10}'


@pytest.mark.parametrize(("body", "content_type"), [
    (b'{"model": "gpt-x", "estimated_input_tokens": 5.0, "estimated_output_tokens": 1e1}', "application/json"),
    (PLAIN.encode(), "application/json; charset=utf-8"),
    (PLAIN.encode("utf-16"), "application/json"),
])
def test_a_body_the_struct_leaves_to_the_serializer_is_still_admitted(agent_client, body, content_type):
    assert decoded_admission(request_with(body, content_type)) is None
    response = agent_client.post("/api/v1/admissions", body, content_type=content_type,
                                 HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)
    assert response.status_code == 200, response.content
    assert response.json()["allowed"] is True
    assert response.json()["caps"][0]["reserved"] == "1.000000"  # one request
    assert Reservation.objects.count() == 1


@pytest.mark.parametrize("body", [
    {"model": "gpt-x", "estimated_input_tokens": True, "estimated_output_tokens": 1},
    {"model": "gpt-x\n", "estimated_input_tokens": 1, "estimated_output_tokens": 1},
    {"model": "gpt-x", "estimated_input_tokens": 1, "estimated_output_tokens": 10**9 + 1},
    {"model": "gpt-x", "estimated_input_tokens": 1, "estimated_output_tokens": 1, "estimated_cost_usd": "1e3"},
    {"model": "gpt-x", "estimated_input_tokens": 1, "estimated_output_tokens": 1, "extra": 1},
    {"model": "gpt-x", "estimated_input_tokens": 1},
])
def test_a_refused_body_gets_the_serializers_errors_and_writes_nothing(agent_client, body):
    with pytest.raises(ValidationError) as refused:
        validated(AdmissionsApi.InputSerializer, body)
    assert decoded_admission(request_with(json.dumps(body).encode())) is None
    response = agent_client.post("/api/v1/admissions", body, format="json", HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    detail = refused.value.detail
    assert isinstance(detail, dict)
    assert response.json()["errors"] == {field: [str(message) for message in messages]
                                         for field, messages in detail.items()}
    assert not Reservation.objects.exists()
