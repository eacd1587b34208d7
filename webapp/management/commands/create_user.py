"""manage.py create_user NAME --role annotator|reviewer|client [--password P] [--token]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from webapp.roles import Role
from webapp.services import user_create_with_role


class Command(BaseCommand):
    help = "Create (or update) a user with a role; prints the API token with --token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=[role.value for role in Role])
        parser.add_argument("--password", help="login password (omit for token-only API clients)")
        parser.add_argument("--email", default="")
        parser.add_argument("--token", action="store_true", help="create an API token and print it")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user, token = user_create_with_role(
                username=options["username"],
                role=Role(options["role"]),
                password=options["password"],
                email=options["email"],
                with_token=options["token"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"user {user.username} has role {options['role']}")
        if token:
            self.stdout.write(f"token {token}")
