"""Annotation domain models."""

from __future__ import annotations

from django.db import models


class Split(models.TextChoices):
    POOL = "pool", "pool (may be labelled and trained on)"
    TEST = "test", "test (frozen evaluation set)"


class PriceFlag(models.TextChoices):
    OK = "", "in range"
    MISSING = "missing", "no price"
    OUT_OF_RANGE = "out_of_range", "outside 0.50-999.49: kept, never trained on token-level"


class Product(models.Model):
    """A catalogue item. Imported idempotently (upsert by ``external_id``); its split never changes."""

    external_id = models.CharField(max_length=128, unique=True)
    title = models.CharField(max_length=500)
    text = models.TextField(help_text="curated description shown to annotators and to the model")
    category = models.CharField(max_length=200, blank=True, db_index=True)
    price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    price_flag = models.CharField(max_length=16, choices=PriceFlag.choices, default=PriceFlag.OK, blank=True)
    split = models.CharField(max_length=8, choices=Split.choices, default=Split.POOL, db_index=True)
    source = models.CharField(max_length=200, blank=True)
    extra = models.JSONField(default=dict, blank=True, help_text="fields of the import row we do not model")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.external_id}: {self.title[:60]}"
