"""Reviewer pages of the retraining loop (the JSON API is in api_urls.py)."""

from __future__ import annotations

from django.urls import path

from training import views

app_name = "training"

urlpatterns = [
    path("review/batches/", views.batch_list, name="batches"),
    path("review/batches/create/", views.batch_create, name="batch_create"),
    path("review/batches/<int:batch_id>/", views.batch_detail, name="batch"),
    path("review/batches/<int:batch_id>/approve/", views.batch_approve, name="batch_approve"),
    path("review/batches/<int:batch_id>/reject/", views.batch_reject, name="batch_reject"),
    path("review/batches/<int:batch_id>/exclude/", views.batch_exclude, name="batch_exclude"),
    path("review/batches/<int:batch_id>/restore/", views.batch_restore, name="batch_restore"),
    path("review/audit/", views.audit, name="audit"),
    path("review/runs/", views.run_list, name="runs"),
    path("review/runs/<int:run_id>/", views.run_detail, name="run"),
    path("review/runs/<int:run_id>/cancel/", views.run_cancel, name="run_cancel"),
    path("review/runs/<int:run_id>/retry/", views.run_retry, name="run_retry"),
    path("review/versions/", views.leaderboard, name="versions"),
    path("review/versions/podium.png", views.podium, name="podium"),
    path("review/versions/baselines/", views.baselines_score, name="baselines_score"),
    path(
        "review/versions/baselines/<slug:name>/scatter.png", views.baseline_scatter, name="baseline_scatter"
    ),
    path("review/versions/<int:number>/scatter.png", views.version_scatter, name="version_scatter"),
    path("review/versions/<int:number>/rollback/", views.version_rollback, name="version_rollback"),
]
