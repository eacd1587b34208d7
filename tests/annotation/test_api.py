"""The annotation JSON API: who may call what, the annotator loop over HTTP, pinned query counts."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from annotation import services
from annotation.models import Annotation, Assignment, AssignmentStatus, Guess, Task
from tests.annotation.queue_helpers import lease, make_tasks, submit
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

ANNOTATOR_ENDPOINTS = [
    ("post", "/api/v1/annotate/next"),
    ("post", "/api/v1/annotate/submit"),
    ("post", "/api/v1/annotate/skip"),
    ("post", "/api/v1/annotate/undo"),
    ("get", "/api/v1/annotate/progress"),
    ("get", "/api/v1/annotate/annotations"),
    ("post", "/api/v1/annotate/codebook/ack"),
]
SHARED_ENDPOINTS = [  # annotators and reviewers
    ("get", "/api/v1/annotate/codebook"),
    ("get", "/api/v1/annotation/codebook/diff?to=1"),
]
REVIEWER_ENDPOINTS = [
    ("get", "/api/v1/annotation/codebook/versions"),
    ("post", "/api/v1/annotation/codebook/versions"),
    ("get", "/api/v1/annotation/adjudications"),
    ("post", "/api/v1/annotation/adjudications/1/resolve"),
    ("get", "/api/v1/annotation/annotators/paused"),
    ("post", "/api/v1/annotation/annotators/1/unpause"),
    ("get", "/api/v1/annotation/agreement"),
    ("get", "/api/v1/annotation/blind-vs-shown"),
    ("get", "/api/v1/annotation/queue"),
]
EXPORT_ENDPOINTS = [("get", "/api/v1/annotations/export")]
ALL = ANNOTATOR_ENDPOINTS + SHARED_ENDPOINTS + REVIEWER_ENDPOINTS + EXPORT_ENDPOINTS


@pytest.fixture(autouse=True)
def _no_gold_no_blind(settings) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0


def _call(user: User | None, method: str, url: str, data: dict | None = None):
    client = client_for(user)
    return getattr(client, method)(url, data or {}, format="json") if method == "post" else client.get(url)


# --- permissions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "url"), ALL)
def test_it_asks_anonymous_callers_to_authenticate(method: str, url: str) -> None:
    response = _call(None, method, url)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize(("method", "url"), ALL)
def test_it_gives_the_outsider_403_everywhere(outsider: User, method: str, url: str) -> None:
    assert _call(outsider, method, url).status_code == 403


@pytest.mark.parametrize(("method", "url"), REVIEWER_ENDPOINTS + EXPORT_ENDPOINTS)
def test_it_keeps_annotators_out_of_reviewer_and_client_apis(annotator: User, method: str, url: str) -> None:
    assert _call(annotator, method, url).status_code == 403


@pytest.mark.parametrize(("method", "url"), ANNOTATOR_ENDPOINTS + SHARED_ENDPOINTS + REVIEWER_ENDPOINTS)
def test_it_gives_api_clients_only_the_export(api_client_user: User, method: str, url: str) -> None:
    assert _call(api_client_user, method, url).status_code == 403


@pytest.mark.parametrize(("method", "url"), ANNOTATOR_ENDPOINTS)
def test_it_keeps_reviewers_out_of_the_annotator_loop(reviewer: User, method: str, url: str) -> None:
    assert _call(reviewer, method, url).status_code == 403


def test_it_hides_another_annotators_assignment(annotator: User, annotator2: User) -> None:
    make_tasks(2)
    mine = lease(annotator)
    for url, body in [
        ("/api/v1/annotate/submit", {"assignment_id": mine.id, "verdict": "accept"}),
        ("/api/v1/annotate/skip", {"assignment_id": mine.id}),
    ]:
        response = _call(annotator2, "post", url, body)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found"
    assert Assignment.objects.get(id=mine.id).status == AssignmentStatus.LIVE
    assert not Annotation.objects.exists()


def test_it_lists_and_undoes_only_the_annotators_own_annotations(annotator: User, annotator2: User) -> None:
    make_tasks(2)
    theirs = submit(annotator2, lease(annotator2))
    assert _call(annotator, "get", "/api/v1/annotate/annotations").json()["results"] == []
    response = _call(annotator, "post", "/api/v1/annotate/undo")
    assert response.status_code == 409
    assert Annotation.objects.filter(id=theirs.id).exists()
    assert [a["id"] for a in _call(annotator2, "get", "/api/v1/annotate/annotations").json()["results"]] == [
        theirs.id
    ]


# --- the annotator loop over HTTP ---------------------------------------------------------------------------


def test_it_runs_next_submit_skip_undo_over_http(annotator: User) -> None:
    tasks = make_tasks(3, entropies=[3.0, 2.0, 1.0])
    item = _call(annotator, "post", "/api/v1/annotate/next").json()
    assert item["task_id"] == tasks[0].id
    assert item["guess"] == {"price": "100.00"}
    assert "is_gold" not in json.dumps(item)
    body = {"assignment_id": item["id"], "verdict": "correct", "corrected_price": "89.5", "seconds_spent": 4}
    response = _call(annotator, "post", "/api/v1/annotate/submit", {**body, "client_token": "k1"})
    assert response.status_code == 200
    assert response.json()["corrected_price"] == "89.50"
    assert (
        _call(annotator, "post", "/api/v1/annotate/submit", {**body, "client_token": "k1"}).json()["id"]
        == (response.json()["id"])
    )
    item2 = _call(annotator, "post", "/api/v1/annotate/next").json()
    assert _call(annotator, "post", "/api/v1/annotate/skip", {"assignment_id": item2["id"]}).json() == {
        "assignment_id": item2["id"],
        "status": "skipped",
    }
    undo = _call(annotator, "post", "/api/v1/annotate/undo").json()
    assert undo["assignment"]["task_id"] == tasks[0].id
    assert undo["undone"]["corrected_price"] == "89.50"
    progress = _call(annotator, "get", "/api/v1/annotate/progress").json()
    assert progress["done_today"] == 0
    assert progress["remaining"] == 2
    assert Annotation.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"verdict": "correct", "corrected_price": "twelve"}, "corrected_price"),
        ({"verdict": "correct", "corrected_price": "NaN"}, "corrected_price"),
        ({"verdict": "correct", "corrected_price": "-3"}, "corrected_price"),
        ({"verdict": "correct"}, "corrected_price"),
        ({"verdict": "maybe"}, "verdict"),
        ({"verdict": "reject"}, "reason_code"),
        ({"verdict": "accept", "seconds_spent": "soon"}, "seconds_spent"),
        ({"verdict": "correct", "corrected_price": "1e999999"}, "corrected_price"),
        ({"verdict": "correct", "corrected_price": "9" * 2000}, "corrected_price"),
        ({"verdict": "accept", "assignment_id": 2**70}, "assignment_id"),
        ({"verdict": "accept", "assignment_id": "x"}, "assignment_id"),
    ],
)
def test_it_answers_400_naming_the_bad_field(annotator: User, body: dict, field: str) -> None:
    make_tasks(1)
    assignment = lease(annotator)
    response = _call(annotator, "post", "/api/v1/annotate/submit", {"assignment_id": assignment.id, **body})
    assert response.status_code == 400, response.content
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert not Annotation.objects.exists()


def test_it_answers_204_when_nothing_is_left(annotator: User) -> None:
    assert _call(annotator, "post", "/api/v1/annotate/next").status_code == 204


def test_it_answers_409_until_the_codebook_is_acknowledged(annotator: User, reviewer: User) -> None:
    make_tasks(1)
    published = _call(reviewer, "post", "/api/v1/annotation/codebook/versions", {"markdown": "# Rules\n"})
    assert published.status_code == 201
    response = _call(annotator, "post", "/api/v1/annotate/next")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "codebook_ack_required"
    assert response.json()["error"]["codebook_version"] == 1
    assert _call(annotator, "get", "/api/v1/annotate/codebook").json()["acknowledged"] is False
    assert _call(annotator, "post", "/api/v1/annotate/codebook/ack", {"version": 1}).status_code == 200
    assert _call(annotator, "post", "/api/v1/annotate/next").status_code == 200


def test_it_answers_403_with_a_notice_to_a_paused_annotator(annotator: User, reviewer: User) -> None:
    make_tasks(1)
    services.annotator_pause(annotator=annotator, reason="Gold accuracy too low.")
    response = _call(annotator, "post", "/api/v1/annotate/next")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "annotator_paused"
    paused = _call(reviewer, "get", "/api/v1/annotation/annotators/paused").json()["results"]
    assert [p["username"] for p in paused] == ["alice"]
    assert _call(reviewer, "post", f"/api/v1/annotation/annotators/{annotator.id}/unpause").status_code == 200
    assert _call(annotator, "post", "/api/v1/annotate/next").status_code == 200


def test_it_lets_a_reviewer_adjudicate_over_http(reviewer: User, annotator: User, annotator2: User) -> None:
    (task,) = make_tasks(1, overlap=2)
    submit(annotator, lease(annotator), "correct", "20")
    submit(annotator2, lease(annotator2), "correct", "400")
    queue = _call(reviewer, "get", "/api/v1/annotation/adjudications").json()["results"]
    assert [q["task_id"] for q in queue] == [task.id]
    url = f"/api/v1/annotation/adjudications/{task.id}/resolve"
    assert _call(reviewer, "post", url, {"price": "abc"}).json()["error"]["fields"].keys() == {"price"}
    assert _call(reviewer, "post", url, {"price": "120"}).json()["method"] == "adjudicated"
    assert _call(reviewer, "post", url, {"price": "120"}).status_code == 409
    assert (
        _call(reviewer, "post", "/api/v1/annotation/adjudications/999999/resolve", {"price": "1"}).status_code
        == 404
    )


def test_it_exports_annotations_as_jsonl_and_json(
    api_client_user: User, reviewer: User, annotator: User
) -> None:
    from training.models import ModelVersion

    tasks = make_tasks(2)
    v3 = ModelVersion.objects.create(number=3, base_model="tiny")
    Guess.objects.filter(id=tasks[0].guess_id).update(model_version=v3)  # the other: a baseline's guess
    first = lease(annotator)
    submit(annotator, first, "correct", "55")
    submit(annotator, lease(annotator), "accept")
    response = _call(api_client_user, "get", "/api/v1/annotations/export")
    assert response["Content-Type"] == "application/x-ndjson"
    rows = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert [r["verdict"] for r in rows] == ["correct", "accept"]
    assert rows[0]["corrected_price"] == "55.00"
    # each row names the model version whose guess was shown
    by_task = {r["task_id"]: r["guess_model_version"] for r in rows}
    assert by_task == {t.id: (3 if t.id == tasks[0].id else None) for t in tasks}
    as_list = _call(
        reviewer, "get", f"/api/v1/annotations/export?output=json&since_id={rows[0]['id']}"
    ).json()
    assert [r["id"] for r in as_list] == [rows[1]["id"]]
    assert _call(reviewer, "get", "/api/v1/annotations/export?since_id=x").status_code == 400


def test_it_shows_reviewers_the_codebook_diff(reviewer: User, annotator: User) -> None:
    _call(
        reviewer,
        "post",
        "/api/v1/annotation/codebook/versions",
        {"markdown": "# Rules\n\nAccept close guesses.\n"},
    )
    _call(
        reviewer,
        "post",
        "/api/v1/annotation/codebook/versions",
        {"markdown": "# Rules\n\nAccept exact guesses.\n", "change_note": "exact guesses only"},
    )
    diff = _call(annotator, "get", "/api/v1/annotation/codebook/diff?from=1&to=2").json()["diff"]
    assert "-Accept close guesses." in diff
    assert "+Accept exact guesses." in diff
    assert _call(reviewer, "get", "/api/v1/annotation/codebook/diff?from=1&to=9").status_code == 404


def test_it_reports_queue_agreement_and_anchoring(reviewer: User, annotator: User) -> None:
    make_tasks(1)
    submit(annotator, lease(annotator))
    assert _call(reviewer, "get", "/api/v1/annotation/queue").json()["tasks"]["resolved"] == 1
    assert _call(reviewer, "get", "/api/v1/annotation/agreement").json()["annotations"] == 1
    assert _call(reviewer, "get", "/api/v1/annotation/blind-vs-shown").json()["shown"]["n"] == 1


def test_it_describes_every_annotation_endpoint_in_the_schema(reviewer: User) -> None:
    schema = client_for(reviewer).get("/api/schema/?format=json").json()
    paths = set(schema["paths"])
    for _, url in ALL:
        assert (
            url.split("?")[0]
            .replace("/1/", "/{task_id}/", 1)
            .replace("annotators/{task_id}", "annotators/{user_id}")
            in paths
        ), url


# --- query counts ----------------------------------------------------------------------------------------


def test_it_pins_the_queries_of_next_and_submit(annotator: User) -> None:
    make_tasks(5, entropies=[5, 4, 3, 2, 1])
    client = client_for(annotator)
    submit(annotator, lease(annotator))  # steady state: the annotator's status row exists
    # PostgreSQL writes with one data-modifying statement where SQLite needs one per step
    one_statement = connection.vendor == "postgresql"
    # session, user, groups (role), lock status + live lease id + codebook ack?, then pick + insert +
    # counters + claim (one statement on PostgreSQL, four on SQLite)
    with CaptureQueriesContext(connection) as ctx:
        item = client.post("/api/v1/annotate/next").json()
    fresh_next = [q["sql"] for q in ctx.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len(fresh_next) == (5 if one_statement else 8), "\n".join(fresh_next)
    with CaptureQueriesContext(connection) as ctx:
        client.post("/api/v1/annotate/next")
    again = [q["sql"] for q in ctx.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len(again) == 6, "\n".join(again)  # session, user, groups, lock+live id+codebook, renew, load
    body = {"assignment_id": item["id"], "verdict": "correct", "corrected_price": "12", "client_token": "t"}
    with CaptureQueriesContext(connection) as ctx:
        assert client.post("/api/v1/annotate/submit", body, format="json").status_code == 200
    sub = [q["sql"] for q in ctx.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    # session, user, groups, lock lease+task (+ codebook id and number), then resolve task + lease done +
    # insert + label (one statement on PostgreSQL, four on SQLite); no dedupe look-up (only a lease no
    # longer live looks its token up) and no codebook load
    assert len(sub) == (5 if one_statement else 8), "\n".join(sub)
    assert Task.objects.filter(status="resolved").count() == 2


def test_it_answers_next_and_submit_exactly_as_their_documented_serializers(
    annotator: User, reviewer: User
) -> None:
    """The hot path writes its JSON by hand (annotation/api.py): it must match the schema's serializers."""
    from annotation.api import AnnotationOut, AssignmentOut

    make_tasks(3, entropies=[3, 2, 1])
    Task.objects.filter(priority=2).update(is_blind=True)
    _call(
        reviewer,
        "post",
        "/api/v1/annotation/codebook/versions",
        {"markdown": "# Rules\n- `dup`: a duplicate\n"},
    )
    client = client_for(annotator)
    assert client.post("/api/v1/annotate/codebook/ack", {"version": 1}, format="json").status_code == 200
    for verdict, extra in (
        ("accept", {}),
        ("correct", {"corrected_price": "12.5"}),
        ("reject", {"reason_code": "dup"}),
    ):
        item = client.post("/api/v1/annotate/next").json()
        assignment = Assignment.objects.select_related("task__product", "task__guess").get(id=item["id"])
        assert item == AssignmentOut(assignment).data
        if item["guess"] is None and verdict == "accept":
            verdict, extra = "correct", {"corrected_price": "7"}
        body = {
            "assignment_id": item["id"],
            "verdict": verdict,
            "seconds_spent": 2,
            "client_token": verdict,
            **extra,
        }
        answer = client.post("/api/v1/annotate/submit", body, format="json").json()
        assert answer == AnnotationOut(Annotation.objects.get(id=answer["id"])).data
        assert answer["codebook_version"] == 1
        # a retried submit answers the same annotation and writes nothing
        assert client.post("/api/v1/annotate/submit", body, format="json").json() == answer
    assert Annotation.objects.count() == 3
    assert any(a.task.is_blind for a in Annotation.objects.select_related("task"))


# --- scripts with a token: the same views as page sessions (TokenRolesAuthentication) -----------------------


def _token_client(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user.auth_token.key}")
    return client


def _answer(response) -> tuple[int, object, str | None, str | None]:
    body = response.json() if response.content else None
    return response.status_code, body, response.get("Content-Type"), response.get("Allow")


def test_it_answers_token_scripts_exactly_as_page_sessions(
    annotator: User, annotator2: User, reviewer
) -> None:
    """Token and session requests: same statuses, bodies and headers."""
    make_tasks(4, entropies=[4, 3, 2, 1])
    token, session = _token_client(annotator), client_for(annotator2)

    def both(url: str, body: dict | None = None) -> list[tuple]:
        answers = []
        for client in (token, session):
            response = client.post(url, body, format="json") if body is not None else client.post(url)
            answers.append(_answer(response))
        return answers

    def same_but_ids(answers: list[tuple]) -> None:
        (status_a, body_a, *headers_a), (status_b, body_b, *headers_b) = answers
        assert (status_a, headers_a) == (status_b, headers_b)
        drop = ("id", "task_id", "assignment_id", "expires_at", "created", "external_id", "title", "text")

        def scrub(value: object) -> object:
            if isinstance(value, dict):
                return {k: scrub(v) for k, v in value.items() if k not in drop}
            return re.sub(r"\d+", "#", value) if isinstance(value, str) else value  # ids in messages

        assert scrub(body_a) == scrub(body_b)

    items = both("/api/v1/annotate/next")
    same_but_ids(items)
    assert items[0][0] == 200
    assert items[0][2:] == ("application/json", "POST, OPTIONS")
    ids = [items[0][1]["id"], items[1][1]["id"]]  # type: ignore[index]
    # 400 naming the field (bad input never reaches the service)
    bad = [
        _answer(c.post("/api/v1/annotate/submit", {"assignment_id": i, "verdict": "maybe"}, format="json"))
        for c, i in zip((token, session), ids, strict=True)
    ]
    same_but_ids(bad)
    assert bad[0][0] == 400
    assert bad[0][1]["error"]["fields"].keys() == {"verdict"}  # type: ignore[index]
    # 404: someone else's assignment
    theirs = [
        _answer(c.post("/api/v1/annotate/submit", {"assignment_id": i, "verdict": "accept"}, format="json"))
        for c, i in zip((token, session), reversed(ids), strict=True)
    ]
    same_but_ids(theirs)
    assert theirs[0][1]["error"]["code"] == "not_found"  # type: ignore[index]
    # 200, then 409 lease_lost for a second submit with another token
    for tag, expected in (("k1", 200), ("k2", 409)):
        done = [
            _answer(
                c.post(
                    "/api/v1/annotate/submit",
                    {
                        "assignment_id": i,
                        "verdict": "correct",
                        "corrected_price": "12.5",
                        "client_token": tag,
                    },
                    format="json",
                )
            )
            for c, i in zip((token, session), ids, strict=True)
        ]
        same_but_ids(done)
        assert done[0][0] == expected
    # 409 codebook_ack_required with the version; 403 annotator_paused
    _call(reviewer, "post", "/api/v1/annotation/codebook/versions", {"markdown": "# Rules\n"})
    ack = both("/api/v1/annotate/next")
    same_but_ids(ack)
    assert ack[0][1]["error"] == {  # type: ignore[index]
        "code": "codebook_ack_required",
        "message": "Codebook v1 was published: read it and acknowledge it before the next item.",
        "codebook_version": 1,
    }
    for user in (annotator, annotator2):
        services.codebook_acknowledge(annotator=user, version_number=1)
        services.annotator_pause(annotator=user, reason="Gold accuracy too low.")
    paused = both("/api/v1/annotate/next")
    same_but_ids(paused)
    assert paused[0][0] == 403
    assert paused[0][1]["error"]["code"] == "annotator_paused"  # type: ignore[index]
    for user in (annotator, annotator2):
        services.annotator_unpause(reviewer=reviewer, annotator=user)
    # 204 with no Content-Type once the queue is empty
    for client in (token, session):  # one task left each
        item = client.post("/api/v1/annotate/next").json()
        body = {"assignment_id": item["id"], "verdict": "accept"}
        assert client.post("/api/v1/annotate/submit", body, format="json").status_code == 200
    empty = both("/api/v1/annotate/next")
    same_but_ids(empty)
    assert empty[0] == (204, None, None, "POST, OPTIONS")


