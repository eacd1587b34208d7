"""Registry API (``/api/v1/``): model versions, training runs, retrain batches, products import.

Reads are for API clients and reviewers (``IsClientOrReviewer``); writes (approve, reject, cancel,
rollback, batch now, import) for reviewers (``IsReviewer``). One view per operation; views call
selectors (reads) and services (writes); ``webapp.api.exception_handler`` maps domain errors to the
project's error shape (``TrainingError`` → 409 with its ``code``); a missing object → 404.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.http import HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import reverse
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import exceptions, generics, serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from training import pipeline, run_settings, selectors, storage
from training.checks import batch_checks, checks_passed
from training.filters import BatchFilter, RunFilter, VersionFilter
from training.models import (
    AuditAction,
    AuditEvent,
    BatchStatus,
    ModelVersion,
    Recipe,
    RetrainBatch,
    RunStatus,
    TrainingRun,
    VersionStatus,
)
from training.run_settings import settings_summary
from training.services import batches as batch_services
from training.services import registry as registry_services
from training.services import runs as run_services
from webapp.api import ERROR_SCHEMA as ERROR
from webapp.exports import (
    DISPOSITION,
    Column,
    ExportNegotiation,
    ExportQuery,
    export_response,
    export_responses,
)
from webapp.roles import IsClientOrReviewer, IsReviewer
from webapp.tokens import ApiUserThrottle
from webapp.visibility import (
    HIDE,
    ClientVisibleSerializer,
    one_line_error,
    public_batch_stats,
    public_checks,
    public_json,
    sees_everything,
    strip_paths,
)

log = logging.getLogger(__name__)


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class TrainingApi(APIView):
    """Base of the registry endpoints. Domain errors (``TrainingError`` → 409 with its code,
    ``PermissionError`` → 403) become the API's error shape in ``webapp.api.exception_handler``; each
    user's requests are throttled (``API_THROTTLE_RATE``)."""

    throttle_classes = [ApiUserThrottle]

    def get_serializer_context(self) -> dict[str, Any]:
        """``full``: the reader is a reviewer and reads every field (webapp/visibility.py)."""
        parent = getattr(super(), "get_serializer_context", None)
        context: dict[str, Any] = parent() if parent is not None else {"request": self.request}
        context["full"] = sees_everything(self.request.user)
        return context


def _reviewer(request: Request) -> User:
    """The reviewer making the request (the view's permission class has checked the role)."""
    user = request.user
    if not isinstance(user, User):
        raise exceptions.NotAuthenticated()
    return user


def _not_found(what: str) -> exceptions.NotFound:
    return exceptions.NotFound(detail=f"{what} does not exist.")


# --- output serializers -----------------------------------------------------------------------------


class MetricsOut(serializers.Serializer):
    n = serializers.IntegerField()
    mae = serializers.FloatField()
    rmsle = serializers.FloatField()
    hit_rate = serializers.FloatField()
    counts = serializers.DictField(child=serializers.IntegerField())
    mae_ci95 = serializers.ListField(child=serializers.FloatField())


class VersionOut(ClientVisibleSerializer):
    name = serializers.CharField()
    number = serializers.IntegerField()
    status = serializers.ChoiceField(choices=VersionStatus.choices)
    base_model = serializers.CharField(source="base_label", help_text="hub id, or a local base's folder name")
    base_revision = serializers.CharField(help_text="hub commit, or sha256: of a local base's file manifest")
    parent = serializers.CharField(source="parent.name", allow_null=True, default=None)  # type: ignore[assignment]
    metrics = serializers.DictField(help_text="Tester metrics on the test split (empty until scored)")
    sha256 = serializers.CharField(source="artifact_sha256", help_text="sha256 of the download archive")
    size = serializers.IntegerField(source="artifact_size", help_text="bytes of the download archive")
    created = serializers.DateTimeField()
    promoted_at = serializers.DateTimeField(allow_null=True)
    url = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()

    client_plain = frozenset(
        {"name", "number", "status", "base_revision", "parent", "metrics", "sha256", "size", "created"}
        | {"promoted_at", "url", "download_url"}
    )
    client_view = {"base_model": strip_paths}

    @extend_schema_field(OpenApiTypes.STR)
    def get_url(self, obj: ModelVersion) -> str:
        return reverse("api-version", args=[obj.number])

    @extend_schema_field(OpenApiTypes.STR)
    def get_download_url(self, obj: ModelVersion) -> str:
        return reverse("api-version-download", args=[obj.number])


class LineageOut(serializers.Serializer):
    run_id = serializers.IntegerField(allow_null=True)
    batch = serializers.DictField(allow_null=True)
    dataset = serializers.DictField(allow_null=True)
    parent = serializers.CharField(allow_null=True)  # type: ignore[assignment]
    base = serializers.DictField()


