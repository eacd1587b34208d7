"""Reads shaped for the pages (the annotator's codebook panel). Built on ``annotation.selectors``."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth.models import User
from django.utils.safestring import SafeString, mark_safe

from annotation import selectors
from annotation.codebook import markdown_changes_html, markdown_diff_html
from annotation.flags import flag_reasons
from annotation.models import CodebookAck, CodebookVersion

MAX_REASON_KEYS = 9  # reasons are chosen with the digit keys 1-9


@dataclass(frozen=True)
class CodebookPanel:
    number: int
    html: SafeString  # sanitized by the codebook renderer
    previous_number: int | None  # what the changes are against: the annotator's last acknowledged version
    changes_html: SafeString | None  # escaped, readable changes since previous_number; None: nothing before
    reasons: list[dict[str, str]] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)  # change notes of the versions since then
    flag_reasons: list[dict[str, str]] = field(default_factory=list)  # the codebook's, or the defaults


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


def codebook_readable_changes(old: CodebookVersion, new: CodebookVersion) -> SafeString:
    """What changed from ``old`` to ``new`` for an annotator: Added/Removed/Changed lines, escaped."""
    return mark_safe(markdown_changes_html(old.markdown, new.markdown))  # noqa: S308 - escaped piece by piece


def last_acknowledged(annotator: User) -> CodebookVersion | None:
    ack = (
        CodebookAck.objects.filter(annotator=annotator).select_related("version").order_by("-version__number")
    )
    first = ack.first()
    return first.version if first else None


def codebook_panel(
    version: CodebookVersion | None = None, *, annotator: User | None = None
) -> CodebookPanel | None:
    """The codebook as the annotator sees it: the given (default: current) version and what changed
    since the version ``annotator`` last acknowledged (without one: since the version before)."""
    version = version or selectors.codebook_current()
    if version is None:
        return None
    acked = last_acknowledged(annotator) if annotator is not None else None
    if acked is not None and acked.number < version.number:
        previous: CodebookVersion | None = acked
    else:
        previous = codebook_previous(version)
    notes = [
        {"number": str(v.number), "note": v.change_note}
        for v in CodebookVersion.objects.filter(
            number__gt=previous.number if previous else 0, number__lte=version.number
        ).order_by("number")
        if v.change_note
    ]
    return CodebookPanel(
        number=version.number,
        html=selectors.codebook_render(version),
        previous_number=previous.number if previous else None,
        changes_html=codebook_readable_changes(previous, version) if previous else None,
        notes=notes,
        reasons=[
            {"code": str(r["code"]), "label": str(r["label"])} for r in version.reason_codes[:MAX_REASON_KEYS]
        ],
        flag_reasons=flag_reasons(version)[:MAX_REASON_KEYS],
    )
