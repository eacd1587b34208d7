from __future__ import annotations

from decimal import Decimal

import pytest

from annotation import selectors, services
from annotation.models import Guess, Product, Task


@pytest.mark.django_db
def test_it_leases_and_submits(annotator) -> None:
    p = Product.objects.create(external_id="x1", title="t", text="t")
    services.guesses_record_bulk(rows=[{"product_id": p.id, "price": "12.5", "entropy": 1.0}], source="baseline:mean")
    assert services.tasks_create_for_products(products=[p]) == 1
    a = services.lease_next_task(annotator=annotator)
    assert a is not None
    assert services.lease_next_task(annotator=annotator).id == a.id
    ann = services.annotation_submit(
        annotator=annotator, assignment_id=a.id, verdict="correct", corrected_price="20", seconds_spent=3, client_token="t1"
    )
    assert ann.corrected_price == Decimal("20.00")
    assert Task.objects.get().status == "resolved"
    assert selectors.annotator_progress(annotator=annotator)["done_today"] == 1
    assert Guess.objects.count() == 1
