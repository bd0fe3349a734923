"""Print fresh values for SECRET_KEY, KEY_PEPPER and REQUEST_SIGNING_KEY, ready for an environment file."""

import secrets
from typing import Any

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Print strong random SECRET_KEY, KEY_PEPPER and REQUEST_SIGNING_KEY lines for the environment."

    def handle(self, *args: object, **options: Any) -> None:
        self.stdout.write(f"SECRET_KEY={secrets.token_urlsafe(50)}")
        self.stdout.write(f"KEY_PEPPER={secrets.token_urlsafe(48)}")
        self.stdout.write(f"REQUEST_SIGNING_KEY={secrets.token_urlsafe(48)}")
