from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "apps.keys"
    label = "keys"
    verbose_name = "Projects, agents and API keys"

    def ready(self) -> None:
        from modeloman import schema  # noqa: F401  # registers the OpenAPI bearer-key scheme
