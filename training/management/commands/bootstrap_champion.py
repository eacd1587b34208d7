"""``manage.py bootstrap_champion``: make sure a champion exists (the demo's v1).

Builds the tiny base from the pool's priced products when ``BASE_MODEL`` is a missing local folder,
then trains ``v1`` on seeded catalogue prices and promotes it — only when no champion exists yet.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from training.exceptions import TrainingError
from training.services.bootstrap import version_bootstrap_v1


class Command(BaseCommand):
    help = "Train v1 on seeded catalogue prices and make it champion, unless a champion exists."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--max-items", type=int, default=400, help="pool products to train v1 on")
        parser.add_argument(
            "--overrides", default="", help='JSON recipe overrides, e.g. \'{"train": {"max_steps": 20}}\''
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            overrides = json.loads(options["overrides"]) if options["overrides"] else None
        except ValueError as exc:
            raise CommandError(f"--overrides is not JSON: {exc}") from None
        try:
            version = version_bootstrap_v1(max_items=options["max_items"], overrides=overrides)
        except TrainingError as exc:
            raise CommandError(str(exc)) from None
        mae = version.metrics.get("mae")
        self.stdout.write(
            f"champion: {version.name}" + (f" (MAE ${mae:.2f} on the test split)" if mae is not None else "")
        )
