from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "apps.keys"
    label = "keys"
    verbose_name = "Projects, agents and API keys"

