"""Errors of the retraining domain that a user can cause; each message names the input and the fix."""

from __future__ import annotations


class TrainingError(Exception):
    """Base class; ``code`` is the stable machine-readable name the API returns."""

    code = "training_error"


class BatchStateError(TrainingError):
    code = "batch_state"


class RunStateError(TrainingError):
    code = "run_state"


class VersionStateError(TrainingError):
    code = "version_state"


class NotEnoughLabelsError(TrainingError):
    code = "not_enough_labels"


class QualityChecksFailed(TrainingError):  # noqa: N818 - the API's code names it
    """A batch whose quality checks fail, approved without a written override reason."""

    code = "quality_checks_failed"
