"""Django admin for the annotation domain: read-mostly; state changes go through the services."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from annotation import services
from annotation.models import (
    Annotation,
    AnnotatorStatus,
    Assignment,
    CodebookVersion,
    Guess,
    Product,
    QuarantinedAnnotation,
    ResolvedLabel,
    Task,
)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["external_id", "title", "category", "price", "split", "price_flag"]
    list_filter = ["split", "price_flag", "category"]
    search_fields = ["external_id", "title"]


@admin.register(Guess)
class GuessAdmin(admin.ModelAdmin):
    list_display = ["id", "product", "source", "model_version", "price", "entropy", "created"]
    list_filter = ["source"]
    raw_id_fields = ["product", "model_version"]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "product",
        "status",
        "overlap",
        "claimed_count",
        "completed_count",
        "is_gold",
        "is_blind",
    ]
    list_filter = ["status", "is_gold", "is_blind"]
    raw_id_fields = ["product", "guess"]
    readonly_fields = ["claimed_count", "completed_count", "status", "resolved_at"]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "annotator", "status", "expires_at", "updated"]
    list_filter = ["status"]
    raw_id_fields = ["task", "annotator"]
    readonly_fields = ["status", "expires_at", "updated"]
    actions = ["return_expired"]

    @admin.action(description="Return every expired lease to the queue now")
    def return_expired(self, request: HttpRequest, queryset: QuerySet[Assignment]) -> None:
        self.message_user(request, f"{services.leases_expire()} expired lease(s) returned.", messages.SUCCESS)


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "annotator", "verdict", "corrected_price", "reason_code", "created"]
    list_filter = ["verdict", "guess_shown", "price_flag"]
    raw_id_fields = ["task", "assignment", "annotator", "codebook_version"]

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # an annotation is evidence: never edited after the fact


@admin.register(CodebookVersion)
class CodebookVersionAdmin(admin.ModelAdmin):
    list_display = ["number", "author", "created"]
    readonly_fields = ["number", "markdown", "reason_codes", "author", "created"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # published from the reviewer page/API (numbering, parsing)


@admin.register(AnnotatorStatus)
class AnnotatorStatusAdmin(admin.ModelAdmin):
    list_display = ["user", "paused", "paused_reason", "gold_seen", "gold_correct", "leases_total"]
    list_filter = ["paused"]
    readonly_fields = [f.name for f in AnnotatorStatus._meta.fields]
    actions = ["unpause"]

    @admin.action(description="Unpause the selected annotators")
    def unpause(self, request: HttpRequest, queryset: QuerySet[AnnotatorStatus]) -> None:
        for row in queryset.select_related("user"):
            services.annotator_unpause(reviewer=request.user, annotator=row.user)  # type: ignore[arg-type]
        self.message_user(request, f"{queryset.count()} annotator(s) unpaused.", messages.SUCCESS)


@admin.register(ResolvedLabel)
class ResolvedLabelAdmin(admin.ModelAdmin):
    list_display = ["task", "price", "method", "n_annotations", "price_flag", "created"]
    list_filter = ["method", "price_flag"]
    raw_id_fields = ["task", "adjudicated_by"]


@admin.register(QuarantinedAnnotation)
class QuarantinedAnnotationAdmin(admin.ModelAdmin):
    """Read only: release and drop go through the Queue page or the API (audited, batches updated)."""

    list_display = ["id", "annotator", "task", "state", "reason", "created", "decided_by", "decided_at"]
    list_filter = ["state"]
    raw_id_fields = ["annotation", "annotator", "task", "decided_by"]
    readonly_fields = [f.name for f in QuarantinedAnnotation._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
