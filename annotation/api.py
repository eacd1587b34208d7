"""JSON API of the annotation domain: the annotator's loop, reviewer tools, export for clients.

One view per operation with nested input/output serializers; views call services (writes) and
selectors (reads) and translate domain errors into the project's error shape (``webapp/api.py``):
``AnnotationError`` subclasses → their status and ``code``; input ``ValidationError`` → 400 naming
the field. Another annotator's assignment is indistinguishable from a missing one (404).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.contrib.auth.models import User
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import exceptions, generics, serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import gold, quarantine, selectors, services
from annotation.filters import ResolvedLabelFilter
from annotation.models import Annotation, Assignment, CodebookVersion, Task, Verdict
from webapp.api import ERROR_SCHEMA as ERROR
from webapp.api import JSONOnly, serializer_once
from webapp.exports import (
    DISPOSITION,
    Column,
    ExportNegotiation,
    ExportQuery,
    export_chunks,
    export_response,
    export_responses,
    output_field,
)
from webapp.pagination import Pagination
from webapp.roles import IsAnnotator, IsClientOrReviewer, IsReviewer, Role, has_role
from webapp.tokens import ApiUserThrottle
from webapp.visibility import EXPORT_REVIEWER_ONLY, public_export_row, sees_everything

MAX_ID = 2**63 - 1  # larger ids are a 400, not a database error


class AnnotationApi(APIView):
    """Base of the annotation endpoints. Domain errors (``AnnotationError``) become the API's error
    shape in ``webapp.api.exception_handler``, as everywhere."""

    @property
    def user(self) -> User:
        return self.request.user  # type: ignore[return-value]


class ListApi(AnnotationApi):
    """Base of the lists: one page of rows (``?page=``), in the API's pagination, as every list answers;
    the schema shows the paginated shape (drf-spectacular reads ``pagination_class``)."""

    pagination_class = Pagination

    def page_of(self, rows: Any, serializer: type[serializers.BaseSerializer], **kwargs: Any) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(rows, self.request, view=self)
        return paginator.get_paginated_response(serializer(page, many=True, **kwargs).data)


# --- output serializers --------------------------------------------------------------------------------


class ProductOut(serializers.Serializer):
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    title = serializers.CharField()
    text = serializers.CharField()
    category = serializers.CharField()


class GuessOut(serializers.Serializer):
    price = serializers.DecimalField(max_digits=12, decimal_places=2)


class AssignmentOut(serializers.Serializer):
    id = serializers.IntegerField()
    task_id = serializers.IntegerField()
    status = serializers.CharField()
    expires_at = serializers.DateTimeField()
    product = ProductOut(source="task.product")
    guess = serializers.SerializerMethodField(help_text="null on blind items: type the price")

    @extend_schema_field(GuessOut(allow_null=True))
    def get_guess(self, obj: Assignment) -> dict[str, str] | None:
        task = obj.task
        if task.is_blind or task.guess is None:
            return None
        return {"price": f"{task.guess.price:.2f}"}


class GoldFeedbackOut(serializers.Serializer):
    correct = serializers.BooleanField()
    true_price = serializers.DecimalField(max_digits=12, decimal_places=2)
    your_price = serializers.DecimalField(max_digits=12, decimal_places=2, allow_null=True)
    tolerance = serializers.FloatField(help_text="relative: 0.2 = ±20%")
    message = serializers.CharField()


class AnnotationOut(serializers.Serializer):
    id = serializers.IntegerField(allow_null=True)
    assignment_id = serializers.IntegerField()
    task_id = serializers.IntegerField()
    verdict = serializers.ChoiceField(choices=Verdict.choices)
    corrected_price = serializers.DecimalField(max_digits=12, decimal_places=2, allow_null=True)
    price_flag = serializers.CharField(help_text='"out_of_range": stored, never trained on token-level')
    reason_code = serializers.CharField()
    seconds_spent = serializers.FloatField()
    codebook_version = serializers.IntegerField(
        source="codebook_version.number", allow_null=True, default=None
    )
    guess_shown = serializers.BooleanField()
    created = serializers.DateTimeField()
    gold_feedback = serializers.SerializerMethodField(
        help_text="set only in the answer to a submit that got a check (gold) item wrong: its true price"
    )

    @extend_schema_field(GoldFeedbackOut(allow_null=True))
    def get_gold_feedback(self, obj: Annotation) -> dict[str, Any] | None:
        return getattr(obj, "gold_feedback", None)


class MyAnnotationOut(AnnotationOut):
    product_title = serializers.CharField(source="task.product.title")
    editable = serializers.SerializerMethodField(
        help_text="true while the item is unresolved: POST annotate/annotations/{id} may change it; "
        "false once it resolved, went to a reviewer or is a check item (final)"
    )

    def get_editable(self, obj: Annotation) -> bool:
        return services.annotation_editable(obj)


class ProgressOut(serializers.Serializer):
    done_today = serializers.IntegerField()
    remaining = serializers.IntegerField(
        help_text="Items left for this annotator; exact up to 10,000 fresh items, a lower bound beyond "
        "(then remaining_capped is true)."
    )
    remaining_capped = serializers.BooleanField(
        help_text="True when the queue holds more fresh items than are counted (remaining is a lower bound)."
    )
    gold_seen = serializers.IntegerField()
    gold_accuracy = serializers.FloatField(allow_null=True)
    paused = serializers.BooleanField()
    paused_reason = serializers.CharField()


class ReasonCodeOut(serializers.Serializer):
    code = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # a field named like Field.label


class CodebookOut(serializers.Serializer):
    number = serializers.IntegerField()
    markdown = serializers.CharField()
    html = serializers.SerializerMethodField()
    reason_codes = ReasonCodeOut(many=True)
    author = serializers.CharField(source="author.username", allow_null=True, default=None)
    created = serializers.DateTimeField()

    @extend_schema_field(OpenApiTypes.STR)
    def get_html(self, obj: CodebookVersion) -> str:
        return str(selectors.codebook_render(obj))


class CodebookCurrentOut(CodebookOut):
    acknowledged = serializers.BooleanField()


class SkipOut(serializers.Serializer):
    assignment_id = serializers.IntegerField(source="id")
    status = serializers.CharField()


class UndoOut(serializers.Serializer):
    undone = AnnotationOut()
    assignment = AssignmentOut(help_text="the undone item, your live lease again")


# --- annotators ----------------------------------------------------------------------------------------


class NextTaskApi(AnnotationApi):
    permission_classes = [IsAnnotator]
    renderer_classes = [JSONRenderer]  # scripts and the page's fetch: no browsable API on the hot path
    content_negotiation_class = JSONOnly

    @extend_schema(
        operation_id="annotate_next",
        summary="Lease your next item",
        request=None,
        responses={
            200: AssignmentOut,
            204: OpenApiResponse(description="nothing left to annotate"),
            403: OpenApiResponse(ERROR, description="not an annotator, or paused (code annotator_paused)"),
            409: OpenApiResponse(ERROR, description="codebook_ack_required: acknowledge the codebook first"),
        },
        description="Your live lease, or a new one on the next item. Idempotent while a lease is live.",
    )
    def post(self, request: Request) -> Response:
        assignment = services.lease_next_task(annotator=self.user)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(serializer_once(AssignmentOut).to_representation(assignment))


class SubmitApi(AnnotationApi):
    permission_classes = [IsAnnotator]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONOnly

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "SubmitInput"

        assignment_id = serializers.IntegerField(min_value=1, max_value=MAX_ID)
        verdict = serializers.ChoiceField(choices=Verdict.choices)
        corrected_price = serializers.DecimalField(
            max_digits=None, decimal_places=None, required=False, allow_null=True, help_text="for correct"
        )
        reason_code = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
        seconds_spent = serializers.FloatField(min_value=0, max_value=86_400, default=0.0)
        client_token = serializers.CharField(
            max_length=64,
            required=False,
            allow_blank=True,
            default="",
            help_text="unique per submit attempt: a retried submit with the same token is a no-op",
        )
        confirm_price = serializers.BooleanField(
            default=False,
            help_text="true to save a corrected price that was refused as unusual (outside 0.50-999.49, "
            "or far from the guess: error field corrected_price); outside the range it is saved flagged",
        )

    @extend_schema(
        operation_id="annotate_submit",
        summary="Answer your live item",
        request=InputSerializer,
        responses={200: AnnotationOut, 400: ERROR, 404: ERROR, 409: ERROR},
        description="Accept, correct (with a price) or reject (with a codebook reason) your live item.",
    )
    def post(self, request: Request) -> Response:
        validated = serializer_once(self.InputSerializer).run_validation(request.data)
        annotation = services.annotation_submit(annotator=self.user, **validated)
        return Response(serializer_once(AnnotationOut).to_representation(annotation))


class AssignmentInput(serializers.Serializer):
    assignment_id = serializers.IntegerField(min_value=1, max_value=MAX_ID)


class SkipApi(AnnotationApi):
    permission_classes = [IsAnnotator]

    @extend_schema(
        operation_id="annotate_skip",
        summary="Skip your live item",
        request=AssignmentInput,
        responses={200: SkipOut, 400: ERROR, 404: ERROR, 409: ERROR},
        description="Give the item back; it comes back to you after every fresh item.",
    )
    def post(self, request: Request) -> Response:
        data = AssignmentInput(data=request.data)
        data.is_valid(raise_exception=True)
        assignment = services.assignment_skip(annotator=self.user, **data.validated_data)
        return Response(SkipOut(assignment).data)


class UndoApi(AnnotationApi):
    permission_classes = [IsAnnotator]

    @extend_schema(
        operation_id="annotate_undo",
        summary="Undo your last annotation",
        request=None,
        responses={200: UndoOut, 409: ERROR},
        description="Take back your last annotation (within the undo window, while its label is not final).",
    )
    def post(self, request: Request) -> Response:
        annotation = services.annotation_undo_last(annotator=self.user)
        return Response(UndoOut({"undone": annotation, "assignment": annotation.assignment}).data)


class ProgressApi(AnnotationApi):
    permission_classes = [IsAnnotator]

    @extend_schema(
        operation_id="annotate_progress",
        summary="Your progress",
        description=(
            "Items done today, items left for you (a lower bound past 10,000) and your accuracy on check "
            "(gold) items."
        ),
        responses={200: ProgressOut},
    )
    def get(self, request: Request) -> Response:
        return Response(ProgressOut(selectors.annotator_progress(annotator=self.user)).data)


class MyAnnotationsApi(ListApi):
    permission_classes = [IsAnnotator]

    @extend_schema(
        operation_id="annotate_my_annotations",
        summary="Your recent annotations",
        description=(
            "Your annotations, newest first (paginated), with the verdict, price, flag and the codebook "
            "version each was made under."
        ),
        responses={200: MyAnnotationOut(many=True)},
    )
    def get(self, request: Request) -> Response:
        return self.page_of(selectors.annotations_of(annotator=self.user), MyAnnotationOut)


class MyAnnotationEditApi(AnnotationApi):
    permission_classes = [IsAnnotator]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "AnnotationEditInput"

        verdict = serializers.ChoiceField(choices=Verdict.choices)
        corrected_price = serializers.DecimalField(
            max_digits=None, decimal_places=None, required=False, allow_null=True, help_text="for correct"
        )
        reason_code = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
        confirm_price = serializers.BooleanField(
            default=False,
            help_text="true to save a corrected price that was refused as unusual (as for submit)",
        )

    @extend_schema(
        operation_id="annotate_annotation_edit",
        summary="Change one of your answers",
        description=(
            "Replace the verdict, price and reason of one of your own annotations while its item has not "
            "resolved, with the same checks as a submit (an unusual price needs confirm_price=true). "
            "409 annotation_final once the item resolved or went to a reviewer; 404 for an id that is "
            "not yours."
        ),
        request=InputSerializer,
        responses={200: MyAnnotationOut, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    def post(self, request: Request, annotation_id: int) -> Response:
        if annotation_id > MAX_ID:
            raise exceptions.NotFound(f"You have no annotation {annotation_id}.")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            annotation = services.annotation_edit(
                annotator=self.user, annotation_id=annotation_id, **data.validated_data
            )
        except Annotation.DoesNotExist:
            raise exceptions.NotFound(f"You have no annotation {annotation_id}.") from None
        annotation = selectors.annotations_of(annotator=self.user).get(id=annotation.id)
        return Response(MyAnnotationOut(annotation).data)


class CodebookCurrentApi(AnnotationApi):
    permission_classes = [IsAnnotator | IsReviewer]

    @extend_schema(
        operation_id="annotate_codebook",
        summary="Current codebook",
        description=(
            "The codebook version in force, rendered, with its reason codes and whether you have "
            "acknowledged it; 204 before the first version is published."
        ),
        responses={200: CodebookCurrentOut, 204: OpenApiResponse(description="no codebook published yet")},
    )
    def get(self, request: Request) -> Response:
        version = selectors.codebook_current()
        if version is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        version.acknowledged = version.acks.filter(annotator=self.user).exists()  # type: ignore[attr-defined]
        return Response(CodebookCurrentOut(version).data)


class CodebookAckApi(AnnotationApi):
    permission_classes = [IsAnnotator]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "CodebookAckInput"

        version = serializers.IntegerField(min_value=1, max_value=MAX_ID)

    @extend_schema(
        operation_id="annotate_codebook_ack",
        summary="Acknowledge a codebook version",
        description=(
            "Record that you have read this codebook version; until you acknowledge the current one, next"
            " answers 409 codebook_ack_required."
        ),
        request=InputSerializer,
        responses={
            200: inline_serializer("CodebookAckOut", {"version": serializers.IntegerField()}),
            400: ERROR,
            404: OpenApiResponse(ERROR, description="no codebook version with this number"),
        },
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        number = data.validated_data["version"]
        if selectors.codebook_get(number=number) is None:
            raise exceptions.NotFound(f"There is no codebook v{number}.")
        ack = services.codebook_acknowledge(
            annotator=self.user, version_number=data.validated_data["version"]
        )
        return Response({"version": ack.version.number})


# --- reviewers -----------------------------------------------------------------------------------------


class CodebookVersionsApi(ListApi):
    permission_classes = [IsReviewer]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "CodebookVersionsInput"

        markdown = serializers.CharField(max_length=200_000, trim_whitespace=False)
        change_note = serializers.CharField(
            max_length=2000,
            required=False,
            allow_blank=True,
            default="",
            help_text="what changed and why; required for every version after the first",
        )

    @extend_schema(
        operation_id="codebook_versions_list",
        summary="Codebook versions",
        description="Every published codebook version, newest first (paginated), with its reason codes and "
        "author.",
        responses={200: CodebookOut(many=True)},
    )
    def get(self, request: Request) -> Response:
        return self.page_of(selectors.codebook_versions(), CodebookOut)

    @extend_schema(
        operation_id="codebook_publish",
        summary="Publish a codebook version",
        request=InputSerializer,
        responses={201: CodebookOut, 400: ERROR},
        description="Publish the next version; annotators must acknowledge it before their next item.",
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = services.codebook_publish(
            author=self.user,
            markdown=data.validated_data["markdown"],
            change_note=data.validated_data["change_note"],
        )
        return Response(CodebookOut(version).data, status=status.HTTP_201_CREATED)


# "from" is a Python keyword: the query serializer is built from a dict of its fields.
CodebookDiffQuery = type(
    "CodebookDiffQuery",
    (serializers.Serializer,),
    {
        "from": serializers.IntegerField(
            min_value=1, max_value=MAX_ID, required=False, help_text="older version number (omit: empty)"
        ),
        "to": serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="newer version number"),
    },
)


class CodebookDiffApi(AnnotationApi):
    permission_classes = [IsReviewer | IsAnnotator]

    @extend_schema(
        operation_id="codebook_diff",
        summary="Compare two codebook versions",
        description=(
            "A unified diff of the markdown between two published versions (from omitted: against an "
            "empty text)."
        ),
        parameters=[CodebookDiffQuery],
        responses={
            200: inline_serializer("CodebookDiffOut", {"diff": serializers.CharField()}),
            400: OpenApiResponse(ERROR, description="from or to is not a version number (fields names it)"),
            404: OpenApiResponse(ERROR, description="no such codebook version"),
        },
    )
    def get(self, request: Request) -> Response:
        query = CodebookDiffQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        numbers = query.validated_data
        new = selectors.codebook_get(number=numbers["to"])
        old = selectors.codebook_get(number=numbers["from"]) if "from" in numbers else None
        if new is None or ("from" in numbers and old is None):
            raise exceptions.NotFound("No such codebook version.")
        return Response({"diff": selectors.codebook_diff(old, new)})


class AnnotationBriefOut(serializers.Serializer):
    id = serializers.IntegerField()
    annotator = serializers.CharField(source="annotator.username")
    verdict = serializers.CharField()
    corrected_price = serializers.DecimalField(max_digits=12, decimal_places=2, allow_null=True)
    reason_code = serializers.CharField()


class AdjudicationOut(serializers.Serializer):
    task_id = serializers.IntegerField(source="id")
    product = ProductOut()
    guess_price = serializers.DecimalField(
        source="guess.price", max_digits=12, decimal_places=2, allow_null=True
    )
    annotations = AnnotationBriefOut(many=True)


class ResolvedLabelOut(serializers.Serializer):
    task_id = serializers.IntegerField()
    price = serializers.DecimalField(max_digits=12, decimal_places=2, allow_null=True)
    price_flag = serializers.CharField()
    method = serializers.CharField()
    n_annotations = serializers.IntegerField()


class AdjudicationQueueApi(ListApi):
    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="adjudications_list",
        summary="Items awaiting adjudication",
        description=(
            "Tasks whose annotations disagree beyond the tolerance, oldest first (paginated), with every "
            "annotation and the model's guess."
        ),
        responses={200: AdjudicationOut(many=True)},
    )
    def get(self, request: Request) -> Response:
        return self.page_of(selectors.adjudication_queue(), AdjudicationOut)


class AdjudicationResolveApi(AnnotationApi):
    permission_classes = [IsReviewer]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "AdjudicationResolveInput"

        price = serializers.DecimalField(
            max_digits=None, decimal_places=None, allow_null=True, help_text="null resolves as rejected"
        )

    @extend_schema(
        operation_id="adjudication_resolve",
        summary="Adjudicate an item",
        description=(
            "Set the final price of a task that needs adjudication (null: no price, rejected); the label "
            "is final and cannot be undone by annotators."
        ),
        request=InputSerializer,
        responses={200: ResolvedLabelOut, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    def post(self, request: Request, task_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        get_object_or_404(Task, id=task_id, is_gold=False)
        label = services.adjudication_resolve(
            reviewer=self.user, task_id=task_id, price=data.validated_data["price"]
        )
        return Response(ResolvedLabelOut(label).data)


class AnnotatorStatusOut(serializers.Serializer):
    annotator_id = serializers.IntegerField(source="user_id")
    username = serializers.CharField(source="user.username")
    paused = serializers.BooleanField()
    paused_reason = serializers.CharField()
    gold_seen = serializers.IntegerField()
    gold_accuracy = serializers.FloatField(allow_null=True)


class PausedAnnotatorsApi(ListApi):
    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="annotators_paused",
        summary="Paused annotators",
        description=(
            "Annotators paused for low gold accuracy or by a reviewer, with the reason and their check-"
            "item figures."
        ),
        responses={200: AnnotatorStatusOut(many=True)},
    )
    def get(self, request: Request) -> Response:
        return self.page_of(selectors.annotators_paused(), AnnotatorStatusOut)


class UnpauseApi(AnnotationApi):
    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="annotator_unpause",
        summary="Unpause an annotator",
        description="Let a paused annotator work again; their gold accuracy is judged afresh from now on.",
        request=None,
        responses={200: AnnotatorStatusOut, 404: ERROR},
    )
    def post(self, request: Request, user_id: int) -> Response:
        annotator = get_object_or_404(User, id=user_id)
        if not has_role(annotator, Role.ANNOTATOR):
            raise exceptions.NotFound("No such annotator.")
        annotation_status = services.annotator_unpause(reviewer=self.user, annotator=annotator)
        return Response(AnnotatorStatusOut(annotation_status).data)


def _annotator_or_404(user_id: int) -> User:
    annotator = User.objects.filter(id=user_id).first()
    if annotator is None or not has_role(annotator, Role.ANNOTATOR):
        raise exceptions.NotFound(f"There is no annotator {user_id}.")
    return annotator


class QuarantineRowOut(serializers.Serializer):
    annotator_id = serializers.IntegerField()
    username = serializers.CharField()
    paused = serializers.BooleanField()
    paused_reason = serializers.CharField()
    held = serializers.IntegerField(help_text="annotations held out of every batch")
    held_labels = serializers.IntegerField(help_text="resolved labels among them (others await overlap)")


class QuarantineDecisionOut(serializers.Serializer):
    annotator_id = serializers.IntegerField(source="annotator.id")
    username = serializers.CharField(source="annotator.username")
    decision = serializers.ChoiceField(choices=["released", "dropped"])
    annotations = serializers.IntegerField(help_text="held annotations the decision applied to (0: none)")
    labels = serializers.IntegerField(help_text="resolved labels among them")
    requeued = serializers.IntegerField(help_text="products queued again for other annotators (drop)")
    withdrawn = serializers.IntegerField(
        help_text="annotations taken off items not resolved yet, which need one more (drop)"
    )


class QuarantineListApi(ListApi):
    """Annotators whose labels are held out of training (paused, or paused once and not yet decided)."""

    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="quarantine_list",
        summary="Quarantined labels",
        responses={200: QuarantineRowOut(many=True)},
    )
    def get(self, request: Request) -> Response:
        return self.page_of(quarantine.quarantine_summary(), QuarantineRowOut)


class QuarantineReleaseApi(AnnotationApi):
    """Release the annotator's held labels: they may be batched again."""

    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="quarantine_release",
        summary="Release an annotator's held labels",
        request=None,
        responses={200: QuarantineDecisionOut, 404: ERROR},
    )
    def post(self, request: Request, user_id: int) -> Response:
        decision = quarantine.quarantine_release(reviewer=self.user, annotator=_annotator_or_404(user_id))
        return Response(QuarantineDecisionOut(decision).data)


