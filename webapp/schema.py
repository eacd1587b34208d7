"""The OpenAPI schema's conventions, applied to every operation in one place (``DEFAULT_SCHEMA_CLASS``).

- Every operation documents the errors its declared permissions answer with, in the API's one error
  shape (``webapp.api.ERROR_SCHEMA``): 401 when it needs credentials (none, or an unknown token), 403
  when it needs a role the caller lacks. An operation's own ``extend_schema`` entry for a code wins.
- A paginated list documents 400 (a query parameter such as ``page`` is invalid) and 404 (a page
  beyond the last).
- An operation's description is its own: drf-spectacular falls back to the view class's docstring,
  inherited ones included, which put base-class notes ("Base: domain errors become 409 …") into the
  public docs. Only a docstring written on the view class itself (or its method) is used.
"""

from __future__ import annotations

import inspect
from typing import Any

from drf_spectacular.openapi import AutoSchema
from rest_framework.permissions import AllowAny, IsAuthenticated

from webapp.api import ERROR_SCHEMA


class PriceLoopAutoSchema(AutoSchema):
    def get_description(self) -> str:  # type: ignore[override]
        method = getattr(self.view, getattr(self.view, "action", None) or self.method.lower(), None)
        own = type(self.view).__dict__.get("__doc__")
        method_doc = inspect.getdoc(method) if method is not None and method.__doc__ else None
        return method_doc or inspect.cleandoc(own or "")

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        bodies: dict[str, Any] = super()._get_response_bodies(direction=direction)
        if self._is_list_view() and getattr(self.view, "pagination_class", None) is not None:
            bodies.setdefault(
                "400",
                self._get_response_for_code(ERROR_SCHEMA, "400", direction=direction)
                | {"description": "A query parameter is invalid (code invalid; fields names it)."},
            )
            bodies.setdefault(
                "404",
                self._get_response_for_code(ERROR_SCHEMA, "404", direction=direction)
                | {"description": "The page is beyond the last one (code not_found)."},
            )
        permissions = list(self.view.get_permissions())
        if not permissions or all(isinstance(p, AllowAny) for p in permissions):
            return bodies
        if "401" not in bodies:
            bodies["401"] = self._get_response_for_code(ERROR_SCHEMA, "401", direction=direction) | {
                "description": "No credentials, or an unknown API token (code not_authenticated or "
                "authentication_failed)."
            }
        # A tuple: DRF's permission classes overload "|" (composed permissions), not a type union.
        plain = (IsAuthenticated, AllowAny)
        role_checked = any(not isinstance(p, plain) for p in permissions)
        if role_checked and "403" not in bodies:
            bodies["403"] = self._get_response_for_code(ERROR_SCHEMA, "403", direction=direction) | {
                "description": "Your role may not do this (code permission_denied)."
            }
        return bodies
