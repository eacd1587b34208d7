"""Roles: who may do what. Every permission check in PriceLoop goes through this module.

Three groups: ``annotator`` (labels items), ``reviewer`` (codebook, batches, runs, rollback; may also
read everything a client reads) and ``client`` (API tokens for serving code and downstream CI: read
versions, runs and batches). A user outside all groups (the "outsider") gets nothing.
"""

from __future__ import annotations

import enum
import functools
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group, User
from django.db import connection
from django.http import HttpRequest
from rest_framework.authtoken.models import Token
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from webapp.rawsql import columns, fetch_one, from_row
from webapp.tokens import token_expired


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


def token_user(authorization: str) -> User | None:
    """The active user that an ``Authorization: Token <key>`` header names, with their roles, in one
    query (DRF's ``TokenAuthentication`` plus ``user_roles`` take two, and cost about 1.5 ms of CPU more
    on the annotator queue's hot path: docs/perf-queue.md).

    None for anything else: no such header, a malformed one, an unknown key, an inactive user, an
    expired token (``API_TOKEN_TTL_DAYS``). The caller then goes through DRF, whose token
    authentication answers those with its own errors. No cache: a deleted token or a deactivated user is
    refused from the next request on.
    """
    parts = authorization.split()
    if len(parts) != 2 or parts[0].lower() != "token":
        return None
    row = fetch_one(_token_user_sql(connection.vendor), [*(role.value for role in Role), parts[1]])
    if row is None:
        return None
    values = iter(row)
    user = from_row(User, values)
    flags = [next(values) for _ in Role]
    created = next(values)
    if not user.is_active or token_expired(created):
        return None
    user._priceloop_roles = {role for role, flag in zip(Role, flags, strict=True) if flag}  # type: ignore[attr-defined]
    return user


def roles_context(request: HttpRequest) -> dict[str, Any]:
    roles = user_roles(getattr(request, "user", None))
    return {
        "is_annotator": Role.ANNOTATOR in roles,
        "is_reviewer": Role.REVIEWER in roles,
        "is_client": Role.CLIENT in roles,
    }


@functools.cache  # per database vendor: the text never changes
def _token_user_sql(vendor: str) -> str:
    users, groups = User._meta.db_table, Group._meta.db_table
    through = User.groups.through._meta.db_table
    role_flags = ", ".join(
        f"EXISTS(SELECT 1 FROM {through} ug JOIN {groups} g ON g.id = ug.group_id "  # noqa: S608
        f"WHERE ug.user_id = u.id AND g.name = %s)"
        for _ in Role
    )
    return (
        f"SELECT {columns(User, 'u')}, {role_flags}, t.created FROM {Token._meta.db_table} t "  # noqa: S608
        f"JOIN {users} u ON u.id = t.user_id WHERE t.key = %s"
    )


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
