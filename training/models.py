"""Retraining domain: model versions (batches, runs and evaluations are added by the pipeline)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class VersionStatus(models.TextChoices):
    CANDIDATE = "candidate"
    CHAMPION = "champion"
    REJECTED = "rejected"
    ARCHIVED = "archived"


class ModelVersion(models.Model):
    """A LoRA adapter on a base model: ``v1, v2, …``. Exactly one champion at any time."""

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
