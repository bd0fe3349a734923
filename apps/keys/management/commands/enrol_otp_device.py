"""Enrol (or replace) a staff user's TOTP device and print its provisioning URI."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.services import Actor
from modeloman.admin_security import totp_device_enrol


class Command(BaseCommand):
    help = ("Give a user a TOTP device for the admin's second factor and print the otpauth:// URI to load "
            "into an authenticator app (shown once). --replace swaps a lost device (docs/runbooks.md).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="authenticator", help="A label for the device.")
        parser.add_argument("--replace", action="store_true", help="Remove the user's TOTP devices first.")
        parser.add_argument("--reason", default="", help="Why; stored in the audit trail.")

    def handle(self, *args: object, **options: Any) -> None:
        user_model = get_user_model()
        user = user_model.objects.filter(**{user_model.USERNAME_FIELD: options["username"]}).first()
        if user is None:
            raise CommandError(f"No user {options['username']!r}.")
        if not user.is_staff:
            self.stderr.write(f"warning: {user.get_username()} is not staff and cannot use the admin yet.")
        try:
            device = totp_device_enrol(actor=Actor.system("enrol_otp_device"), user=user, name=str(options["name"]),
                                       replace=bool(options["replace"]), reason=str(options["reason"]))
        except ValueError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(device.config_url)
