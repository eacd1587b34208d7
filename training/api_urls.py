"""/api/v1/ routes of the retraining domain (see training/api.py for who may call each)."""

from __future__ import annotations

from django.urls import path

from training import api

urlpatterns = [
    # model versions (clients and reviewers read; reviewers roll back)
    path("versions", api.VersionListApi.as_view(), name="api-versions"),
    path("versions/champion", api.ChampionApi.as_view(), name="api-versions-champion"),
    path("versions/<int:number>", api.VersionDetailApi.as_view(), name="api-version"),
    path("versions/<int:number>/download", api.VersionDownloadApi.as_view(), name="api-version-download"),
    path("versions/<int:number>/rollback", api.VersionRollbackApi.as_view(), name="api-version-rollback"),
    # training runs
    path("runs", api.RunListApi.as_view(), name="api-runs"),
    path("runs/<int:run_id>", api.RunDetailApi.as_view(), name="api-run"),
    path("runs/<int:run_id>/progress", api.RunProgressApi.as_view(), name="api-run-progress"),
    path("runs/<int:run_id>/cancel", api.RunCancelApi.as_view(), name="api-run-cancel"),
    path("runs/<int:run_id>/retry", api.RunRetryApi.as_view(), name="api-run-retry"),
    path("runs/<int:run_id>/dataset", api.RunDatasetApi.as_view(), name="api-run-dataset"),
    # retrain batches
    path("batches", api.BatchListApi.as_view(), name="api-batches"),
    path("batches/create", api.BatchCreateApi.as_view(), name="api-batches-create"),
    path("batches/<int:batch_id>", api.BatchDetailApi.as_view(), name="api-batch"),
    path("batches/<int:batch_id>/approve", api.BatchApproveApi.as_view(), name="api-batch-approve"),
    path("batches/<int:batch_id>/reject", api.BatchRejectApi.as_view(), name="api-batch-reject"),
    path("batches/<int:batch_id>/items", api.BatchItemsApi.as_view(), name="api-batch-items"),
    path("batches/<int:batch_id>/exclude", api.BatchExcludeApi.as_view(), name="api-batch-exclude"),
    path("batches/<int:batch_id>/restore", api.BatchRestoreApi.as_view(), name="api-batch-restore"),
    path("batches/<int:batch_id>/export", api.BatchExportApi.as_view(), name="api-batch-export"),
    # audit trail (reviewers)
    path("audit", api.AuditListApi.as_view(), name="api-audit"),
    # catalogue
    path("products/import", api.ProductImportApi.as_view(), name="api-products-import"),
]
