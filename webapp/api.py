"""API conventions shared by every endpoint: one JSON error shape.

Every error body is ``{"error": {"code": str, "message": str, "fields": {name: [messages]}}}``
(``fields`` only for validation errors), whatever raised it.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

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


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
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
    response.data = body
    return response


@csrf_exempt  # it only ever answers 404; a CSRF failure page would hide the real answer
def not_found(request: HttpRequest) -> JsonResponse:
    """Any /api/v1/ path that no endpoint serves: the API's JSON error, never the site's HTML 404 page.

    API paths have no trailing slash; a client that adds one (DRF's habit) is told the path to use.
    """
    path = request.path_info
    message = f"No API endpoint at {path}; the endpoints are listed at /api/docs/."
    if path.endswith("/"):
        try:
            match = resolve(path.rstrip("/"))
        except Resolver404:
            match = None
        if match is not None and match.func is not not_found:
            message = f"No API endpoint at {path}: API paths have no trailing slash; use {path.rstrip('/')}."
    return JsonResponse({"error": {"code": "not_found", "message": message}}, status=404)
