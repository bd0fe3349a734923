from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "apps.gateway"
    verbose_name = "Agent gateway"

    def ready(self) -> None:
        from apps.gateway.rest import schema  # noqa: F401  # registers the OpenAPI bearer-key scheme
