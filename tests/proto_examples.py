"""Example payloads (ParseDict's input) for the ControlPlane's request messages, for tests that
compare two ways of converting them."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2 as pb

REQUESTS = [method.input_type for method in pb.DESCRIPTOR.services_by_name["ControlPlane"].methods]


def example(descriptor: Descriptor, variant: str, depth: int = 0) -> dict[str, Any]:
    """A payload (ParseDict's input) for a message type: `full` sets every field to something other
    than its default, `defaults` sets every field to its default (which, for a field with presence,
    still marks it present)."""
    payload: dict[str, Any] = {}
    full = variant == "full"
    for field in descriptor.fields:
        message_type = field.message_type
        if message_type is not None and message_type.full_name == "google.protobuf.FieldMask":
            value: Any = "killSwitch,dryRun" if full else ""  # its JSON: the paths in camelCase, comma-separated
        elif message_type is not None and message_type.GetOptions().map_entry:
            value = {"k": "v", "a": ""} if full else {}
        elif message_type is not None and message_type.full_name == "google.protobuf.Timestamp":
            value = "2024-02-29T23:59:59.123456+01:00" if full else "1970-01-01T00:00:00Z"
        elif message_type is not None:
            value = example(message_type, variant, depth + 1) if depth < 3 else {}
        elif field.type == FieldDescriptor.TYPE_STRING:
            value = f"{field.name}-text" if full else ""
        elif field.type == FieldDescriptor.TYPE_BOOL:
            value = full
        elif field.type == FieldDescriptor.TYPE_DOUBLE:
            value = 0.5 if full else 0.0
        else:
            value = field.number + 7 if full else 0
        if field.is_repeated and not (message_type is not None and message_type.GetOptions().map_entry):
            value = [value, value] if full else []
        payload[field.name] = value
    return payload