def test_it_refuses_bad_tokens_and_other_roles(annotator: User, reviewer: User) -> None:
    make_tasks(1)
    for header, status in (
        ("Token nope", 401),
        ("Token", 401),
        ("Token a b", 401),
        (f"Token {reviewer.auth_token.key}", 403),
    ):
        response = APIClient().post("/api/v1/annotate/next", HTTP_AUTHORIZATION=header)
        assert response.status_code == status, header
        assert "error" in response.json()
    annotator.is_active = False
    annotator.save(update_fields=["is_active"])
    response = _token_client(annotator).post("/api/v1/annotate/next")
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "User inactive or deleted."
    assert not Assignment.objects.exists()


def test_it_pins_the_queries_of_next_and_submit_with_a_token(annotator: User) -> None:
    make_tasks(3, entropies=[3, 2, 1])
    client = _token_client(annotator)
    submit(annotator, lease(annotator))
    one_statement = connection.vendor == "postgresql"
    with CaptureQueriesContext(connection) as ctx:
        item = client.post("/api/v1/annotate/next").json()
    # token + user + roles, lock status + live lease + codebook, pick + insert + counters + claim
    queries = [q["sql"] for q in ctx.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len(queries) == (3 if one_statement else 6), "\n".join(queries)
    body = {"assignment_id": item["id"], "verdict": "accept", "client_token": "t"}
    with CaptureQueriesContext(connection) as ctx:
        assert client.post("/api/v1/annotate/submit", body, format="json").status_code == 200
    # token + user + roles, lock lease + task + codebook, count + lease done + annotation + label
    queries = [q["sql"] for q in ctx.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len(queries) == (3 if one_statement else 6), "\n".join(queries)


# --- unusual prices: refused until confirmed ----------------------------------------------------------------


@pytest.mark.parametrize("with_token", [True, False], ids=["token", "session"])
def test_it_refuses_an_absurd_price_until_it_is_confirmed_then_stores_it_flagged(
    annotator: User, with_token: bool
) -> None:
    make_tasks(1)
    client = _token_client(annotator) if with_token else client_for(annotator)
    item = client.post("/api/v1/annotate/next").json()
    body = {"assignment_id": item["id"], "verdict": "correct", "corrected_price": "999999999"}
    refused = client.post("/api/v1/annotate/submit", body, format="json")
    assert refused.status_code == 400
    (message,) = refused.json()["error"]["fields"]["corrected_price"]
    assert message == (
        "$999,999,999.00 is outside the trainable range $0.50–$999.49: it would be saved flagged and never "
        "trained on. Check it; if it is right, send it again with confirm_price=true."
    )
    assert not Annotation.objects.exists()

    saved = client.post("/api/v1/annotate/submit", {**body, "confirm_price": True}, format="json")
    assert saved.status_code == 200, saved.content
    assert (saved.json()["corrected_price"], saved.json()["price_flag"]) == ("999999999.00", "out_of_range")
    assert Annotation.objects.get().price_flag == "out_of_range"


def test_it_asks_scripts_to_confirm_a_price_ten_times_the_guess(annotator: User) -> None:
    make_tasks(2, guess="40.00")
    client = _token_client(annotator)
    item = client.post("/api/v1/annotate/next").json()
    body = {"assignment_id": item["id"], "verdict": "correct", "corrected_price": "400"}
    refused = client.post("/api/v1/annotate/submit", body, format="json")
    assert refused.status_code == 400
    assert "10 times the model's guess ($40.00)" in refused.json()["error"]["fields"]["corrected_price"][0]
    # a form-encoded confirmation ("true") goes through the serializer: the same answer
    saved = client.post("/api/v1/annotate/submit", {**body, "confirm_price": "true"})
    assert saved.status_code == 200, saved.content
    assert saved.json()["price_flag"] == ""  # in range: confirmed, it is an ordinary label
