"""Retraining domain: batches of resolved labels, datasets, training runs, model versions, evaluations.

The states are requirements (DESIGN.md §3): a batch goes ``pending_review → approved | rejected``; a run
goes ``queued → running → succeeded | failed | cancelled``; a version is ``candidate → champion |
rejected`` (or ``archived``) and the database refuses a second champion.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class VersionStatus(models.TextChoices):
    CANDIDATE = "candidate"
    CHAMPION = "champion"
    REJECTED = "rejected"
    ARCHIVED = "archived"


class ModelVersion(models.Model):
    """A LoRA adapter on a base model: ``v1, v2, …``. Exactly one champion at any time.

    A row exists only once its artifact folder is complete and its checksums verified (the pipeline
    writes the folder first, reads it back, then inserts the row).
    """

    number = models.PositiveIntegerField(unique=True, help_text="the N of vN")
    base_model = models.CharField(max_length=500, help_text="hub id or local path of the base model")
    base_revision = models.CharField(max_length=100, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    status = models.CharField(max_length=16, choices=VersionStatus.choices, default=VersionStatus.CANDIDATE)
    artifact_path = models.CharField(max_length=500, blank=True, help_text="relative to ARTIFACT_ROOT")
    artifact_sha256 = models.CharField(max_length=64, blank=True)
    artifact_size = models.BigIntegerField(default=0)
    hyperparameters = models.JSONField(default=dict, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    dataset_fingerprint = models.CharField(max_length=64, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="Tester metrics on the test split")
    promoted_at = models.DateTimeField(null=True, blank=True, help_text="last time it became champion")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            # The database itself refuses a second champion; promotion swaps inside one transaction.
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="champion"), name="one_champion_at_most"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        return f"v{self.number}"

    @property
    def base_label(self) -> str:
        """The base as lineage names it (hub id, or a local folder's name): never a server path."""
        from training.engine.model_io import base_label

        return base_label(self.base_model)


class BatchStatus(models.TextChoices):
    PENDING_REVIEW = "pending_review"
    APPROVED = "approved"
    REJECTED = "rejected"


class Recipe(models.TextChoices):
    SFT = "sft", "SFT (prompt → price)"
    DPO = "dpo", "DPO (human price preferred over the model's guess)"
    KTO = "kto", "KTO (accepted / rejected guesses)"


class RetrainBatch(models.Model):
    """An immutable snapshot of resolved labels that no earlier batch used.

    The items copy what training needs (price, verdict, codebook version), so a label edited after the
    snapshot does not change the batch; ``content_sha256`` fingerprints exactly those items.
    """

    status = models.CharField(max_length=16, choices=BatchStatus.choices, default=BatchStatus.PENDING_REVIEW)
    recipe = models.CharField(max_length=8, choices=Recipe.choices, default=Recipe.SFT)
    content_sha256 = models.CharField(max_length=64, unique=True)
    size = models.PositiveIntegerField(default=0)
    stats = models.JSONField(
        default=dict,
        blank=True,
        help_text="rows, verdict shares, agreement, annotators, gold accuracy, price histogram",
    )
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, help_text="the reviewer's reason (required to reject)")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status="pending_review") | Q(reviewed_at__isnull=False),
                name="batch_reviewed_has_time",
            ),
        ]

    def __str__(self) -> str:
        return f"batch {self.pk} ({self.status}, {self.size} labels)"