class QuarantineDropApi(AnnotationApi):
    """Drop the annotator's held labels: never batched; their products are queued again."""

    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="quarantine_drop",
        summary="Drop an annotator's held labels",
        request=None,
        responses={200: QuarantineDecisionOut, 404: ERROR},
    )
    def post(self, request: Request, user_id: int) -> Response:
        decision = quarantine.quarantine_drop(reviewer=self.user, annotator=_annotator_or_404(user_id))
        return Response(QuarantineDecisionOut(decision).data)


class GoldProductOut(serializers.Serializer):
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    title = serializers.CharField()


class GoldItemOut(serializers.Serializer):
    id = serializers.IntegerField(help_text="the gold task's id")
    product = GoldProductOut()
    price = serializers.DecimalField(source="gold_price", max_digits=12, decimal_places=2)
    tolerance = serializers.FloatField(source="gold_tolerance", help_text="relative: 0.2 = ±20%")
    blind = serializers.BooleanField(
        source="is_blind", help_text="the guess is hidden: annotators type a price"
    )
    answers = serializers.IntegerField(source="n_answers", default=0)
    correct = serializers.SerializerMethodField(help_text="answers within the tolerance (list only)")
    created = serializers.DateTimeField()

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_correct(self, obj: Task) -> int | None:
        return self.context.get("correct", {}).get(obj.pk)


