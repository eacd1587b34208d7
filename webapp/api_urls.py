"""Every /api/v1/ route, gathered from the apps (each app owns an ``api_urls`` module)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path

urlpatterns: list[URLPattern | URLResolver] = [
    path("", include("annotation.api_urls")),
    path("", include("training.api_urls")),
]
