"""manage.py create_user NAME --role ROLE [--password-file FILE | --no-password] [--token]

The password is typed at a prompt (twice) or read from a file, never from the command line, where it
would land in the shell's history and in every process listing.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from webapp.roles import Role
from webapp.services import AccountError, password_check, user_create_with_role


class Command(BaseCommand):
    help = (
        "Create a user with a role; the password comes from a prompt or --password-file. "
        "Prints the API token with --token. Existing users: see `manage.py roles`."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=[role.value for role in Role])
        source = parser.add_mutually_exclusive_group()
        source.add_argument(
            "--password-file",
            type=Path,
            help="read the password from the first line of this file ('-': standard input)",
        )
        source.add_argument(
            "--no-password",
            action="store_true",
            help="a token-only user that no password logs in (the default for --role client)",
        )
        # Refused with a message (argparse's "unrecognized argument" would not say what to use instead).
        source.add_argument("--password", help=argparse.SUPPRESS)
        parser.add_argument("--email", default="")
        parser.add_argument("--token", action="store_true", help="create an API token and print it")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["password"] is not None:
            raise CommandError(
                "--password is refused: a password on the command line lands in the shell's history. "
                "Leave it out to type it at a prompt, or use --password-file FILE."
            )
        username, role = options["username"], Role(options["role"])
        password = self._password(username, role, options)
        try:
            user, token = user_create_with_role(
                username=username,
                role=role,
                password=password,
                email=options["email"],
                with_token=options["token"],
            )
        except AccountError as exc:
            raise CommandError(str(exc)) from exc
        login = "logs in with its password" if password is not None else "has no password (token only)"
        self.stdout.write(f"user {user.username} has role {role.value} and {login}")
        if token:
            self.stdout.write(f"token {token}")

    def _password(self, username: str, role: Role, options: dict[str, Any]) -> str | None:
        if options["no_password"]:
            return None
        path: Path | None = options["password_file"]
        if path is not None:
            try:
                text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"--password-file {path}: cannot be read ({exc.strerror}).") from None
            lines = text.splitlines()
            return lines[0] if lines else ""
        if role is Role.CLIENT:
            return None  # API clients use tokens
        if not sys.stdin.isatty():
            raise CommandError(
                f"{username} needs a password: run this in a terminal to type it, give --password-file FILE, "
                "or --no-password for a token-only user."
            )
        probe = User(username=username, email=options["email"])
        for _attempt in range(3):
            first = getpass.getpass(f"Password for {username}: ")
            if getpass.getpass("Password (again): ") != first:
                self.stderr.write("The two passwords differ; try again.")
                continue
            try:
                password_check(first, user=probe)
            except AccountError as exc:
                self.stderr.write(str(exc))
                continue
            return first
        raise CommandError(f"no password set for {username}: three attempts failed.")
