"""Annotation domain models."""

from __future__ import annotations

from django.db import models


class Split(models.TextChoices):
    POOL = "pool", "pool (may be labelled and trained on)"
    TEST = "test", "test (frozen evaluation set)"


class PriceFlag(models.TextChoices):
    OK = "", "in range"
    MISSING = "missing", "no price"
    OUT_OF_RANGE = "out_of_range", "outside 0.50-999.49: kept, never trained on token-level"


class Product(models.Model):
    """A catalogue item. Imported idempotently (upsert by ``external_id``); its split never changes."""

    # Unique through Meta.constraints, not unique=True: on PostgreSQL a unique CharField also gets a
    # second (LIKE) index that nothing uses and every import row would pay for.
    external_id = models.CharField(max_length=128)
    title = models.CharField(max_length=500)
    text = models.TextField(help_text="curated description shown to annotators and to the model")
    category = models.CharField(max_length=200, blank=True)
    price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    price_flag = models.CharField(max_length=16, choices=PriceFlag.choices, default=PriceFlag.OK, blank=True)
    # No index on split: two values, a fifth of the rows in one; scans beat an index for either.
    split = models.CharField(max_length=8, choices=Split.choices, default=Split.POOL)
    source = models.CharField(max_length=200, blank=True)
    extra = models.JSONField(default=dict, blank=True, help_text="fields of the import row we do not model")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["external_id"], name="product_external_id_unique")]

    def __str__(self) -> str:
        return f"{self.external_id}: {self.title[:60]}"


class SeedLabel(models.Model):
    """A price that came with the catalogue to train ``v1`` (a named seed set), not from an annotator.

    Seeded products are labelled already: they are never queued for annotation, and the version trained
    on them names the set in its lineage (DESIGN.md §10: price knowledge enters only through labels).
    """

    product = models.OneToOneField(Product, on_delete=models.CASCADE, related_name="seed_label")
    price = models.DecimalField(max_digits=12, decimal_places=2)
    seed_set = models.CharField(max_length=200, help_text="name of the set (the file it came from)")
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"seed {self.price} for product {self.product_id} ({self.seed_set})"


# --- guesses, the work queue, annotations, codebook, gold, consensus --------------------------------------
# Owned by the annotation backend. States are requirements (DESIGN.md §3); the services in
# ``annotation/services.py`` are the only writers, the selectors in ``annotation/selectors.py`` the readers.


class Guess(models.Model):
    """A price predicted for a product by a model version or a named baseline."""

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="guesses")
    model_version = models.ForeignKey(
        "training.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="guesses"
    )
    source = models.CharField(
        max_length=64, help_text='"model" for a model version, "baseline:mean", "baseline:tfidf-ridge", …'
    )
    price = models.DecimalField(max_digits=12, decimal_places=2)
    topk = models.JSONField(default=list, blank=True, help_text="[[price, probability], …] best first")
    entropy = models.FloatField(null=True, blank=True, help_text="of the price-token distribution (nats)")
    latency_ms = models.FloatField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["product", "-id"], name="guess_product_latest")]

    def __str__(self) -> str:
        return f"{self.source} guess {self.price} for product {self.product_id}"


class TaskStatus(models.TextChoices):
    OPEN = "open"
    RESOLVED = "resolved"
    NEEDS_ADJUDICATION = "needs_adjudication"
    # An annotator flagged the item (annotation/flags.py): out of every queue, no further answers, until a
    # reviewer returns it (open again) or drops it (never labelled nor batched).
    FLAGGED = "flagged"
    DROPPED = "dropped"