class VersionDetailOut(VersionOut):
    hyperparameters = serializers.DictField()
    manifest = serializers.DictField()
    dataset_fingerprint = serializers.CharField()
    lineage = serializers.SerializerMethodField()
    gate = serializers.SerializerMethodField(
        help_text="the gate decision that made it champion or rejected it"
    )
    settings = serializers.SerializerMethodField(
        help_text="the training settings it was trained and is scored with: kind, quantization, prompt "
        "style, epochs or max_steps, learning rate, LoRA rank"
    )
    client_plain = VersionOut.client_plain | {"dataset_fingerprint"}
    client_view = {
        **VersionOut.client_view,
        "hyperparameters": public_json,
        "manifest": public_json,
        "lineage": public_json,
        "gate": public_json,
        "settings": public_json,
    }

    @extend_schema_field(LineageOut)
    def get_lineage(self, obj: ModelVersion) -> dict[str, Any]:
        return selectors.version_lineage(obj)

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_gate(self, obj: ModelVersion) -> dict[str, Any] | None:
        run = selectors.version_run(obj)
        return run.gate if run and run.gate else None

    @extend_schema_field(serializers.DictField())
    def get_settings(self, obj: ModelVersion) -> dict[str, Any]:
        return settings_summary((obj.manifest or {}).get("recipe"))


class PointOut(serializers.Serializer):
    step = serializers.IntegerField()
    total_steps = serializers.IntegerField()
    loss = serializers.FloatField(allow_null=True)
    learning_rate = serializers.FloatField(allow_null=True)
    tokens_per_s = serializers.FloatField(allow_null=True)
    at = serializers.DateTimeField()


class RunOut(ClientVisibleSerializer):
    id = serializers.IntegerField()
    batch_id = serializers.IntegerField(allow_null=True)
    recipe = serializers.ChoiceField(choices=Recipe.choices)
    recipe_name = serializers.CharField()
    hyperparameters = serializers.DictField()
    base_model = serializers.CharField(source="base_label", help_text="hub id, or a local base's folder name")
    parent = serializers.CharField(source="parent.name", allow_null=True, default=None)  # type: ignore[assignment]
    status = serializers.ChoiceField(choices=RunStatus.choices)
    stage = serializers.CharField()
    cancel_requested = serializers.BooleanField()
    attempts = serializers.IntegerField()
    retries = serializers.IntegerField(help_text="automatic retries after a lost worker")
    base_revision = serializers.CharField(
        help_text="hub commit of the base, or sha256: of a local base's manifest"
    )
    candidate = serializers.CharField(source="candidate.name", allow_null=True, default=None)
    gate = serializers.DictField()
    result = serializers.DictField()
    error = serializers.CharField(help_text="clients read its one-line summary, reviewers the whole trace")
    created = serializers.DateTimeField()
    started = serializers.DateTimeField(allow_null=True)
    finished = serializers.DateTimeField(allow_null=True)

    client_plain = frozenset(
        {"id", "batch_id", "recipe", "recipe_name", "parent", "status", "stage", "cancel_requested"}
        | {"attempts", "retries", "base_revision", "candidate", "created", "started", "finished"}
    )
    client_view = {
        "hyperparameters": public_json,
        "base_model": strip_paths,
        "gate": public_json,
        "result": public_json,
        "error": one_line_error,  # the summary line; reviewers read the traceback
    }


class RunDetailOut(RunOut):
    logs = serializers.CharField(required=False, help_text="reviewers only")
    points = PointOut(many=True)

    client_plain = RunOut.client_plain | {"points"}
    client_view = {**RunOut.client_view, "logs": HIDE}


class RunProgressOut(ClientVisibleSerializer):
    status = serializers.ChoiceField(choices=RunStatus.choices)
    stage = serializers.CharField()
    points = PointOut(many=True)
    worker_silent_s = serializers.IntegerField(
        allow_null=True,
        help_text="running, but its worker has not renewed its lease for this many seconds (longer than "
        "RETRAIN_RUN_LEASE_S): the worker is gone; a reviewer may retry the run now. Null otherwise.",
    )

    client_plain = frozenset({"status", "stage", "points", "worker_silent_s"})


class BatchOut(ClientVisibleSerializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=BatchStatus.choices)
    recipe = serializers.ChoiceField(choices=Recipe.choices)
    size = serializers.IntegerField()
    content_sha256 = serializers.CharField()
    reviewer = serializers.CharField(
        source="reviewer.username", allow_null=True, default=None, help_text="reviewers only"
    )
    reviewed_at = serializers.DateTimeField(allow_null=True)
    reason = serializers.CharField()
    created = serializers.DateTimeField()
    run_id = serializers.SerializerMethodField()

    client_plain = frozenset(
        {"id", "status", "recipe", "size", "content_sha256", "reviewed_at", "created", "run_id"}
    )
    client_view = {"reviewer": HIDE, "reason": strip_paths}

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_run_id(self, obj: RetrainBatch) -> int | None:
        run = getattr(obj, "run", None)
        return run.pk if run else None


class QualityCheckOut(serializers.Serializer):
    name = serializers.CharField(
        help_text="gold_accuracy | out_of_range_share | annotators_below_floor | quarantined_labels"
    )
    passed = serializers.BooleanField()
    value = serializers.FloatField(allow_null=True, help_text="null: not measurable (e.g. no gold answers)")
    threshold = serializers.FloatField()
    message = serializers.CharField()


