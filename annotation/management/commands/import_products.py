"""Import a product catalogue: ``manage.py import_products PATH [--format jsonl|csv] [--test-fraction F]``.

Every bad row is printed (``PATH:LINE: reason``) as it is found; the good rows are stored. The command
ends with a summary and exits non-zero when any row was bad, so a script or CI notices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.catalogue.reader import FORMATS, CatalogueFormatError, RowError
from annotation.catalogue.services import default_workers, products_import


class Command(BaseCommand):
    help = (
        "Import products from a JSONL or CSV file (fields: id, title, text or description, category, "
        "optional price and source; other fields are kept as extra data). Idempotent: re-importing "
        "updates products by id and never changes their split."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="the .jsonl or .csv file")
        parser.add_argument(
            "--format", choices=FORMATS, default=None, help="file format (default: from the extension)"
        )
        parser.add_argument(
            "--test-fraction",
            type=float,
            default=None,
            help="share of NEW products put in the frozen test split (default: TEST_SPLIT_FRACTION)",
        )
        parser.add_argument(
            "--max-text-chars",
            type=int,
            default=None,
            help="cut descriptions to this many characters (default: CATALOGUE_MAX_TEXT_CHARS)",
        )
        parser.add_argument("--source", default=None, help="source of rows without one (default: file name)")
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help="processes that parse and curate (default: one per CPU, up to 4, for files over 8 MiB)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        fraction = options["test_fraction"]
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise CommandError(f"--test-fraction must be between 0 and 1, got {fraction}")

        def report(error: RowError) -> None:
            self.stderr.write(f"{path}:{error.line}: {error.reason}")

        try:
            result = products_import(
                path=path,
                fmt=options["format"],
                test_fraction=fraction,
                max_text_chars=options["max_text_chars"],
                source=options["source"],
                on_error=report,
                workers=options["workers"] or default_workers(path),
            )
        except CatalogueFormatError as exc:
            raise CommandError(f"{path}: {exc}") from None
        if not result.ok:
            raise CommandError(f"{path}: {result.summary}; the bad rows were skipped (see above)")
        self.stdout.write(self.style.SUCCESS(f"{path}: {result.summary}"))
