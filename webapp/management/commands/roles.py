"""manage.py roles NAME [--set ROLE ...] [--add ROLE ...] [--remove ROLE ...]

Without options it prints the user's roles. ``--set`` replaces them (``--set`` alone: none left),
then ``--add`` and ``--remove`` apply. Each option may be repeated.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from webapp.roles import Role
from webapp.services import AccountError, user_roles_change


class Command(BaseCommand):
    help = "Show, set, add or remove the roles (annotator, reviewer, client) of a user."

    def add_arguments(self, parser: CommandParser) -> None:
        choices = [role.value for role in Role]
        parser.add_argument("username")
        parser.add_argument(
            "--set",
            dest="set_to",
            nargs="*",
            choices=choices,
            help="replace the roles with these (none given: no role)",
        )
        parser.add_argument("--add", action="append", default=[], choices=choices, help="add a role")
        parser.add_argument("--remove", action="append", default=[], choices=choices, help="remove a role")

    def handle(self, *args: Any, **options: Any) -> None:
        set_to = options["set_to"]
        try:
            roles = user_roles_change(
                username=options["username"],
                set_to=[Role(r) for r in set_to] if set_to is not None else None,
                add=[Role(r) for r in options["add"]],
                remove=[Role(r) for r in options["remove"]],
            )
        except AccountError as exc:
            raise CommandError(str(exc)) from exc
        shown = ", ".join(sorted(role.value for role in roles)) or "none"
        self.stdout.write(f"user {options['username']} has roles: {shown}")
