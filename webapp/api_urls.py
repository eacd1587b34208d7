"""Every /api/v1/ route, gathered from the apps (each app owns an ``api_urls`` module)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []
