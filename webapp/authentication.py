"""API token authentication: DRF's ``TokenAuthentication`` with the user's roles read in the same query."""

from __future__ import annotations

import functools

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from webapp.rawsql import columns, fetch_one, from_row
from webapp.roles import Role
from webapp.tokens import as_aware, token_expired, token_expires


def token_key_user(key: str) -> User | None:
    """The user (active or not) of the API token ``key``, with their roles (``user_roles`` reads them
    without a query), in one query; None for an unknown key. No cache: a deleted token or a
    deactivated user is refused from the next request on."""
    row = fetch_one(_token_user_sql(connection.vendor), [*(role.value for role in Role), key])
    if row is None:
        return None
    values = iter(row)
    user = from_row(User, values)
    flags = [next(values) for _role in Role]
    user._priceloop_roles = {role for role, flag in zip(Role, flags, strict=True) if flag}  # type: ignore[attr-defined]
    user._priceloop_token_created = next(values)  # type: ignore[attr-defined]
    return user


class TokenRolesAuthentication(TokenAuthentication):
    """DRF's ``TokenAuthentication`` (same header, same errors), reading token, user and roles in one
    query instead of DRF's two (token + user) and one more for the roles: about 1 ms of CPU less per
    request on the annotator queue (docs/perf-queue.md). ``request.auth`` is the key."""

    def authenticate_credentials(self, key: str) -> tuple[User, str]:
        user = token_key_user(key)
        if user is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        created = user._priceloop_token_created  # type: ignore[attr-defined]
        if token_expired(created):
            expires = token_expires(as_aware(created))
            raise exceptions.AuthenticationFailed(
                f"This API token expired on {expires:%Y-%m-%d %H:%M} UTC (API_TOKEN_TTL_DAYS="
                f"{settings.API_TOKEN_TTL_DAYS}). Ask an operator for a new one: "
                f"manage.py rotate_token {user.get_username()}.",
                code="token_expired",
            )
        return user, key


@functools.cache  # per database vendor: the text never changes
def _token_user_sql(vendor: str) -> str:
    users, groups = User._meta.db_table, Group._meta.db_table
    through = User.groups.through._meta.db_table
    role_flags = ", ".join(
        f"EXISTS(SELECT 1 FROM {through} ug JOIN {groups} g ON g.id = ug.group_id "  # noqa: S608
        f"WHERE ug.user_id = u.id AND g.name = %s)"
        for _role in Role
    )
    return (
        f"SELECT {columns(User, 'u')}, {role_flags}, t.created FROM {Token._meta.db_table} t "  # noqa: S608
        f"JOIN {users} u ON u.id = t.user_id WHERE t.key = %s"
    )
