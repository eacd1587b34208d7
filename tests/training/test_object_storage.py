"""Artifacts on an S3-compatible store: a real server on loopback (moto in server mode, spoken to over
HTTP by django-storages/boto3), never a mock object.

A split deployment's round: a CPU worker (``-Q default`` only) and a GPU-queue worker (``-Q train`` only),
two processes with their own local artifact folders, share nothing but the bucket, the database and the
broker; the web (this test process) streams the new version from the bucket. And the download's and
rollback's checks run on the stored objects: a tampered object is refused.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from django.conf import settings

from annotation.models import Guess, Product, Split
from tests.conftest import client_for
from tests.training.conftest import FAST, catalogue_rows, import_catalogue, label_everything
from tests.training.factories import make_version
from tests.worker_process import celery_worker, wait_for
from training import storage
from training.engine.artifacts import ArtifactError, read_tar
from training.models import ModelVersion, RunStatus, TrainingRun, VersionStatus
from training.services.bootstrap import version_bootstrap_v1

PORTS = range(8660, 8680)
KEYS = {"AWS_S3_ACCESS_KEY_ID": "testing", "AWS_S3_SECRET_ACCESS_KEY": "testing"}
SHORT = {**FAST, "train": {**FAST["train"], "max_steps": 8, "save_steps": 4}}


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS} for the S3 server")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(settings: Any, s3_endpoint: str) -> dict[str, str]:
    """A new bucket on the server; this process's artifact store pointed at it. Returns the environment
    that points a worker process at it (the settings read ARTIFACTS_BACKEND and the AWS_* variables)."""
    bucket = f"priceloop-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "endpoint_url": s3_endpoint,
                "region_name": "us-east-1",
                "access_key": "testing",
                "secret_key": "testing",
                "addressing_style": "path",
                "default_acl": None,
                "file_overwrite": True,
            },
        },
    }
    return {
        "ARTIFACTS_BACKEND": "s3",
        "AWS_STORAGE_BUCKET_NAME": bucket,
        "AWS_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_S3_REGION_NAME": "us-east-1",
        "AWS_S3_ADDRESSING_STYLE": "path",
        **KEYS,
    }


def _bucket(env: dict[str, str]) -> Any:
    return boto3.resource(
        "s3",
        endpoint_url=env["AWS_S3_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).Bucket(env["AWS_STORAGE_BUCKET_NAME"])


def _keys(env: dict[str, str], prefix: str) -> set[str]:
    return {obj.key for obj in _bucket(env).objects.filter(Prefix=prefix)}


@pytest.mark.django_db
def test_it_serves_a_version_from_the_bucket_and_refuses_one_tampered_there(
    s3_env: dict[str, str], settings: Any, tmp_path: Path, api_client_user: Any, reviewer: Any
) -> None:
    settings.ARTIFACT_ROOT = tmp_path / "web"
    staged = make_version(tmp_path / "web", 1, status=VersionStatus.CHAMPION)
    old = make_version(tmp_path / "web", 2, status=VersionStatus.ARCHIVED)
    for version in (staged, old):
        assert storage.version_publish(tmp_path / "web" / version.artifact_path) == version.artifact_path
    assert _keys(s3_env, "versions/v1/") == {
        "versions/v1/adapter_config.json",
        "versions/v1/adapter_model.safetensors",
        "versions/v1/manifest.json",
    }
    # Nothing local left: what the API sends comes from the bucket.
    shutil.rmtree(tmp_path / "web" / "versions")
    client = client_for(api_client_user)
    download = client.get("/api/v1/versions/1/download")
    assert download.status_code == 200, download.content
    body = b"".join(download.streaming_content)
    assert hashlib.sha256(body).hexdigest() == download["X-Checksum-SHA256"] == staged.artifact_sha256
    assert len(body) == int(download["Content-Length"])
    assert sorted(read_tar(body)) == [
        "v1/adapter_config.json",
        "v1/adapter_model.safetensors",
        "v1/manifest.json",
    ]

    # A worker's cache: fetched from the bucket into its own folder, verified against the row's manifest.
    settings.ARTIFACT_ROOT = tmp_path / "gpu"
    local = storage.version_local(staged.artifact_path, manifest=staged.manifest)
    assert local == (tmp_path / "gpu" / "versions" / "v1").resolve()
    assert (local / "adapter_model.safetensors").is_file()

    # Someone adds a pickle next to v2's files in the bucket: no download, no rollback, no fetch.
    bucket = _bucket(s3_env)
    bucket.put_object(Key="versions/v2/adapter_model.bin", Body=pickle.dumps({"weights": 1}))
    refused = client.get("/api/v1/versions/2/download")
    assert refused.status_code == 409
    assert "details are in the server log" in refused.json()["error"]["message"]  # a client: no file names
    refused = client_for(reviewer).get("/api/v1/versions/2/download")
    assert refused.status_code == 409
    assert "adapter_model.bin: pickle-based weights are refused" in refused.json()["error"]["message"]
    rollback = client_for(reviewer).post("/api/v1/versions/2/rollback", {"reason": "drift"}, format="json")
    assert rollback.status_code == 409
    assert rollback.json()["error"]["code"] == "version_files_invalid"
    assert ModelVersion.objects.get(number=1).status == VersionStatus.CHAMPION
    with pytest.raises(ArtifactError, match="pickle-based weights are refused"):
        storage.version_local(old.artifact_path, manifest=old.manifest)
    # One flipped byte in v1's weights in the bucket: the checksum check refuses it.
    weights = bucket.Object("versions/v1/adapter_model.safetensors").get()["Body"].read()
    bucket.put_object(Key="versions/v1/adapter_model.safetensors", Body=weights[:-1] + b"\x00")
    refused = client_for(reviewer).get("/api/v1/versions/1/download")
    assert refused.status_code == 409
    assert "does not match the manifest" in refused.json()["error"]["message"]
    assert client.get("/api/v1/versions/1/download").status_code == 409


def _worker_env(s3_env: dict[str, str], root: Path) -> dict[str, str]:
    return {
        **s3_env,
        "ARTIFACT_ROOT": str(root),  # each worker's own local folder: staging and cache
        "BASE_MODEL": settings.BASE_MODEL,
        "RETRAIN_RECIPE": settings.RETRAIN_RECIPE,
        "RETRAIN_RECIPE_OVERRIDES": settings.RETRAIN_RECIPE_OVERRIDES,
        "RETRAIN_EVAL_MAX_ITEMS": str(settings.RETRAIN_EVAL_MAX_ITEMS),
        "GATE_MIN_DELTA": str(settings.GATE_MIN_DELTA),
        "GATE_ALPHA": str(settings.GATE_ALPHA),
        # The candidate starts from the champion's adapter, so the GPU worker must fetch v1 from the bucket.
        "RETRAIN_FROM": "champion",
        "ANNOTATION_OVERLAP": "1",
        "ANNOTATION_BLIND_SHARE": "0",
        "ANNOTATION_GOLD_RATE": "0",
        "OMP_NUM_THREADS": "1",
    }


def _tasks_run(log: Path) -> set[str]:
    text = log.read_text(errors="replace")
    names = ("build_dataset", "train_run", "evaluate_run", "guess_products")
    return {name for name in names if f".{name}[" in text and "succeeded" in text}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_it_completes_a_round_with_split_cpu_and_gpu_workers_and_artifacts_in_the_bucket(
    pipeline_settings: Any,
    s3_env: dict[str, str],
    tmp_path: Path,
    annotator: Any,
    reviewer: Any,
    api_client_user: Any,
) -> None:
    web, cpu, gpu = tmp_path / "artifacts", tmp_path / "cpu-worker", tmp_path / "gpu-worker"
    pipeline_settings.RETRAIN_RECIPE_OVERRIDES = json.dumps(SHORT)
    pipeline_settings.RETRAIN_EVAL_MAX_ITEMS = 30
    started = time.monotonic()
    with (
        celery_worker(queues="default", extra_env=_worker_env(s3_env, cpu), log_name="test-worker-cpu.log"),
        celery_worker(queues="train", extra_env=_worker_env(s3_env, gpu), log_name="test-worker-gpu.log"),
    ):
        import_catalogue(catalogue_rows()[:120])  # 90 pool products, 30 test
        # v1, trained here (the web side) while the workers start: staged in this process's folder, then
        # published to the bucket.
        v1 = version_bootstrap_v1(max_items=30, overrides={"train": {"max_steps": 2}})
        assert v1.status == VersionStatus.CHAMPION
        assert f"{v1.artifact_path}/adapter_model.safetensors" in _keys(s3_env, "versions/")
        v1_ready = time.monotonic()
        pool = Product.objects.filter(split=Split.POOL).count()
        wait_for(  # v1's promotion queued its guesses: the GPU worker fetched v1 from the bucket
            lambda: Guess.objects.filter(model_version=v1).count() >= pool, timeout=60, what="v1's guesses"
        )
        guessed = time.monotonic()
        assert label_everything(annotator, price_of=lambda p: p.price, limit=30) == 30
        reviewer_client = client_for(reviewer)
        created = reviewer_client.post("/api/v1/batches/create", {"min_size": 5}, format="json")
        assert created.status_code == 201, created.content
        override = {"override_reason": "object-storage test: no gold items in the synthetic catalogue"}
        approved = reviewer_client.post(
            f"/api/v1/batches/{created.json()['id']}/approve", override, format="json"
        )
        assert approved.status_code == 200, approved.content
        run_id = approved.json()["id"]
        approved_at = time.monotonic()
        run = wait_for(
            lambda: TrainingRun.objects.filter(
                pk=run_id, status__in=[RunStatus.SUCCEEDED, RunStatus.FAILED]
            ).first(),
            timeout=120,
            what="the round (dataset on the CPU worker, train/evaluate on the GPU worker)",
        )
    round_s = time.monotonic() - approved_at
    assert run.status == RunStatus.SUCCEEDED, run.error
    v2 = ModelVersion.objects.get(pk=run.candidate_id)
    assert v2.parent_id == v1.pk
    assert v2.status in (VersionStatus.CHAMPION, VersionStatus.REJECTED)

    # Each worker took only its own queue's tasks.
    cpu_tasks = _tasks_run(Path(settings.DATA_DIR) / "test-worker-cpu.log")
    gpu_tasks = _tasks_run(Path(settings.DATA_DIR) / "test-worker-gpu.log")
    assert cpu_tasks == {"build_dataset"}, cpu_tasks
    assert {"train_run", "evaluate_run", "guess_products"} <= gpu_tasks
    assert "build_dataset" not in gpu_tasks

    # The artifacts are in the bucket: the version folder, the dataset with its manifest, the chart.
    key = v2.artifact_path
    assert _keys(s3_env, f"{key}/") == {
        f"{key}/adapter_config.json",
        f"{key}/adapter_model.safetensors",
        f"{key}/manifest.json",
    }
    dataset = run.dataset
    assert _keys(s3_env, dataset.path.rsplit("/", 1)[0] + "/") == {
        dataset.path,
        dataset.path.replace(".jsonl", ".manifest.json"),
    }
    chart = v2.evaluations.get().chart_path
    assert chart
    assert chart in _keys(s3_env, "charts/")

    # The workers shared no local folder: the CPU worker staged the dataset, the GPU worker fetched it
    # (and v1, its parent) from the bucket and staged v2; the web has no copy of v2 and streams it.
    assert (cpu / dataset.path).is_file()
    assert not (cpu / "versions").exists()
    assert (gpu / dataset.path).is_file()
    assert (gpu / v1.artifact_path / "manifest.json").is_file()
    assert (gpu / key / "manifest.json").is_file()
    assert not (web / key).exists()
    download = client_for(api_client_user).get(f"/api/v1/versions/{v2.number}/download")
    assert download.status_code == 200
    body = b"".join(download.streaming_content)
    assert hashlib.sha256(body).hexdigest() == download["X-Checksum-SHA256"] == v2.artifact_sha256
    files = read_tar(body)
    assert (
        hashlib.sha256(files[f"{v2.name}/adapter_model.safetensors"]).hexdigest()
        == v2.manifest["files"]["adapter_model.safetensors"]["sha256"]
    )
    # The leaderboard's chart of v2, drawn on the GPU worker, served from the bucket.
    png = client_for(reviewer).get(f"/review/versions/{v2.number}/scatter.png")
    assert png.status_code == 200
    assert b"".join(png.streaming_content).startswith(b"\x89PNG")
    print(  # pytest -s shows them
        f"\nworkers up + v1 (web side) {v1_ready - started:.1f} s; v1's guesses {guessed - v1_ready:.1f} s; "
        f"round approve → dataset (CPU) → train, evaluate (GPU) → gate: {round_s:.1f} s; "
        f"whole test {time.monotonic() - started:.1f} s"
    )


@pytest.mark.django_db
def test_a_worker_fetches_a_dataset_from_the_bucket_only_when_its_checksum_matches(
    s3_env: dict[str, str], settings: Any, tmp_path: Path
) -> None:
    from training.engine.datasets import LabelRow, build_sft

    settings.ARTIFACT_ROOT = tmp_path / "cpu"
    rows = [
        LabelRow(product_id=f"p{i}", text=f"Lamp {i}", price=10.0 + i, guess_price=None, verdict="correct")
        for i in range(5)
    ]
    out = tmp_path / "cpu" / "datasets" / "run-7" / "sft.jsonl"
    manifest = build_sft(rows, out, test_ids=set())
    name = storage.dataset_publish(out, sha256=manifest.sha256)
    assert _keys(s3_env, "datasets/") == {"datasets/run-7/sft.jsonl", "datasets/run-7/sft.manifest.json"}

    settings.ARTIFACT_ROOT = tmp_path / "gpu"
    fetched = storage.dataset_local(name, sha256=manifest.sha256)
    assert fetched == (tmp_path / "gpu" / name).resolve()
    assert fetched.read_bytes() == out.read_bytes()
    assert fetched.with_name("sft.manifest.json").is_file()

    _bucket(s3_env).put_object(Key=name, Body=b'{"prompt": "x", "completion": "999.00"}\n')
    settings.ARTIFACT_ROOT = tmp_path / "gpu2"
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        storage.dataset_local(name, sha256=manifest.sha256)
    assert not (tmp_path / "gpu2" / name).exists()  # nothing half-fetched left to be trained on
