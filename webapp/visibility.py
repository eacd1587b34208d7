"""What an API client may read, decided per field. Reviewers see everything.

Clients (serving code, a downstream team's CI) read versions, metrics, lineage, runs, batches and
downloads. They never see who annotated what (usernames, ids), per-annotator accuracy, seconds spent,
gold membership, run logs, tracebacks or the server's file paths. Each output serializer that a client
can read says, for every one of its fields, whether a client reads it as it is (``client_plain``) or
what a client gets instead (``client_view``: ``HIDE`` drops the field, a function rewrites the value);
``tests/test_client_visibility.py`` fails on a field that is in neither.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from rest_framework import serializers

from webapp.roles import Role, has_role

log = logging.getLogger(__name__)

HIDE = None  # in ``client_view``: the field is not in a client's answer at all
ClientRewrite = Callable[[Any], Any] | None

# An absolute path: a "/" not preceded by a word character, a dot, ":" (URLs) or "/" itself, followed by
# at least one path character. Hub ids such as "meta-llama/Llama-3.1-8B" and URLs do not match.
_ABS_PATH = re.compile(r"(?<![\w.:/~-])/[^\s'\"(),;:\[\]{}<>]+")
_MAX_ERROR_CHARS = 300


def sees_everything(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    """Reviewers read every field; anyone else reading the registry (clients) reads the client view."""
    return has_role(user, Role.REVIEWER)


def strip_paths(text: str) -> str:
    """``text`` with each absolute path cut to its last part: ``/srv/var/base-tiny`` → ``…/base-tiny``."""

    def last(match: re.Match[str]) -> str:
        name = match.group(0).rstrip("/").rsplit("/", 1)[-1]
        return f"…/{name}" if name else "…/"

    return _ABS_PATH.sub(last, text)


def public_json(value: Any) -> Any:
    """A JSON value with every string cleaned of server paths (keys kept)."""
    if isinstance(value, str):
        return strip_paths(value)
    if isinstance(value, Mapping):
        return {key: public_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [public_json(item) for item in value]
    return value


def one_line_error(error: str) -> str:
    """A run's error as a client reads it: its summary line, without paths; the full text (traceback
    included) stays on the run for reviewers and in the worker's log."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if not lines:
        return ""
    # run_fail stores "Type: message" first, then the traceback; a bare traceback (or one whose start was
    # cut off: the run keeps its last 5000 characters) ends with its summary.
    cut = error[:1].isspace() or lines[0].startswith(("Traceback", "File ", "^"))
    summary = lines[-1] if cut else lines[0]
    summary = strip_paths(summary)
    if len(summary) > _MAX_ERROR_CHARS:
        summary = summary[: _MAX_ERROR_CHARS - 1] + "…"
    return summary


def public_batch_stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    """Batch stats without the per-annotator table (names, ids, gold accuracy) or the gold figure."""
    return {key: value for key, value in stats.items() if key not in ("annotators", "gold_accuracy_mean")}


def public_checks(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Quality checks as a client reads them: the annotator check's message names nobody."""
    out = []
    for check in checks:
        check = dict(check)
        if check.get("name") == "annotators_below_floor":
            # "2 annotator(s) … floor: alice (gold 1/5); bob (paused: …)." → the sentence before the names
            check["message"] = str(check.get("message", "")).split(": ", 1)[0].rstrip(".") + "."
        out.append(check)
    return out


# annotations/export: what a client leaves out of each row (who annotated, how long, which were gold).
EXPORT_REVIEWER_ONLY = ("annotator", "seconds_spent", "gold")


def public_export_row(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in EXPORT_REVIEWER_ONLY}


class ClientVisibleSerializer(serializers.Serializer):
    """An output serializer that clients read: ``context["full"]`` (the reader is a reviewer) gives every
    field; without it (the safe default) each field follows ``client_plain``/``client_view``."""

    client_plain: ClassVar[frozenset[str]] = frozenset()
    client_view: ClassVar[dict[str, ClientRewrite]] = {}

    def to_representation(self, instance: Any) -> Any:
        data = super().to_representation(instance)
        if self.context.get("full"):
            return data
        out = {}
        for name, value in data.items():
            if name in self.client_view:
                rewrite = self.client_view[name]
                if rewrite is HIDE:
                    continue
                out[name] = rewrite(value) if value is not None else None
            elif name in self.client_plain:
                out[name] = value
            # a field in neither set is not shown: the test names it, the client never sees it
        return out


def serializer_context(user: AbstractBaseUser | AnonymousUser | None) -> dict[str, Any]:
    return {"full": sees_everything(user)}
