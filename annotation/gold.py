"""Gold items managed for real: create them from rows (API, page, ``manage.py import_gold``), read the pool.

One row per gold item: ``{"id": <external id of an existing product>, "price": 129.0, "tolerance"?: 0.2}``
or, for a product the catalogue does not have yet, ``{"id"?: ..., "title": ..., "text": ...,
"category"?: ..., "price": ...}``. Every caller goes through ``gold_items_create``; a bad row is reported
with its line (or position) and the reason, never a server error.

Each gold item is served to every annotator once, so an annotator stops being checked once they have
seen the whole pool: ``gold_pool_status`` warns when an active annotator has fewer than
``ANNOTATION_GOLD_POOL_MIN`` gold items left unseen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Count, QuerySet

from annotation.catalogue.curation import PriceError, curate_text, curate_title, parse_price
from annotation.conf import annotation_config
from annotation.models import Annotation, AnnotatorStatus, Assignment, Product, Split, Task, TaskStatus
from training.models import AuditAction, AuditEvent
from webapp.roles import Role

MAX_ROWS = 10_000  # per call: a bigger pool is imported in several files
MAX_TEXT_CHARS = 20_000  # before curation cuts it to CATALOGUE_MAX_TEXT_CHARS


@dataclass(frozen=True)
class GoldRowError:
    line: int  # line of the file, or 1-based position in the API's list
    field: str
    reason: str


@dataclass
class GoldImportResult:
    created: list[Task] = field(default_factory=list)
    existing: list[Task] = field(default_factory=list)  # the product already was a gold item: unchanged
    products_created: int = 0
    # Unanswered regular tasks of the new gold products, taken out of the queue: a gold product is served
    # as a check item only, never labelled as an ordinary one (its answers would be gold answers unscored).
    withdrawn: int = 0
    errors: list[GoldRowError] = field(default_factory=list)


@dataclass(frozen=True)
class _GoldSpec:
    line: int
    external_id: str
    price: Decimal
    tolerance: Decimal | None
    title: str
    text: str
    category: str


def _text(raw: dict[str, Any], name: str, limit: int) -> str:
    value = raw.get(name)
    if value is None:
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError(f"{name} must be text, not {type(value).__name__}")
    text = str(value).strip()
    if "\x00" in text:
        raise ValueError(f"{name} contains a NUL character, which cannot be stored: remove it")
    if len(text) > limit:
        raise ValueError(f"{name} is {len(text)} characters long; at most {limit} are allowed")
    return text


def _parse_row(line: int, raw: Any) -> _GoldSpec | GoldRowError:
    if not isinstance(raw, dict):
        return GoldRowError(line, "", f"expected a JSON object, got {type(raw).__name__}")
    try:
        external_id = _text(raw, "id", 128)
    except ValueError as exc:
        return GoldRowError(line, "id", str(exc))
    try:
        title, text = _text(raw, "title", 500), _text(raw, "text", MAX_TEXT_CHARS)
        category = _text(raw, "category", 200)
    except ValueError as exc:
        return GoldRowError(line, str(exc).split(" ", 1)[0], str(exc))
    if not external_id and not (title and text):
        return GoldRowError(
            line, "id", "give the id of a catalogue product, or a title and text to add a new product"
        )
    if "price" not in raw or raw["price"] in (None, ""):
        return GoldRowError(line, "price", "a gold item needs its true price, e.g. 129.99")
    try:
        curated = parse_price(raw["price"])
    except PriceError as exc:
        return GoldRowError(line, "price", str(exc))
    if curated.value is None or curated.value <= 0:
        return GoldRowError(line, "price", f"{raw['price']!r} is not a positive price in dollars")
    tolerance = None
    if raw.get("tolerance") is not None:
        value = raw["tolerance"]
        try:
            if isinstance(value, bool):
                raise InvalidOperation
            tolerance = Decimal(str(value))
        except (InvalidOperation, ValueError):
            return GoldRowError(line, "tolerance", f"{value!r} is not a number: write 0.2 for ±20%")
        if not (tolerance.is_finite() and 0 < tolerance <= 1):
            return GoldRowError(
                line, "tolerance", f"{value!r} must be a share above 0 and at most 1 (0.2 = ±20%)"
            )
        tolerance = tolerance.quantize(Decimal("0.0001"))
        if tolerance == 0:
            return GoldRowError(line, "tolerance", f"{value!r} rounds to 0: give at least 0.0001")
    if not external_id:  # a new product without an id: a stable one from its content
        digest = hashlib.sha256(f"{title}\n{text}".encode()).hexdigest()[:16]
        external_id = f"gold-{digest}"
    return _GoldSpec(line, external_id, curated.value, tolerance, title, text, category)


def gold_items_create(
    *, rows: Iterable[tuple[int, Any]], actor: User | None, partial: bool = False
) -> GoldImportResult:
    """Make gold items of ``(line, row)`` pairs; bad rows are reported in ``result.errors``.

    ``partial=False`` (the API, the page): one bad row and nothing is written. ``partial=True`` (the
    command): the good rows are written, the bad ones reported. A product that already is a gold item
    is left as it is (``result.existing``), so importing a file twice changes nothing. Test-split
    products are refused: their true prices must never reach annotators.
    """
    rows = list(rows)
    try:
        return _gold_items_create(rows=rows, actor=actor, partial=partial)
    except IntegrityError:
        # Another import made some of these products (or gold items) meanwhile: this pass finds them.
        return _gold_items_create(rows=rows, actor=actor, partial=partial)


def _gold_items_create(*, rows: list[tuple[int, Any]], actor: User | None, partial: bool) -> GoldImportResult:
    from annotation.services import _is_blind, _latest_guesses

    cfg = annotation_config()
    result = GoldImportResult()
    specs: list[_GoldSpec] = []
    seen: dict[str, int] = {}
    for count, (line, raw) in enumerate(rows, start=1):
        if count > MAX_ROWS:
            result.errors.append(GoldRowError(line, "", f"more than {MAX_ROWS} rows: split the file"))
            break
        spec = _parse_row(line, raw)
        if isinstance(spec, GoldRowError):
            result.errors.append(spec)
        elif spec.external_id in seen:
            result.errors.append(
                GoldRowError(line, "id", f"{spec.external_id!r} is already on line {seen[spec.external_id]}")
            )
        else:
            seen[spec.external_id] = line
            specs.append(spec)

    with transaction.atomic():
        products = {p.external_id: p for p in Product.objects.filter(external_id__in=list(seen))}
        good: list[tuple[_GoldSpec, Product | None]] = []
        for spec in specs:
            product = products.get(spec.external_id)
            if product is None and not (spec.title and spec.text):
                result.errors.append(
                    GoldRowError(
                        spec.line,
                        "id",
                        f"no product has the id {spec.external_id!r}: import it first, or give a title "
                        "and text to add it",
                    )
                )
            elif product is not None and product.split != Split.POOL:
                result.errors.append(
                    GoldRowError(
                        spec.line,
                        "id",
                        f"product {spec.external_id!r} is in the frozen test split: its price must never "
                        "be shown to annotators; pick a pool product",
                    )
                )
            else:
                good.append((spec, product))
        result.errors.sort(key=lambda e: e.line)
        if result.errors and not partial:
            return result

        new_products = [
            Product(
                external_id=spec.external_id,
                title=(title := curate_title(spec.title)),
                text=curate_text(
                    spec.title, spec.text, max_chars=settings.CATALOGUE_MAX_TEXT_CHARS, curated_title=title
                ),
                category=spec.category,
                price=spec.price,
                split=Split.POOL,
                source="gold",
            )
            for spec, product in good
            if product is None
        ]
        for product in Product.objects.bulk_create(new_products):
            products[product.external_id] = product
        result.products_created = len(new_products)

        chosen = [(spec, products[spec.external_id]) for spec, _ in good]
        existing = {
            t.product_id: t
            for t in Task.objects.filter(is_gold=True, product__in=[p for _, p in chosen]).select_related(
                "product"
            )
        }
        guesses = _latest_guesses([p.id for _, p in chosen if p.id not in existing], None)
        tasks = []
        for spec, product in chosen:
            if product.id in existing:
                result.existing.append(existing[product.id])
                continue
            tasks.append(
                Task(
                    product=product,
                    guess=guesses.get(product.id),
                    overlap=1,
                    is_gold=True,
                    gold_price=spec.price,
                    gold_tolerance=spec.tolerance if spec.tolerance is not None else cfg.gold_tolerance,
                    is_blind=product.id not in guesses or _is_blind(product, cfg),
                )
            )
        result.created = Task.objects.bulk_create(tasks)
        if result.created:
            _, deleted = Task.objects.filter(
                product__in=[t.product_id for t in result.created],
                is_gold=False,
                status=TaskStatus.OPEN,
                assignments__isnull=True,
            ).delete()
            result.withdrawn = deleted.get("annotation.Task", 0)
            ids = ",".join(str(t.pk) for t in result.created)
            AuditEvent.objects.create(
                action=AuditAction.GOLD_CREATE,
                actor=actor,
                subject=f"gold:{ids}" if len(ids) <= 195 else f"gold:{ids[:180]},…",
                numbers={
                    "created": len(result.created),
                    "existing": len(result.existing),
                    "products_created": result.products_created,
                    "withdrawn": result.withdrawn,
                    "task_ids": [t.pk for t in result.created][:1000],
                },
            )
    return result


# --- reads ---------------------------------------------------------------------------------------------


def gold_items() -> QuerySet[Task]:
    """Every gold item, newest first, with its product and answer count (``n_answers``)."""
    return (
        Task.objects.filter(is_gold=True)
        .select_related("product", "guess")
        .defer("product__extra", "guess__topk")
        .annotate(n_answers=Count("annotations"))
        .order_by("-id")
    )


def gold_correct_counts(tasks: list[Task]) -> dict[int, int]:
    """Per gold task id: how many of its answers were right (within its tolerance)."""
    from annotation.submission import gold_correct

    by_id = {t.pk: t for t in tasks}
    counts = dict.fromkeys(by_id, 0)
    answers = Annotation.objects.filter(task_id__in=list(by_id)).values_list(
        "task_id", "verdict", "corrected_price"
    )
    for task_id, verdict, price in answers:
        counts[task_id] += int(gold_correct(by_id[task_id], verdict, price))
    return counts


def gold_pool_status() -> dict[str, Any]:
    """How much gold each active annotator has left unseen, against ``ANNOTATION_GOLD_POOL_MIN``.

    ``low`` lists the annotators (not paused) with fewer unseen gold items than the minimum; ``warning``
    is the sentence the Gold page shows (None when the pool is large enough).
    """
    minimum = int(settings.ANNOTATION_GOLD_POOL_MIN)
    total = Task.objects.filter(is_gold=True).count()
    annotators = list(
        User.objects.filter(is_active=True, groups__name=Role.ANNOTATOR.value)
        .exclude(id__in=AnnotatorStatus.objects.filter(paused=True).values("user_id"))
        .order_by("username")
        .values_list("id", "username")
    )
    seen = dict(
        Assignment.objects.filter(task__is_gold=True, annotator_id__in=[a for a, _ in annotators])
        .values("annotator_id")
        .annotate(n=Count("id"))
        .values_list("annotator_id", "n")
    )
    low = [
        {"annotator_id": a, "username": name, "unseen": total - seen.get(a, 0)}
        for a, name in annotators
        if total - seen.get(a, 0) < minimum
    ]
    warning = None
    if total < minimum:
        warning = (
            f"Only {total} gold item(s) exist; each annotator should have at least {minimum} left to meet "
            "(ANNOTATION_GOLD_POOL_MIN). Add gold items, or annotators stop being checked."
        )
    elif low:
        names = ", ".join(f"{r['username']} ({r['unseen']} left)" for r in low[:10])
        warning = (
            f"{len(low)} annotator(s) have fewer than {minimum} unseen gold items: {names}. Add gold items, "
            "or they stop being checked once they have seen them all."
        )
    return {"items": total, "min_per_annotator": minimum, "low": low, "warning": warning}
