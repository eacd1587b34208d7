"""API conventions shared by every endpoint: one JSON error shape, one place that maps errors to it.

Every error body is ``{"error": {"code": str, "message": str, "fields": {name: [messages]}}}``
(``fields`` only for validation errors), whatever raised it:

- DRF's own errors and the domain's (``AnnotationError``: its status and code; ``TrainingError``: 409
  with its code, ``RunSettingsInvalid``: 400 naming the field), ``PermissionError`` (403), Django's
  ``ValidationError`` (400) and a missing object (404), through ``exception_handler`` (DRF's
  ``EXCEPTION_HANDLER``) in every API view;
- an unreachable database or broker: 503 (``database_unavailable``, ``broker_unavailable``), wherever it
  is noticed: in a view (``exception_handler``) or before one (``server_error``, Django's handler500);
- any other failure under /api/: 500 ``server_error`` (``server_error``); the traceback goes to the log;
- a path no endpoint serves: 404 ``not_found`` (``not_found``, the URL map's last route).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

import kombu.exceptions
from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from annotation.exceptions import AnnotationError, CodebookAckRequired
from training.exceptions import BrokerUnavailable, RunSettingsInvalid, TrainingError

logger = logging.getLogger(__name__)

_S = TypeVar("_S", bound=serializers.Serializer)


@functools.cache
def serializer_once(serializer_class: type[_S]) -> _S:
    """One instance of ``serializer_class`` per process, for the endpoints an annotator calls per item.

    DRF deep-copies and binds a serializer's declared fields every time one is instantiated: about
    0.3 ms of CPU per annotate next or submit, a third of what DRF added over the old hand-written path
    (measured with tests/benchmarks/profile_queue.py, docs/perf-queue.md §8). An instance used only
    through ``to_representation`` (output) or ``run_validation`` (input: raises the same
    ``ValidationError`` as ``is_valid``) keeps no per-call state, so one instance serves every request
    and thread. Not for serializers that take ``context``, ``instance`` or ``save()``.
    """
    return serializer_class()


class JSONOnly(DefaultContentNegotiation):
    """Content negotiation for views that answer JSON only (``renderer_classes = [JSONRenderer]``): the
    request body is parsed by its Content-Type as usual, and the answer is JSON whatever the Accept
    header says (DRF's "custom content negotiation" example). Parsing Accept to pick the only renderer
    there is cost 0.05 ms a request on the annotate loop; a client asking for something else gets JSON,
    as it would from any JSON API."""

    def select_renderer(
        self, request: Any, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return (renderer, renderer.media_type)


# The one error body of the whole API, as the OpenAPI schema shows it.
ERROR_SCHEMA = inline_serializer(
    "Error",
    fields={
        "error": inline_serializer(
            "ErrorBody",
            fields={
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "fields": serializers.DictField(required=False),
                # only with code "codebook_ack_required": the version to acknowledge
                "codebook_version": serializers.IntegerField(required=False),
            },
        )
    },
)


def _flatten(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {key: _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [str(item) if not isinstance(item, dict | list) else _flatten(item) for item in detail]
    return [str(detail)]


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE


DATABASE_UNAVAILABLE = (
    "database_unavailable",
    "The database is unreachable; try again in a moment (GET /healthz shows each component's state).",
)
BROKER_UNAVAILABLE = (
    "broker_unavailable",
    "The task queue (broker) is unreachable, so the work could not be queued; tell the operator "
    "(GET /healthz shows each component's state).",
)


def _unavailable(exc: BaseException) -> tuple[str, str] | None:
    """(code, message) when ``exc`` means a backing service is unreachable: the request may be retried."""
    if isinstance(exc, OperationalError | InterfaceError):  # Django's: connecting or the connection failed
        return DATABASE_UNAVAILABLE
    if isinstance(exc, kombu.exceptions.OperationalError):  # Celery's publish gave up on the broker
        return BROKER_UNAVAILABLE
    return None


def _as_api_exception(exc: Exception) -> Exception:
    """The DRF exception a domain or Django error stands for (``exc`` itself when it is none of them)."""
    if isinstance(exc, AnnotationError):
        mapped = exceptions.APIException(detail=exc.message, code=exc.code)
        mapped.status_code = exc.status
        return mapped
    if isinstance(exc, RunSettingsInvalid):  # a training setting chosen at approval: that field's 400
        return exceptions.ValidationError({exc.field: [str(exc)]})
    if isinstance(exc, BrokerUnavailable):  # what was decided is committed; the message says what happens
        return ServiceUnavailable(detail=str(exc), code=exc.code)
    if isinstance(exc, TrainingError):
        mapped = exceptions.APIException(detail=str(exc), code=exc.code)
        mapped.status_code = status.HTTP_409_CONFLICT
        return mapped
    if isinstance(exc, PermissionError):
        return exceptions.PermissionDenied(detail=str(exc))
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        return exceptions.ValidationError(detail=detail)
    if isinstance(exc, Http404):
        return exceptions.NotFound(*exc.args)  # as DRF's own handler: the view's message, if any
    if isinstance(exc, ObjectDoesNotExist):
        return exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied(*exc.args)
    if (unavailable := _unavailable(exc)) is not None:
        # The client gets the component, never the driver's text (hosts, ports, paths): that is logged.
        logger.error("API request failed: %s", unavailable[0], exc_info=exc)
        return ServiceUnavailable(detail=unavailable[1], code=unavailable[0])
    return exc


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every error a view raises, in the one shape. None (an unexpected error)
    lets it propagate to Django, which logs it and answers with ``server_error``."""
    api_exc = _as_api_exception(exc)
    response = drf_exception_handler(api_exc, context)
    if response is None:
        return None
    response.data = error_body(api_exc)
    request = context.get("request")
    if request is not None:
        # Always JSON, whatever the view renders on success (the schema's YAML, the browsable API's HTML).
        request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
    if isinstance(exc, CodebookAckRequired):
        response.data["error"]["codebook_version"] = exc.version.number
    return response


def error_body(exc: Exception) -> dict[str, Any]:
    code = "error"
    message = "Request failed."
    fields: dict[str, Any] | None = None
    if isinstance(exc, exceptions.ValidationError):
        code = "invalid"
        message = "Some fields are invalid; see 'fields'."
        detail = exc.detail
        fields = _flatten(detail) if isinstance(detail, dict) else {"non_field_errors": _flatten(detail)}
    elif isinstance(exc, exceptions.APIException):
        code = str(exc.get_codes()) if isinstance(exc.get_codes(), str) else exc.default_code
        message = str(exc.detail)
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if fields is not None:
        body["error"]["fields"] = fields
    return body


def _is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's handler400 (e.g. a Host header not in ALLOWED_HOSTS): under /api/ the JSON error."""
    if not _is_api(request):
        return defaults.bad_request(request, exception)
    message = "The request was refused before it reached the API (a bad Host header or malformed request)."
    return JsonResponse({"error": {"code": "bad_request", "message": message}}, status=400)


def server_error(request: HttpRequest) -> HttpResponse:
    """Django's handler500: under /api/ the JSON error (503 when a backing service is unreachable),
    elsewhere the site's HTML page. Django has already logged the traceback."""
    if not _is_api(request):
        return defaults.server_error(request)
    exc = sys.exc_info()[1]
    unavailable = _unavailable(exc) if exc is not None else None
    if unavailable is not None:
        code, message = unavailable
        return JsonResponse({"error": {"code": code, "message": message}}, status=503)
    message = "The server failed to answer this request; the error is logged for the operator."
    return JsonResponse({"error": {"code": "server_error", "message": message}}, status=500)


@csrf_exempt  # it only ever answers 404; a CSRF failure page would hide the real answer
def not_found(request: HttpRequest) -> JsonResponse:
    """Any /api/ path that no endpoint serves: the API's JSON error, never the site's HTML 404 page.

    /api/v1/ paths have no trailing slash (the schema and docs pages have one); a client that adds or
    drops one is told the path to use.
    """
    path = request.path_info
    message = f"No API endpoint at {path}; the endpoints are listed at /api/docs/."
    other = path.rstrip("/") if path.endswith("/") else path + "/"
    if _served(other):
        if path.endswith("/"):
            message = f"No API endpoint at {path}: API paths have no trailing slash; use {other}."
        else:
            message = f"No API endpoint at {path}: this path ends with a slash; use {other}."
    return JsonResponse({"error": {"code": "not_found", "message": message}}, status=404)


def _served(path: str) -> bool:
    try:
        return resolve(path).func is not not_found
    except Resolver404:
        return False