class Task(models.Model):
    """A product (+ the guess shown) that needs ``overlap`` annotations.

    ``claimed_count`` = live leases + completed annotations; a task is offered only while
    ``claimed_count < overlap``. ``completed_count`` never exceeds ``overlap`` (services use conditional
    updates; the check constraints make the database refuse it too). Gold tasks carry a known price and
    are served to every annotator once, unannounced; they never resolve and keep no counts (each
    annotator's gold record is ``AnnotatorStatus``).
    """

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="tasks")
    guess = models.ForeignKey(Guess, null=True, blank=True, on_delete=models.PROTECT, related_name="tasks")
    overlap = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=24, choices=TaskStatus.choices, default=TaskStatus.OPEN)
    is_gold = models.BooleanField(default=False)
    gold_price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    gold_tolerance = models.DecimalField(
        max_digits=6, decimal_places=4, null=True, blank=True, help_text="relative, e.g. 0.2 = ±20%"
    )
    is_blind = models.BooleanField(default=False, help_text="the guess is hidden from annotators")
    priority = models.FloatField(
        default=0.0, help_text="higher first (guess entropy with uncertainty routing)"
    )
    claimed_count = models.PositiveSmallIntegerField(default=0)
    completed_count = models.PositiveSmallIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(is_gold=True) | models.Q(completed_count__lte=models.F("overlap")),
                name="task_completed_at_most_overlap",
            ),
            models.CheckConstraint(
                condition=models.Q(is_gold=True) | models.Q(claimed_count__lte=models.F("overlap")),
                name="task_claimed_at_most_overlap",
            ),
            models.CheckConstraint(
                condition=models.Q(is_gold=False) | models.Q(gold_price__isnull=False),
                name="task_gold_has_price",
            ),
            # Two gold imports of one product at once make one gold item (annotation/gold.py).
            models.UniqueConstraint(
                fields=["product"], condition=models.Q(is_gold=True), name="task_one_gold_per_product"
            ),
        ]
        indexes = [
            # The queue: open, unfilled, non-gold tasks in serving order (started first, then entropy).
            models.Index(
                models.F("claimed_count").desc(),
                models.F("priority").desc(),
                "id",
                name="task_queue_order",
                condition=models.Q(status="open", is_gold=False, claimed_count__lt=models.F("overlap")),
            ),
            models.Index(fields=["id"], name="task_gold", condition=models.Q(is_gold=True)),
            models.Index(fields=["status"], name="task_status"),
        ]

    def __str__(self) -> str:
        return f"task {self.id} ({self.status}) for product {self.product_id}"


class AssignmentStatus(models.TextChoices):
    LIVE = "live"
    DONE = "done"
    RELEASED = "released"  # taken back (annotator paused, or replaced by an undone item)
    SKIPPED = "skipped"
    EXPIRED = "expired"
    # Leased for the annotator as the item after their live one (the page's pre-fetch): claimed, with a
    # TTL, like a live lease; the next "next" makes it live. At most one per annotator.
    AHEAD = "ahead"
    # The annotator flagged the item for a reviewer (annotation/flags.py): the lease ended there; the item
    # never comes back to them.
    FLAGGED = "flagged"


# A lease that holds its task's claim until it is done, given back or expires.
HELD = (AssignmentStatus.LIVE, AssignmentStatus.AHEAD)


class Assignment(models.Model):
    """A lease of a task to one annotator until ``expires_at``.

    One row per (task, annotator): a skipped, expired or released lease is re-used when the item comes
    back to the same annotator, so nobody can hold or complete the same task twice. At most one live
    lease per annotator (partial unique constraint), and at most one lease ``ahead`` (the pre-fetched
    next item of the annotator page).
    """

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="assignments")
    status = models.CharField(max_length=16, choices=AssignmentStatus.choices, default=AssignmentStatus.LIVE)
    expires_at = models.DateTimeField()
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(help_text="last status change: orders an annotator's skipped items")

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["task", "annotator"], name="assignment_once_per_annotator"),
            models.UniqueConstraint(
                fields=["annotator"], condition=models.Q(status="live"), name="assignment_one_live_lease"
            ),
            models.UniqueConstraint(
                fields=["annotator"], condition=models.Q(status="ahead"), name="assignment_one_ahead_lease"
            ),
        ]
        indexes = [
            models.Index(
                fields=["expires_at"], name="assignment_live_expiry", condition=models.Q(status="live")
            ),
            models.Index(
                fields=["expires_at"], name="assignment_ahead_expiry", condition=models.Q(status="ahead")
            ),
            models.Index(fields=["annotator", "status", "updated"], name="assignment_annotator_status"),
        ]

    def __str__(self) -> str:
        return f"lease {self.id} of task {self.task_id} to user {self.annotator_id} ({self.status})"