class GoldIn(serializers.Serializer):
    """One gold item (the same fields as a line of ``manage.py import_gold``)."""

    class Meta:
        ref_name = "GoldInput"

    id = serializers.CharField(required=False, help_text="external id of a catalogue product")
    price = serializers.FloatField(help_text="the true price in dollars")
    tolerance = serializers.FloatField(required=False, help_text="relative, 0 < t <= 1 (default setting)")
    title = serializers.CharField(required=False, help_text="with text: add a product the catalogue lacks")
    text = serializers.CharField(required=False)
    category = serializers.CharField(required=False)


class GoldCreateOut(serializers.Serializer):
    created = serializers.IntegerField()
    existing = serializers.IntegerField(help_text="products that already were gold items (unchanged)")
    products_created = serializers.IntegerField(help_text="new catalogue products made from title/text")
    withdrawn = serializers.IntegerField(
        help_text="unanswered ordinary tasks of the new gold products, taken out of the queue"
    )
    items = GoldItemOut(
        many=True, help_text="the gold items of the request: created ones, then existing ones"
    )


class GoldPoolOut(serializers.Serializer):
    items = serializers.IntegerField()
    min_per_annotator = serializers.IntegerField(help_text="ANNOTATION_GOLD_POOL_MIN")
    low = serializers.ListField(child=serializers.DictField(), help_text="[{annotator_id, username, unseen}]")
    warning = serializers.CharField(allow_null=True)


