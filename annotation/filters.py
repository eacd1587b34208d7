"""Query filters of the annotation API's exports (django-filter): validated, documented in the OpenAPI
schema by drf-spectacular's django-filter support; a bad value is a 400 naming the parameter."""

from __future__ import annotations

from typing import Any

import django_filters
from django import forms
from django.core.exceptions import ValidationError

from annotation.models import ResolvedLabel


class StrictBooleanField(forms.NullBooleanField):
    """true/false (or 1/0); absent: no filter. Anything else is a 400 naming the parameter, where
    Django's own field would read it as "absent" and filter nothing."""

    widget = forms.TextInput  # the raw text: NullBooleanSelect turns an unknown value into None

    def to_python(self, value: Any) -> bool | None:  # type: ignore[override]  # None: no filter
        text = str(value).strip().lower() if value is not None else ""
        if text == "":
            return None
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise ValidationError(f"{value!r} is not a boolean: use true or false.", code="invalid")

    def validate(self, value: Any) -> None:
        pass


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class ResolvedLabelFilter(django_filters.FilterSet):
    created_after = django_filters.IsoDateTimeFilter(
        field_name="created",
        lookup_expr="gte",
        help_text="only labels resolved at or after this ISO date-time",
    )
    created_before = django_filters.IsoDateTimeFilter(
        field_name="created", lookup_expr="lt", help_text="only labels resolved before this ISO date-time"
    )
    batched = StrictBooleanFilter(
        method="filter_batched",
        help_text="true: only labels a retrain batch holds; false: only labels no batch holds yet",
    )

    class Meta:
        model = ResolvedLabel
        fields = ["created_after", "created_before", "batched"]

    def filter_batched(self, queryset: Any, name: str, value: bool) -> Any:
        return queryset.filter(batch_item__isnull=not value)
