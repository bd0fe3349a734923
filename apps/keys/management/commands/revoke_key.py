"""Revoke an API key by its public key id."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.services import Actor
from apps.gateway.errors import DomainError
from apps.keys import services
from apps.keys.models import ApiKey


class Command(BaseCommand):
    help = "Revoke an API key for good: revoke_key KEY_ID --reason TEXT."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("key_id", help="The public key id (the 12 characters after mmk_).")
        parser.add_argument("--reason", required=True, help="Why; stored in the audit trail.")

    def handle(self, *args: object, **options: Any) -> None:
        api_key = ApiKey.objects.filter(key_id=options["key_id"]).first()
        if api_key is None:
            raise CommandError(f"Unknown key id {options['key_id']!r}.")
        try:
            services.api_key_revoke(actor=Actor.system("revoke_key"), api_key=api_key,
                                    reason=str(options["reason"]))
        except DomainError as error:
            raise CommandError(error.detail) from error
        self.stdout.write(f"revoked {api_key.key_id}")
