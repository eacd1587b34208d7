"""The registry API through HTTP: versions, download, rollback, batches, runs, products import."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest

from annotation.models import Product
from tests.conftest import client_for
from tests.training.factories import make_version
from training.engine.artifacts import read_tar
from training.models import AuditEvent, ProgressPoint, RetrainBatch, TrainingRun, VersionStatus


@pytest.fixture
def versions(settings: Any, tmp_path: Path) -> list[Any]:
    settings.ARTIFACT_ROOT = tmp_path
    return [
        make_version(tmp_path, 1, mae=90.0),
        make_version(tmp_path, 2, status=VersionStatus.REJECTED, mae=95.0),
        make_version(tmp_path, 3, status=VersionStatus.CHAMPION, mae=70.0),
    ]


@pytest.mark.django_db
def test_it_lists_versions_with_filters_and_pages(
    versions: list[Any], api_client_user: Any, settings: Any
) -> None:
    client = client_for(api_client_user)
    body = client.get("/api/v1/versions").json()
    assert [v["name"] for v in body["results"]] == ["v3", "v2", "v1"]
    assert body["count"] == 3
    assert body["results"][0]["metrics"]["mae"] == 70.0
    assert [v["name"] for v in client.get("/api/v1/versions?status=rejected").json()["results"]] == ["v2"]
    assert client.get("/api/v1/versions?base_model=other").json()["count"] == 0
    bad = client.get("/api/v1/versions?status=great")
    assert bad.status_code == 400
    assert bad.json()["error"]["fields"]["status"]
    page = client.get("/api/v1/versions?page=2")
    assert page.status_code == 404  # 3 versions fit on the first page


@pytest.mark.django_db
def test_it_shows_the_champion_with_lineage_and_manifest(versions: list[Any], api_client_user: Any) -> None:
    body = client_for(api_client_user).get("/api/v1/versions/champion").json()
    assert body["name"] == "v3"
    assert body["status"] == "champion"
    assert body["lineage"]["base"]["model"] == "tiny-base"
    assert body["manifest"]["files"]["adapter_model.safetensors"]["sha256"]
    assert body["sha256"] == versions[2].artifact_sha256
    assert body["download_url"] == "/api/v1/versions/3/download"


@pytest.mark.django_db
def test_it_streams_the_adapter_with_its_checksum(versions: list[Any], api_client_user: Any) -> None:
    client = client_for(api_client_user)
    response = client.get("/api/v1/versions/3/download")
    assert response.status_code == 200
    assert response.streaming
    body = b"".join(response.streaming_content)
    assert hashlib.sha256(body).hexdigest() == response["X-Checksum-SHA256"] == versions[2].artifact_sha256
    assert response["ETag"] == f'"{versions[2].artifact_sha256}"'
    assert int(response["Content-Length"]) == len(body)
    assert response["Content-Disposition"] == 'attachment; filename="priceloop-v3.tar"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert sorted(read_tar(body)) == [
        "v3/adapter_config.json",
        "v3/adapter_model.safetensors",
        "v3/manifest.json",
    ]
    again = client.get("/api/v1/versions/3/download", HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304


@pytest.mark.django_db
def test_it_refuses_to_serve_files_that_fail_their_checksums(
    versions: list[Any], api_client_user: Any, tmp_path: Path
) -> None:
    (tmp_path / "versions" / "v3" / "adapter_model.safetensors").write_bytes(b"tampered")
    response = client_for(api_client_user).get("/api/v1/versions/3/download")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "artifact_invalid"


@pytest.mark.django_db
def test_it_rolls_back_for_reviewers_only(versions: list[Any], reviewer: Any, api_client_user: Any) -> None:
    assert (
        client_for(api_client_user).post("/api/v1/versions/1/rollback", {}, format="json").status_code == 403
    )
    response = client_for(reviewer).post(
        "/api/v1/versions/1/rollback", {"reason": "v3 drifts"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["status"] == "champion"
    assert client_for(api_client_user).get("/api/v1/versions/champion").json()["name"] == "v1"
    event = AuditEvent.objects.get(action="rollback")
    assert event.numbers["from"]["version"] == "v3"
    assert event.numbers["to"]["metrics"]["mae"] == 90.0


@pytest.mark.django_db(transaction=True)
def test_it_approves_a_batch_into_exactly_one_run(
    reviewer: Any, api_client_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import pipeline

    sent: list[int] = []
    monkeypatch.setattr(pipeline, "run_step_send", sent.append)  # count the broker sends (no worker)
    batch = RetrainBatch.objects.create(content_sha256="9" * 64, size=3, stats={"rows": 3})
    client = client_for(reviewer)
    first = client.post(  # no items, so no gold answers: the checks fail and need an override
        f"/api/v1/batches/{batch.pk}/approve", {"recipe": "kto", "override_reason": "test"}, format="json"
    )
    second = client.post(f"/api/v1/batches/{batch.pk}/approve", {}, format="json")
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert first.json()["recipe"] == "kto"
    assert first.json()["status"] == "queued"
    assert sent == [first.json()["id"]]
    assert (
        client.post(f"/api/v1/batches/{batch.pk}/reject", {"reason": "late"}, format="json").status_code
        == 409
    )
    listed = client_for(api_client_user).get("/api/v1/batches?status=approved").json()
    assert [b["run_id"] for b in listed["results"]] == [first.json()["id"]]


@pytest.mark.django_db
def test_it_serves_run_progress_after_a_step(reviewer: Any, api_client_user: Any) -> None:
    run = TrainingRun.objects.create(recipe_name="tiny", base_model="b", status="running", stage="train")
    for step in (1, 2, 3):
        ProgressPoint.objects.create(run=run, step=step, total_steps=3, loss=3.0 - step, learning_rate=1e-3)
    client = client_for(api_client_user)
    body = client.get(f"/api/v1/runs/{run.pk}/progress?after_step=1").json()
    assert [p["step"] for p in body["points"]] == [2, 3]
    assert body["status"] == "running"
    assert client.get(f"/api/v1/runs/{run.pk}/progress?after_step=x").status_code == 400
    detail = client.get(f"/api/v1/runs/{run.pk}").json()
    assert len(detail["points"]) == 3
    cancel = client_for(reviewer).post(f"/api/v1/runs/{run.pk}/cancel", format="json")
    assert cancel.status_code == 200
    assert cancel.json()["cancel_requested"] is True


@pytest.mark.django_db
def test_it_imports_products_and_reports_every_bad_row(reviewer: Any) -> None:
    Product.objects.create(external_id="keep", title="Old", text="old text", price="5.00")
    content = (
        b'{"id": "p1", "title": "Lamp", "text": "A desk lamp", "category": "Home", "price": 19.99}\n'
        b'{"id": "p2", "title": "Chair", "text": "A chair", "category": "Home", "price": "cheap"}\n'
        b'{"id": "keep", "title": "New", "category": "Home"}\n'
        b"not json\n"
    )
    upload = io.BytesIO(content)
    upload.name = "products.jsonl"
    response = client_for(reviewer).post("/api/v1/products/import", {"file": upload}, format="multipart")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["created"] == 1
    assert body["bad"] == 3
    assert [e["line"] for e in body["errors"]] == [2, 3, 4]
    assert Product.objects.get(external_id="keep").title == "Old"
    assert Product.objects.filter(external_id="p1").exists()
    junk = io.BytesIO(b"x")
    junk.name = "products.xlsx"
    refused = client_for(reviewer).post("/api/v1/products/import", {"file": junk}, format="multipart")
    assert refused.status_code == 400
    assert "format" in refused.json()["error"]["fields"]["file"][0]


@pytest.mark.django_db
def test_it_puts_new_products_in_the_test_split_by_the_share_the_import_names(reviewer: Any) -> None:
    from annotation.catalogue.reader import split_for

    rows = [
        f'{{"id": "s{i}", "title": "Lamp {i}", "text": "A desk lamp", "category": "Home", "price": 9}}\n'
        for i in range(40)
    ]
    upload = io.BytesIO("".join(rows).encode())
    upload.name = "products.jsonl"
    client = client_for(reviewer)
    response = client.post(
        "/api/v1/products/import", {"file": upload, "test_fraction": "0.5"}, format="multipart"
    )
    assert response.status_code == 200, response.content
    splits = dict(Product.objects.values_list("external_id", "split"))
    assert splits == {f"s{i}": split_for(f"s{i}", 0.5) for i in range(40)}
    assert 5 < list(splits.values()).count("test") < 35  # about half, by the id's hash
    # A stored product keeps its split whatever share a later import names.
    upload.seek(0)
    again = client.post("/api/v1/products/import", {"file": upload, "test_fraction": "0"}, format="multipart")
    assert again.status_code == 200
    assert dict(Product.objects.values_list("external_id", "split")) == splits
    upload.seek(0)
    bad = client.post("/api/v1/products/import", {"file": upload, "test_fraction": "1.5"}, format="multipart")
    assert bad.status_code == 400
    assert "test_fraction" in bad.json()["error"]["fields"]
