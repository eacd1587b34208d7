"""The annotation queue's settings, read from Django settings (environment, see ``.env.example``).

Read at call time so that tests can change them with the ``settings`` fixture.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

ROUTINGS = ("entropy", "fifo")


@dataclass(frozen=True)
class AnnotationConfig:
    overlap: int
    overlap_share: float
    gold_rate: float
    gold_tolerance: Decimal
    gold_min_seen: int
    gold_accuracy_min: float
    blind_share: float
    lease_ttl_s: int
    undo_window_s: int
    tolerance_abs: Decimal
    tolerance_rel: Decimal
    routing: str
    confirm_factor: Decimal
    prefetch: bool


def annotation_config() -> AnnotationConfig:
    cfg = AnnotationConfig(
        overlap=int(settings.ANNOTATION_OVERLAP),
        overlap_share=float(settings.ANNOTATION_OVERLAP_SHARE),
        gold_rate=float(settings.ANNOTATION_GOLD_RATE),
        gold_tolerance=Decimal(str(settings.ANNOTATION_GOLD_TOLERANCE)),
        gold_min_seen=int(settings.ANNOTATION_GOLD_MIN_SEEN),
        gold_accuracy_min=float(settings.ANNOTATION_GOLD_ACCURACY_MIN),
        blind_share=float(settings.ANNOTATION_BLIND_SHARE),
        lease_ttl_s=int(settings.ANNOTATION_LEASE_TTL_S),
        undo_window_s=int(settings.ANNOTATION_UNDO_WINDOW_S),
        tolerance_abs=Decimal(str(settings.ANNOTATION_TOLERANCE_ABS)),
        tolerance_rel=Decimal(str(settings.ANNOTATION_TOLERANCE_REL)),
        routing=str(settings.ANNOTATION_ROUTING),
        confirm_factor=Decimal(str(settings.ANNOTATION_CONFIRM_FACTOR)),
        prefetch=bool(settings.ANNOTATION_PREFETCH),
    )
    if cfg.overlap < 1:
        raise ImproperlyConfigured(f"ANNOTATION_OVERLAP={cfg.overlap} must be 1 or more.")
    if not 0 <= cfg.overlap_share <= 1:
        raise ImproperlyConfigured(
            f"ANNOTATION_OVERLAP_SHARE={cfg.overlap_share} must be in [0, 1] (0.2: one item in five twice)."
        )
    if not 0 <= cfg.gold_rate < 1:
        raise ImproperlyConfigured(f"ANNOTATION_GOLD_RATE={cfg.gold_rate} must be in [0, 1).")
    if not 0 <= cfg.blind_share <= 1:
        raise ImproperlyConfigured(f"ANNOTATION_BLIND_SHARE={cfg.blind_share} must be in [0, 1].")
    if not cfg.confirm_factor > 1:
        raise ImproperlyConfigured(
            f"ANNOTATION_CONFIRM_FACTOR={cfg.confirm_factor} must be above 1 (10 = ten times the guess)."
        )
    if cfg.routing not in ROUTINGS:
        raise ImproperlyConfigured(
            f"ANNOTATION_ROUTING={cfg.routing!r} must be one of {', '.join(ROUTINGS)}."
        )
    return cfg


def within_tolerance(price: Decimal, reference: Decimal, cfg: AnnotationConfig | None = None) -> bool:
    """Two prices agree when they differ by less than the absolute OR the relative tolerance."""
    cfg = cfg or annotation_config()
    diff = abs(price - reference)
    return diff <= cfg.tolerance_abs or diff <= cfg.tolerance_rel * abs(reference)
