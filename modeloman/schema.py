"""OpenAPI generation tweaks (drf-spectacular)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiParameter

from apps.gateway.access import OPERATIONS
from apps.gateway.rest.auth import operation_of
from apps.gateway.signature import NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER

SIGNATURE_PARAMETERS = [
    OpenApiParameter(TIMESTAMP_HEADER, str, OpenApiParameter.HEADER,
                     description="Unix time in whole seconds (±300 s). Signed writes: see the README."),
    OpenApiParameter(NONCE_HEADER, str, OpenApiParameter.HEADER,
                     description="16-128 of A-Z a-z 0-9 _ -, fresh for every request (accepted once)."),
    OpenApiParameter(SIGNATURE_HEADER, str, OpenApiParameter.HEADER,
                     description="Hex HMAC-SHA256 of the canonical request under the key's signing secret. "
                                 "Required when the server sets REQUIRE_SIGNED_WRITES."),
]


class AutoSchema(SpectacularAutoSchema):
    """Views keep small nested `InputSerializer`/`OutputSerializer` classes; name their schema
    components after the view (`AdmissionsInput`, `WhoAmIOutput`) so they do not collide."""

    def _get_serializer_name(self, serializer, direction, bypass_extensions=False):
        name = super()._get_serializer_name(serializer, direction, bypass_extensions)
        outer, _, inner = type(serializer).__qualname__.rpartition(".")
        if outer and name == inner.removesuffix("Serializer"):
            return outer.removesuffix("Api") + name
        return name

    def get_override_parameters(self):
        """The signature headers, on every operation the access table marks `signed`."""
        operation = OPERATIONS.get(operation_of(self.view, self.method))
        signed = SIGNATURE_PARAMETERS if operation is not None and operation.signed else []
        return [*super().get_override_parameters(), *signed]


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "apps.gateway.rest.auth.ApiKeyAuthentication"
    name = "agentKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "mmk_<key_id>_<secret><checksum>"}