class BatchItem(models.Model):
    """One resolved label in one batch; a label can be in at most one batch (the one-to-one)."""

    batch = models.ForeignKey(RetrainBatch, on_delete=models.CASCADE, related_name="items")
    resolved_label = models.OneToOneField(
        "annotation.ResolvedLabel", on_delete=models.PROTECT, related_name="batch_item"
    )
    product = models.ForeignKey("annotation.Product", on_delete=models.PROTECT, related_name="+")
    price = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="the resolved price (none if rejected)",
    )
    price_trainable = models.BooleanField(default=True, help_text="inside 0.50–999.49: usable as a token")
    guess_price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    guess_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    verdict = models.CharField(max_length=16, help_text="accept | correct | reject (the majority)")
    codebook_version = models.PositiveIntegerField(null=True, blank=True)
    annotator_ids = models.JSONField(default=list, blank=True)
    # A reviewer took the item out before approval (``batch_items_exclude``): kept for the record, never
    # trained on, and not covered by the batch's content hash, size or stats.
    excluded = models.BooleanField(default=False)
    exclusion_reason = models.TextField(blank=True)
    excluded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    excluded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"batch {self.batch_id} · product {self.product_id} · {self.price}"


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


RUN_FINAL_STATES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class RunStage(models.TextChoices):
    """Where a run is inside ``running`` (status says whether it runs; stage says what it does)."""

    DATASET = "dataset"
    TRAIN = "train"
    EVALUATE = "evaluate"
    DONE = "done"


class TrainingRun(models.Model):
    """The one fine-tune of one approved batch (``batch`` is unique), from queue to gate decision.

    ``batch`` is empty only for the bootstrap run that trains v1 on seeded labels.
    """

    batch = models.OneToOneField(
        RetrainBatch, null=True, blank=True, on_delete=models.PROTECT, related_name="run"
    )
    recipe = models.CharField(max_length=8, choices=Recipe.choices, default=Recipe.SFT)
    recipe_name = models.CharField(max_length=200, help_text="engine recipe (name or path)")
    hyperparameters = models.JSONField(default=dict, blank=True, help_text="overrides of the recipe")
    base_model = models.CharField(max_length=500)
    parent = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="child_runs"
    )
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    stage = models.CharField(max_length=16, choices=RunStage.choices, default=RunStage.DATASET)
    cancel_requested = models.BooleanField(default=False)
    celery_task_id = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="training starts (a retry adds one)")
    retries = models.PositiveIntegerField(
        default=0, help_text="automatic retries after a lost worker (at most RUN_MAX_RETRIES)"
    )
    enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text="when the task of the current step was last sent to the broker"
    )
    base_revision = models.CharField(
        max_length=100, blank=True, help_text="hub commit of the base, or sha256 of a local base's manifest"
    )
    candidate = models.OneToOneField(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="run"
    )
    gate = models.JSONField(default=dict, blank=True, help_text="the gate decision with its numbers")
    result = models.JSONField(default=dict, blank=True, help_text="steps, final loss, tokens, seconds")
    error = models.TextField(blank=True)
    logs = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(
        null=True, blank=True, help_text="last sign of life of the worker training it (its lease)"
    )
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status})"

    @property
    def base_label(self) -> str:
        """The base as lineage names it (hub id, or a local folder's name): never a server path."""
        from training.engine.model_io import base_label

        return base_label(self.base_model)


class ProgressPoint(models.Model):
    """One logged training step, for the live loss curve."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="points")
    step = models.PositiveIntegerField()
    total_steps = models.PositiveIntegerField(default=0)
    loss = models.FloatField(null=True, blank=True)
    learning_rate = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "step"]
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="one_point_per_step")]

    def __str__(self) -> str:
        return f"run {self.run_id} step {self.step}: {self.loss}"


class TrainingDataset(models.Model):
    """The JSONL file a run trained on, with the engine's manifest (rows, sha256, sources, rules)."""

    run = models.OneToOneField(TrainingRun, on_delete=models.CASCADE, related_name="dataset")
    kind = models.CharField(max_length=8, choices=Recipe.choices)
    path = models.CharField(max_length=500, help_text="relative to ARTIFACT_ROOT")
    sha256 = models.CharField(max_length=64)
    rows = models.PositiveIntegerField(default=0)
    manifest = models.JSONField(default=dict, blank=True)
    replay_batches = models.ManyToManyField(RetrainBatch, blank=True, related_name="replayed_in")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"dataset of run {self.run_id} ({self.kind}, {self.rows} rows)"


