"""Strict input serializers: unknown fields and loosely typed values are errors, not ignored."""

from rest_framework import serializers


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
    """Only JSON integers: no strings, floats or booleans."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictDecimalField(serializers.DecimalField):
    """JSON numbers or numeric strings; never booleans, NaN or infinities."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float | str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """Only JSON strings: numbers are not silently turned into text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
