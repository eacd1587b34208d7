"""Reads shaped for the pages (the annotator's codebook panel). Built on ``annotation.selectors``."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils.safestring import SafeString, mark_safe

from annotation import selectors
from annotation.codebook import markdown_diff_html
from annotation.models import CodebookVersion

MAX_REASON_KEYS = 9  # reasons are chosen with the digit keys 1-9


@dataclass(frozen=True)
class CodebookPanel:
    number: int
    html: SafeString  # sanitized by the codebook renderer
    previous_number: int | None
    changes_html: SafeString | None  # escaped diff lines vs the previous version; None for the first one
    reasons: list[dict[str, str]] = field(default_factory=list)


def codebook_previous(version: CodebookVersion) -> CodebookVersion | None:
    return CodebookVersion.objects.filter(number__lt=version.number).order_by("-number").first()


def codebook_changes_html(old: CodebookVersion, new: CodebookVersion) -> SafeString:
    """What changed from ``old`` to ``new``, as escaped, classed diff lines.

    Both texts get a final newline first: published markdown is stripped, and a last line without one
    would run into the next diff line ("-old last line+new last line").
    """
    return mark_safe(  # noqa: S308 - markdown_diff_html escapes every line
        markdown_diff_html(
            old.markdown.rstrip("\n") + "\n",
            new.markdown.rstrip("\n") + "\n",
            old_name=f"v{old.number}",
            new_name=f"v{new.number}",
        )
    )


def codebook_panel(version: CodebookVersion | None = None) -> CodebookPanel | None:
    """The codebook as the annotator sees it: the given (default: current) version and what changed."""
    version = version or selectors.codebook_current()
    if version is None:
        return None
    previous = codebook_previous(version)
    return CodebookPanel(
        number=version.number,
        html=selectors.codebook_render(version),
        previous_number=previous.number if previous else None,
        changes_html=codebook_changes_html(previous, version) if previous else None,
        reasons=[
            {"code": str(r["code"]), "label": str(r["label"])} for r in version.reason_codes[:MAX_REASON_KEYS]
        ],
    )
