"""Who reaches which page: annotators /annotate/, reviewers /review/…, outsiders nothing, anonymous: login."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

ANNOTATOR_PAGES = ["/annotate/", "/annotate/workspace/"]
ANNOTATOR_POSTS = ["/annotate/submit/", "/annotate/skip/", "/annotate/undo/", "/annotate/acknowledge/"]
REVIEWER_PAGES = [
    "/review/",
    "/review/codebook/",
    "/review/adjudication/",
    "/review/agreement/",
    "/review/queue/",
]
REVIEWER_POSTS = ["/review/codebook/", "/review/adjudication/1/", "/review/annotators/1/unpause/"]


def _client(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("url", ANNOTATOR_PAGES + REVIEWER_PAGES)
def test_it_sends_anonymous_visitors_to_the_login_page(url: str) -> None:
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={url}"


@pytest.mark.django_db
@pytest.mark.parametrize("url", ANNOTATOR_POSTS + REVIEWER_POSTS)
def test_it_sends_anonymous_posts_to_the_login_page(url: str) -> None:
    response = Client().post(url, {})
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


@pytest.mark.parametrize("url", ANNOTATOR_PAGES + REVIEWER_PAGES)
def test_it_gives_the_outsider_403_everywhere(outsider: User, url: str) -> None:
    assert _client(outsider).get(url).status_code == 403


def test_it_answers_403_with_a_page_that_says_why_and_leads_on(outsider: User, annotator: User) -> None:
    body = _client(outsider).get("/review/").content.decode()
    assert "This page is not for your role" in body
    assert "signed in as <strong>oscar</strong>" in body
    assert 'action="/logout/"' in body  # log out and sign in as someone else
    assert 'href="/"' in body
    body = _client(annotator).get("/review/").content.decode()
    assert 'Your work is on the <a href="/annotate/">annotation page</a>' in body


@pytest.mark.parametrize("url", ANNOTATOR_POSTS + REVIEWER_POSTS)
def test_it_refuses_the_outsiders_posts(outsider: User, url: str) -> None:
    assert _client(outsider).post(url, {}).status_code == 403


@pytest.mark.parametrize("url", REVIEWER_PAGES)
def test_it_keeps_annotators_out_of_reviewer_pages(annotator: User, url: str) -> None:
    assert _client(annotator).get(url).status_code == 403


@pytest.mark.parametrize("url", REVIEWER_POSTS)
def test_it_refuses_annotators_reviewer_actions(annotator: User, url: str) -> None:
    assert _client(annotator).post(url, {"markdown": "# hijack", "final_price": "1"}).status_code == 403


@pytest.mark.parametrize("url", REVIEWER_PAGES)
def test_it_serves_reviewer_pages_to_reviewers(reviewer: User, url: str) -> None:
    assert _client(reviewer).get(url).status_code == 200


@pytest.mark.parametrize("url", ANNOTATOR_PAGES)
def test_it_keeps_reviewers_out_of_the_annotator_page(reviewer: User, url: str) -> None:
    # Labelling is a role of its own: a reviewer who also labels is given both groups.
    assert _client(reviewer).get(url).status_code == 403


def test_it_serves_the_annotator_page_to_annotators(annotator: User) -> None:
    response = _client(annotator).get("/annotate/")
    assert response.status_code == 200
    assert b'id="workspace"' in response.content
