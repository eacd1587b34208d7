"""Project-wide records that belong to no domain app."""

from __future__ import annotations

from django.db import models


class Heartbeat(models.Model):
    """The last time a process of a given kind (worker, beat) proved it is alive."""

    source = models.CharField(max_length=64, unique=True)
    at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.source} at {self.at:%Y-%m-%d %H:%M:%S}"
