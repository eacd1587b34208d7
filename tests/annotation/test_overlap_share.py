"""Consensus per share: ANNOTATION_OVERLAP_SHARE of items get two labels, so agreement and adjudication
have data without doubling the work."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured

from annotation import services
from annotation.models import Task
from annotation.selectors import agreement_report
from tests.annotation.queue_helpers import make_products

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings: Any) -> None:
    settings.ANNOTATION_OVERLAP = 1
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0


def _queue(n: int) -> list[Task]:
    products = make_products(n)
    services.guesses_record_bulk(rows=[{"product_id": p.id, "price": "100"} for p in products], source="m")
    services.tasks_create_for_products(products=products)
    return list(Task.objects.filter(product__in=products, is_gold=False))


def test_a_fifth_of_the_items_get_two_labels_and_the_rest_one(settings: Any) -> None:
    settings.ANNOTATION_OVERLAP_SHARE = 0.2
    tasks = _queue(1000)
    doubled = sum(t.overlap == 2 for t in tasks)
    assert {t.overlap for t in tasks} == {1, 2}
    assert 160 <= doubled <= 240, doubled  # a stable hash of the product, not exactly 200


def test_the_share_is_stable_per_product_and_off_by_default(settings: Any) -> None:
    assert settings.ANNOTATION_OVERLAP_SHARE == 0.0
    assert {t.overlap for t in _queue(50)} == {1}
    settings.ANNOTATION_OVERLAP_SHARE = 1.0
    assert {t.overlap for t in _queue(50)} == {2}
    settings.ANNOTATION_OVERLAP_SHARE = 0.5
    products = make_products(40)
    services.guesses_record_bulk(rows=[{"product_id": p.id, "price": "100"} for p in products], source="m")
    services.tasks_create_for_products(products=products)
    first = dict(Task.objects.filter(product__in=products).values_list("product_id", "overlap"))
    Task.objects.filter(product__in=products).delete()
    services.tasks_create_for_products(products=products)
    assert dict(Task.objects.filter(product__in=products).values_list("product_id", "overlap")) == first


def test_agreement_has_data_when_two_annotators_label_the_queue(
    settings: Any, annotator: User, annotator2: User
) -> None:
    settings.ANNOTATION_OVERLAP_SHARE = 0.2
    tasks = _queue(60)
    shared = sum(t.overlap == 2 for t in tasks)
    assert shared >= 5
    done = 0
    for user, price in ((annotator, "100"), (annotator2, "104")):
        while (assignment := services.lease_next_task(annotator=user)) is not None:
            services.annotation_submit(
                annotator=user,
                assignment_id=assignment.id,
                verdict="correct",
                corrected_price=price,
                seconds_spent=2,
            )
            done += 1
    assert done == len(tasks) + shared  # one label per item, two on the shared ones: not double the work
    report = agreement_report()
    assert report["items_with_two_or_more_prices"] == shared
    assert report["alpha"] is not None


def test_a_share_outside_0_to_1_is_refused_with_the_setting_named(settings: Any) -> None:
    settings.ANNOTATION_OVERLAP_SHARE = 1.5
    with pytest.raises(ImproperlyConfigured, match=r"ANNOTATION_OVERLAP_SHARE=1\.5"):
        _queue(1)


def test_the_demo_seeds_with_a_fifth_of_the_items_labelled_twice(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.conf import settings as live

    from webapp.management.commands import demo

    seen: list[float] = []
    monkeypatch.setattr(demo, "call_command", lambda *a, **k: None)
    monkeypatch.setattr(demo, "seed_all", lambda: seen.append(live.ANNOTATION_OVERLAP_SHARE) or {})
    monkeypatch.delenv("ANNOTATION_OVERLAP_SHARE", raising=False)
    demo.Command().handle(no_serve=True, host="127.0.0.1", port=0)
    monkeypatch.setenv("ANNOTATION_OVERLAP_SHARE", "0.5")
    settings.ANNOTATION_OVERLAP_SHARE = 0.5  # what settings.py reads from that environment
    demo.Command().handle(no_serve=True, host="127.0.0.1", port=0)
    assert seen == [0.2, 0.5]  # the demo's default, then the environment's choice
