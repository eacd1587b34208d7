"""Reviewer pages of the retraining loop: who may see them, and what the buttons do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.training.factories import make_version
from training.models import AuditEvent, BatchItem, BatchStatus, RetrainBatch, TrainingRun, VersionStatus

PAGES = ["/review/batches/", "/review/runs/", "/review/versions/"]


def _client(user: Any) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def registry(settings: Any, tmp_path: Path) -> dict[str, Any]:
    settings.ARTIFACT_ROOT = tmp_path
    v1 = make_version(tmp_path, 1, mae=80.0)
    v2 = make_version(tmp_path, 2, status=VersionStatus.CHAMPION, mae=60.0)
    batch = RetrainBatch.objects.create(
        content_sha256="b" * 64,
        size=0,
        stats={"rows": 0, "shares": {"accept": 0.5, "correct": 0.5, "reject": 0}, "price": {"histogram": []}},
    )
    run = TrainingRun.objects.create(
        recipe_name="tiny",
        base_model="tiny-base",
        candidate=v2,
        status="succeeded",
        gate={
            "promote": True,
            "reasons": ["ok: MAE $60.00 vs champion $80.00"],
            "candidate": "v2",
            "champion": "v1",
        },
    )
    return {"v1": v1, "v2": v2, "batch": batch, "run": run}


@pytest.mark.django_db
@pytest.mark.parametrize("url", PAGES)
def test_it_shows_the_pages_to_reviewers_only(
    url: str, reviewer: Any, annotator: Any, api_client_user: Any, outsider: Any
) -> None:
    assert _client(reviewer).get(url).status_code == 200
    for user in (annotator, api_client_user, outsider):
        assert _client(user).get(url).status_code == 403
    anonymous = _client(None).get(url)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/login/")


@pytest.mark.django_db
def test_it_shows_the_leaderboard_with_charts_and_lineage(registry: dict[str, Any], reviewer: Any) -> None:
    client = _client(reviewer)
    page = client.get("/review/versions/").content.decode()
    assert "v2" in page
    assert "$60.00" in page
    assert "/review/versions/podium.png" in page
    podium = client.get("/review/versions/podium.png")
    assert podium.status_code == 200
    assert podium["Content-Type"] == "image/png"
    assert b"".join(podium.streaming_content).startswith(b"\x89PNG")
    assert client.get("/review/versions/2/scatter.png").status_code == 404  # the factory draws no chart


@pytest.mark.django_db
def test_its_lineage_names_every_source_of_a_version_trained_from_the_base(
    registry: dict[str, Any], reviewer: Any
) -> None:
    """A candidate from the base learnt the seed set and earlier batches too: the line says so, and its
    numbers add up (400 seed + batches #1 and #2 = the dataset's rows)."""
    from django.utils import timezone

    from training.models import TrainingDataset

    approved = {"status": BatchStatus.APPROVED, "reviewed_at": timezone.now()}
    earlier = RetrainBatch.objects.create(content_sha256="c" * 64, size=300, **approved)
    latest = RetrainBatch.objects.create(content_sha256="d" * 64, size=120, **approved)
    run = registry["run"]
    TrainingRun.objects.filter(pk=run.pk).update(batch=latest)
    dataset = TrainingDataset.objects.create(
        run=run,
        kind="sft",
        path="datasets/run-1/sft.jsonl",
        sha256="e" * 64,
        rows=820,
        manifest={"seed_set": {"name": "demo-seed-labels.jsonl", "rows": 400}},
    )
    dataset.replay_batches.set([earlier])
    page = _client(reviewer).get("/review/versions/").content.decode()
    assert f"batch #{latest.pk} + #{earlier.pk} + seed set (400) → sft 820 rows → base" in page
    assert "approved over failing quality checks" not in page

    # The earlier batch went through over a failing gold check: whoever trusts the version should know.
    RetrainBatch.objects.filter(pk=earlier.pk).update(reason="gold items arrive next week")
    page = _client(reviewer).get("/review/versions/").content.decode()
    assert (
        f'trained on batch <a href="/review/batches/{earlier.pk}/">#{earlier.pk}</a>, approved over failing'
        in page
    )
    api = _client(reviewer).get(f"/api/v1/versions/{run.candidate.number}").json()
    assert api["lineage"]["overridden_batches"] == [earlier.pk]


@pytest.mark.django_db
def test_the_decision_says_what_approving_will_train_on(
    registry: dict[str, Any], reviewer: Any, settings: Any
) -> None:
    """The numbers next to "Approve and train" are the run's: from the base, the seed set and the earlier
    approved batches' included labels join the batch; from the champion, the batch (and the replay share)."""
    from django.utils import timezone

    from annotation.models import Product, ResolvedLabel, SeedLabel, Task

    for i in range(3):
        product = Product.objects.create(external_id=f"seed-{i}", title="s", text="A seeded thing", price=9)
        SeedLabel.objects.create(product=product, price="9.00", seed_set="seed.jsonl")
    earlier = RetrainBatch.objects.create(
        content_sha256="c" * 64, size=1, status=BatchStatus.APPROVED, reviewed_at=timezone.now()
    )
    for i, excluded in enumerate([False, True]):
        product = Product.objects.create(external_id=f"b-{i}", title="b", text="A labelled thing", price=5)
        label = ResolvedLabel.objects.create(
            task=Task.objects.create(product=product), price="5.00", method="median", n_annotations=1
        )
        BatchItem.objects.create(
            batch=earlier,
            resolved_label=label,
            product=product,
            price="5.00",
            verdict="correct",
            excluded=excluded,
        )
    pending = RetrainBatch.objects.create(
        content_sha256="d" * 64, size=0
    )  # after `earlier`; the registry's batch is pending, so not counted
    url = f"/review/batches/{pending.pk}/"

    settings.RETRAIN_FROM = "base"
    page = _client(reviewer).get(url).content.decode()
    assert "Approving trains a fresh adapter on the base with the 0 included item(s)" in page
    assert "the seed set's 3 label(s) and 1 earlier approved batch(es) (1 label(s)): every label" in page

    settings.RETRAIN_FROM = "champion"
    settings.RETRAIN_REPLAY_SHARE = 0.25
    page = _client(reviewer).get(url).content.decode()
    assert "Approving tunes the champion's adapter on the 0 included item(s)" in page
    assert "with 25% of the rows replayed from the seed set and earlier batches" in page


@pytest.mark.django_db
def test_it_rolls_back_from_the_leaderboard(registry: dict[str, Any], reviewer: Any, annotator: Any) -> None:
    assert _client(annotator).post("/review/versions/1/rollback/").status_code == 403
    unconfirmed = _client(reviewer).post("/review/versions/1/rollback/", {"reason": "v2 misprices shoes"})
    assert unconfirmed.status_code == 302
    registry["v1"].refresh_from_db()
    assert registry["v1"].status == VersionStatus.ARCHIVED  # no confirmation ticked: nothing changed
    response = _client(reviewer).post(
        "/review/versions/1/rollback/", {"reason": "v2 misprices shoes", "confirm": "yes"}
    )
    assert response.status_code == 302
    registry["v1"].refresh_from_db()
    registry["v2"].refresh_from_db()
    assert registry["v1"].status == VersionStatus.CHAMPION
    assert registry["v2"].status == VersionStatus.ARCHIVED
    event = AuditEvent.objects.get(action="rollback")
    assert event.actor == reviewer
    assert event.previous_champion == registry["v2"]
    assert event.message == "v2 misprices shoes"


@pytest.mark.django_db
def test_it_rejects_a_batch_only_with_a_reason(registry: dict[str, Any], reviewer: Any) -> None:
    client = _client(reviewer)
    batch = registry["batch"]
    page = client.post(f"/review/batches/{batch.pk}/reject/", {"reason": "  "}, follow=True)
    assert "a reason is required" in page.content.decode()
    batch.refresh_from_db()
    assert batch.status == BatchStatus.PENDING_REVIEW
    client.post(f"/review/batches/{batch.pk}/reject/", {"reason": "labels from a broken codebook"})
    batch.refresh_from_db()
    assert batch.status == BatchStatus.REJECTED
    assert batch.reason == "labels from a broken codebook"


@pytest.mark.django_db(transaction=True)
def test_it_approves_a_batch_once_and_shows_the_run(
    registry: dict[str, Any], reviewer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import pipeline

    sent: list[int] = []
    monkeypatch.setattr(pipeline, "run_step_send", sent.append)  # no worker here: count the sends
    client = _client(reviewer)
    batch = registry["batch"]
    # The registry's batch has no gold answers behind it: its checks fail, so approve with a reason.
    first = client.post(f"/review/batches/{batch.pk}/approve/", {"recipe": "dpo", "override_reason": "t"})
    second = client.post(f"/review/batches/{batch.pk}/approve/", {"recipe": "sft", "override_reason": "t"})
    run = TrainingRun.objects.get(batch=batch)
    assert first["Location"] == second["Location"] == f"/review/runs/{run.pk}/"
    assert run.recipe == "dpo"
    assert sent == [run.pk]
    page = client.get(f"/review/runs/{run.pk}/").content.decode()
    assert 'id="loss-curve"' in page
    assert f"/api/v1/runs/{run.pk}/progress" in page


@pytest.mark.django_db
def test_it_escapes_product_text_in_the_batch_sample(registry: dict[str, Any], reviewer: Any) -> None:
    from annotation.models import Product, ResolvedLabel, Task
    from training.models import BatchItem

    product = Product.objects.create(
        external_id="x1", title="<script>alert(1)</script> lamp", text="<img src=x onerror=alert(2)>"
    )
    label = ResolvedLabel.objects.create(
        task=Task.objects.create(product=product), price="12.00", method="median", n_annotations=1
    )
    batch = registry["batch"]
    BatchItem.objects.create(
        batch=batch, resolved_label=label, product=product, price="12.00", verdict="correct"
    )
    page = _client(reviewer).get(f"/review/batches/{batch.pk}/").content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; lamp" in page
    assert "<script>alert(1)" not in page
    assert "<img src=x" not in page


@pytest.mark.django_db
def test_it_shows_a_finished_run_with_its_curve_and_gate(registry: dict[str, Any], reviewer: Any) -> None:
    from training.models import ProgressPoint

    run = registry["run"]
    for step in (1, 2):
        ProgressPoint.objects.create(run=run, step=step, total_steps=2, loss=2.0 / step, learning_rate=1e-3)
    page = _client(reviewer).get(f"/review/runs/{run.pk}/").content.decode()
    assert "promoted v2" in page
    assert '<li class="ok">ok: MAE $60.00 vs champion $80.00</li>' in page
    assert '"loss": 1.0' in page  # the stored points, for the curve script
    assert 'data-live="0"' in page  # finished: no polling
