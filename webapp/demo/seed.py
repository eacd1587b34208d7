"""Seed the demo: users with printed logins, a synthetic catalogue, codebook v1, guesses and tasks.

Every step is idempotent, so ``./dev demo`` can be run again on the same data directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User

from webapp.roles import Role
from webapp.services import user_create_with_role

log = logging.getLogger(__name__)

# 1,200 products: about 250 go to the test split and ~540 open tasks make the first batch, so one day of
# correct labels gives a v2 the gate can tell apart from v1. At 800 (144 test items, a 244-label first batch)
# the gate's 95% interval on the MAE difference was ±$20 and v2 was rejected (docs/learning-loop.md).
DEMO_PRODUCTS = 1200
DEMO_SEED = 7
# v1's named seed set: the catalogue prices of this many pool products (labelled, never queued).
DEMO_SEED_LABELS = 400
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
            username=login.username,
            role=login.role,
            password=login.password,
            with_token=True,
            exist_ok=True,  # the demo seeds the same data dir again
            demo_password=True,  # published demo logins, shorter than the validators ask
        )
        tokens[login.username] = token or ""
    return tokens


def seed_catalogue() -> int:
    from annotation.catalogue.services import products_import
    from annotation.models import Product
    from training.engine.synthetic import write_jsonl

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


def seed_labels_file() -> Path:
    """Write the demo's seed set: the first ``DEMO_SEED_LABELS`` priced pool products, ``{"id", "price"}``."""
    import json

    from annotation.models import Product, Split

    path = Path(settings.DATA_DIR) / "demo-seed-labels.jsonl"
    rows = Product.objects.filter(split=Split.POOL, price__isnull=False).order_by("id")[:DEMO_SEED_LABELS]
    path.write_text(
        "".join(json.dumps({"id": p.external_id, "price": float(p.price or 0)}) + "\n" for p in rows)
    )
    return path


def seed_champion() -> str:
    """Build the tiny base from the catalogue texts and train ``v1`` on the seed set (once): champion."""
    from annotation.models import SeedLabel
    from training.models import ModelVersion, VersionStatus
    from training.services.bootstrap import version_bootstrap_v1

    if ModelVersion.objects.filter(status=VersionStatus.CHAMPION).exists() or SeedLabel.objects.exists():
        return version_bootstrap_v1().name
    return version_bootstrap_v1(seed_labels=seed_labels_file()).name


def seed_guesses_and_tasks() -> int:
    """Priced products outside the seed set become gold items; the champion guesses the rest of the pool
    (queued for annotation)."""
    from annotation.models import Product, Split, Task
    from annotation.services import gold_tasks_create
    from training.services.guesses import champion_guess_products

    if Task.objects.exists():
        return 0
    known = Product.objects.filter(split=Split.POOL, price__isnull=False, seed_label__isnull=True).order_by(
        "-id"
    )[:GOLD_ITEMS]
    # Gold first, so that the task queue never gets a second, ordinary task for a gold product.
    gold_tasks_create(products=list(known))
    return champion_guess_products()


def seed_all() -> dict[str, str]:
    tokens = seed_users()
    seed_catalogue()
    seed_codebook()
    seed_champion()
    seed_guesses_and_tasks()
    return tokens
