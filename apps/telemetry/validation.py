"""Strict, fast decoding of telemetry items (attempts, run events, benchmarks).

Batches of up to 1,000 items arrive at tens of thousands of items a second, so request
bodies are decoded straight into typed structs by msgspec, which checks types, ranges and
patterns in C while it parses (DRF serializers cost ~50x more per field). The few rules that
depend on the request (timestamps within the accepted window) or on several fields are
checked afterwards, in the same pass that writes the rows. The first bad item stops the
batch, and the error names its index and field.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from django.conf import settings
from msgspec import Meta

from apps.gateway.errors import Conflict, DomainError, InvalidInput, NotFound
from apps.policy.models import ModelName, Tokens
from modeloman.amounts import decimal_pattern

MAX_BATCH = 1000
MAX_LATENCY_MS = 3_600_000
MAX_COST = Decimal("1000000")
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTES_BYTES = 4096
MAX_MESSAGE_LENGTH = 4000
FUTURE_SKEW = dt.timedelta(minutes=5)
MONEY = Decimal("0.000001")

# Patterns end in \Z, not $: msgspec searches with `re`, where $ also matches before a final newline.
LABEL_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:/@+ -]{0,127}"
CODE_PATTERN = r"[a-z0-9][a-z0-9_.:-]{0,63}"

Label = Annotated[str, Meta(pattern=rf"^{LABEL_PATTERN}\Z")]
OptionalLabel = Annotated[str, Meta(pattern=rf"^(?:{LABEL_PATTERN})?\Z")]
Code = Annotated[str, Meta(pattern=rf"^{CODE_PATTERN}\Z")]
OptionalCode = Annotated[str, Meta(pattern=rf"^(?:{CODE_PATTERN})?\Z")]
Count = Annotated[int, Meta(ge=0, le=10**9)]
LatencyMs = Annotated[int, Meta(ge=0, le=MAX_LATENCY_MS)]
Timestamp = Annotated[dt.datetime, Meta(tz=True, description=(  # RFC 3339 with an offset or Z
    "RFC 3339 with an offset; not older than the retention period, at most 5 minutes ahead (TimeWindow). "
    "Default: when the server receives it."))]
Message = Annotated[str, Meta(max_length=MAX_MESSAGE_LENGTH, pattern=r"^[^\x00]*\Z")]
AttributeKey = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}\Z")]
AttributeText = Annotated[str, Meta(pattern=r"^[^\x00]*\Z")]  # jsonb cannot store NUL
Attributes = Annotated[dict[AttributeKey, AttributeText | int | float | bool | None], Meta(max_length=MAX_ATTRIBUTES)]
# A decimal string, as every amount on the wire (modeloman.amounts); 0 to MAX_COST inclusive.
Money = Annotated[str, Meta(pattern=decimal_pattern(whole_digits=MAX_COST.adjusted(), places=6,
                                                    include_power=True))]


class AttemptIn(msgspec.Struct, forbid_unknown_fields=True):
    """One prompt attempt as an agent reports it."""

    model: Annotated[ModelName, Meta(examples=["gpt-4o-mini"])]
    success: bool
    input_tokens: Tokens
    output_tokens: Tokens
    latency_ms: LatencyMs
    time: Timestamp | None = None
    prompt_name: OptionalLabel = ""
    prompt_version: OptionalLabel = ""
    error_code: OptionalCode = ""
    reported_cost_usd: Money | None = None
    run_id: uuid.UUID | None = None
    reservation_id: uuid.UUID | None = None
    attributes: Attributes | None = None


class RunEventIn(msgspec.Struct, forbid_unknown_fields=True):
    """One event of a run."""

    kind: Annotated[Code, Meta(examples=["tool_call"])]
    time: Timestamp | None = None
    message: Message = ""
    attributes: Attributes | None = None


class BenchmarkIn(msgspec.Struct, forbid_unknown_fields=True):
    """One benchmark result."""

    suite: Annotated[Label, Meta(examples=["humaneval"])]
    model: ModelName
    score: float
    time: Timestamp | None = None
    prompt_name: OptionalLabel = ""
    prompt_version: OptionalLabel = ""
    passed: Annotated[Count | None, Meta(description="Tasks passed: at most `total`.")] = None
    total: Count | None = None
    attributes: Attributes | None = None


class _ItemError(DomainError):
    """An error about one field of one item; the problem names its `index` (batches) and `field`."""

    def __init__(self, index: int | None, field: str, message: str, *, code: str | None = None) -> None:
        where = f"item {index}, " if index is not None else ""
        super().__init__(f"{where}field `{field}`: {message}", code=code, index=index, field=field)


class ItemInvalid(_ItemError, InvalidInput):
    """The item itself is wrong (400)."""

    code = "invalid_item"


class ItemNotFound(_ItemError, NotFound):
    """The item refers to something that does not exist for this agent (404)."""


class ItemConflict(_ItemError, Conflict):
    """The item is well formed but conflicts with the current state: a reservation already
    settled or released (409)."""


class TimeWindow:
    """The accepted range of item timestamps, computed once per request."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self.latest = now + FUTURE_SKEW
        self.oldest = now - dt.timedelta(days=settings.TELEMETRY_RETENTION_DAYS)

    def check(self, moment: dt.datetime | None, index: int | None) -> dt.datetime:
        """The item's time (now when it has none), or ItemInvalid if outside the window."""
        if moment is None:
            return self.now
        if moment > self.latest:
            raise ItemInvalid(index, "time", "is in the future")
        if moment < self.oldest:
            raise ItemInvalid(index, "time", "is older than the retention period")
        return moment