class BatchDetailOut(BatchOut):
    stats = serializers.DictField(help_text="clients read no per-annotator table")
    checks = serializers.SerializerMethodField(help_text="quality checks, read live (training/checks.py)")
    checks_passed = serializers.SerializerMethodField(help_text="false: approving needs an override_reason")

    client_plain = BatchOut.client_plain | {"checks_passed"}
    client_view = {**BatchOut.client_view, "stats": public_batch_stats, "checks": public_checks}

    def _checks(self, obj: RetrainBatch) -> list[Any]:
        # Both fields read the same checks: computed once per batch and serializer.
        cache: dict[int, list[Any]] = self.__dict__.setdefault("_checks_cache", {})
        if obj.pk not in cache:
            cache[obj.pk] = batch_checks(obj)
        return cache[obj.pk]

    @extend_schema_field(QualityCheckOut(many=True))
    def get_checks(self, obj: RetrainBatch) -> list[dict[str, Any]]:
        return [check.as_dict() for check in self._checks(obj)]

    @extend_schema_field(serializers.BooleanField())
    def get_checks_passed(self, obj: RetrainBatch) -> bool:
        return checks_passed(self._checks(obj))


# --- versions -----------------------------------------------------------------------------------------


@extend_schema(summary="Model versions")
class VersionListApi(TrainingApi, generics.ListAPIView):
    """Every model version, newest first (paginated)."""

    permission_classes = [IsClientOrReviewer]
    serializer_class = VersionOut
    filter_backends = [DjangoFilterBackend]
    filterset_class = VersionFilter

    def get_queryset(self) -> Any:
        return selectors.versions_list()


class VersionDetailApi(TrainingApi):
    permission_classes = [IsClientOrReviewer]

    @extend_schema(
        operation_id="versions_retrieve",
        summary="One model version",
        description=(
            "A version with its base model, lineage, training batch, dataset fingerprint, metrics on the "
            "test split and adapter checksum."
        ),
        responses={200: VersionDetailOut, 404: ERROR},
    )
    def get(self, request: Request, number: int) -> Response:
        version = selectors.version_get(number=number)
        if version is None:
            raise _not_found(f"version v{number}")
        return Response(VersionDetailOut(version, context=self.get_serializer_context()).data)


class ChampionApi(TrainingApi):
    permission_classes = [IsClientOrReviewer]

    @extend_schema(
        operation_id="versions_champion",
        summary="The champion version",
        description="The version serving now (exactly one at any time), as the version detail.",
        responses={200: VersionDetailOut, 404: ERROR},
    )
    def get(self, request: Request) -> Response:
        version = selectors.champion_get()
        if version is None:
            raise _not_found("a champion (no version has been promoted yet)")
        return Response(VersionDetailOut(version, context=self.get_serializer_context()).data)


class VersionDownloadApi(TrainingApi):
    """The version's adapter folder as a tar archive, streamed; ``X-Checksum-SHA256`` is its sha256."""

    permission_classes = [IsClientOrReviewer]

    @extend_schema(
        operation_id="versions_download",
        summary="Download a version's adapter",
        parameters=[
            OpenApiParameter(
                "If-None-Match",
                str,
                OpenApiParameter.HEADER,
                description="the ETag of a copy you hold: 304 if it is still current",
            ),
            OpenApiParameter(
                "X-Checksum-SHA256",
                str,
                OpenApiParameter.HEADER,
                response=[200],
                description="sha256 of the archive (hex): check the download against it",
            ),
            OpenApiParameter(
                "ETag", str, OpenApiParameter.HEADER, response=[200, 304], description="the sha256, quoted"
            ),
            OpenApiParameter(
                "Content-Disposition",
                str,
                OpenApiParameter.HEADER,
                response=[200],
                description='attachment; filename="priceloop-v<N>.tar"',
            ),
        ],
        responses={
            (200, "application/x-tar"): OpenApiResponse(OpenApiTypes.BINARY, description="the tar archive"),
            304: OpenApiResponse(description="the client's copy (If-None-Match) is current"),
            404: ERROR,
            409: ERROR,
        },
    )
    def get(self, request: Request, number: int) -> HttpResponseBase:
        from training.engine.artifacts import ArtifactError

        version = selectors.version_get(number=number)
        if version is None or not version.artifact_path:
            raise _not_found(f"version v{number}")
        etag = f'"{version.artifact_sha256}"'
        if request.headers.get("If-None-Match") == etag:
            not_modified = HttpResponse(status=304)
            not_modified["ETag"] = etag
            return not_modified
        try:  # files complete and checksums matching in the store, or no download
            info = storage.version_verify(version.artifact_path)
        except (ArtifactError, OSError) as exc:
            log.warning("download of %s refused: its files fail verification: %s", version.name, exc)
            # The reason names files on the server: reviewers read it, clients are told where it went.
            reason = str(exc) if sees_everything(request.user) else "details are in the server log"
            raise Conflict(
                detail=f"the files of {version.name} fail verification ({reason}); a reviewer can "
                "roll back to a version whose files verify.",
                code="artifact_invalid",
            ) from None
        response = StreamingHttpResponse(
            storage.version_stream(version.artifact_path, prefix=version.name, info=info),
            content_type="application/x-tar",
        )
        response["Content-Length"] = str(version.artifact_size)
        response["Content-Disposition"] = f'attachment; filename="priceloop-{version.name}.tar"'
        response["X-Checksum-SHA256"] = version.artifact_sha256
        response["ETag"] = etag
        response["X-Content-Type-Options"] = "nosniff"
        return response


