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


class VersionFilesInvalid(TrainingError):  # noqa: N818 - the API's code names it
    """A version whose folder fails the download's checks (tampered or incomplete): never made champion."""

    code = "version_files_invalid"


class RollbackNeedsOverride(TrainingError):  # noqa: N818 - the API's code names it
    """A rollback to a version the gate rejected, without a written override reason."""

    code = "rollback_needs_override"


class NotEnoughLabelsError(TrainingError):
    code = "not_enough_labels"


class QualityChecksFailed(TrainingError):  # noqa: N818 - the API's code names it
    """A batch whose quality checks fail, approved without a written override reason."""

    code = "quality_checks_failed"


class RunSettingsInvalid(TrainingError):  # noqa: N818 - the API's code names it
    """A training setting chosen at approval that is not allowed; ``field`` names it (the API's 400)."""

    code = "run_settings_invalid"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class BrokerUnavailable(TrainingError):  # noqa: N818 - the API's code names it
    """The task queue refused a message. What was decided is committed; the recovery beat sends it later."""

    code = "broker_unavailable"
