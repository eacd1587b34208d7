"""Reads shaped for the pages (the annotator's codebook panel). Built on ``annotation.selectors``."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils.safestring import SafeString

from annotation import selectors
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
        changes_html=selectors.codebook_diff(previous, version, html=True) if previous else None,  # type: ignore[arg-type]
        reasons=[
            {"code": str(r["code"]), "label": str(r["label"])} for r in version.reason_codes[:MAX_REASON_KEYS]
        ],
    )
