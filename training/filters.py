"""Query filters of the registry's lists (django-filter): each list's parameters, validated, documented
in the OpenAPI schema by drf-spectacular's django-filter support; a bad value is a 400 naming it."""

from __future__ import annotations

import django_filters

from training.models import BatchStatus, ModelVersion, RetrainBatch, RunStatus, TrainingRun, VersionStatus


class VersionFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(
        choices=VersionStatus.choices, help_text="only versions in this status"
    )
    base_model = django_filters.CharFilter(help_text="only versions on this base model (exact id)")

    class Meta:
        model = ModelVersion
        fields = ["status", "base_model"]


class RunFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=RunStatus.choices, help_text="only runs in this status")

    class Meta:
        model = TrainingRun
        fields = ["status"]


class BatchFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=BatchStatus.choices, help_text="only batches in this status")

    class Meta:
        model = RetrainBatch
        fields = ["status"]
