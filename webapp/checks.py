"""Deployment checks (``manage.py check --deploy``) for what Django's own checks cannot know."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks


def throttle_cache_shared(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The API throttle counts in the default cache: without CACHE_URL that is each process's memory,
    so N gunicorn workers allow N times API_THROTTLE_RATE (4x with the README's command line)."""
    if settings.DEBUG or settings.API_THROTTLE_RATE == "off" or settings.CACHE_URL:
        return []
    return [
        checks.Warning(
            f"API_THROTTLE_RATE={settings.API_THROTTLE_RATE} is counted in each web process's own memory "
            "(CACHE_URL is empty), so every gunicorn worker allows that many: 4 workers, 4 times the limit.",
            hint="Set CACHE_URL=redis://HOST:6379/2 (any Redis database the web hosts share), or "
            "API_THROTTLE_RATE=off if nothing should be throttled.",
            id="priceloop.W001",
        )
    ]