class Verdict(models.TextChoices):
    ACCEPT = "accept"
    CORRECT = "correct"
    REJECT = "reject"


class CodebookVersion(models.Model):
    """The labelling rules, versioned. Reason codes are parsed from the markdown when published."""

    number = models.PositiveIntegerField(unique=True)
    markdown = models.TextField()
    reason_codes = models.JSONField(
        default=list, blank=True, help_text='reject reasons: [{"code": ..., "label": ...}, …]'
    )
    flag_codes = models.JSONField(
        default=list,
        blank=True,
        help_text='flag reasons ("## Flag reasons"): [{"code": ..., "label": ...}, …]; empty: the defaults',
    )
    author = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="codebook_versions"
    )
    change_note = models.TextField(blank=True, help_text="what changed and why (required to publish)")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]

    def __str__(self) -> str:
        return f"codebook v{self.number}"


class CodebookAck(models.Model):
    annotator = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="codebook_acks")
    version = models.ForeignKey(CodebookVersion, on_delete=models.CASCADE, related_name="acks")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["annotator", "version"], name="codebook_ack_once")]

    def __str__(self) -> str:
        return f"user {self.annotator_id} acknowledged codebook {self.version_id}"


class Annotation(models.Model):
    """One annotator's verdict on one task, stamped with the codebook version it was made under."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="annotations")
    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="annotation")
    annotator = models.ForeignKey("auth.User", on_delete=models.PROTECT, related_name="annotations")
    verdict = models.CharField(max_length=8, choices=Verdict.choices)
    corrected_price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    price_flag = models.CharField(max_length=16, choices=PriceFlag.choices, default=PriceFlag.OK, blank=True)
    reason_code = models.CharField(max_length=64, blank=True)
    seconds_spent = models.FloatField(default=0.0)
    codebook_version = models.ForeignKey(
        CodebookVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="annotations"
    )
    guess_shown = models.BooleanField(default=True)
    client_token = models.CharField(
        max_length=64, blank=True, help_text="chosen by the client per submit: a repeated submit is a no-op"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["task", "annotator"], name="annotation_once_per_task"),
            models.UniqueConstraint(
                fields=["annotator", "client_token"],
                condition=~models.Q(client_token=""),
                name="annotation_client_token_once",
            ),
            models.CheckConstraint(
                condition=~models.Q(verdict="correct") | models.Q(corrected_price__isnull=False),
                name="annotation_correct_has_price",
            ),
        ]
        indexes = [models.Index(fields=["annotator", "-created"], name="annotation_annotator_recent")]

    def __str__(self) -> str:
        return f"{self.verdict} by user {self.annotator_id} on task {self.task_id}"


class AnnotatorStatus(models.Model):
    """Per-annotator state: pause (gold accuracy) and the counters that pace gold interleaving."""

    user = models.OneToOneField("auth.User", on_delete=models.CASCADE, related_name="annotator_status")
    paused = models.BooleanField(default=False)
    paused_reason = models.CharField(max_length=300, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    unpaused_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    unpaused_at = models.DateTimeField(null=True, blank=True)
    leases_total = models.PositiveIntegerField(default=0, help_text="fresh leases handed out (gold included)")
    gold_leases = models.PositiveIntegerField(default=0)
    gold_seen = models.PositiveIntegerField(default=0, help_text="gold items answered")
    gold_correct = models.PositiveIntegerField(default=0)
    gold_baseline_seen = models.PositiveIntegerField(
        default=0, help_text="gold_seen when last unpaused: accuracy is judged on answers after it"
    )
    gold_baseline_correct = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "annotator statuses"

    def __str__(self) -> str:
        return f"annotator {self.user_id}{' (paused)' if self.paused else ''}"

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_seen if self.gold_seen else None


class ResolutionMethod(models.TextChoices):
    ACCEPT_MAJORITY = "accept_majority", "accept majority: the guess's price"
    MEDIAN = "median", "median of the prices given"
    ADJUDICATED = "adjudicated", "set by a reviewer"
    REJECTED = "rejected", "reject majority: no price"


class ResolvedLabel(models.Model):
    """The label a task resolves to once it has ``overlap`` annotations (or a reviewer adjudicates)."""

    task = models.OneToOneField(Task, on_delete=models.PROTECT, related_name="resolved_label")
    price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    price_flag = models.CharField(max_length=16, choices=PriceFlag.choices, default=PriceFlag.OK, blank=True)
    method = models.CharField(max_length=16, choices=ResolutionMethod.choices)
    n_annotations = models.PositiveSmallIntegerField()
    n_accept = models.PositiveSmallIntegerField(default=0)
    n_correct = models.PositiveSmallIntegerField(default=0)
    n_reject = models.PositiveSmallIntegerField(default=0)
    spread = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True, help_text="max - min of the prices given"
    )
    adjudicated_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="adjudications"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"label {self.price} ({self.method}) for task {self.task_id}"


class QuarantineState(models.TextChoices):
    HELD = "held", "held: kept out of every retrain batch until a reviewer decides"
    RELEASED = "released", "released by a reviewer: may be batched"
    DROPPED = "dropped", "dropped by a reviewer: never batched"


class QuarantinedAnnotation(models.Model):
    """An annotation of a paused annotator that no batch holds yet, kept out of training.

    Written when the annotator is paused (every annotation of theirs whose label is not in a batch);
    a label with a ``held`` or ``dropped`` annotation is never snapshotted into a retrain batch. A
    reviewer releases (the label may be batched) or drops (it never is; the product is queued again)
    all of one annotator's held annotations at once.
    """

    annotation = models.OneToOneField(Annotation, on_delete=models.CASCADE, related_name="quarantine")
    annotator = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="+")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="quarantined_annotations")
    state = models.CharField(max_length=16, choices=QuarantineState.choices, default=QuarantineState.HELD)
    reason = models.CharField(max_length=300, blank=True, help_text="why the annotator was paused")
    created = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["annotator", "state"], name="quarantine_annotator_state")]

    def __str__(self) -> str:
        return f"annotation {self.annotation_id} of user {self.annotator_id} ({self.state})"


class FlagState(models.TextChoices):
    OPEN = "open", "open: out of every queue until a reviewer decides"
    REQUEUED = "requeued", "returned to the queue by a reviewer"
    DROPPED = "dropped", "dropped by a reviewer: never labelled nor batched"


class ItemFlag(models.Model):
    """An annotator's report that an item cannot be labelled as it stands (broken text, wrong category…).

    Not an annotation: no label, not counted toward overlap, gold or quality. While ``open`` its task is
    ``flagged`` (served to nobody, no answer accepted); a reviewer returns it to the queue or drops it.
    """

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="flags")
    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="flag")
    annotator = models.ForeignKey("auth.User", on_delete=models.PROTECT, related_name="item_flags")
    reason_code = models.CharField(max_length=64)
    reason_label = models.CharField(max_length=300, help_text="the reason's text when it was flagged")
    note = models.CharField(max_length=500, blank=True)
    codebook_version = models.ForeignKey(
        CodebookVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="flags"
    )
    state = models.CharField(max_length=16, choices=FlagState.choices, default=FlagState.OPEN)
    created = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["task"], condition=models.Q(state="open"), name="item_flag_one_open_per_task"
            )
        ]
        indexes = [models.Index(fields=["state", "id"], name="item_flag_state")]

    def __str__(self) -> str:
        return f"flag {self.reason_code} on task {self.task_id} by user {self.annotator_id} ({self.state})"
