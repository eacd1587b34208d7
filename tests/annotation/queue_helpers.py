"""Test data for the annotation backend tests: products with guesses, queued as tasks."""

from __future__ import annotations

from decimal import Decimal
from itertools import count

from django.contrib.auth.models import User

from annotation import services
from annotation.models import Assignment, Product, Task

_ids = count(1)


def make_products(n: int, *, price: str | None = "100.00", split: str = "pool") -> list[Product]:
    return [
        Product.objects.create(
            external_id=f"p-{next(_ids)}",
            title=f"Product {i}",
            text=f"A product description number {i}.",
            category="Tools",
            price=Decimal(price) if price is not None else None,
            split=split,
        )
        for i in range(n)
    ]


def make_tasks(
    n: int,
    *,
    overlap: int = 1,
    guess: str = "100.00",
    entropies: list[float] | None = None,
    blind: bool | None = False,
) -> list[Task]:
    """``n`` tasks, in creation order; ``blind=None`` keeps the configured blind share."""
    products = make_products(n)
    rows = [
        {"product_id": p.id, "price": guess, "entropy": entropies[i] if entropies else 0.0}
        for i, p in enumerate(products)
    ]
    services.guesses_record_bulk(rows=rows, source="baseline:mean")
    services.tasks_create_for_products(products=products, overlap=overlap)
    tasks = list(Task.objects.filter(product__in=products).order_by("id"))
    if blind is not None:
        Task.objects.filter(id__in=[t.id for t in tasks]).update(is_blind=blind)
        for t in tasks:
            t.is_blind = blind
    return tasks


def make_gold(n: int, *, price: str = "50.00", guess: str = "50.00") -> list[Task]:
    products = make_products(n, price=price)
    services.guesses_record_bulk(
        rows=[{"product_id": p.id, "price": guess} for p in products], source="model"
    )
    services.gold_tasks_create(products=products)
    tasks = list(Task.objects.filter(product__in=products, is_gold=True).order_by("id"))
    Task.objects.filter(id__in=[t.id for t in tasks]).update(is_blind=False)
    return tasks


def lease(user: User) -> Assignment:
    assignment = services.lease_next_task(annotator=user)
    assert assignment is not None, "the queue was empty"
    return assignment


def submit(
    user: User, assignment: Assignment, verdict: str = "accept", price: str | None = None, **kw: object
):
    return services.annotation_submit(
        annotator=user,
        assignment_id=assignment.id,
        verdict=verdict,
        corrected_price=price,
        reason_code=str(kw.pop("reason_code", "")),
        seconds_spent=float(kw.pop("seconds_spent", 2.0)),  # type: ignore[arg-type]
        client_token=str(kw.pop("client_token", "")),
        confirm_price=bool(kw.pop("confirm_price", False)),
    )