class RollbackIn(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
    override_reason = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=2000,
        help_text="required to make a gate-rejected version champion: why the gate is overridden",
    )


class VersionRollbackApi(TrainingApi):
    """Make an earlier version champion. 409 ``version_files_invalid`` when its files fail the download's
    checks; 409 ``rollback_needs_override`` for a gate-rejected version without ``override_reason``."""

    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="versions_rollback",
        summary="Roll back to a version",
        request=RollbackIn,
        responses={200: VersionDetailOut, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    def post(self, request: Request, number: int) -> Response:
        data = RollbackIn(data=request.data)
        data.is_valid(raise_exception=True)
        version = selectors.version_get(number=number)
        if version is None:
            raise _not_found(f"version v{number}")
        version = registry_services.version_rollback(
            reviewer=_reviewer(request),
            version_id=version.pk,
            reason=data.validated_data["reason"],
            override_reason=data.validated_data["override_reason"],
        )
        return Response(VersionDetailOut(version, context=self.get_serializer_context()).data)


# --- runs ---------------------------------------------------------------------------------------------


@extend_schema(summary="Training runs")
class RunListApi(TrainingApi, generics.ListAPIView):
    """Every training run, newest first (paginated)."""

    permission_classes = [IsClientOrReviewer]
    serializer_class = RunOut
    filter_backends = [DjangoFilterBackend]
    filterset_class = RunFilter

    def get_queryset(self) -> Any:
        return selectors.runs_list()


def _run_or_404(run_id: int) -> TrainingRun:
    run = selectors.run_get(run_id=run_id)
    if run is None:
        raise _not_found(f"run {run_id}")
    return run


class RunDetailApi(TrainingApi):
    permission_classes = [IsClientOrReviewer]

    @extend_schema(
        operation_id="runs_retrieve",
        summary="One training run",
        description="A run with its recipe, status, progress, logs, candidate version and gate decision.",
        responses={200: RunDetailOut, 404: ERROR},
    )
    def get(self, request: Request, run_id: int) -> Response:
        return Response(RunDetailOut(_run_or_404(run_id), context=self.get_serializer_context()).data)


class RunProgressQuery(serializers.Serializer):
    after_step = serializers.IntegerField(
        min_value=0, max_value=2**63 - 1, required=False, help_text="only points with a larger step"
    )


class RunProgressApi(TrainingApi):
    """Progress points after ``after_step`` (the run page polls this for its live loss curve)."""

    permission_classes = [IsClientOrReviewer]

    @extend_schema(
        operation_id="runs_progress",
        summary="Training progress points",
        parameters=[RunProgressQuery],
        responses={200: RunProgressOut, 400: ERROR, 404: ERROR},
    )
    def get(self, request: Request, run_id: int) -> Response:
        query = RunProgressQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        after = query.validated_data.get("after_step", -1)
        run = _run_or_404(run_id)
        points = selectors.run_points(run_id=run.pk, after_step=after)
        return Response(
            RunProgressOut(
                {
                    "status": run.status,
                    "stage": run.stage,
                    "points": points,
                    "worker_silent_s": run_services.run_worker_silent_s(run),
                },
                context=self.get_serializer_context(),
            ).data
        )


class RunCancelApi(TrainingApi):
    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="runs_cancel",
        summary="Cancel a training run",
        description="Cancel a queued or running run; a finished run answers 409.",
        request=None,
        responses={200: RunOut, 404: ERROR, 409: ERROR},
    )
    def post(self, request: Request, run_id: int) -> Response:
        _run_or_404(run_id)
        run = run_services.run_cancel(reviewer=_reviewer(request), run_id=run_id)
        return Response(RunOut(run, context=self.get_serializer_context()).data)


class RunRetryApi(TrainingApi):
    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="runs_retry",
        summary="Retry a failed or cancelled run, or one whose worker is gone",
        description="Start a failed or cancelled run again from its last step (a trained run resumes from "
        "its last checkpoint); audited. A running run whose worker has been silent for longer than "
        "RETRAIN_RUN_LEASE_S (`worker_silent_s` in its progress) may be retried too, without waiting for "
        "recovery; any other run still going answers 409. 503 when the broker is down: the retry is "
        "recorded and starts by itself once it is back.",
        request=None,
        responses={200: RunOut, 404: ERROR, 409: ERROR, 503: ERROR},
    )
    def post(self, request: Request, run_id: int) -> Response:
        _run_or_404(run_id)
        run = run_services.run_retry(reviewer=_reviewer(request), run_id=run_id)
        return Response(RunOut(run, context=self.get_serializer_context()).data)


