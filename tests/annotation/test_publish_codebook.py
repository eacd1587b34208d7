from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from annotation.models import CodebookVersion
from tests.conftest import client_for

CODEBOOK = """# Pricing codebook

Accept a guess within 10% of the price you would set.

## Reject reasons
- `not-a-product`: the text describes no product
"""


@pytest.mark.django_db
def test_it_publishes_the_first_codebook_that_annotators_then_see(
    tmp_path: Path, reviewer: User, annotator: User
) -> None:
    path = tmp_path / "codebook.md"
    path.write_text(CODEBOOK)
    out = StringIO()
    call_command("publish_codebook", str(path), "--author", reviewer.username, stdout=out)
    assert "codebook v1 published" in out.getvalue()
    version = CodebookVersion.objects.get()
    assert version.author == reviewer
    response = client_for(annotator).get("/api/v1/annotate/codebook")
    assert response.status_code == 200
    assert response.json()["number"] == 1
    assert response.json()["acknowledged"] is False  # the annotator must read it before the next item


@pytest.mark.django_db
def test_it_refuses_an_author_who_is_no_reviewer(tmp_path: Path, annotator: User) -> None:
    path = tmp_path / "codebook.md"
    path.write_text(CODEBOOK)
    with pytest.raises(CommandError, match=f"--author {annotator.username}: no reviewer of that name"):
        call_command("publish_codebook", str(path), "--author", annotator.username)
    assert not CodebookVersion.objects.exists()


@pytest.mark.django_db
def test_it_names_a_missing_or_empty_file(tmp_path: Path, reviewer: User) -> None:
    with pytest.raises(CommandError, match=r"missing\.md: no such file"):
        call_command("publish_codebook", str(tmp_path / "missing.md"), "--author", reviewer.username)
    (tmp_path / "empty.md").write_text("  \n")
    with pytest.raises(CommandError, match=r"empty\.md: The codebook cannot be empty"):
        call_command("publish_codebook", str(tmp_path / "empty.md"), "--author", reviewer.username)


@pytest.mark.django_db
def test_it_asks_for_a_change_note_from_the_second_version_on(tmp_path: Path, reviewer: User) -> None:
    path = tmp_path / "codebook.md"
    path.write_text(CODEBOOK)
    call_command("publish_codebook", str(path), "--author", reviewer.username, stdout=StringIO())
    path.write_text(CODEBOOK + "- `bundle`: several items, no single price\n")
    with pytest.raises(CommandError, match="A change note is required"):
        call_command("publish_codebook", str(path), "--author", reviewer.username)
    out = StringIO()
    call_command(
        "publish_codebook", str(path), "--author", reviewer.username, "--change-note", "bundles", stdout=out
    )
    assert "codebook v2 published" in out.getvalue()
    assert CodebookVersion.objects.get(number=2).change_note == "bundles"
