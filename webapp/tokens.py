"""API tokens: expiry (``API_TOKEN_TTL_DAYS``, enforced by ``webapp.authentication``) and the per-user
throttle of the registry and export endpoints.

A token is DRF's ``authtoken`` row (one per user). ``manage.py rotate_token USER`` makes a new one (the
old key stops working at once), ``revoke_token USER`` deletes it, ``list_tokens`` shows who has one and
when each expires.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils import timezone
from rest_framework.throttling import UserRateThrottle

if TYPE_CHECKING:  # DRF's views import this module (DEFAULT_AUTHENTICATION_CLASSES) while loading
    from rest_framework.request import Request
    from rest_framework.views import APIView


def token_expires(created: datetime) -> datetime | None:
    """When a token made at ``created`` stops working; None: never (``API_TOKEN_TTL_DAYS=0``)."""
    days = int(settings.API_TOKEN_TTL_DAYS)
    return created + timedelta(days=days) if days > 0 else None


def as_aware(created: datetime | str) -> datetime:
    """A token's ``created`` as read raw (SQLite gives text, naive in UTC) as an aware datetime."""
    if isinstance(created, str):
        created = datetime.fromisoformat(created)
    if timezone.is_naive(created):
        created = created.replace(tzinfo=UTC)  # stored in UTC (USE_TZ)
    return created


def token_expired(created: datetime | str) -> bool:
    """Whether a token made at ``created`` no longer works."""
    if not settings.API_TOKEN_TTL_DAYS:
        return False
    expires = token_expires(as_aware(created))
    return expires is not None and expires <= timezone.now()


class ApiUserThrottle(UserRateThrottle):
    """Requests per user on the registry and export endpoints (``API_THROTTLE_RATE``; ``off``: none).

    The rate is read per request, not once at import as DRF's own ``THROTTLE_RATES`` are."""

    scope = "api"

    def get_rate(self) -> str | None:
        rate = str(settings.API_THROTTLE_RATE)
        return None if rate == "off" else rate

    def allow_request(self, request: Request, view: APIView) -> bool:
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)