DATASET_COLUMNS = {
    "sft": (Column("prompt"), Column("completion")),
    "dpo": (Column("prompt"), Column("chosen"), Column("rejected")),
    "kto": (Column("prompt"), Column("completion"), Column("label", bool)),
}
DATASET_META_COLUMNS = (Column("product_id"), Column("batch_id", int), Column("guess_model_version", int))


def _dataset_bytes(name: str, *, lines: bool = False) -> Iterator[bytes]:
    """The stored dataset, read as the download is sent: blocks of the file, or its lines (the file is
    closed at the end, or when the client goes away)."""
    with storage.file_open(name) as fh:
        yield from (fh if lines else iter(lambda: fh.read(1 << 16), b""))


class RunDatasetApi(TrainingApi):
    permission_classes = [IsClientOrReviewer]
    content_negotiation_class = ExportNegotiation

    @extend_schema(
        operation_id="runs_dataset",
        summary="Download a run's training dataset",
        description=(
            "The Llama-format dataset the run trains on (SFT prompt/completion, DPO prompt/chosen/"
            "rejected or KTO prompt/completion/label). output=jsonl (default) is the file as stored, "
            "byte for byte (X-Checksum-SHA256 is its sha256; each record's meta names its product, "
            "batch and guess_model_version, the N of the model version vN whose guess the label "
            "answered); output=csv or parquet flattens each record into the training columns plus "
            "product_id, batch_id and guess_model_version (null in datasets built before records "
            "carried them). 404 until the run has built its dataset."
        ),
        parameters=[
            ExportQuery,
            DISPOSITION,
            OpenApiParameter(
                "X-Checksum-SHA256",
                str,
                OpenApiParameter.HEADER,
                response=[200],
                description="output=jsonl: sha256 of the file (hex), as its manifest records it",
            ),
        ],
        responses=export_responses("the run's dataset", error_codes={404: ERROR, 409: ERROR}),
    )
    def get(self, request: Request, run_id: int) -> HttpResponseBase:
        query = ExportQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        output = query.validated_data["output"]
        run = _run_or_404(run_id)
        dataset = selectors.run_dataset(run=run)
        if dataset is None:
            raise _not_found(f"a dataset of run {run_id} (it is built when the run starts)")
        try:
            storage.file_open(dataset.path).close()
        except FileNotFoundError:
            log.warning("dataset %s of run %s is missing from the artifact store", dataset.path, run_id)
            raise Conflict(
                detail=f"the dataset file of run {run_id} ({dataset.path}) is missing from the artifact "
                "store; restore it from a backup, or, if the run failed, retry it to build the file again.",
                code="dataset_missing",
            ) from None
        filename = f"run-{run_id}-{dataset.kind}"
        if output == "jsonl":
            response = StreamingHttpResponse(
                _dataset_bytes(dataset.path), content_type="application/x-ndjson"
            )
            response["Content-Disposition"] = f'attachment; filename="{filename}.jsonl"'
            response["X-Checksum-SHA256"] = dataset.sha256
            response["X-Content-Type-Options"] = "nosniff"
            return response
        columns = (*DATASET_COLUMNS[dataset.kind], *DATASET_META_COLUMNS)
        rows = selectors.dataset_export_rows(_dataset_bytes(dataset.path, lines=True))
        return export_response(rows, columns, output=output, filename=filename)


# --- batches ------------------------------------------------------------------------------------------


@extend_schema(summary="Retrain batches")
class BatchListApi(TrainingApi, generics.ListAPIView):
    """Every retrain batch, newest first (paginated)."""

    permission_classes = [IsClientOrReviewer]
    serializer_class = BatchOut
    filter_backends = [DjangoFilterBackend]
    filterset_class = BatchFilter

    def get_queryset(self) -> Any:
        return selectors.batches_list()


class BatchCreateIn(serializers.Serializer):
    min_size = serializers.IntegerField(required=False, min_value=1, max_value=1_000_000)
    recipe = serializers.ChoiceField(choices=Recipe.choices, required=False, default=Recipe.SFT)


class BatchCreateApi(TrainingApi):
    """Gather the resolved labels no batch holds yet into a new batch now (the beat does it too)."""

    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="batches_create",
        summary="Create a retrain batch",
        request=BatchCreateIn,
        responses={201: BatchDetailOut, 400: ERROR, 409: ERROR},
    )
    def post(self, request: Request) -> Response:
        data = BatchCreateIn(data=request.data)
        data.is_valid(raise_exception=True)
        batch = batch_services.batch_create_from_resolved(
            min_size=data.validated_data.get("min_size"),
            recipe=data.validated_data["recipe"],
            actor=_reviewer(request),
        )
        return Response(
            BatchDetailOut(batch, context=self.get_serializer_context()).data, status=status.HTTP_201_CREATED
        )