class GoldApi(AnnotationApi, generics.GenericAPIView):
    """Gold items: list them (paginated, newest first, with the pool's health) or create one or many.

    POST takes one object or a JSON list of them. One bad item and nothing is created: the 400 names
    each bad item's field as ``items[<position>].<field>`` (``<field>`` alone for a single object).
    """

    permission_classes = [IsReviewer]
    parser_classes = [JSONParser]  # one object or a list of them: JSON only
    serializer_class = GoldItemOut

    def get_queryset(self) -> Any:
        return gold.gold_items()

    @extend_schema(
        operation_id="gold_list",
        summary="Gold items",
        description=(
            "Check items with their true price and tolerance, newest first (paginated), with how often "
            "annotators got each right and the pool's health."
        ),
        responses={
            200: inline_serializer(
                "GoldPage",
                {
                    "count": serializers.IntegerField(),
                    "next": serializers.URLField(allow_null=True),
                    "previous": serializers.URLField(allow_null=True),
                    "results": GoldItemOut(many=True),
                    "pool": GoldPoolOut(),
                },
            )
        },
    )
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        tasks = list(page if page is not None else self.get_queryset()[:50])
        data = GoldItemOut(tasks, many=True, context={"correct": gold.gold_correct_counts(tasks)}).data
        response = self.get_paginated_response(data) if page is not None else Response({"results": data})
        response.data["pool"] = gold.gold_pool_status()
        return response

    @extend_schema(
        operation_id="gold_create",
        summary="Add gold items",
        description=(
            "Add one gold item or a list of them: a catalogue product (id) or a new one (title and text),"
            " with its true price and tolerance."
        ),
        request=PolymorphicProxySerializer(
            "GoldCreateInput",
            serializers=[GoldIn, GoldIn(many=True)],
            resource_type_field_name=None,
            many=False,
        ),
        responses={201: GoldCreateOut, 400: ERROR},
    )
    def post(self, request: Request) -> Response:
        body = request.data
        single = not isinstance(body, list)
        rows = [body] if single else list(body)
        if not rows:
            raise exceptions.ValidationError({"items": ["Send one gold item or a non-empty list of them."]})
        result = gold.gold_items_create(rows=enumerate(rows, start=1), actor=self.user, partial=False)
        if result.errors:
            fields: dict[str, list[str]] = {}
            for error in result.errors:
                name = error.field or "item"
                key = name if single else f"items[{error.line - 1}].{name}"
                fields.setdefault(key, []).append(error.reason)
            raise exceptions.ValidationError(fields)
        ids = [t.pk for t in result.created + result.existing]
        order = {pk: position for position, pk in enumerate(ids)}
        items = sorted(gold.gold_items().filter(id__in=ids), key=lambda t: order[t.pk])
        body_out = {
            "created": len(result.created),
            "existing": len(result.existing),
            "products_created": result.products_created,
            "withdrawn": result.withdrawn,
            "items": GoldItemOut(items, many=True, context={"correct": gold.gold_correct_counts(items)}).data,
        }
        return Response(body_out, status=status.HTTP_201_CREATED)


