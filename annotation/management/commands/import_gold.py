"""Import gold items: ``manage.py import_gold FILE``.

``FILE`` is JSON Lines, one gold item per line: ``{"id": "<external id of a catalogue product>",
"price": 129.99, "tolerance": 0.2}`` (tolerance optional: ANNOTATION_GOLD_TOLERANCE), or a product the
catalogue lacks: ``{"id"?: ..., "title": ..., "text": ..., "category"?: ..., "price": ...}``. Every bad
line is printed (``FILE:LINE: field: reason``); the good ones are stored. Importing a file twice changes
nothing (products that already are gold items are left as they are). Exits non-zero if any line was bad.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.catalogue.reader import RowError, read_jsonl
from annotation.gold import GoldRowError, gold_items_create, gold_pool_status


class Command(BaseCommand):
    help = (
        "Import gold items (products with a known price, served to annotators unannounced) from a JSONL "
        'file: {"id": ..., "price": ..., "tolerance"?: ...} per line, or a new product with title and text.'
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="the .jsonl file")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        rows: list[tuple[int, Any]] = []
        errors: list[GoldRowError] = []
        with path.open("rb") as stream:
            for item in read_jsonl(stream):
                if isinstance(item, RowError):
                    errors.append(GoldRowError(item.line, "", item.reason))
                else:
                    rows.append(item)
        result = gold_items_create(rows=rows, actor=None, partial=True)
        for error in sorted(errors + result.errors, key=lambda e: e.line):
            where = f"{error.field}: " if error.field else ""
            self.stderr.write(f"{path}:{error.line}: {where}{error.reason}")
        bad = len(errors) + len(result.errors)
        self.stdout.write(
            f"{len(result.created)} gold item(s) created ({result.products_created} new product(s)), "
            f"{len(result.existing)} already gold, {bad} bad line(s)."
            + (f" {result.withdrawn} queued ordinary task(s) of them withdrawn." if result.withdrawn else "")
        )
        pool = gold_pool_status()
        if pool["warning"]:
            self.stdout.write(f"Warning: {pool['warning']}")
        if bad:
            raise CommandError(f"{bad} line(s) of {path} were not imported; see above.")
