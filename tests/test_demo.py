"""The demo's banner (fast). Starting the real demo processes: tests/test_demo_start.py."""

from __future__ import annotations

import io
import shlex
from urllib.parse import urlsplit

import pytest
from django.test import Client

from webapp.demo.seed import seed_users
from webapp.management.commands.demo import Command


def _banner(url: str) -> str:
    out = io.StringIO()
    Command(stdout=out)._banner(url, seed_users())
    return out.getvalue()


@pytest.mark.django_db
def test_it_prints_a_curl_line_that_works_as_printed() -> None:
    line = next(line for line in _banner("http://testserver/").splitlines() if "curl" in line)
    argv = shlex.split(line)
    assert argv[:2] == ["curl", "-H"], line
    assert len(argv) == 4, line
    name, value = argv[2].split(": ", 1)
    url = urlsplit(argv[3])
    assert url.netloc == "testserver"

    response = Client().get(url.path, headers={name: value})

    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert response.json()["results"] == []  # the client sees the (here empty) version list