class AgreementApi(AnnotationApi):
    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="annotation_agreement",
        summary="Agreement between annotators",
        description=(
            "Krippendorff's alpha on log price and the share of answers within tolerance, over resolved "
            "tasks with several annotations."
        ),
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        return Response(selectors.agreement_report())


class BlindVsShownApi(AnnotationApi):
    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="annotation_blind_vs_shown",
        summary="Anchoring report",
        description=(
            "How answers differ when the model's guess was shown versus hidden (blind items): a measure "
            "of anchoring on the guess."
        ),
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        return Response(selectors.blind_vs_shown_report())


class QueueTaskCountsOut(serializers.Serializer):
    total = serializers.IntegerField(
        help_text="items (gold apart): open + needs_adjudication + resolved + flagged + dropped"
    )
    open = serializers.IntegerField(help_text="waiting for an annotator or being labelled")
    available = serializers.IntegerField(help_text="the open items waiting for an annotator")
    claimed = serializers.IntegerField(
        help_text="open items taken by an annotator (on screen or fetched ahead); open = available + claimed"
    )
    needs_adjudication = serializers.IntegerField(help_text="annotators disagreed: a reviewer sets the price")
    resolved = serializers.IntegerField()
    flagged = serializers.IntegerField(
        help_text="flagged by an annotator: out of the queue until a reviewer returns or drops it"
    )
    dropped = serializers.IntegerField(help_text="dropped by a reviewer: never labelled nor batched")
    gold = serializers.IntegerField(help_text="gold (check) items, whatever their state")


