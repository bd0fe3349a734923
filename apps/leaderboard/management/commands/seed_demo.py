"""Load (or remove) demo data for the public leaderboard.

    manage.py seed_demo [--days 30] [--attempts-per-day 2000] [--if-empty]
    manage.py seed_demo --clear

Goes through the same ingest services as agents' data; see apps/leaderboard/demo.py.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.gateway.errors import DomainError
from apps.keys.models import Project
from apps.leaderboard.demo import demo_clear, demo_seed


class Command(BaseCommand):
    help = "Load realistic demo data for the leaderboard (flagged as demo), or remove it with --clear."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--clear", action="store_true", help="Remove the demo data instead.")
        parser.add_argument("--if-empty", action="store_true",
                            help="Only when the database has no projects yet (what `make run` uses).")
        parser.add_argument("--days", type=int, default=30, help="Days of history. Default 30.")
        parser.add_argument("--attempts-per-day", type=int, default=2000, help="Default 2000.")
        parser.add_argument("--seed", type=int, default=7, help="Random seed (same seed, same data).")

    def handle(self, *args: object, **options: Any) -> None:
        try:
            if options["clear"]:
                counts = demo_clear()
                self.stdout.write(f"Removed demo data: {counts['attempts']} attempts from {counts['projects']} "
                                  "demo projects; their keys are revoked, agents disabled, projects opted out.")
                return
            if options["if_empty"] and Project.objects.exists():
                return
            days, per_day = int(options["days"]), int(options["attempts_per_day"])
            if not 1 <= days <= 60 or per_day < 1:
                raise CommandError("--days must be 1-60 and --attempts-per-day at least 1.")
            counts = demo_seed(days=days, attempts_per_day=per_day, seed=int(options["seed"]))
        except DomainError as error:
            raise CommandError(str(error.detail)) from error
        self.stdout.write(f"Loaded demo data: {counts['attempts']} attempts and {counts['benchmarks']} benchmark "
                          f"results over {days} days in {counts['projects']} demo projects "
                          "(remove with `manage.py seed_demo --clear`).")