def _batch_or_404(batch_id: int) -> RetrainBatch:
    batch = selectors.batch_get(batch_id=batch_id)
    if batch is None:
        raise _not_found(f"batch {batch_id}")
    return batch


class BatchDetailApi(TrainingApi):
    permission_classes = [IsClientOrReviewer]

    @extend_schema(
        operation_id="batches_retrieve",
        summary="One retrain batch",
        description="A batch with its stats, quality checks, status and the run its approval started.",
        responses={200: BatchDetailOut, 404: ERROR},
    )
    def get(self, request: Request, batch_id: int) -> Response:
        return Response(BatchDetailOut(_batch_or_404(batch_id), context=self.get_serializer_context()).data)


class ApproveIn(serializers.Serializer):
    recipe = serializers.ChoiceField(
        choices=Recipe.choices,
        required=False,
        allow_null=True,
        default=None,
        help_text="the kind (same as ``kind``); default: the batch's",
    )
    kind = serializers.ChoiceField(
        choices=Recipe.choices, required=False, help_text="training objective; default: the batch's recipe"
    )
    quantization = serializers.ChoiceField(
        choices=list(run_settings.QUANTIZATION_LABELS.items()),
        required=False,
        help_text="quantization of the frozen base while training and scoring; default: the recipe's",
    )
    prompt_style = serializers.ChoiceField(
        choices=list(run_settings.PROMPT_STYLES), required=False, help_text="default: the recipe's"
    )
    epochs = serializers.FloatField(
        required=False,
        min_value=0.01,
        max_value=run_settings.EPOCHS_MAX,
        help_text="passes over the dataset (turns off the recipe's max_steps); default: the recipe's",
    )
    learning_rate = serializers.FloatField(
        required=False,
        min_value=run_settings.LEARNING_RATE_RANGE[0],
        max_value=run_settings.LEARNING_RATE_RANGE[1],
        help_text="peak learning rate; default: the recipe's",
    )
    lora_rank = serializers.ChoiceField(
        choices=list(run_settings.LORA_RANKS), required=False, help_text="LoRA rank; default: the recipe's"
    )
    override_reason = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=2000,
        help_text="required when the batch's quality checks fail: why it may be trained on anyway",
    )


class BatchApproveApi(TrainingApi):
    """Approve: exactly one training run per batch, however often or concurrently this is called.

    A batch whose quality checks fail answers 409 ``quality_checks_failed`` unless the body carries an
    ``override_reason``; the audit row records the override and the reason. Approving a batch whose run
    failed retries that run. With the broker down it answers 503 ``broker_unavailable``: the approval
    and its run are committed, and the run starts by itself once the broker is back."""

    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="batches_approve",
        summary="Approve a retrain batch",
        request=ApproveIn,
        responses={200: RunOut, 400: ERROR, 404: ERROR, 409: ERROR, 503: ERROR},
    )
    def post(self, request: Request, batch_id: int) -> Response:
        data = ApproveIn(data=request.data)
        data.is_valid(raise_exception=True)
        _batch_or_404(batch_id)
        chosen = {name: data.validated_data.get(name) for name in run_settings.FIELDS}
        # A combination the engine refuses (RunSettingsInvalid) is the field's 400 (webapp/api.py).
        run = batch_services.batch_approve(
            reviewer=_reviewer(request),
            batch_id=batch_id,
            recipe=data.validated_data.get("recipe"),
            override_reason=data.validated_data["override_reason"],
            run_settings=run_settings.run_settings_parse(chosen),
        )
        return Response(RunOut(run, context=self.get_serializer_context()).data)


class BatchItemOut(serializers.Serializer):
    id = serializers.IntegerField()
    product = serializers.CharField(source="product.external_id")
    title = serializers.CharField(source="product.title")
    guess_price = serializers.DecimalField(max_digits=12, decimal_places=2, allow_null=True)
    guess_version = serializers.CharField(source="guess_version.name", allow_null=True, default=None)
    price = serializers.DecimalField(max_digits=12, decimal_places=2, allow_null=True)
    error = serializers.DecimalField(
        max_digits=12, decimal_places=2, allow_null=True, help_text="|price − guess_price|"
    )
    price_trainable = serializers.BooleanField(help_text="false: outside $0.50–$999.49 (out of range)")
    verdict = serializers.CharField()
    codebook_version = serializers.IntegerField(allow_null=True)
    annotators = serializers.ListField(child=serializers.CharField(), source="annotator_names")
    excluded = serializers.BooleanField()
    exclusion_reason = serializers.CharField()
    excluded_by = serializers.CharField(source="excluded_by.username", allow_null=True, default=None)
    excluded_at = serializers.DateTimeField(allow_null=True)


