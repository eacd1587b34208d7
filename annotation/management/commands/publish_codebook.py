"""``manage.py publish_codebook FILE --author USER [--change-note TEXT]``: publish the next codebook version.

The same as the reviewers' Codebook page (``/review/codebook/``) and ``POST /api/v1/annotation/codebook/
versions``: annotators acknowledge the new version before their next item. Used for the first codebook of
a deployment (``webapp/demo/codebook_v1.md`` is an example of the format, reason codes included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.services import codebook_publish
from webapp.roles import Role, has_role


class Command(BaseCommand):
    help = "Publish the next codebook version (markdown FILE) in the name of a reviewer."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="the codebook as a markdown file")
        parser.add_argument("--author", required=True, help="username of the reviewer who publishes it")
        parser.add_argument(
            "--change-note", default="", help="what changed and why (required for every version after v1)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        author = User.objects.filter(username=options["author"]).first()
        if author is None or not has_role(author, Role.REVIEWER):
            raise CommandError(
                f"--author {options['author']}: no reviewer of that name; create one first with "
                f"`manage.py create_user {options['author']} --role reviewer`"
            )
        try:
            version = codebook_publish(
                author=author, markdown=path.read_text(encoding="utf-8"), change_note=options["change_note"]
            )
        except ValidationError as exc:
            raise CommandError(f"{path}: {'; '.join(exc.messages)}") from None
        flags = (
            f"{len(version.flag_codes)} flag reasons" if version.flag_codes else "the default flag reasons"
        )
        self.stdout.write(
            f"codebook v{version.number} published ({len(version.reason_codes)} reason codes, {flags})"
        )
