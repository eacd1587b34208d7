"""JSON API of flags (``annotation/flags.py``): annotators flag their live item for the reviewers; reviewers
list the flags and decide on each (back to the queue, or dropped).

A module of its own next to ``annotation/api.py``, with the same base classes and error shape.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions, generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from annotation import flags
from annotation.api import MAX_ID, AnnotationApi, ListApi, ProductOut, ReasonCodeOut
from annotation.models import FlagState, ItemFlag
from webapp.api import ERROR_SCHEMA as ERROR
from webapp.pagination import Pagination
from webapp.roles import IsAnnotator, IsReviewer


class FlagOut(serializers.Serializer):
    id = serializers.IntegerField()
    task_id = serializers.IntegerField()
    assignment_id = serializers.IntegerField()
    reason_code = serializers.CharField()
    reason_label = serializers.CharField(help_text="the reason's text in the codebook when it was flagged")
    note = serializers.CharField()
    state = serializers.ChoiceField(choices=FlagState.choices)
    created = serializers.DateTimeField()


class MyFlagOut(FlagOut):
    product_title = serializers.CharField(source="task.product.title")
    decided_at = serializers.DateTimeField(allow_null=True, help_text="null while the flag is open")


class FlagDetailOut(FlagOut):
    annotator = serializers.CharField(source="annotator.username")
    product = ProductOut(source="task.product")
    guess_price = serializers.DecimalField(
        source="task.guess.price", max_digits=12, decimal_places=2, allow_null=True, default=None
    )
    codebook_version = serializers.IntegerField(
        source="codebook_version.number", allow_null=True, default=None, help_text="null: default reasons"
    )
    task_status = serializers.CharField(source="task.status", help_text="flagged, open (requeued) or dropped")
    decided_by = serializers.CharField(source="decided_by.username", allow_null=True, default=None)
    decided_at = serializers.DateTimeField(allow_null=True)


class FlagFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=FlagState.choices, help_text="only flags in this state")

    class Meta:
        model = ItemFlag
        fields = ["state"]


class FlagReasonsOut(serializers.Serializer):
    codebook_version = serializers.IntegerField(allow_null=True, help_text="null: no codebook yet")
    default = serializers.BooleanField(help_text="true: the codebook has no Flag reasons section")
    reasons = ReasonCodeOut(many=True)


class FlagCreateApi(AnnotationApi):
    permission_classes = [IsAnnotator]

    @extend_schema(
        operation_id="annotate_flag_reasons",
        summary="Reasons you may flag an item with",
        description=(
            "The flag reasons in force: the current codebook's Flag reasons section, or the default set "
            "(broken-text, wrong-category, duplicate, other) when it has none or no codebook is published."
        ),
        responses={200: FlagReasonsOut},
    )
    def get(self, request: Request) -> Response:
        version = flags.codebook_current()
        reasons = flags.flag_reasons(version)
        out = {
            "codebook_version": version.number if version is not None else None,
            "default": reasons is flags.DEFAULT_FLAG_REASONS,
            "reasons": reasons,
        }
        return Response(FlagReasonsOut(out).data)

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "FlagInput"

        assignment_id = serializers.IntegerField(min_value=1, max_value=MAX_ID)
        reason_code = serializers.CharField(max_length=64, help_text="a code of the codebook's flag reasons")
        note = serializers.CharField(
            max_length=flags.MAX_NOTE_CHARS,
            required=False,
            allow_blank=True,
            default="",
            help_text="optional",
        )

    @extend_schema(
        operation_id="annotate_flag",
        summary="Flag your live item for a reviewer",
        description=(
            "Send your live item to the reviewers instead of answering it (broken text, wrong category, a "
            "duplicate…), with a reason code from the codebook's Flag reasons (a codebook without that "
            "section: broken-text, wrong-category, duplicate, other) and an optional note. Your lease ends "
            "and the item leaves every annotator's queue until a reviewer decides; a flag is not an "
            "annotation. 400 names an unknown reason code and lists the valid ones; 404: not your "
            "assignment; 409: the lease is no longer live."
        ),
        request=InputSerializer,
        responses={201: FlagOut, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        flag = flags.item_flag(annotator=self.user, **data.validated_data)
        return Response(FlagOut(flag).data, status=201)


class MyFlagsApi(ListApi):
    permission_classes = [IsAnnotator]

    @extend_schema(
        operation_id="annotate_my_flags",
        summary="Items you flagged",
        description=(
            "Your flags, newest first (paginated): the item's title, the reason (code and its text when "
            "you flagged), your note, the state (open: waiting for a reviewer; requeued: returned to the "
            "queue; dropped: never labelled) and when you flagged it and when a reviewer decided. Flags "
            "are not annotations: GET annotate/annotations does not list them."
        ),
        responses={200: MyFlagOut(many=True)},
    )
    def get(self, request: Request) -> Response:
        return self.page_of(flags.flags_of(annotator=self.user), MyFlagOut)


@extend_schema_view(
    get=extend_schema(
        operation_id="flags_list",
        summary="Flagged items",
        description=(
            "Items annotators flagged, oldest first (paginated; ?state=open for those waiting for a "
            "decision), with the product, the model's guess, the reason, the note, who flagged it and when."
        ),
    )
)
class FlagListApi(AnnotationApi, generics.ListAPIView):
    permission_classes = [IsReviewer]
    serializer_class = FlagDetailOut
    pagination_class = Pagination
    filter_backends = [DjangoFilterBackend]
    filterset_class = FlagFilter

    def get_queryset(self) -> Any:
        return flags.flags_list()


class FlagDecideApi(AnnotationApi):
    permission_classes = [IsReviewer]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "FlagDecideInput"

        action = serializers.ChoiceField(
            choices=[
                ("requeue", "return the item to the queue (its answers kept)"),
                ("drop", "drop the item: never labelled nor batched"),
            ]
        )

    @extend_schema(
        operation_id="flag_decide",
        summary="Decide on a flagged item",
        description=(
            "requeue: the item is open to annotators again and keeps the answers it had; drop: the item is "
            "closed for good, never labelled nor put in a retrain batch. Audited (flag_requeue / flag_drop). "
            "409 when the flag was decided already."
        ),
        request=InputSerializer,
        responses={200: FlagDetailOut, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    def post(self, request: Request, flag_id: int) -> Response:
        if flag_id > MAX_ID:
            raise exceptions.NotFound(f"There is no flag {flag_id}.")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            flag = flags.flag_decide(
                reviewer=self.user, flag_id=flag_id, action=data.validated_data["action"]
            )
        except ItemFlag.DoesNotExist:
            raise exceptions.NotFound(f"There is no flag {flag_id}.") from None
        return Response(FlagDetailOut(flag).data)