@extend_schema(
    summary="A batch's items",
    parameters=[
        OpenApiParameter("annotator", str, description="username or user id of one of the item's annotators"),
        OpenApiParameter("verdict", str, enum=list(selectors.ITEM_VERDICTS)),
        OpenApiParameter("min_error", float, description="only items with |price − guess| of at least this"),
        OpenApiParameter("out_of_range", bool, description="only labels outside $0.50–$999.49"),
        OpenApiParameter("gold_miss", bool, description="only items by annotators who missed a gold item"),
        OpenApiParameter("state", str, enum=list(selectors.ITEM_STATES), description="default: all"),
    ],
    responses={200: BatchItemOut(many=True), 400: ERROR, 404: ERROR},
)
class BatchItemsApi(TrainingApi, generics.ListAPIView):
    """A batch's items, filtered (paginated): what a reviewer goes through before approving."""

    permission_classes = [IsReviewer]
    serializer_class = BatchItemOut

    def get_queryset(self) -> Any:
        batch = _batch_or_404(self.kwargs["batch_id"])
        try:
            item_filter = selectors.item_filter_from_params(self.request.query_params)
        except selectors.ItemFilterInvalid as exc:
            raise exceptions.ValidationError({exc.field: [str(exc)]}) from None
        return selectors.batch_items_filtered(batch=batch, item_filter=item_filter)


class RestoreIn(serializers.Serializer):
    item_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        min_length=1,
        max_length=100_000,
        help_text="batch item ids",
    )


class ExcludeIn(RestoreIn):
    reason = serializers.CharField(max_length=2000, help_text="why these items must not be trained on")


