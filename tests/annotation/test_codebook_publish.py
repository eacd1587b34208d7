"""Codebook publishing: no unchanged versions, a change note from v2 on, and annotators see what changed
since the version they last acknowledged, as a readable (escaped) diff."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client

from annotation import services
from annotation.codebook import markdown_changes_html
from annotation.models import CodebookVersion
from tests.annotation.queue_helpers import make_tasks
from tests.conftest import client_for
from training.models import AuditAction, AuditEvent

pytestmark = pytest.mark.django_db

V1 = "# Rules\n\nAccept within 20% or $40.\n\n## Reject reasons\n- `bundle`: several items\n"


def test_publishing_unchanged_text_is_refused_and_nobody_re_acknowledges(reviewer: User) -> None:
    services.codebook_publish(author=reviewer, markdown=V1)
    with pytest.raises(ValidationError, match="same as the current v1"):
        services.codebook_publish(author=reviewer, markdown=V1 + "\n\n", change_note="nothing really")
    response = client_for(reviewer).post(
        "/api/v1/annotation/codebook/versions", {"markdown": V1, "change_note": "again"}, format="json"
    )
    assert response.status_code == 400
    assert "same as the current v1" in response.json()["error"]["fields"]["markdown"][0]
    assert CodebookVersion.objects.count() == 1


def test_a_change_note_is_required_after_the_first_version_and_audited(reviewer: User) -> None:
    services.codebook_publish(author=reviewer, markdown=V1)
    client = Client()
    client.force_login(reviewer)
    page = client.post("/review/codebook/", {"markdown": V1 + "- `used`: second hand\n"}).content.decode()
    assert "A change note is required" in page
    assert CodebookVersion.objects.count() == 1
    client.post(
        "/review/codebook/", {"markdown": V1 + "- `used`: second hand\n", "change_note": "used items"}
    )
    v2 = CodebookVersion.objects.get(number=2)
    assert v2.change_note == "used items"
    events = AuditEvent.objects.filter(action=AuditAction.CODEBOOK_PUBLISH).order_by("id")
    assert [(e.actor, e.subject, e.message) for e in events] == [
        (reviewer, "codebook:v1", "first version"),
        (reviewer, "codebook:v2", "used items"),
    ]


def test_the_annotator_sees_what_changed_since_the_version_they_last_acknowledged(
    reviewer: User, annotator: User
) -> None:
    services.codebook_publish(author=reviewer, markdown=V1)
    services.codebook_acknowledge(annotator=annotator, version_number=1)
    services.codebook_publish(
        author=reviewer, markdown=V1.replace("20%", "10%"), change_note="stricter: 10% <b>only</b>"
    )
    services.codebook_publish(
        author=reviewer,
        markdown=V1.replace("20%", "10%") + "- `<script>`: never\n",
        change_note="a reason for scripts",
    )
    make_tasks(1)
    client = Client()
    client.force_login(annotator)
    body = client.get("/annotate/").content.decode()
    assert "What changed since v1" in body  # not "since v2": they never acknowledged v2
    assert "(the version you last acknowledged)" in body
    assert '<span class="diff-label">Changed</span> Accept within <del>20%</del> <ins>10%</ins>' in body
    assert "<ins>- `&lt;script&gt;`: never</ins>" in body
    assert "<strong>v2:</strong> stricter: 10% &lt;b&gt;only&lt;/b&gt;" in body
    assert "<strong>v3:</strong> a reason for scripts" in body
    assert "@@" not in body


def test_the_readable_diff_marks_lines_without_patch_syntax() -> None:
    html = markdown_changes_html("a\nb\nc\n", "a\nB b\nc\nd <i>\n")
    assert "1 line(s) changed, 1 added, 0 removed." in html
    assert '<span class="diff-label">Changed</span> <ins>B</ins> b' in html
    assert "<ins>d &lt;i&gt;</ins>" in html
    assert "+" not in html
    assert "@@" not in html
