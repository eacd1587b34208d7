"""Writes that belong to the project as a whole: users and roles, heartbeats."""

from __future__ import annotations

from django.contrib.auth.models import Group, User
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from webapp.models import Heartbeat
from webapp.roles import Role


def roles_ensure_groups() -> None:
    for role in Role:
        Group.objects.get_or_create(name=role.value)


@transaction.atomic
def user_create_with_role(
    *, username: str, role: Role, password: str | None = None, email: str = "", with_token: bool = False
) -> tuple[User, str | None]:
    """Create the user if needed, put it in the role's group, optionally give it an API token."""
    if not username or len(username) > 150:
        raise ValueError(f"username {username!r} must be 1 to 150 characters long.")
    roles_ensure_groups()
    user, created = User.objects.get_or_create(username=username, defaults={"email": email})
    if password is not None:
        user.set_password(password)
        user.save(update_fields=["password"])
    elif created:  # a token-only API client: no password can log it in
        user.set_unusable_password()
        user.save(update_fields=["password"])
    user.groups.add(Group.objects.get(name=role.value))
    token = Token.objects.get_or_create(user=user)[0].key if with_token else None
    return user, token


def heartbeat_record(*, source: str) -> Heartbeat:
    beat, _ = Heartbeat.objects.update_or_create(source=source, defaults={"at": timezone.now()})
    return beat
