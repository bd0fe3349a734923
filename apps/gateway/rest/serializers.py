"""Strict input serializers: unknown fields and loosely typed values are errors, not ignored.

Each rule here is also what the OpenAPI document says (apps.gateway.rest.schema maps these
classes): a client or a fuzzer that follows the schema is never refused for a reason the schema
does not state, and one that breaks it is always refused.
"""

import functools
import re
from decimal import Decimal
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.http import QueryDict
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail
from rest_framework.settings import api_settings

from modeloman.amounts import decimal_pattern

# What str.strip() would remove if we trimmed; a required text field needs something else.
BLANK_CHARACTERS = " \t\n\r\f\v"


def contains_nul(value) -> bool:
    """Whether any string in a JSON value (keys included) holds U+0000, which PostgreSQL's jsonb
    and text types cannot store. Iterative: nesting is bounded by the parser, not the stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def reject_nul(value):
    """A validator for JSON-valued fields that land in a jsonb column."""
    if contains_nul(value):
        raise serializers.ValidationError("Must not contain the NUL character (\\u0000).", code="nul_character")
    return value


class JSONObjectField(serializers.DictField):
    """A JSON object bound for a jsonb column: values of any JSON type, nested as deep as the
    parser allows (apps.gateway.rest.parsers), with no NUL in any key or string, and at most
    `max_properties` keys at the top."""

    def __init__(self, *, max_properties: int, **kwargs):
        self.max_properties = max_properties
        kwargs["validators"] = [reject_nul, self._check_size, *kwargs.get("validators", [])]
        super().__init__(**kwargs)

    def _check_size(self, value: dict) -> None:
        if len(value) > self.max_properties:
            raise serializers.ValidationError(f"At most {self.max_properties} keys.", code="too_many_keys")


class StrictSerializer(serializers.Serializer):
    """Rejects fields it does not declare (a typo must not silently change nothing)."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]}, code="invalid")
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown}, code="unknown_field")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """Only JSON integers: no strings, booleans or fractions. A number with a zero fraction (5.0,
    1e3) is an integer in JSON Schema, so it is taken as one."""

    def to_internal_value(self, data):
        if isinstance(data, float) and data.is_integer():
            data = int(data)
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictDecimalField(serializers.DecimalField):
    """A decimal string ("12.50") matching `pattern` (modeloman.amounts): never a JSON number,
    exponent, sign, leading zero or surrounding space. Non-negative; with a positive `min_value`,
    zero is refused too. The pattern is the whole rule, and the OpenAPI schema publishes it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.max_digits is None or self.decimal_places is None:
            raise ImproperlyConfigured("StrictDecimalField needs max_digits and decimal_places.")
        smallest = Decimal(1).scaleb(-self.decimal_places)
        if self.min_value not in (Decimal(0), smallest):
            raise ImproperlyConfigured("StrictDecimalField takes min_value 0 or its smallest unit.")
        whole_digits = self.max_digits - self.decimal_places
        if self.max_value is not None and self.max_value < Decimal(10) ** whole_digits:
            raise ImproperlyConfigured("StrictDecimalField's max_value must not be below its digit limit.")
        self.pattern = decimal_pattern(whole_digits=whole_digits, places=self.decimal_places,
                                       positive=self.min_value > 0)
        self._regex = re.compile(self.pattern)

    def validate_empty_values(self, data):
        if data == "":  # DRF reads "" as null for a nullable decimal; here it is just not a decimal
            self.fail("invalid")
        return super().validate_empty_values(data)

    def to_internal_value(self, data):
        if not isinstance(data, str) or not self._regex.search(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictUUIDField(serializers.UUIDField):
    """A UUID as JSON Schema's `uuid` format writes it (8-4-4-4-12 hex digits): not an integer,
    a boolean (DRF would take both as UUID(int=...)), braces, a URN or hex without hyphens."""

    pattern = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\Z"
    _regex = re.compile(pattern)

    def to_internal_value(self, data):
        if not isinstance(data, str) or not self._regex.search(data):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """Only JSON strings, taken as sent: numbers are not turned into text, and surrounding space
    is neither trimmed nor counted away (the length limit is on what was sent). A required text
    (allow_blank=False) needs a character other than blank space; NUL is refused (DRF)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        if not self.allow_blank and not data.strip(BLANK_CHARACTERS):
            self.fail("blank")
        return super().to_internal_value(data)


# --- serializers built once ------------------------------------------------------------------------
#
# DRF builds a serializer's fields anew for every instance (a deepcopy of each declared field), which
# for the admission's input and output took ~0.5 ms a request: more than the admission's own Python.
# Validation (`run_validation`) and rendering (`to_representation`) keep no state on the instance, so
# the hot views share one instance per class, built with its fields on first use (issue 10).


@functools.cache
def shared(serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
    serializer = serializer_class()
    serializer.fields  # noqa: B018  # bind the fields now, not in two threads at once later
    return serializer


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict:
    """`serializer_class(data=data)`'s validated data, or the ValidationError `is_valid` raises.
    Query parameters are read as a plain dict (each name's last value): DRF's rules for a
    QueryDict, made for HTML forms, would take an empty value (`?limit=`) as absent, where the
    schema says it is not an integer."""
    if isinstance(data, QueryDict):
        data = data.dict()
    try:
        return shared(serializer_class).run_validation(data)
    except serializers.ValidationError as error:
        detail = error.detail
        if isinstance(detail, list) and len(detail) == 1 and getattr(detail[0], "code", None) == "null":
            # What Serializer.errors reports for a body of `null`, instead of "may not be null".
            detail = {api_settings.NON_FIELD_ERRORS_KEY: [ErrorDetail("No data provided", code="null")]}
        raise serializers.ValidationError(detail) from None


def rendered(serializer_class: type[serializers.Serializer], value: Any, *, many: bool = False) -> Any:
    """`serializer_class(value, many=many).data`, as plain dicts and lists."""
    serializer = shared(serializer_class)
    if many:
        return [serializer.to_representation(item) for item in value]
    return serializer.to_representation(value)
