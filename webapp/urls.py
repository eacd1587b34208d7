"""URL map. Pages are server-rendered; the API lives under /api/v1/ (OpenAPI at /api/schema/)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView

from webapp import api, views
from webapp.api_docs import api_docs_view

urlpatterns = [
    # The API first: its prefix rules out every other route at once, where the apps' page routes (included
    # at "") would each be tried before it (0.1 ms of CPU per annotate next or submit; docs/perf-queue.md §8).
    path("api/v1/", include("webapp.api_urls")),
    path("healthz", views.healthz, name="healthz"),
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("annotation.urls")),
    path("", include("training.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", api_docs_view(url_name="api-schema"), name="api-docs"),
    # Last: whatever /api/ path no endpoint took gets the API's JSON 404, not an HTML page.
    re_path(r"^api/", api.not_found),
]
# An unexpected error under /api/ is the API's JSON error (503 when the database or broker is down).
handler500 = "webapp.api.server_error"
handler400 = "webapp.api.bad_request"
