"""manage.py revoke_token NAME — delete the user's API token: the next request with it is a 401."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from webapp.services import AccountError, token_revoke


class Command(BaseCommand):
    help = "Revoke (delete) a user's API token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            had = token_revoke(username=options["username"])
        except AccountError as exc:
            raise CommandError(str(exc)) from exc
        name = options["username"]
        self.stdout.write(f"token of {name} revoked" if had else f"{name} had no token")
