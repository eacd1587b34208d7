"""Shared fixtures: the five personas of every permission test, and API clients logged in as each.

Personas: ``annotator``, ``annotator2`` (a second annotator), ``reviewer``, ``api_client`` (a token
client), ``outsider`` (logged in, no role).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from webapp.roles import Role
from webapp.services import user_create_with_role

PASSWORD = "correct horse battery staple"


def _make(username: str, role: Role | None) -> User:
    if role is None:
        return User.objects.create_user(username=username, password=PASSWORD)
    user, _ = user_create_with_role(username=username, role=role, password=PASSWORD, with_token=True)
    return user


@pytest.fixture
def annotator(db: Any) -> User:
    return _make("alice", Role.ANNOTATOR)


@pytest.fixture
def annotator2(db: Any) -> User:
    return _make("bob", Role.ANNOTATOR)


@pytest.fixture
def reviewer(db: Any) -> User:
    return _make("rita", Role.REVIEWER)


@pytest.fixture
def api_client_user(db: Any) -> User:
    return _make("ci-bot", Role.CLIENT)


@pytest.fixture
def outsider(db: Any) -> User:
    return _make("oscar", None)


def client_for(user: User | None) -> APIClient:
    """An API client authenticated by session (people) or token (the api client persona)."""
    client = APIClient()
    if user is None:
        return client
    if user.groups.filter(name=Role.CLIENT.value).exists():
        client.credentials(HTTP_AUTHORIZATION=f"Token {user.auth_token.key}")
    else:
        client.force_login(user)
    return client
