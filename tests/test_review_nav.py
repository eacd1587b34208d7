"""One reviewer menu on every reviewer page: from the reviewer home, every page is one click away."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tests.training.factories import make_version
from training.models import RetrainBatch, TrainingRun, VersionStatus

MENU = [
    ("Overview", "annotation:review"),
    ("Batches", "training:batches"),
    ("Runs", "training:runs"),
    ("Versions", "training:versions"),
    ("Codebook", "annotation:codebook"),
    ("Gold", "annotation:gold"),
    ("Queue &amp; annotators", "annotation:queue"),
    ("Adjudication", "annotation:adjudication"),
    ("Flagged items", "annotation:flags"),
    ("Agreement", "annotation:agreement"),
    ("Audit", "training:audit"),
]
_NAV = re.compile(r'<nav class="review-nav" aria-label="Reviewer pages">(.*?)</nav>', re.S)
_LINK = re.compile(r'<a href="([^"]+)"( aria-current="page")?>([^<]+)</a>')


def _menu(html: str) -> list[tuple[str, str, bool]]:
    navs = _NAV.findall(html)
    assert len(navs) == 1, "each reviewer page has exactly one reviewer menu"
    return [(text, href, bool(current)) for href, current, text in _LINK.findall(navs[0])]


@pytest.mark.django_db
def test_every_reviewer_page_is_reached_from_the_home_page_by_its_menu(
    reviewer: Any, settings: Any, tmp_path: Path
) -> None:
    settings.ARTIFACT_ROOT = tmp_path
    version = make_version(tmp_path, 1, status=VersionStatus.CHAMPION)
    batch = RetrainBatch.objects.create(content_sha256="b" * 64, size=0, stats={"rows": 0})
    run = TrainingRun.objects.create(batch=batch, recipe_name="tiny", base_model="tiny", candidate=version)
    client = Client()
    client.force_login(reviewer)

    home = client.get(reverse("home")).content.decode()
    assert f'href="{reverse("annotation:review")}"' in home
    menu = _menu(client.get(reverse("annotation:review")).content.decode())
    assert [(text, href) for text, href, _ in menu] == [(text, reverse(name)) for text, name in MENU]
    for text, href, _ in menu:
        response = client.get(href)
        assert response.status_code == 200, f"{text}: {href} answered {response.status_code}"
        here = _menu(response.content.decode())
        assert [t for t, _, current in here if current] == [text], f"{href} marks the wrong page current"

    # Detail pages carry the same menu, with their section current.
    for url, section in [
        (reverse("training:batch", args=[batch.pk]), "Batches"),
        (reverse("training:run", args=[run.pk]), "Runs"),
    ]:
        here = _menu(client.get(url).content.decode())
        assert [t for t, _, current in here if current] == [section]
