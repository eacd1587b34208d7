"""Page routes: ``/annotate/`` for annotators, ``/review/…`` for reviewers (the JSON API: api_urls.py)."""

from __future__ import annotations

from django.urls import path

from annotation import flag_views, views

app_name = "annotation"

urlpatterns = [
    # annotators
    path("annotate/", views.annotate, name="annotate"),
    path("annotate/workspace/", views.workspace, name="workspace"),
    path("annotate/submit/", views.submit, name="submit"),
    path("annotate/skip/", views.skip, name="skip"),
    path("annotate/undo/", views.undo, name="undo"),
    path("annotate/flag/", flag_views.flag, name="flag"),
    path("annotate/history/", views.history, name="history"),
    path("annotate/history/<int:annotation_id>/", views.history_edit, name="history_edit"),
    path("annotate/acknowledge/", views.acknowledge, name="ack"),
    # reviewers
    path("review/", views.review_home, name="review"),
    path("review/codebook/", views.codebook_edit, name="codebook"),
    path("review/codebook/v<int:number>/", views.codebook_version, name="codebook_version"),
    path("review/adjudication/", views.adjudication, name="adjudication"),
    path("review/adjudication/<int:task_id>/", views.adjudicate, name="adjudicate"),
    path("review/flags/", flag_views.flagged, name="flags"),
    path("review/flags/<int:flag_id>/decide/", flag_views.flag_decide, name="flag_decide"),
    path("review/agreement/", views.agreement, name="agreement"),
    path("review/queue/", views.queue, name="queue"),
    path("review/gold/", views.gold_page, name="gold"),
    path("review/annotators/<int:user_id>/unpause/", views.unpause, name="unpause"),
    path(
        "review/annotators/<int:user_id>/quarantine/release/",
        views.quarantine_decide,
        {"decision": "release"},
        name="quarantine_release",
    ),
    path(
        "review/annotators/<int:user_id>/quarantine/drop/",
        views.quarantine_decide,
        {"decision": "drop"},
        name="quarantine_drop",
    ),
]
