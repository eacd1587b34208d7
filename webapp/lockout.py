"""Login lockouts (django-axes): one log line per lockout, naming the username, the address and the fix.

django-axes masks the username and address in its own log lines (``AXES_SENSITIVE_PARAMETERS``); an
operator who is asked "why can't I log in?" needs both, and the command that unlocks.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings

log = logging.getLogger("webapp.lockout")


def client_address(request: Any) -> str:
    """The address a lockout counts (``AXES_CLIENT_IP_CALLABLE``): ``REMOTE_ADDR``; behind a
    ``TRUSTED_PROXY``, the address that proxy appended last to ``X-Forwarded-For`` (nginx:
    ``$proxy_add_x_forwarded_for``). Anything before it the client may have written itself."""
    meta = request.META
    if settings.TRUSTED_PROXY:
        last = meta.get("HTTP_X_FORWARDED_FOR", "").rsplit(",", 1)[-1].strip()
        if last:
            return str(last)
    return str(meta.get("REMOTE_ADDR", ""))


def log_lockout(sender: Any, *, request: Any = None, username: str | None = None, **kwargs: Any) -> None:
    ip_address = kwargs.get("ip_address") or getattr(request, "axes_ip_address", None) or "unknown"
    cooloff = settings.AXES_COOLOFF_TIME
    until = f"for {int(cooloff.total_seconds() // 60)} min" if cooloff else "until an operator unlocks it"
    log.warning(
        "login locked out: username=%r ip=%s after %s failed passwords, %s "
        "(unlock now: manage.py axes_reset_username %s)",
        username,
        ip_address,
        settings.AXES_FAILURE_LIMIT,
        until,
        username,
    )