# --- request bodies ------------------------------------------------------------------------------

_TOP_LEVEL = msgspec.json.Decoder(dict[str, msgspec.Raw])  # the keys only; values are decoded later
_DECODERS: dict[type, tuple[msgspec.json.Decoder, msgspec.json.Decoder]] = {
    item_type: (msgspec.json.Decoder(item_type), msgspec.json.Decoder(list[item_type]))  # type: ignore[valid-type]  # a runtime type
    for item_type in (AttemptIn, RunEventIn, BenchmarkIn)
}
# msgspec ends every validation message with the path of the bad value: "... - at `$[3].model`",
# "... - at `key` in `$[3].attributes`"; unknown and missing fields are named in the message.
_PATH = re.compile(r" - at `(?:key` in `)?\$(?:\[(\d+)\])?(?:\.(\w+))?")
_NAMED_FIELD = re.compile(r"^Object (?:contains unknown|missing required) field `([^`]{0,64})")


def _invalid(error: msgspec.ValidationError, *, batch: bool) -> ItemInvalid:
    message = str(error)
    path = _PATH.search(message)
    named = _NAMED_FIELD.match(message)
    index = int(path.group(1)) if batch and path and path.group(1) is not None else None
    field = (named.group(1) if named else None) or (path.group(2) if path else None) or "-"
    reason = message[: path.start()] if path else message
    return ItemInvalid(index, field, reason[:200])  # bounded: an unknown field's name is the caller's text


def _malformed(error: Exception) -> InvalidInput:
    if isinstance(error, RecursionError):  # msgspec refuses nesting deeper than its recursion limit
        return InvalidInput("The body is nested too deeply.", code="malformed_request")
    return InvalidInput(f"The body is not valid JSON: {error}.", code="malformed_request")


def decode_item(body: bytes, item_type: type) -> Any:
    """A request body holding exactly one `item_type` item."""
    return _decode(_DECODERS[item_type][0], body, batch=False)


def _decode(decoder: msgspec.json.Decoder, body: bytes, *, batch: bool) -> Any:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as error:
        whole = _whole_floats_as_integers(body) if _FLOAT_FOR_INT.match(str(error)) else None
        if whole is None:
            raise _invalid(error, batch=batch) from None
        return _decode_strictly(decoder, whole, batch=batch)
    except (msgspec.DecodeError, RecursionError) as error:
        raise _malformed(error) from None


def _decode_strictly(decoder: msgspec.json.Decoder, body: bytes, *, batch: bool) -> Any:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as error:
        raise _invalid(error, batch=batch) from None
    except (msgspec.DecodeError, RecursionError) as error:
        raise _malformed(error) from None


# JSON Schema counts a number with a zero fraction (5.0, 1e3) as an integer; msgspec's strict
# `int` does not. Such bodies are rare, so they take a slow path: the fractions-free numbers are
# rewritten as integers and the body is decoded again (fast path unchanged for everyone else).
_FLOAT_FOR_INT = re.compile(r"Expected `int(?: \| null)?`, got `float`")


