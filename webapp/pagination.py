"""Pagination of every list in the API (``DEFAULT_PAGINATION_CLASS``).

DRF's ``PageNumberPagination`` answers 404 both for a page beyond the last (right: there is no such
page) and for a page that is not a number (``?page=abc``, which is bad input: 400 naming ``page``).
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.pagination import PageNumberPagination


class Pagination(PageNumberPagination):
    # DRF's text is "Invalid page.": say which page and how to find the real ones.
    invalid_page_message = (
        "page {page_number} does not exist ({message}); the first page's `count` says how many items there "
        "are, and ?page=last is the last page."
    )

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> list[Any] | None:
        raw = request.query_params.get(self.page_query_param)
        if raw is not None and raw not in self.last_page_strings and not (raw.isdigit() and int(raw) >= 1):
            raise exceptions.ValidationError(
                {self.page_query_param: [f"{raw!r} is not a page number: use 1, 2, … (or 'last')."]}
            )
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1}
        return parameters
