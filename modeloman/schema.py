"""OpenAPI generation tweaks (drf-spectacular)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema


class AutoSchema(SpectacularAutoSchema):
    """Views keep small nested `InputSerializer`/`OutputSerializer` classes; name their schema
    components after the view (`AdmissionsInput`, `WhoAmIOutput`) so they do not collide."""

    def _get_serializer_name(self, serializer, direction, bypass_extensions=False):
        name = super()._get_serializer_name(serializer, direction, bypass_extensions)
        outer, _, inner = type(serializer).__qualname__.rpartition(".")
        if outer and name == inner.removesuffix("Serializer"):
            return outer.removesuffix("Api") + name
        return name


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "apps.gateway.rest.auth.ApiKeyAuthentication"
    name = "agentKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "mmk_<key_id>_<secret><checksum>"}