def _whole_floats_as_integers(body: bytes | msgspec.Raw) -> bytes | None:
    def number(text: str) -> int | float:
        value = Decimal(text)
        return int(value) if value == value.to_integral_value() and abs(value) <= 10**18 else float(text)

    try:
        return json.dumps(json.loads(bytes(body), parse_float=number)).encode()
    except (ValueError, RecursionError):
        return None


def decode_items(body: bytes, item_type: type, *, plural: str) -> tuple[list[Any], bool]:
    """A request body, either one item or `{"<plural>": [up to 1,000 items]}`, decoded into
    `item_type` structs: (items, is_batch). Raises InvalidInput naming the first bad item."""
    many = _DECODERS[item_type][1]
    try:
        fields = _TOP_LEVEL.decode(body)
    except msgspec.ValidationError:
        raise InvalidInput(f"The body must be a JSON object: one item, or {{\"{plural}\": [...]}}.",
                           code="invalid_batch") from None
    except (msgspec.DecodeError, RecursionError) as error:
        raise _malformed(error) from None
    if plural not in fields:
        return [decode_item(body, item_type)], False
    if len(fields) != 1:
        raise InvalidInput(f"A batch body has only the `{plural}` field.", code="invalid_batch")
    raw = fields[plural]
    try:
        items = _decode(many, raw, batch=True)
    except ItemInvalid as error:
        if error.extra.get("field") != "-" or error.extra.get("index") is not None:  # the error is inside an item
            raise
        items = None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise InvalidInput(f"`{plural}` must be a list of 1 to {MAX_BATCH} items.", code="invalid_batch")
    return items, True


def convert_item(value: dict, item_type: type) -> Any:
    """One item already decoded by another transport (gRPC: a message as a dict), checked by the
    same struct as a JSON body: same limits, same errors naming the field."""
    try:
        return msgspec.convert(value, item_type)
    except msgspec.ValidationError as error:
        raise _invalid(error, batch=False) from None


def convert_items(values: list[dict], item_type: type, *, plural: str) -> list[Any]:
    """A batch from another transport: 1 to 1,000 items, the first bad one named by its index."""
    if not 1 <= len(values) <= MAX_BATCH:
        raise InvalidInput(f"`{plural}` must be a list of 1 to {MAX_BATCH} items.", code="invalid_batch")
    try:
        return msgspec.convert(values, list[item_type])  # type: ignore[valid-type]  # a runtime type
    except msgspec.ValidationError as error:
        raise _invalid(error, batch=True) from None


def request_schema(item_type: type, *, plural: str | None = None) -> dict:
    """The OpenAPI (JSON Schema) of a request body, generated from the structs that validate it:
    one item, or with `plural`, also `{"<plural>": [1 to 1,000 items]}`."""
    item = msgspec.json.schema(item_type)["$defs"][item_type.__name__]
    item = json.loads(json.dumps(item).replace(r"\\Z", "$"))  # in ECMA-262 regexes `$` is the end of input
    if plural is None:
        return item
    batch = {"type": "object", "properties": {plural: {"type": "array", "items": item, "minItems": 1,
                                                         "maxItems": MAX_BATCH}},
             "required": [plural], "additionalProperties": False}
    return {"oneOf": [item, batch]}


# --- rules beyond types --------------------------------------------------------------------------


def encoded_attributes(attributes: dict | None, index: int | None) -> bytes:
    """Attributes as compact JSON, at most 4 KB and free of NUL (which jsonb refuses)."""
    if not attributes:
        return b"{}"
    encoded = msgspec.json.encode(attributes)
    if len(encoded) > MAX_ATTRIBUTES_BYTES or b"\\u0000" in encoded:
        raise ItemInvalid(index, "attributes", f"must be at most {MAX_ATTRIBUTES_BYTES} bytes of JSON without NUL")
    return encoded


def checked_money(amount: Decimal | str | None, index: int | None, field: str) -> Decimal | None:
    if amount is None:
        return None
    amount = Decimal(amount)
    if not amount.is_finite() or not Decimal(0) <= amount <= MAX_COST:
        raise ItemInvalid(index, field, f"must be a number between 0 and {MAX_COST}")
    return amount.quantize(MONEY)


def check_benchmark(item: BenchmarkIn) -> None:
    if item.score != item.score or item.score in (float("inf"), float("-inf")):
        raise ItemInvalid(None, "score", "must be a finite number")
    if item.passed is not None and item.total is not None and item.passed > item.total:
        raise ItemInvalid(None, "passed", "must not exceed `total`")
