"""LangSmith tracing (optional: off unless ``LANGSMITH_API_KEY`` or ``LANGSMITH_ENDPOINT`` is set; the
``langsmith`` package comes with the ``langsmith`` extra, and ``manage.py check`` says when it is missing).

Each model guess is logged as an ``llm`` run; each annotation on a guessed task becomes feedback on
that run: accept → ``score=1``, reject → ``score=0``, correction → ``correction={"price": …}``.
Sending happens in the ``langsmith_sync`` beat task, never in the annotation request: the task reads
rows above its cursors (``SyncCursor``), sends them with the real ``langsmith`` client and advances
the cursors only after the send succeeded, so a failure is retried with the same rows. Run and
feedback ids are derived from our primary keys (uuid5), so a resend addresses the same objects.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from annotation.models import Annotation, Guess
from training.models import SyncCursor

logger = logging.getLogger(__name__)

NAMESPACE = uuid.UUID("6b1f3c1e-2f5e-4c55-9a36-5d7e2a0c9b10")
GUESSES = "langsmith:guesses"
ANNOTATIONS = "langsmith:annotations"
CHUNK = 200  # rows per cursor per sync


class LangSmithSendError(Exception):
    """A send failed (network, HTTP error); the task retries and the cursors did not move."""


def enabled() -> bool:
    return bool(settings.LANGSMITH_API_KEY or settings.LANGSMITH_ENDPOINT)


def guess_run_id(guess_id: int) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"guess:{guess_id}")


def annotation_feedback_id(annotation_id: int) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"annotation:{annotation_id}")


def missing_package() -> str | None:
    """Why tracing cannot run although it is configured (the optional package is absent), or None."""
    if not enabled():
        return None
    try:
        import langsmith  # noqa: F401
    except ImportError:
        return (
            "LangSmith tracing is configured (LANGSMITH_API_KEY or LANGSMITH_ENDPOINT is set) but the "
            "langsmith package is not installed: install it with pip install 'priceloop[langsmith]', "
            "or unset both variables to turn tracing off."
        )
    return None


def _client() -> Any:
    problem = missing_package()
    if problem:
        raise ImproperlyConfigured(problem)
    from langsmith import Client
    from urllib3.util.retry import Retry

    return Client(
        api_url=settings.LANGSMITH_ENDPOINT or None,
        api_key=settings.LANGSMITH_API_KEY or "not-needed-for-this-endpoint",
        auto_batch_tracing=False,  # send now, in this task, so that a failure is ours to retry
        retry_config=Retry(total=1, backoff_factor=0.1),
        timeout_ms=10_000,
        info={},  # no /info round trip
    )


def feedback_for(annotation: Annotation) -> dict[str, Any]:
    """The feedback fields of one annotation."""
    fields: dict[str, Any] = {"key": "verdict", "value": annotation.verdict}
    if annotation.verdict == "accept":
        fields["score"] = 1
    elif annotation.verdict == "reject":
        fields["score"] = 0
        if annotation.reason_code:
            fields["comment"] = annotation.reason_code
    else:
        fields["correction"] = {"price": float(annotation.corrected_price or 0)}
    return fields


def _cursor(name: str) -> int:
    return SyncCursor.objects.get_or_create(name=name)[0].last_id


def _advance(name: str, last_id: int) -> None:
    with transaction.atomic():
        SyncCursor.objects.filter(name=name, last_id__lt=last_id).update(last_id=last_id)


def sync_guesses(client: Any) -> int:
    after = _cursor(GUESSES)
    guesses = list(
        Guess.objects.filter(pk__gt=after, model_version__isnull=False)
        .select_related("product", "model_version")
        .order_by("pk")[:CHUNK]
    )
    sent = 0
    for guess in guesses:
        version = guess.model_version
        assert version is not None  # filtered above
        end = guess.created
        start = end - timedelta(milliseconds=guess.latency_ms or 0)
        try:
            client.create_run(
                name="price_guess",
                inputs={"product": guess.product.external_id, "text": guess.product.text},
                run_type="llm",
                project_name=settings.LANGSMITH_PROJECT,
                id=guess_run_id(guess.pk),
                start_time=start,
                end_time=end,
                outputs={"price": float(guess.price), "topk": guess.topk, "entropy": guess.entropy},
                extra={"metadata": {"model_version": version.name, "guess_id": guess.pk}},
                tags=[version.name],
            )
        except Exception as exc:
            if sent:
                _advance(GUESSES, guesses[sent - 1].pk)
            raise LangSmithSendError(f"guess {guess.pk}: {exc}") from exc
        sent += 1
    if guesses:
        _advance(GUESSES, guesses[-1].pk)
    return sent


def _project_id(client: Any) -> Any:
    """The LangSmith project's id (feedback names it: required on SmithDB-only deployments)."""
    from langsmith.utils import LangSmithNotFoundError

    try:
        return client.read_project(project_name=settings.LANGSMITH_PROJECT).id
    except LangSmithNotFoundError:
        return client.create_project(settings.LANGSMITH_PROJECT).id


def sync_annotations(client: Any) -> int:
    after = _cursor(ANNOTATIONS)
    guesses_done = _cursor(GUESSES)
    annotations = list(
        Annotation.objects.filter(pk__gt=after).select_related("task__guess").order_by("pk")[:CHUNK]
    )
    last = after
    sent = 0
    project_id = None
    for annotation in annotations:
        guess = annotation.task.guess
        if guess is not None and guess.model_version_id is not None:
            if guess.pk > guesses_done:
                break  # its run is not in LangSmith yet: wait for the next sync
            try:
                if project_id is None:
                    project_id = _project_id(client)
                client.create_feedback(
                    guess_run_id(guess.pk),
                    feedback_id=annotation_feedback_id(annotation.pk),
                    trace_id=guess_run_id(guess.pk),  # each guess is the root of its own trace
                    session_id=project_id,
                    stop_after_attempt=1,
                    **feedback_for(annotation),
                )
            except Exception as exc:
                _advance(ANNOTATIONS, last)
                raise LangSmithSendError(f"annotation {annotation.pk}: {exc}") from exc
            sent += 1
        last = annotation.pk
    _advance(ANNOTATIONS, last)
    return sent


def sync_all() -> dict[str, int]:
    """Send what is new since the last sync; a no-op when LangSmith is not configured."""
    if not enabled():
        return {"guesses": 0, "annotations": 0}
    client = _client()
    guesses = sync_guesses(client)
    annotations = sync_annotations(client)
    if guesses or annotations:
        logger.info("langsmith: %s runs, %s feedback sent", guesses, annotations)
    return {"guesses": guesses, "annotations": annotations}
