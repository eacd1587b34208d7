"""Errors the annotation services raise on purpose. Each maps to one HTTP status in the API.

Input errors are ``django.core.exceptions.ValidationError`` with a dict naming the field
(``{"corrected_price": ["…"]}``): the API answers 400 with those fields, pages show the messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from annotation.models import CodebookVersion


class AnnotationError(Exception):
    """Base class: ``code`` is stable (the API's ``error.code``), ``status`` its HTTP status."""

    code = "annotation_error"
    status = 409

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CodebookAckRequired(AnnotationError):  # noqa: N818 - domain names the callers use
    """A codebook version the annotator has not acknowledged yet: show it, ask for the ack."""

    code = "codebook_ack_required"
    status = 409

    def __init__(self, version: CodebookVersion) -> None:
        super().__init__(
            f"Codebook v{version.number} was published: read it and acknowledge it before the next item."
        )
        self.version = version


class AnnotatorPaused(AnnotationError):  # noqa: N818 - domain names the callers use
    code = "annotator_paused"
    status = 403

    def __init__(self, reason: str) -> None:
        super().__init__(f"Your annotation work is paused: {reason} A reviewer can unpause you.")
        self.reason = reason


class LeaseNotFound(AnnotationError):  # noqa: N818 - domain names the callers use
    """No such assignment for this annotator (another annotator's ids look the same: 404)."""

    code = "not_found"
    status = 404


class LeaseLost(AnnotationError):  # noqa: N818 - domain names the callers use
    """The lease is no longer live (expired and returned, skipped, released): take the next item."""

    code = "lease_lost"
    status = 409


class TaskFull(AnnotationError):  # noqa: N818 - domain names the callers use
    """The task already has all its annotations."""

    code = "task_full"
    status = 409


class UndoNotAllowed(AnnotationError):  # noqa: N818 - domain names the callers use
    code = "undo_not_allowed"
    status = 409


class AnnotationFinal(AnnotationError):  # noqa: N818 - domain names the callers use
    """The item this annotation belongs to has its outcome (resolved, sent to adjudication, a check item):
    the annotation can no longer be changed."""

    code = "annotation_final"
    status = 409


class FlagDecided(AnnotationError):  # noqa: N818 - domain names the callers use
    """A reviewer already decided on this flag (returned the item to the queue or dropped it)."""

    code = "flag_decided"
    status = 409
