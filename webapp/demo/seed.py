"""Seed the demo: users with printed logins, a synthetic catalogue, codebook v1, guesses and tasks.

Every step is idempotent, so ``./dev demo`` can be run again on the same data directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from webapp.roles import Role
from webapp.services import user_create_with_role

log = logging.getLogger(__name__)

DEMO_PRODUCTS = 600
DEMO_SEED = 7
GOLD_ITEMS = 12


@dataclass(frozen=True)
class DemoLogin:
    username: str
    password: str
    role: Role


DEMO_LOGINS = (
    DemoLogin("annotator", "annotate-demo", Role.ANNOTATOR),
    DemoLogin("annotator2", "annotate-demo", Role.ANNOTATOR),
    DemoLogin("reviewer", "review-demo", Role.REVIEWER),
    DemoLogin("client", "client-demo", Role.CLIENT),
)


def seed_users() -> dict[str, str]:
    """The demo users; returns the API token of the client user."""
    tokens = {}
    for login in DEMO_LOGINS:
        _, token = user_create_with_role(
            username=login.username, role=login.role, password=login.password, with_token=True
        )
        tokens[login.username] = token or ""
    return tokens


def seed_catalogue() -> int:
    from annotation.catalogue.services import products_import
    from annotation.catalogue.synthetic import write_jsonl
    from annotation.models import Product

    if Product.objects.exists():
        return 0
    path = write_jsonl(Path(settings.DATA_DIR) / "demo-catalogue.jsonl", DEMO_PRODUCTS, seed=DEMO_SEED)
    result = products_import(path=path)
    log.info("demo catalogue: %s", result.summary)
    return result.imported


def seed_codebook() -> None:
    from annotation.models import CodebookVersion
    from annotation.services import codebook_publish

    if CodebookVersion.objects.exists():
        return
    reviewer = User.objects.get(username="reviewer")
    text = (Path(__file__).parent / "codebook_v1.md").read_text(encoding="utf-8")
    codebook_publish(author=reviewer, markdown=text)


@transaction.atomic
def seed_baseline_guesses_and_tasks() -> int:
    """Until a model exists, guesses come from the TF-IDF ridge baseline (marked as such).

    The baseline is fitted on a small share of pool products whose price is known (the demo's "seed
    labels"); gold items are a few of those with a known price.
    """
    from annotation.models import Guess, Product, Split
    from annotation.services import gold_tasks_create, guesses_record_bulk, tasks_create_for_products
    from training.engine.baselines import tfidf_ridge

    if Guess.objects.exists():
        return 0
    pool = list(Product.objects.filter(split=Split.POOL).order_by("id"))
    known = [p for p in pool if p.price is not None][:150]
    model = tfidf_ridge([p.text for p in known], [float(p.price) for p in known])  # type: ignore[arg-type]
    prices = model.predict([p.text for p in pool])
    guesses_record_bulk(
        rows=[
            {"product_id": p.id, "price": Decimal(f"{price:.2f}")}
            for p, price in zip(pool, prices, strict=True)
        ],
        source=f"baseline:{model.name}",
    )
    gold_tasks_create(products=known[:GOLD_ITEMS])
    return tasks_create_for_products(products=[p.id for p in pool[GOLD_ITEMS:]])


def seed_all() -> dict[str, str]:
    tokens = seed_users()
    seed_catalogue()
    seed_codebook()
    seed_baseline_guesses_and_tasks()
    return tokens
