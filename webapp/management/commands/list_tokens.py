"""manage.py list_tokens — who has an API token, made when, expiring when (keys are not printed)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone
from rest_framework.authtoken.models import Token

from webapp.roles import user_roles
from webapp.tokens import token_expires


class Command(BaseCommand):
    help = "List API tokens: user, roles, created, expires (never the key)."

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        for token in Token.objects.select_related("user").order_by("user__username"):
            roles = ",".join(sorted(role.value for role in user_roles(token.user))) or "-"
            expires = token_expires(token.created)
            state = "never" if expires is None else f"{expires:%Y-%m-%d %H:%M}"
            if expires is not None and expires <= now:
                state += " (expired)"
            if not token.user.is_active:
                state += " (user inactive)"
            self.stdout.write(
                f"{token.user.username}\t{roles}\tcreated {token.created:%Y-%m-%d %H:%M}\texpires {state}"
            )
