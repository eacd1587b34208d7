"""Flags: an annotator sends a broken item to the reviewers; it leaves every queue until they decide."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation import services
from annotation.codebook import flag_codes_parse, reason_codes_parse
from annotation.exceptions import FlagDecided, LeaseLost, LeaseNotFound, UndoNotAllowed
from annotation.flags import DEFAULT_FLAG_REASONS, flag_decide, item_flag
from annotation.models import (
    Annotation,
    Assignment,
    AssignmentStatus,
    ItemFlag,
    ResolvedLabel,
    Task,
    TaskStatus,
)
from tests.annotation.queue_helpers import lease, make_gold, make_tasks, submit
from tests.conftest import _make, client_for
from training.models import AuditEvent, BatchItem
from training.services.batches import batch_create_from_resolved
from webapp.roles import Role

pytestmark = pytest.mark.django_db

CODEBOOK = """# Codebook

## Flag reasons
- `broken-text`: the text is cut off or garbled
- `wrong-category`: the category does not match

## Reject reasons
- `not-a-product`: no sellable item
- `bundle`: several items
"""


@pytest.fixture(autouse=True)
def _plain_queue(settings: Any) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0


def _flag(user: User, assignment: Assignment, code: str = "broken-text", note: str = "") -> ItemFlag:
    return item_flag(annotator=user, assignment_id=assignment.id, reason_code=code, note=note)


def test_it_parses_flag_reasons_apart_from_reject_reasons() -> None:
    assert [c["code"] for c in reason_codes_parse(CODEBOOK)] == ["not-a-product", "bundle"]
    assert flag_codes_parse(CODEBOOK) == [
        {"code": "broken-text", "label": "the text is cut off or garbled"},
        {"code": "wrong-category", "label": "the category does not match"},
    ]
    without = CODEBOOK.split("## Flag reasons")[0] + "## Reject reasons\n- `bundle`: several items\n"
    assert flag_codes_parse(without) == []
    assert [c["code"] for c in reason_codes_parse(without)] == ["bundle"]


def test_it_stores_the_flag_reasons_when_a_codebook_is_published(reviewer: User) -> None:
    version = services.codebook_publish(author=reviewer, markdown=CODEBOOK)
    assert [c["code"] for c in version.reason_codes] == ["not-a-product", "bundle"]
    assert [c["code"] for c in version.flag_codes] == ["broken-text", "wrong-category"]
    audit = AuditEvent.objects.get(action="codebook_publish")
    assert (audit.numbers["reason_codes"], audit.numbers["flag_codes"]) == (2, 2)


def test_the_demo_codebook_has_flag_reasons() -> None:
    from pathlib import Path

    import webapp.demo

    text = (Path(webapp.demo.__file__).parent / "codebook_v1.md").read_text(encoding="utf-8")
    codes = [c["code"] for c in flag_codes_parse(text)]
    assert codes == ["broken-text", "wrong-category", "duplicate", "other"]
    assert "not-a-product" in [c["code"] for c in reason_codes_parse(text)]


def test_it_takes_a_flagged_item_out_of_every_annotators_queue(annotator: User, annotator2: User) -> None:
    task, other = make_tasks(2, overlap=2)
    mine = lease(annotator)
    theirs = lease(annotator2)
    assert mine.task_id == theirs.task_id == task.id  # started items first: both hold it

    flag = _flag(annotator, mine, note="  text stops   mid-sentence ")

    assert (flag.annotator, flag.reason_code) == (annotator, "broken-text")
    assert flag.note == "text stops mid-sentence"  # one line
    assert flag.reason_label == DEFAULT_FLAG_REASONS[0]["label"]  # no codebook yet: the defaults
    task.refresh_from_db()
    assert (task.status, task.claimed_count, task.completed_count) == (TaskStatus.FLAGGED, 0, 0)
    assert Assignment.objects.get(id=mine.id).status == AssignmentStatus.FLAGGED
    assert Assignment.objects.get(id=theirs.id).status == AssignmentStatus.RELEASED
    assert not Annotation.objects.exists()  # a flag is not an annotation
    # The other annotator's answer is refused; both get the other item next, then nothing.
    with pytest.raises(LeaseLost):
        submit(annotator2, theirs)
    assert lease(annotator2).task_id == other.id
    assert lease(annotator).task_id == other.id
    submit(annotator, lease(annotator))
    assert services.lease_next_task(annotator=annotator) is None


def test_it_releases_an_item_pre_fetched_ahead_and_serves_the_flaggers_own_ahead(
    annotator: User, annotator2: User
) -> None:
    a, b = make_tasks(2, overlap=2)
    live = lease(annotator2)
    ahead = services.lease_ahead(annotator=annotator2)
    assert (live.task_id, ahead.task_id if ahead else None) == (a.id, b.id)
    mine = lease(annotator)
    mine_ahead = services.lease_ahead(annotator=annotator)
    assert (mine.task_id, mine_ahead.task_id if mine_ahead else None) == (a.id, b.id)

    submit(annotator, mine)
    on_b = lease(annotator)
    assert on_b.id == mine_ahead.id  # the page's next item, as after any answer
    _flag(annotator, on_b, code="duplicate")

    assert Assignment.objects.get(id=ahead.id).status == AssignmentStatus.RELEASED
    submit(annotator2, live)
    assert services.lease_next_task(annotator=annotator2) is None  # b is with the reviewers
    b.refresh_from_db()
    assert (b.status, b.claimed_count) == (TaskStatus.FLAGGED, 0)


def test_requeue_opens_the_item_again_with_its_answers_kept(
    annotator: User, annotator2: User, reviewer: User
) -> None:
    (task,) = make_tasks(1, overlap=2)
    submit(annotator2, lease(annotator2), "correct", "90")
    flag = _flag(annotator, lease(annotator), code="wrong-category")

    decided = flag_decide(reviewer=reviewer, flag_id=flag.id, action="requeue")

    assert (decided.state, decided.decided_by) == ("requeued", reviewer)
    task.refresh_from_db()
    assert (task.status, task.completed_count, task.claimed_count) == (TaskStatus.OPEN, 1, 1)
    assert services.lease_next_task(annotator=annotator) is None  # the flagger does not get it again
    third = _make("tess", Role.ANNOTATOR)
    again = lease(third)
    assert again.task_id == task.id
    submit(third, again, "correct", "110")
    label = ResolvedLabel.objects.get(task=task)
    assert (label.n_annotations, label.price) == (2, 100)  # the median of both answers
    audit = AuditEvent.objects.get(action="flag_requeue")
    assert (audit.actor, audit.subject, audit.numbers["annotations_kept"]) == (reviewer, f"task:{task.id}", 1)
    with pytest.raises(FlagDecided, match="decided already"):
        flag_decide(reviewer=reviewer, flag_id=flag.id, action="drop")


def test_drop_keeps_the_item_out_of_batches_and_the_queue(annotator: User, reviewer: User) -> None:
    flagged, fine = make_tasks(2)
    flag = _flag(annotator, lease(annotator))
    submit(annotator, lease(annotator), "correct", "80")

    flag_decide(reviewer=reviewer, flag_id=flag.id, action="drop")

    flagged.refresh_from_db()
    assert flagged.status == TaskStatus.DROPPED
    batch = batch_create_from_resolved(min_size=1)
    assert set(BatchItem.objects.filter(batch=batch).values_list("resolved_label__task_id", flat=True)) == {
        fine.id
    }
    assert services.tasks_create_for_products(products=[flagged.product_id]) == 0  # never queued again
    assert Task.objects.filter(product_id=flagged.product_id).count() == 1
    assert AuditEvent.objects.get(action="flag_drop").actor == reviewer


def test_it_refuses_an_unknown_reason_naming_it_and_the_valid_ones(annotator: User, reviewer: User) -> None:
    version = services.codebook_publish(author=reviewer, markdown=CODEBOOK)
    services.codebook_acknowledge(annotator=annotator, version_number=version.number)
    make_tasks(1)
    assignment = lease(annotator)

    response = client_for(annotator).post(
        "/api/v1/annotate/flag",
        {"assignment_id": assignment.id, "reason_code": "duplicate"},  # a default, not in this codebook
        format="json",
    )

    assert response.status_code == 400
    message = str(response.json())
    assert "'duplicate' is not a flag reason of codebook v1" in message
    assert "broken-text, wrong-category" in message
    assert Assignment.objects.get(id=assignment.id).status == AssignmentStatus.LIVE
    ok = client_for(annotator).post(
        "/api/v1/annotate/flag",
        {"assignment_id": assignment.id, "reason_code": "wrong-category", "note": "a shoe under Tools"},
        format="json",
    )
    assert ok.status_code == 201
    assert ok.json()["reason_label"] == "the category does not match"
    assert ItemFlag.objects.get().codebook_version == version


def test_annotators_read_the_flag_reasons_in_force(annotator: User, reviewer: User) -> None:
    client = client_for(annotator)
    before = client.get("/api/v1/annotate/flag").json()
    assert (before["codebook_version"], before["default"]) == (None, True)
    assert [r["code"] for r in before["reasons"]] == ["broken-text", "wrong-category", "duplicate", "other"]
    services.codebook_publish(author=reviewer, markdown=CODEBOOK)
    after = client.get("/api/v1/annotate/flag").json()
    assert (after["codebook_version"], after["default"]) == (1, False)
    assert [r["code"] for r in after["reasons"]] == ["broken-text", "wrong-category"]


def test_it_refuses_a_flag_on_another_annotators_lease(annotator: User, annotator2: User) -> None:
    (task,) = make_tasks(1)
    theirs = lease(annotator2)

    response = client_for(annotator).post(
        "/api/v1/annotate/flag", {"assignment_id": theirs.id, "reason_code": "broken-text"}, format="json"
    )

    assert response.status_code == 404
    with pytest.raises(LeaseNotFound):
        _flag(annotator, theirs)
    task.refresh_from_db()
    assert (task.status, Assignment.objects.get(id=theirs.id).status) == (TaskStatus.OPEN, "live")
    assert not ItemFlag.objects.exists()


def test_undo_after_a_flag_does_not_take_back_the_answer_before_it(annotator: User) -> None:
    make_tasks(2)
    submit(annotator, lease(annotator))
    _flag(annotator, lease(annotator))
    with pytest.raises(UndoNotAllowed, match="last action was a flag"):
        services.annotation_undo_last(annotator=annotator)
    assert Annotation.objects.filter(annotator=annotator).count() == 1


def test_reviewers_list_flags_by_state_and_decide_through_the_api(
    annotator: User, reviewer: User, annotator2: User
) -> None:
    first, _ = make_tasks(2)
    one = _flag(annotator, lease(annotator), note="no description at all")
    two = _flag(annotator2, lease(annotator2), code="other")
    client = client_for(reviewer)

    listed = client.get("/api/v1/flags", {"state": "open"})
    assert listed.status_code == 200
    rows = listed.json()["results"]
    assert [r["id"] for r in rows] == [one.id, two.id]
    assert rows[0]["annotator"] == annotator.username
    assert rows[0]["note"] == "no description at all"
    assert rows[0]["product"]["title"] == first.product.title
    assert rows[0]["guess_price"] == "100.00"

    decided = client.post(f"/api/v1/flags/{two.id}/decide", {"action": "drop"}, format="json")
    assert decided.status_code == 200
    assert (decided.json()["state"], decided.json()["task_status"]) == ("dropped", "dropped")
    assert [r["id"] for r in client.get("/api/v1/flags", {"state": "open"}).json()["results"]] == [one.id]
    assert client.get("/api/v1/flags", {"state": "gone"}).status_code == 400
    again = client.post(f"/api/v1/flags/{two.id}/decide", {"action": "requeue"}, format="json")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "flag_decided")
    assert client.post("/api/v1/flags/999999/decide", {"action": "drop"}, format="json").status_code == 404
    assert client_for(annotator).get("/api/v1/flags").status_code == 403


def test_the_flagged_page_shows_open_flags_and_decides(annotator: User, reviewer: User) -> None:
    (task,) = make_tasks(1)
    flag = _flag(annotator, lease(annotator), code="wrong-category", note="<b>shoe</b> in Tools")
    client = client_for(reviewer)

    assert "1 item(s) flagged by annotators wait for a decision" in client.get("/review/").content.decode()
    page = client.get("/review/flags/").content.decode()
    assert task.product.title in page
    assert "&lt;b&gt;shoe&lt;/b&gt; in Tools" in page  # escaped
    assert "wrong-category" in page
    assert annotator.username in page

    response = client.post(f"/review/flags/{flag.id}/decide/", {"action": "drop"}, follow=True)
    text = response.content.decode()
    assert "never be labelled or put in a retrain batch" in text
    assert "No open flags." in text
    task.refresh_from_db()
    assert task.status == TaskStatus.DROPPED


def test_queue_counts_show_flagged_and_dropped_items_so_the_states_add_up(
    annotator: User, annotator2: User, reviewer: User
) -> None:
    make_tasks(4)
    make_gold(1)
    submit(annotator, lease(annotator), "accept")  # resolved (overlap 1)
    _flag(annotator, lease(annotator))  # stays flagged
    dropped = _flag(annotator2, lease(annotator2), code="other")
    flag_decide(reviewer=reviewer, flag_id=dropped.id, action="drop")
    client = client_for(reviewer)

    counts = client.get("/api/v1/annotation/queue").json()["tasks"]
    assert {k: counts[k] for k in ("open", "needs_adjudication", "resolved", "flagged", "dropped")} == {
        "open": 1,
        "needs_adjudication": 0,
        "resolved": 1,
        "flagged": 1,
        "dropped": 1,
    }
    assert (
        counts["total"]
        == 4
        == sum(counts[k] for k in ("open", "needs_adjudication", "resolved", "flagged", "dropped"))
    )
    assert counts["gold"] == 1

    page = client.get("/review/queue/").content.decode()
    flagged_row = page.split('id="queue-flagged"', 1)[1].split("</tr>", 1)[0]
    assert 'href="/review/flags/">1</a>' in flagged_row
    assert ">1</td>" in page.split('id="queue-dropped"', 1)[1].split("</tr>", 1)[0]
    assert ">4</td>" in page.split('id="queue-total"', 1)[1].split("</tr>", 1)[0]
    assert "1 resolved, 1 flagged," in client.get("/review/").content.decode()


def test_a_dropped_quarantine_withdraws_its_vote_from_a_flagged_item_which_stays_flagged(
    annotator: User, annotator2: User, reviewer: User
) -> None:
    (task,) = make_tasks(1, overlap=2)
    submit(annotator2, lease(annotator2), "correct", "999")
    flag = _flag(annotator, lease(annotator))
    services.annotator_pause(annotator=annotator2, reason="wild prices.")

    response = client_for(reviewer).post(f"/api/v1/annotation/annotators/{annotator2.id}/quarantine/drop")

    assert response.json()["withdrawn"] == 1
    task.refresh_from_db()
    assert (task.status, task.completed_count, task.claimed_count) == (TaskStatus.FLAGGED, 0, 0)
    flag_decide(reviewer=reviewer, flag_id=flag.id, action="requeue")
    task.refresh_from_db()
    assert (task.status, task.completed_count) == (TaskStatus.OPEN, 0)


def test_the_annotate_page_flags_and_shows_the_next_item(annotator: User) -> None:
    first, second = make_tasks(2)
    client = client_for(annotator)
    page = client.get("/annotate/").content.decode()
    assert 'id="flag-form"' in page
    assert "the category does not match the product" in page  # a default reason, numbered for f
    live = Assignment.objects.get(annotator=annotator, status="live")

    refused = client.post(
        "/annotate/flag/", {"assignment_id": live.id, "reason_code": "nope"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "&#x27;nope&#x27; is not a flag reason of the default flag reasons" in refused
    assert 'data-refused="true"' in refused

    answer = client.post(
        "/annotate/flag/",
        {"assignment_id": live.id, "reason_code": "wrong-category", "note": "a sofa"},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert "Flagged (wrong-category)" in answer
    assert second.product.title in answer
    assert first.product.title not in answer
    assert ItemFlag.objects.get().note == "a sofa"


def test_annotators_see_their_own_flags_in_their_history(
    annotator: User, annotator2: User, reviewer: User
) -> None:
    first, second, third, other = make_tasks(4)
    answered = submit(annotator, lease(annotator), "accept")  # first
    dropped = _flag(annotator, lease(annotator), code="duplicate", note="<i>same</i> as item 1")  # second
    flag_decide(reviewer=reviewer, flag_id=dropped.id, action="drop")
    still_open = _flag(annotator, lease(annotator), code="wrong-category")  # third
    theirs = _flag(annotator2, lease(annotator2), code="other", note="not yours")  # other
    client = client_for(annotator)

    page = client.get("/annotate/history/").content.decode()
    table = page.split('id="flag-history"', 1)[1].split("</table>", 1)[0]
    rows = table.split('<tr id="flag-')[1:]
    assert [r.split('"', 1)[0] for r in rows] == [str(still_open.id), str(dropped.id)]  # newest first
    assert third.product.title in rows[0]
    assert "the category does not match the product" in rows[0]
    assert 'data-state="open"' in rows[0]
    assert "waiting for a reviewer" in rows[0]
    assert second.product.title in rows[1]
    assert "&lt;i&gt;same&lt;/i&gt; as item 1" in rows[1]  # escaped
    assert 'data-state="dropped"' in rows[1]
    assert "decided" in rows[1]
    assert other.product.title not in page
    assert "not yours" not in page
    assert first.product.title in page.split('id="history"', 1)[1].split("</table>", 1)[0]

    listed = client.get("/api/v1/annotate/flags")
    assert listed.status_code == 200
    api_rows = listed.json()["results"]
    assert [(r["id"], r["state"], r["product_title"]) for r in api_rows] == [
        (still_open.id, "open", third.product.title),
        (dropped.id, "dropped", second.product.title),
    ]
    assert api_rows[1]["reason_label"] == "the same product appears as another item"
    assert api_rows[1]["note"] == "<i>same</i> as item 1"
    assert api_rows[0]["decided_at"] is None
    assert api_rows[1]["decided_at"] is not None
    assert [r["id"] for r in client_for(annotator2).get("/api/v1/annotate/flags").json()["results"]] == [
        theirs.id
    ]
    # the annotations list keeps its shape and lists answers only
    answers = client.get("/api/v1/annotate/annotations").json()["results"]
    assert [a["id"] for a in answers] == [answered.id]


def test_the_history_page_says_when_nothing_was_flagged(annotator: User) -> None:
    page = client_for(annotator).get("/annotate/history/").content.decode()
    assert "You have not flagged any item." in page


def test_the_codebook_pages_show_the_flag_reasons(reviewer: User) -> None:
    client = client_for(reviewer)
    response = client.post("/review/codebook/", {"markdown": CODEBOOK}, follow=True)
    assert "Published codebook v1 with 2 reason code(s) and 2 flag reason(s)" in response.content.decode()
    page = client.get("/review/codebook/v1/").content.decode()
    assert "<code>wrong-category</code> — the category does not match" in page
    response = client.post(
        "/review/codebook/",
        {"markdown": "# Rules\n\n## Reject reasons\n- `bundle`: x\n", "change_note": "n"},
        follow=True,
    )
    assert "1 reason code(s) and the default flag reasons" in response.content.decode()
    assert "annotators flag with the defaults" in client.get("/review/codebook/v2/").content.decode()
