"""Issue an API key for an agent; print its token and its request-signing secret on stdout."""

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from apps.audit.services import Actor
from apps.gateway.access import ALL_SCOPES
from apps.gateway.errors import DomainError
from apps.keys import services
from apps.keys.models import Agent, Project
from modeloman.durations import parse_duration


class Command(BaseCommand):
    help = (
        "Issue an API key: create_agent_key --project SLUG --agent NAME --scopes a,b "
        "[--expires-in 90d] [--create]. Prints two lines and nothing else: the token, then the key's "
        "signing secret for policy and cap writes. Neither is shown again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--agent", required=True, help="Agent name within the project.")
        parser.add_argument("--scopes", required=True, help=f"Comma-separated: {', '.join(sorted(ALL_SCOPES))}.")
        parser.add_argument("--expires-in", help="Lifetime such as 90d or 12h. Default: never expires.")
        parser.add_argument("--name", default="", help="A label for operators.")
        parser.add_argument("--create", action="store_true",
                            help="Create the project and agent if they do not exist.")

    def handle(self, *args: object, **options: Any) -> None:
        scopes = [s.strip() for s in str(options["scopes"]).split(",") if s.strip()]
        unknown = sorted(set(scopes) - ALL_SCOPES)
        if not scopes or unknown:
            raise CommandError(f"Unknown or missing scope(s): {', '.join(unknown) or '(none)'}. "
                               f"Known: {', '.join(sorted(ALL_SCOPES))}.")
        expires_at = None
        if options["expires_in"]:
            try:
                expires_at = timezone.now() + parse_duration(str(options["expires_in"]))
            except ValueError as error:
                raise CommandError(str(error)) from error

        actor = Actor.system("create_agent_key")
        try:
            with transaction.atomic():
                agent = self._agent(actor, str(options["project"]), str(options["agent"]),
                                    create=bool(options["create"]))
                issued = services.api_key_create(actor=actor, agent=agent, scopes=scopes,
                                                 expires_at=expires_at, name=str(options["name"]))
        except DomainError as error:
            raise CommandError(error.detail) from error
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from error
        self.stdout.write(issued.token)
        self.stdout.write(issued.signing_secret)

    def _agent(self, actor: Actor, project_slug: str, agent_name: str, *, create: bool) -> Agent:
        project = Project.objects.filter(slug=project_slug).first()
        if project is None:
            if not create:
                raise CommandError(f"Unknown project {project_slug!r} (pass --create to create it).")
            project = services.project_save(actor=actor, project=Project(slug=project_slug, name=project_slug))
        agent = Agent.objects.filter(project=project, name=agent_name).first()
        if agent is None:
            if not create:
                raise CommandError(f"Unknown agent {agent_name!r} in {project_slug!r} (pass --create).")
            agent = services.agent_save(actor=actor, agent=Agent(project=project, name=agent_name))
        return agent