class QueueLeaseCountsOut(serializers.Serializer):
    live = serializers.IntegerField()
    overdue = serializers.IntegerField(
        help_text="live leases past their expiry (the next sweep returns them)"
    )


class QueueStatsOut(serializers.Serializer):
    tasks = QueueTaskCountsOut()
    leases = QueueLeaseCountsOut()
    annotations_total = serializers.IntegerField()
    annotations_today = serializers.IntegerField()
    annotators_paused = serializers.IntegerField()


class QueueStatsApi(AnnotationApi):
    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="annotation_queue_stats",
        summary="Queue statistics",
        description=(
            "Item counts by state (open, needs_adjudication, resolved, flagged, dropped: together the "
            "total, gold apart; open = available + claimed: waiting for an annotator or taken by one), "
            "live and overdue leases, annotations in total and today, paused annotators."
        ),
        responses={200: QueueStatsOut},
    )
    def get(self, request: Request) -> Response:
        return Response(QueueStatsOut(selectors.queue_stats()).data)


# --- export --------------------------------------------------------------------------------------------

LABEL_COLUMNS = (
    Column("id", int),
    Column("task_id", int),
    Column("product_id"),
    Column("product_title"),
    Column("split"),
    Column("price"),
    Column("price_flag"),
    Column("method"),
    Column("n_annotations", int),
    Column("n_accept", int),
    Column("n_correct", int),
    Column("n_reject", int),
    Column("spread"),
    Column("guess_shown", bool),
    Column("guess_price"),
    Column("guess_source"),
    Column("guess_model_version", int),
    Column("batch_id", int),
    Column("created"),
)