class Evaluation(models.Model):
    """Predictions and Tester metrics of one version (or one baseline) on one test split.

    Cached per (version, split fingerprint): the champion is scored once, not at every gate. The
    fingerprint covers the test product ids and the predictor settings, so a change of either is a
    new evaluation rather than a stale comparison.
    """

    version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="evaluations"
    )
    baseline = models.CharField(max_length=32, blank=True, help_text="training_mean | tfidf_ridge")
    split_fingerprint = models.CharField(max_length=64)
    predictor_settings = models.JSONField(default=dict, blank=True)
    product_ids = models.JSONField(default=list, help_text="test products, in prediction order")
    truths = models.JSONField(default=list)
    guesses = models.JSONField(default=list)
    metrics = models.JSONField(default=dict, blank=True)
    chart_path = models.CharField(
        max_length=500, blank=True, help_text="scatter chart, ARTIFACT_ROOT-relative"
    )
    seconds = models.FloatField(default=0)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(version__isnull=False) & Q(baseline=""))
                | (Q(version__isnull=True) & ~Q(baseline="")),
                name="evaluation_of_version_xor_baseline",
            ),
            models.UniqueConstraint(
                fields=["version", "split_fingerprint"],
                condition=Q(version__isnull=False),
                name="one_evaluation_per_version_and_split",
            ),
            models.UniqueConstraint(
                fields=["baseline", "split_fingerprint"],
                condition=Q(version__isnull=True),
                name="one_evaluation_per_baseline_and_split",
            ),
        ]

    def __str__(self) -> str:
        subject = self.version.name if self.version_id else self.baseline  # type: ignore[union-attr]
        return f"evaluation of {subject}"


class AuditAction(models.TextChoices):
    BATCH_CREATE = "batch_create"
    BATCH_APPROVE = "batch_approve"
    BATCH_REJECT = "batch_reject"
    BATCH_EXCLUDE = "batch_exclude"
    BATCH_RESTORE = "batch_restore"
    RUN_CANCEL = "run_cancel"
    RUN_FAIL = "run_fail"
    RUN_RETRY = "run_retry"
    PROMOTE = "promote"
    REJECT = "reject"
    ROLLBACK = "rollback"
    BOOTSTRAP = "bootstrap"
    QUARANTINE_HOLD = "quarantine_hold"
    QUARANTINE_RELEASE = "quarantine_release"
    QUARANTINE_DROP = "quarantine_drop"
    GOLD_CREATE = "gold_create"
    ANNOTATOR_PAUSE = "annotator_pause"
    ANNOTATOR_UNPAUSE = "annotator_unpause"
    ADJUDICATE = "adjudicate"
    CODEBOOK_PUBLISH = "codebook_publish"
    FLAG_REQUEUE = "flag_requeue"
    FLAG_DROP = "flag_drop"


class AuditEvent(models.Model):
    """Every decision about batches and versions, with its numbers and who made it (null = the system)."""

    action = models.CharField(max_length=32, choices=AuditAction.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="audit_events"
    )
    previous_champion = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    run = models.ForeignKey(
        TrainingRun, null=True, blank=True, on_delete=models.PROTECT, related_name="audit_events"
    )
    batch = models.ForeignKey(
        RetrainBatch, null=True, blank=True, on_delete=models.PROTECT, related_name="audit_events"
    )
    subject = models.CharField(
        max_length=200,
        blank=True,
        help_text='what the decision is about when no column above says it: "annotator:5", "gold:12,13"',
    )
    numbers = models.JSONField(default=dict, blank=True)
    message = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.action} at {self.created:%Y-%m-%d %H:%M:%S}"


class SyncCursor(models.Model):
    """How far an outbound sync got (e.g. LangSmith: the last guess / annotation id sent).

    The sync task reads rows above ``last_id``, sends them, then advances the cursor; a failed send
    leaves it where it was, so the next attempt sends the same rows again.
    """

    name = models.CharField(max_length=64, unique=True)
    last_id = models.BigIntegerField(default=0)
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.last_id}"
