"""manage.py rotate_token NAME — a new API token for the user (prints it); the old one stops working."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from webapp.services import AccountError, token_rotate
from webapp.tokens import token_expires


class Command(BaseCommand):
    help = "Give a user a new API token (the old key stops working at once) and print it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            key = token_rotate(username=options["username"])
        except AccountError as exc:
            raise CommandError(str(exc)) from exc
        from rest_framework.authtoken.models import Token

        expires = token_expires(Token.objects.get(key=key).created)
        self.stdout.write(f"token {key}")
        self.stdout.write(f"expires {expires:%Y-%m-%d %H:%M} UTC" if expires else "expires never")