class LabelsExportApi(AnnotationApi, generics.GenericAPIView):
    permission_classes = [IsClientOrReviewer]
    throttle_classes = [ApiUserThrottle]
    content_negotiation_class = ExportNegotiation
    filter_backends = [DjangoFilterBackend]
    filterset_class = ResolvedLabelFilter

    def get_queryset(self) -> Any:
        return selectors.resolved_labels()

    @extend_schema(
        operation_id="labels_export",
        summary="Export resolved labels",
        description=(
            "One row per resolved label, oldest first, streamed: its task and product (id, title, split), "
            "price, flag, how it resolved (method, annotation counts, spread), the guess the item carried "
            "(price, source, guess_model_version: the N of the model version vN that made it, null for a "
            "baseline's guess) and the retrain batch holding it (null: none yet). Prices are decimal "
            "strings. output=jsonl (default), csv or parquet; filter by created_after, created_before "
            "and batched."
        ),
        parameters=[ExportQuery, DISPOSITION],
        filters=True,
        responses=export_responses("the resolved labels"),
    )
    def get(self, request: Request) -> Any:
        query = ExportQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        labels = self.filter_queryset(self.get_queryset())
        return export_response(
            selectors.resolved_label_rows(labels),
            LABEL_COLUMNS,
            output=query.validated_data["output"],
            filename="labels",
        )