class BatchExcludeApi(TrainingApi):
    """Exclude items of a pending batch with a reason; size, stats and content hash then cover the rest."""

    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="batches_exclude",
        summary="Exclude items from a batch",
        request=ExcludeIn,
        responses={200: BatchDetailOut, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    def post(self, request: Request, batch_id: int) -> Response:
        data = ExcludeIn(data=request.data)
        data.is_valid(raise_exception=True)
        _batch_or_404(batch_id)
        batch = batch_services.batch_items_exclude(
            reviewer=_reviewer(request),
            batch_id=batch_id,
            item_ids=data.validated_data["item_ids"],
            reason=data.validated_data["reason"],
        )
        return Response(BatchDetailOut(batch, context=self.get_serializer_context()).data)


class BatchRestoreApi(TrainingApi):
    """Put excluded items of a pending batch back."""

    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="batches_restore",
        summary="Restore excluded batch items",
        request=RestoreIn,
        responses={200: BatchDetailOut, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    def post(self, request: Request, batch_id: int) -> Response:
        data = RestoreIn(data=request.data)
        data.is_valid(raise_exception=True)
        _batch_or_404(batch_id)
        batch = batch_services.batch_items_restore(
            reviewer=_reviewer(request), batch_id=batch_id, item_ids=data.validated_data["item_ids"]
        )
        return Response(BatchDetailOut(batch, context=self.get_serializer_context()).data)


BATCH_COLUMNS = (
    Column("batch_id", int),
    Column("item_id", int),
    Column("label_id", int),
    Column("product_id"),
    Column("product_title"),
    Column("price"),
    Column("price_trainable", bool),
    Column("guess_price"),
    Column("guess_model_version", int),
    Column("verdict"),
    Column("codebook_version", int),
    Column("excluded", bool),
    Column("exclusion_reason"),
    Column("excluded_at"),
)
BATCH_REVIEWER_COLUMNS = (Column("annotators", list), Column("excluded_by"))


class BatchExportApi(TrainingApi):
    permission_classes = [IsClientOrReviewer]
    content_negotiation_class = ExportNegotiation

    @extend_schema(
        operation_id="batches_export",
        summary="Export a batch with its items",
        description=(
            "Every item of the batch in id order, excluded ones included (excluded=true, with the "
            "reason), streamed: product, resolved price (decimal string; price_trainable false outside "
            "$0.50-$999.49), the guess and guess_model_version (the N of the model version vN that made "
            "it; null for a baseline's guess), verdict and codebook version. Reviewers also read the "
            "annotators and who excluded an item. output=jsonl (default), csv (annotators joined with "
            "';') or parquet."
        ),
        parameters=[ExportQuery, DISPOSITION],
        responses=export_responses("the batch's items", error_codes={404: ERROR}),
    )
    def get(self, request: Request, batch_id: int) -> HttpResponseBase:
        query = ExportQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        batch = _batch_or_404(batch_id)
        full = sees_everything(request.user)
        rows = selectors.batch_export_rows(batch=batch, full=full)
        if not full:  # a reviewer's free text may name a server path (webapp/visibility.py)
            rows = ({**row, "exclusion_reason": strip_paths(row["exclusion_reason"])} for row in rows)
        columns = (*BATCH_COLUMNS, *BATCH_REVIEWER_COLUMNS) if full else BATCH_COLUMNS
        return export_response(
            rows, columns, output=query.validated_data["output"], filename=f"batch-{batch_id}"
        )


class RejectIn(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, help_text="why the batch must not be trained on")


class BatchRejectApi(TrainingApi):
    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="batches_reject",
        summary="Reject a retrain batch",
        description="Refuse a pending batch with a reason; its labels return to the pool for a later batch.",
        request=RejectIn,
        responses={200: BatchDetailOut, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    def post(self, request: Request, batch_id: int) -> Response:
        data = RejectIn(data=request.data)
        data.is_valid(raise_exception=True)
        _batch_or_404(batch_id)
        batch = batch_services.batch_reject(
            reviewer=_reviewer(request), batch_id=batch_id, reason=data.validated_data["reason"]
        )
        return Response(BatchDetailOut(batch, context=self.get_serializer_context()).data)


# --- products import ----------------------------------------------------------------------------------


class ImportIn(serializers.Serializer):
    file = serializers.FileField(help_text="JSON Lines or CSV: id, title, text|description, category, price?")
    format = serializers.ChoiceField(
        choices=["jsonl", "csv"], required=False, help_text="default: by extension"
    )
    test_fraction = serializers.FloatField(
        required=False,
        min_value=0.0,
        max_value=1.0,
        help_text="share of NEW products put in the frozen test split, by a stable hash of the id "
        "(default: TEST_SPLIT_FRACTION); a stored product keeps its split",
    )


class ImportOut(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    bad = serializers.IntegerField()
    errors = serializers.ListField(  # type: ignore[assignment]
        child=serializers.DictField(), help_text="[{line, reason}] of bad rows"
    )
    guessing = serializers.BooleanField(help_text="the champion was asked to guess the new products")


class ProductImportApi(TrainingApi):
    """Upsert products by external id; every bad row is reported with its line and reason (nothing
    stored is changed by a bad row). New pool products are then guessed by the champion."""

    permission_classes = [IsReviewer]
    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="products_import",
        summary="Import products",
        request={"multipart/form-data": ImportIn},
        responses={200: ImportOut, 400: ERROR},
    )
    def post(self, request: Request) -> Response:
        from annotation.catalogue.reader import CatalogueFormatError, detect_format
        from annotation.catalogue.services import products_import_stream

        data = ImportIn(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        try:
            fmt = detect_format(Path(upload.name or "upload"), data.validated_data.get("format"))
            result = products_import_stream(
                stream=upload,
                fmt=fmt,
                source=Path(upload.name or "upload").name,
                test_fraction=data.validated_data.get("test_fraction"),
            )
        except (CatalogueFormatError, ValueError, UnicodeDecodeError) as exc:
            raise exceptions.ValidationError({"file": [str(exc)]}) from None
        guessing = False
        champion = selectors.champion_get() if result.created else None
        if champion is not None:
            pipeline.guess_send(champion.pk)
            guessing = True
        body = {
            "created": result.created,
            "updated": result.updated,
            "unchanged": result.unchanged,
            "bad": result.bad,
            "errors": [{"line": e.line, "reason": e.reason} for e in result.errors[:1000]],
            "guessing": guessing,
        }
        return Response(ImportOut(body).data)


# --- audit --------------------------------------------------------------------------------------------


class AuditObjectOut(serializers.Serializer):
    type = serializers.CharField(help_text="batch | run | version | annotator | gold | task | codebook")
    id = serializers.CharField(allow_null=True)
    label = serializers.CharField()  # type: ignore[assignment]


class AuditEventOut(serializers.Serializer):
    id = serializers.IntegerField()
    action = serializers.ChoiceField(choices=AuditAction.choices)
    actor = serializers.CharField(
        source="actor.username", allow_null=True, default=None, help_text="null: the system decided"
    )
    object = serializers.SerializerMethodField()
    batch_id = serializers.IntegerField(allow_null=True)
    run_id = serializers.IntegerField(allow_null=True)
    version = serializers.CharField(source="version.name", allow_null=True, default=None)
    previous_champion = serializers.CharField(source="previous_champion.name", allow_null=True, default=None)
    subject = serializers.CharField()
    numbers = serializers.DictField()
    message = serializers.CharField()
    created = serializers.DateTimeField()

    @extend_schema_field(AuditObjectOut)
    def get_object(self, obj: AuditEvent) -> dict[str, Any]:
        found = selectors.audit_object(obj)
        return {**found, "id": None if found["id"] is None else str(found["id"])}


@extend_schema(
    summary="Audit trail",
    parameters=[
        OpenApiParameter("actor", str, description='username, or "system" for decisions no person made'),
        OpenApiParameter("action", str, enum=AuditAction.values),
        OpenApiParameter("object_type", str, enum=list(selectors.AUDIT_OBJECT_TYPES)),
        OpenApiParameter("object_id", str, description="with object_type: one object (batch id, v3, …)"),
        OpenApiParameter("since", str, description="ISO date or date-time: only decisions at or after it"),
    ],
    responses={200: AuditEventOut(many=True), 400: ERROR},
)
class AuditListApi(TrainingApi, generics.ListAPIView):
    """Every decision with its actor and object, newest first (paginated, reviewers only)."""

    permission_classes = [IsReviewer]
    serializer_class = AuditEventOut

    def get_queryset(self) -> Any:
        try:
            audit_filter = selectors.audit_filter_from_params(self.request.query_params)
        except selectors.ItemFilterInvalid as exc:
            raise exceptions.ValidationError({exc.field: [str(exc)]}) from None
        return selectors.audit_events_filtered(audit_filter)
