"""The interactive API docs (Swagger UI from drf-spectacular's sidecar) under the site's strict CSP.

drf-spectacular's plain Swagger view inlines its start-up script and a ``<style>`` block, which the
CSP (``CONTENT_SECURITY_POLICY`` in webapp/settings.py) forbids. The split view serves that script as
a second request from this same URL (``?script=``); our template links the page styles from a static
file. Swagger UI draws its icons as ``data:`` SVG images, so this page alone may load ``data:`` images.
"""

from __future__ import annotations

from typing import Any

from csp.decorators import csp_update
from drf_spectacular.views import SpectacularSwaggerSplitView


class ApiDocsView(SpectacularSwaggerSplitView):
    template_name = "webapp/swagger_ui.html"


def api_docs_view(**initkwargs: Any) -> Any:
    """The docs view with the page's one addition to the site-wide CSP."""
    return csp_update({"img-src": ["data:"]})(ApiDocsView.as_view(**initkwargs))