ANNOTATION_COLUMNS = (
    Column("id", int),
    Column("task_id", int),
    Column("product_external_id"),
    Column("annotator"),
    Column("verdict"),
    Column("corrected_price"),
    Column("price_flag"),
    Column("reason_code"),
    Column("seconds_spent", float),
    Column("codebook_version", int),
    Column("guess_shown", bool),
    Column("guess_price"),
    Column("guess_source"),
    Column("guess_model_version", int),
    Column("gold", bool),
    Column("created"),
)


class ExportApi(AnnotationApi):
    """Every annotation, oldest first: JSON Lines (default), CSV or Parquet (streamed), or a JSON list
    (at most 10,000), each row naming the model version whose guess the item carried."""

    permission_classes = [IsClientOrReviewer]
    throttle_classes = [ApiUserThrottle]
    content_negotiation_class = ExportNegotiation

    class Query(serializers.Serializer):
        class Meta:
            ref_name = "AnnotationExportQuery"

        output = output_field(("jsonl", "csv", "parquet", "json"))
        since_id = serializers.IntegerField(
            min_value=0, max_value=MAX_ID, default=0, help_text="only annotations with a larger id"
        )
        limit = serializers.IntegerField(
            min_value=1, max_value=MAX_ID, required=False, help_text="at most this many (json: max 10000)"
        )

    @extend_schema(
        operation_id="annotations_export",
        summary="Export annotations",
        parameters=[Query, DISPOSITION],
        responses={
            **export_responses("the annotations"),
            # One object per annotation (the fields a caller's role may see), oldest first.
            (200, "application/json"): OpenApiResponse(
                {"type": "array", "items": {"type": "object"}}, description="a list, oldest first"
            ),
        },
    )
    def get(self, request: Request) -> Any:
        query = self.Query(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        since_id = params["since_id"]
        # Clients read labels, not who made them, how fast, or which items were gold (webapp/visibility.py).
        shown = (lambda row: row) if sees_everything(request.user) else public_export_row
        if params["output"] == "json":
            limit = min(params.get("limit") or 10_000, 10_000)
            return Response(
                [shown(row) for row in selectors.annotations_export(since_id=since_id, limit=limit)]
            )
        rows = selectors.annotations_export(since_id=since_id, limit=params.get("limit"))
        full = sees_everything(request.user)
        columns = [c for c in ANNOTATION_COLUMNS if full or c.name not in EXPORT_REVIEWER_ONLY]
        if params["output"] != "jsonl":
            return export_response(rows, columns, output=params["output"], filename="annotations")

        def lines() -> Iterator[bytes]:
            yield from export_chunks(rows, columns, "jsonl")

        response = StreamingHttpResponse(lines(), content_type="application/x-ndjson")
        response["Content-Disposition"] = 'attachment; filename="annotations.jsonl"'
        return response
