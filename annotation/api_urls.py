"""/api/v1/ routes of the annotation domain (see annotation/api.py for who may call each)."""

from __future__ import annotations

from django.urls import path

from annotation import api, flag_api

urlpatterns = [
    # annotators
    path("annotate/next", api.NextTaskApi.as_view(), name="api-annotate-next"),
    path("annotate/submit", api.SubmitApi.as_view(), name="api-annotate-submit"),
    path("annotate/skip", api.SkipApi.as_view(), name="api-annotate-skip"),
    path("annotate/undo", api.UndoApi.as_view(), name="api-annotate-undo"),
    path("annotate/progress", api.ProgressApi.as_view(), name="api-annotate-progress"),
    path("annotate/annotations", api.MyAnnotationsApi.as_view(), name="api-annotate-annotations"),
    path(
        "annotate/annotations/<int:annotation_id>",
        api.MyAnnotationEditApi.as_view(),
        name="api-annotate-annotation-edit",
    ),
    path("annotate/flag", flag_api.FlagCreateApi.as_view(), name="api-annotate-flag"),
    path("annotate/flags", flag_api.MyFlagsApi.as_view(), name="api-annotate-flags"),
    path("annotate/codebook", api.CodebookCurrentApi.as_view(), name="api-annotate-codebook"),
    path("annotate/codebook/ack", api.CodebookAckApi.as_view(), name="api-annotate-codebook-ack"),
    # reviewers
    path("annotation/codebook/versions", api.CodebookVersionsApi.as_view(), name="api-codebook-versions"),
    path("annotation/codebook/diff", api.CodebookDiffApi.as_view(), name="api-codebook-diff"),
    path("annotation/adjudications", api.AdjudicationQueueApi.as_view(), name="api-adjudications"),
    path(
        "annotation/adjudications/<int:task_id>/resolve",
        api.AdjudicationResolveApi.as_view(),
        name="api-adjudication-resolve",
    ),
    path("annotation/annotators/paused", api.PausedAnnotatorsApi.as_view(), name="api-annotators-paused"),
    path(
        "annotation/annotators/<int:user_id>/unpause", api.UnpauseApi.as_view(), name="api-annotator-unpause"
    ),
    path("annotation/quarantine", api.QuarantineListApi.as_view(), name="api-quarantine"),
    path(
        "annotation/annotators/<int:user_id>/quarantine/release",
        api.QuarantineReleaseApi.as_view(),
        name="api-quarantine-release",
    ),
    path(
        "annotation/annotators/<int:user_id>/quarantine/drop",
        api.QuarantineDropApi.as_view(),
        name="api-quarantine-drop",
    ),
    path("annotation/agreement", api.AgreementApi.as_view(), name="api-annotation-agreement"),
    path("annotation/blind-vs-shown", api.BlindVsShownApi.as_view(), name="api-annotation-blind-vs-shown"),
    path("annotation/queue", api.QueueStatsApi.as_view(), name="api-annotation-queue"),
    path("gold", api.GoldApi.as_view(), name="api-gold"),
    path("flags", flag_api.FlagListApi.as_view(), name="api-flags"),
    path("flags/<int:flag_id>/decide", flag_api.FlagDecideApi.as_view(), name="api-flag-decide"),
    # clients and reviewers
    path("annotations/export", api.ExportApi.as_view(), name="api-annotations-export"),
    path("labels/export", api.LabelsExportApi.as_view(), name="api-labels-export"),
]
