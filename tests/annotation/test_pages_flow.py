"""The annotator and reviewer pages through HTTP (no browser): states, no-JavaScript posts, htmx fragments,
reviewer actions. The keyboard itself is covered by tests/e2e."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from annotation import services
from annotation.models import (
    Annotation,
    AnnotatorStatus,
    AssignmentStatus,
    CodebookAck,
    CodebookVersion,
    ResolutionMethod,
    Task,
    TaskStatus,
)
from tests.annotation.queue_helpers import lease, make_tasks, submit

CODEBOOK = "# Rules\n\n## Reject reasons\n- `not-a-product`: no sellable item\n- `bundle`: several items\n"
HTMX = {"HX-Request": "true"}


@pytest.fixture(autouse=True)
def _plain_queue(settings: Any) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0


@pytest.fixture
def codebook(reviewer: User, annotator: User, annotator2: User) -> CodebookVersion:
    version = services.codebook_publish(author=reviewer, markdown=CODEBOOK)
    for user in (annotator, annotator2):
        services.codebook_acknowledge(annotator=user, version_number=version.number)
    return version


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _form(client: Client) -> dict[str, str]:
    """The hidden fields of the item on screen, as the browser would send them."""
    response = client.get("/annotate/workspace/", headers=HTMX)
    context = response.context
    return {
        "assignment_id": str(context["assignment"].id),
        "client_token": context["client_token"],
        "shown_at": context["shown_at"],
    }


def test_it_shows_one_item_with_its_guess_and_the_codebook_reasons(
    annotator: User, codebook: CodebookVersion
) -> None:
    make_tasks(2, guess="129.00")
    body = _client(annotator).get("/annotate/").content.decode()
    assert 'id="item"' in body
    assert "$129.00" in body
    assert 'value="not-a-product" data-key="1"' in body
    assert 'value="bundle" data-key="2"' in body
    assert "Codebook v1" in body
    assert 'aria-live="polite"' in body


def test_it_hides_the_guess_and_the_accept_button_on_blind_items(
    annotator: User, codebook: CodebookVersion
) -> None:
    make_tasks(1, guess="129.00", blind=True)
    body = _client(annotator).get("/annotate/").content.decode()
    assert "129.00" not in body
    assert 'id="accept-form"' not in body
    assert "type your own price" in body


def test_it_escapes_product_text(annotator: User, codebook: CodebookVersion) -> None:
    task = make_tasks(1)[0]
    task.product.text = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    task.product.save()
    body = _client(annotator).get("/annotate/").content.decode()
    assert "<script>alert(1)" not in body
    assert "<img src=x" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_it_saves_a_correction_without_javascript(annotator: User, codebook: CodebookVersion) -> None:
    tasks = make_tasks(2)
    client = _client(annotator)
    fields = _form(client)
    response = client.post("/annotate/submit/", {**fields, "verdict": "correct", "corrected_price": "12,5"})
    assert response.status_code == 303
    assert response["Location"] == "/annotate/"
    annotation = Annotation.objects.get(annotator=annotator)
    assert annotation.task == tasks[0]
    assert annotation.corrected_price == Decimal("12.50")
    assert annotation.seconds_spent >= 0  # measured by the server from shown_at without JavaScript
    assert annotation.client_token == fields["client_token"]


def test_it_asks_to_confirm_an_absurd_price_and_saves_it_flagged_once_confirmed(
    annotator: User, codebook: CodebookVersion
) -> None:
    tasks = make_tasks(2)
    client = _client(annotator)
    fields = _form(client)
    typed = {**fields, "verdict": "correct", "corrected_price": "999999999", "confirm_price": ""}
    # htmx: the same item comes back with the price still in the box, waiting for the y key
    response = client.post("/annotate/submit/", typed, headers=HTMX)
    body = response.content.decode()
    assert "Saved" not in body
    assert "$999,999,999.00 is outside the trainable range $0.50–$999.49" in body
    assert "press y to save it anyway" in body
    assert response.context["assignment"].task == tasks[0]
    assert 'data-unconfirmed="true"' in body
    assert 'value="999999999.00" autofocus' in body
    # without JavaScript: the notice, and a box to tick
    response = client.post("/annotate/submit/", typed, follow=True)
    assert "outside the trainable range" in response.content.decode()
    assert 'type="checkbox" name="confirm_price"' in response.content.decode()
    assert not Annotation.objects.exists()

    response = client.post("/annotate/submit/", {**typed, "confirm_price": "on"}, headers=HTMX)
    assert "Saved: correct, $999,999,999.00, flagged: outside $0.50–$999.49, never trained on." in (
        response.content.decode()
    )
    annotation = Annotation.objects.get(annotator=annotator)
    assert (annotation.task, annotation.price_flag) == (tasks[0], "out_of_range")


def test_it_gives_the_script_the_confirmation_rules(
    annotator: User, codebook: CodebookVersion, settings
) -> None:
    settings.ANNOTATION_CONFIRM_FACTOR = 4
    make_tasks(1, guess="129.00")
    body = _client(annotator).get("/annotate/").content.decode()
    assert 'data-price-min="0.50" data-price-max="999.49"' in body
    assert 'data-confirm-factor="4" data-guess="129.00"' in body


def test_it_answers_htmx_with_the_next_item_and_the_progress(
    annotator: User, codebook: CodebookVersion
) -> None:
    tasks = make_tasks(3)
    client = _client(annotator)
    fields = _form(client)
    response = client.post(
        "/annotate/submit/", {**fields, "verdict": "accept", "seconds_spent": "3.5"}, headers=HTMX
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "<html" not in body  # a fragment, not a page
    assert response.context["assignment"].task == tasks[1]
    assert 'id="progress" class="card progress" aria-labelledby="progress-title" hx-swap-oob="true"' in body
    assert '<dd id="done-today">1</dd>' in body
    assert Annotation.objects.get(annotator=annotator).seconds_spent == 3.5


def test_it_counts_a_double_submit_once(annotator: User, codebook: CodebookVersion) -> None:
    make_tasks(3)
    client = _client(annotator)
    fields = {**_form(client), "verdict": "accept", "seconds_spent": "1"}
    client.post("/annotate/submit/", fields, headers=HTMX)
    client.post("/annotate/submit/", fields, headers=HTMX)
    assert Annotation.objects.filter(annotator=annotator).count() == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"verdict": "correct", "corrected_price": "12$x"}, "is not a price"),
        ({"verdict": "correct", "corrected_price": ""}, "A correction needs a price"),
        ({"verdict": "correct", "corrected_price": "1.999"}, "more than 2 decimals"),
        ({"verdict": "reject"}, "A rejection needs a reason"),
        ({"verdict": "reject", "reason_code": "made-up"}, "is not in codebook v1"),
        ({"verdict": "maybe"}, "Select a valid choice"),
    ],
)
def test_it_explains_bad_input_and_saves_nothing(
    annotator: User, codebook: CodebookVersion, data: dict[str, str], message: str
) -> None:
    tasks = make_tasks(1)
    client = _client(annotator)
    response = client.post("/annotate/submit/", {**_form(client), **data}, headers=HTMX)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert response.context["assignment"].task == tasks[0]  # the same item stays on screen
    assert not Annotation.objects.exists()


def test_it_refuses_to_act_on_another_annotators_lease(
    annotator: User, annotator2: User, codebook: CodebookVersion
) -> None:
    make_tasks(2)
    theirs = lease(annotator2)
    client = _client(annotator)
    mine = _form(client)
    for url, data in [
        ("/annotate/skip/", {"assignment_id": theirs.id}),
        ("/annotate/submit/", {**mine, "assignment_id": theirs.id, "verdict": "accept"}),
    ]:
        response = client.post(url, data, headers=HTMX)
        assert f"No assignment {theirs.id} of yours" in response.content.decode()
    theirs.refresh_from_db()
    assert theirs.status == AssignmentStatus.LIVE
    assert not Annotation.objects.exists()


def test_it_skips_and_undoes(annotator: User, codebook: CodebookVersion) -> None:
    tasks = make_tasks(3)
    client = _client(annotator)
    client.post(
        "/annotate/submit/", {**_form(client), "verdict": "accept", "seconds_spent": "1"}, headers=HTMX
    )
    response = client.post("/annotate/skip/", {"assignment_id": _form(client)["assignment_id"]}, headers=HTMX)
    assert response.context["assignment"].task == tasks[2]
    # u after s: the skip is the last action, so the skipped item comes back; the annotation stays
    response = client.post("/annotate/undo/", {}, headers=HTMX)
    assert response.context["assignment"].task == tasks[1]
    assert "Undone: the item you skipped is back." in response.content.decode()
    assert Annotation.objects.count() == 1
    assert Task.objects.get(id=tasks[2].id).claimed_count == 0  # the item shown meanwhile went back
    # u again: now the annotation before the skip
    response = client.post("/annotate/undo/", {}, headers=HTMX)
    assert response.context["assignment"].task == tasks[0]
    assert "you had accepted the guess" in response.content.decode()
    assert not Annotation.objects.exists()


def test_it_brings_an_undone_correction_back_with_its_price_in_the_box(
    annotator: User, codebook: CodebookVersion
) -> None:
    tasks = make_tasks(2)
    client = _client(annotator)
    client.post("/annotate/submit/", {**_form(client), "verdict": "correct", "corrected_price": "87.5"})
    response = client.post("/annotate/undo/", {}, headers=HTMX)
    assert response.context["assignment"].task == tasks[0]
    body = response.content.decode()
    assert 'value="87.50" autofocus' in body
    assert "Undone: your last item is back with your price $87.50 in the box" in body


def test_it_asks_for_the_new_codebook_before_the_next_item(
    annotator: User, reviewer: User, codebook: CodebookVersion
) -> None:
    make_tasks(2)
    services.codebook_publish(
        author=reviewer, markdown=CODEBOOK + "- `duplicate`: seen before\n", change_note="a duplicate reason"
    )
    client = _client(annotator)
    response = client.get("/annotate/")
    body = response.content.decode()
    assert response.context["state"] == "ack"
    assert 'id="item"' not in body
    assert "New codebook: version 2" in body
    assert '<span class="diff-label">Added</span> <ins>- `duplicate`: seen before</ins>' in body
    assert "<strong>v2:</strong> a duplicate reason" in body
    response = client.post("/annotate/acknowledge/", {"version_number": "2"}, headers=HTMX)
    assert response.context["state"] == "item"
    assert CodebookAck.objects.filter(annotator=annotator, version__number=2).exists()


def test_it_asks_a_new_annotator_to_read_the_first_codebook_not_what_changed(
    annotator: User, reviewer: User
) -> None:
    make_tasks(1)
    services.codebook_publish(author=reviewer, markdown=CODEBOOK)
    body = _client(annotator).get("/annotate/").content.decode()
    assert "The codebook: version 1" in body
    assert "acknowledge version 1 to get your first item" in body
    assert "The rules changed" not in body  # nothing came before it


def test_it_tells_a_paused_annotator_why(annotator: User, codebook: CodebookVersion) -> None:
    make_tasks(1)
    AnnotatorStatus.objects.create(user=annotator, paused=True, paused_reason="gold accuracy 1/5 = 20%.")
    response = _client(annotator).get("/annotate/")
    assert response.context["state"] == "paused"
    assert "Your labelling is paused" in response.content.decode()
    assert "gold accuracy 1/5 = 20%." in response.content.decode()


def test_it_says_when_there_is_nothing_to_label(annotator: User, codebook: CodebookVersion) -> None:
    response = _client(annotator).get("/annotate/")
    assert response.context["state"] == "empty"
    assert "Nothing to label right now" in response.content.decode()


# --- reviewer pages -------------------------------------------------------------------------------------


def test_it_publishes_a_codebook_version_from_the_editor(reviewer: User) -> None:
    client = _client(reviewer)
    response = client.post("/review/codebook/", {"markdown": CODEBOOK}, follow=True)
    assert "Published codebook v1 with 2 reason code(s)" in response.content.decode()
    version = CodebookVersion.objects.get()
    assert version.author == reviewer
    assert [r["code"] for r in version.reason_codes] == ["not-a-product", "bundle"]
    client.post(
        "/review/codebook/", {"markdown": CODEBOOK + "- `duplicate`: seen before\n", "change_note": "dupes"}
    )
    body = client.get("/review/codebook/v2/").content.decode()
    assert "Changes from v1 to v2" in body
    assert '<span class="diff-add">+- `duplicate`: seen before</span>' in body
    # v1's last line is unchanged context, not removed and re-added, nor glued to the next line
    assert '<span class="diff-ctx"> - `bundle`: several items</span>' in body


def test_it_refuses_an_empty_codebook(reviewer: User) -> None:
    response = _client(reviewer).post("/review/codebook/", {"markdown": "   "})
    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    assert not CodebookVersion.objects.exists()


def test_it_sanitizes_the_codebook(reviewer: User) -> None:
    client = _client(reviewer)
    client.post(
        "/review/codebook/", {"markdown": "# Rules\n<script>alert(1)</script>\n[x](javascript:alert(2))"}
    )
    body = client.get("/review/codebook/v1/").content.decode()
    assert "<script>alert(1)" not in body
    assert 'href="javascript:' not in body


def test_it_lets_a_reviewer_adjudicate(
    reviewer: User, annotator: User, annotator2: User, codebook: CodebookVersion
) -> None:
    task = make_tasks(1, overlap=2)[0]
    submit(annotator, lease(annotator), "correct", "20.00")
    submit(annotator2, lease(annotator2), "correct", "500.00")
    task.refresh_from_db()
    assert task.status == TaskStatus.NEEDS_ADJUDICATION
    client = _client(reviewer)
    body = client.get("/review/adjudication/").content.decode()
    assert f"task {task.id}" in body
    assert "$500.00" in body
    response = client.post(f"/review/adjudication/{task.id}/", {"final_price": "abc"}, follow=True)
    assert "is not a price" in response.content.decode()
    response = client.post(f"/review/adjudication/{task.id}/", {"final_price": "120"}, follow=True)
    assert f"Task {task.id} resolved: $120.00" in response.content.decode()
    task.refresh_from_db()
    assert task.status == TaskStatus.RESOLVED
    assert task.resolved_label.method == ResolutionMethod.ADJUDICATED
    assert task.resolved_label.price == Decimal("120.00")


def test_it_shows_agreement_and_anchoring(
    reviewer: User, annotator: User, annotator2: User, codebook: CodebookVersion
) -> None:
    make_tasks(2, overlap=2)
    for user in (annotator, annotator2):
        submit(user, lease(user), "accept")
        submit(user, lease(user), "correct", "90.00")
    body = _client(reviewer).get("/review/agreement/").content.decode()
    assert "Krippendorff" in body
    assert "alice" in body
    assert "bob" in body
    assert "Anchoring" in body


def test_it_shows_the_queue_and_unpauses(reviewer: User, annotator: User, codebook: CodebookVersion) -> None:
    make_tasks(3)
    lease(annotator)
    AnnotatorStatus.objects.update_or_create(
        user=annotator, defaults={"paused": True, "paused_reason": "gold accuracy too low."}
    )
    client = _client(reviewer)
    response = client.get("/review/queue/")
    assert response.context["stats"]["leases"]["live"] == 1
    assert "gold accuracy too low." in response.content.decode()
    response = client.post(f"/review/annotators/{annotator.id}/unpause/", follow=True)
    assert "alice can label again" in response.content.decode()
    assert not AnnotatorStatus.objects.get(user=annotator).paused


def test_it_keeps_the_annotator_loop_to_a_bounded_number_of_queries(
    annotator: User, codebook: CodebookVersion, django_assert_max_num_queries: Any
) -> None:
    # Measured: 27 for submit + next item + side panels, 15 for a refresh (SQLite; session and roles
    # included), plus 5 to 7 for the item leased ahead (pre-fetch: status lock, codebook check, held
    # leases, then renew + load, or pick + lease + counters + claim). The bound catches an N+1 creeping
    # into the page that annotators reload all day.
    make_tasks(5)
    client = _client(annotator)
    fields = _form(client)
    with django_assert_max_num_queries(37):
        client.post("/annotate/submit/", {**fields, "verdict": "accept", "seconds_spent": "1"}, headers=HTMX)
    with django_assert_max_num_queries(23):
        client.get("/annotate/workspace/", headers=HTMX)
