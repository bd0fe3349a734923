"""Print fresh values for SECRET_KEY and KEY_PEPPER, ready for an environment file."""

import secrets

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Print strong random SECRET_KEY and KEY_PEPPER lines for the environment."

    def handle(self, *args: object, **options: object) -> None:
        self.stdout.write(f"SECRET_KEY={secrets.token_urlsafe(50)}")
        self.stdout.write(f"KEY_PEPPER={secrets.token_urlsafe(48)}")
