"""Writes that belong to the project as a whole: users, roles, API tokens, heartbeats."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from webapp.models import Heartbeat
from webapp.roles import Role


class AccountError(ValueError):
    """A user, role or token request that cannot be done as asked; the message says what to do."""


def roles_ensure_groups() -> None:
    for role in Role:
        Group.objects.get_or_create(name=role.value)


def password_check(password: str, *, user: User) -> None:
    """``AUTH_PASSWORD_VALIDATORS`` on ``password`` for ``user``: AccountError listing every reason."""
    if not password:
        raise AccountError(f"the password for {user.get_username()} is empty: choose a real one.")
    try:
        validate_password(password, user=user)
    except ValidationError as exc:
        reasons = " ".join(exc.messages)
        raise AccountError(f"the password for {user.get_username()} is refused: {reasons}") from None


def _roles_of(user: User) -> set[Role]:
    names = set(user.groups.values_list("name", flat=True))
    return {role for role in Role if role.value in names}


@transaction.atomic
def user_create_with_role(
    *,
    username: str,
    role: Role,
    password: str | None = None,
    email: str = "",
    with_token: bool = False,
    exist_ok: bool = False,
    demo_password: bool = False,
) -> tuple[User, str | None]:
    """Create a user with a role (and optionally an API token); ``password=None``: a token-only user
    that no password logs in.

    The password passes ``AUTH_PASSWORD_VALIDATORS`` (AccountError otherwise), except with
    ``demo_password``, which only the demo seed passes for its published logins. An existing user is an
    AccountError pointing to ``manage.py roles``/``changepassword``, unless ``exist_ok`` and it already
    has the role (the demo seeding the same data dir again): then only its token is ensured.
    """
    if not username or len(username) > 150:
        raise AccountError(f"username {username!r} must be 1 to 150 characters long.")
    roles_ensure_groups()
    existing = User.objects.filter(username=username).first()
    if existing is not None:
        held = _roles_of(existing)
        if not exist_ok or role not in held:
            shown = ", ".join(sorted(held)) or "none"
            raise AccountError(
                f"user {username} already exists (roles: {shown}). Change its roles with "
                f"`manage.py roles {username} --add {role.value}` (or --remove/--set), its password with "
                f"`manage.py changepassword {username}`, its token with `manage.py rotate_token {username}`."
            )
        user = existing
    else:
        user = User(username=username, email=email)
        if password is None:  # a token-only API client: no password can log it in
            user.set_unusable_password()
        else:
            if not demo_password:
                password_check(password, user=user)
            user.set_password(password)
        user.save()
        user.groups.add(Group.objects.get(name=role.value))
    token = Token.objects.get_or_create(user=user)[0].key if with_token else None
    return user, token


@transaction.atomic
def user_roles_change(
    *,
    username: str,
    set_to: Iterable[Role] | None = None,
    add: Iterable[Role] = (),
    remove: Iterable[Role] = (),
) -> set[Role]:
    """Replace (``set_to``), then add and remove roles of a user; returns the roles it then has.

    Taking ``annotator`` away leaves that person's live leases to expire back into the queue."""
    user = User.objects.filter(username=username).first()
    if user is None:
        raise AccountError(
            f"no user {username!r}: create it with `manage.py create_user {username} --role …`."
        )
    roles_ensure_groups()
    roles = set(set_to) if set_to is not None else _roles_of(user)
    roles |= set(add)
    roles -= set(remove)
    user.groups.set(Group.objects.filter(name__in=[role.value for role in roles]))
    return roles


def token_rotate(*, username: str) -> str:
    """A new API token for the user (made now, so its expiry counts from now); the old key, if any,
    stops working at once. Returns the new key."""
    user = User.objects.filter(username=username).first()
    if user is None:
        raise AccountError(
            f"no user {username!r}: create it with `manage.py create_user {username} --role client`."
        )
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        return str(Token.objects.create(user=user).key)


def token_revoke(*, username: str) -> bool:
    """Delete the user's API token; returns whether there was one. The next request with it is a 401."""
    if not User.objects.filter(username=username).exists():
        raise AccountError(f"no user {username!r}.")
    deleted, _ = Token.objects.filter(user__username=username).delete()
    return bool(deleted)


def heartbeat_record(*, source: str) -> Heartbeat:
    beat, _ = Heartbeat.objects.update_or_create(source=source, defaults={"at": timezone.now()})
    return beat
