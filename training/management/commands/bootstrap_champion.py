"""``manage.py bootstrap_champion [--seed-labels FILE]``: make sure a champion exists (``v1``).

Builds the tiny base from the pool's texts when ``BASE_MODEL`` is a missing local folder, then trains
``v1`` on the named seed set (FILE: one ``{"id": <external id>, "price": <number>}`` per line, products
imported into the pool first) and promotes it — only when no champion exists yet. Without FILE the seed
labels stored earlier are used, or else the first ``--max-items`` priced pool products.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from training.exceptions import TrainingError
from training.services.bootstrap import version_bootstrap_v1


class Command(BaseCommand):
    help = "Train v1 on a named seed set of labelled products and make it champion, unless one exists."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--seed-labels", type=Path, help='JSONL of {"id": <external id>, "price": <number>} per line'
        )
        parser.add_argument(
            "--max-items", type=int, default=400, help="without a seed set: priced pool products to train on"
        )
        parser.add_argument(
            "--overrides", default="", help='JSON recipe overrides, e.g. \'{"train": {"max_steps": 20}}\''
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            overrides = json.loads(options["overrides"]) if options["overrides"] else None
        except ValueError as exc:
            raise CommandError(f"--overrides is not JSON: {exc}") from None
        try:
            if options["seed_labels"] is not None and not options["seed_labels"].is_file():
                raise CommandError(f"--seed-labels {options['seed_labels']}: no such file")
            version = version_bootstrap_v1(
                seed_labels=options["seed_labels"], max_items=options["max_items"], overrides=overrides
            )
        except TrainingError as exc:
            raise CommandError(str(exc)) from None
        mae = version.metrics.get("mae")
        self.stdout.write(
            f"champion: {version.name}" + (f" (MAE ${mae:.2f} on the test split)" if mae is not None else "")
        )
