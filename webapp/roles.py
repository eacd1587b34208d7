"""Roles: who may do what. Every permission check in PriceLoop goes through this module.

Three groups: ``annotator`` (labels items), ``reviewer`` (codebook, batches, runs, rollback; may also
read everything a client reads) and ``client`` (API tokens for serving code and downstream CI: read
versions, runs and batches). A user outside all groups (the "outsider") gets nothing.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest
from rest_framework.permissions import BasePermission

if TYPE_CHECKING:  # rest_framework.views loads the authentication classes, which import this module
    from rest_framework.request import Request
    from rest_framework.views import APIView


class Role(enum.StrEnum):
    ANNOTATOR = "annotator"
    REVIEWER = "reviewer"
    CLIENT = "client"


def user_roles(user: AbstractBaseUser | AnonymousUser | None) -> set[Role]:
    if user is None or not user.is_authenticated or not user.is_active:
        return set()
    cached: set[Role] | None = getattr(user, "_priceloop_roles", None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True))  # type: ignore[attr-defined]
        cached = {role for role in Role if role.value in names}
        user._priceloop_roles = cached  # type: ignore[union-attr,attr-defined]
    return cached


def has_role(user: AbstractBaseUser | AnonymousUser | None, *roles: Role) -> bool:
    return bool(user_roles(user) & set(roles))


def roles_context(request: HttpRequest) -> dict[str, Any]:
    roles = user_roles(getattr(request, "user", None))
    return {
        "is_annotator": Role.ANNOTATOR in roles,
        "is_reviewer": Role.REVIEWER in roles,
        "is_client": Role.CLIENT in roles,
    }


class _RolePermission(BasePermission):
    roles: tuple[Role, ...] = ()

    def has_permission(self, request: Request, view: APIView) -> bool:
        return has_role(request.user, *self.roles)


class IsAnnotator(_RolePermission):
    roles = (Role.ANNOTATOR,)


class IsReviewer(_RolePermission):
    roles = (Role.REVIEWER,)


class IsClientOrReviewer(_RolePermission):
    """Read access to the registry: API clients and reviewers."""

    roles = (Role.CLIENT, Role.REVIEWER)


def role_required(*roles: Role) -> Any:
    """Decorator for pages: anonymous users go to the login page, users without the role get 403."""
    from functools import wraps

    from django.contrib.auth.views import redirect_to_login
    from django.core.exceptions import PermissionDenied

    def decorator(view: Any) -> Any:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, *roles):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
