"""Reviewer pages of the retraining loop: batches, runs (live loss curve), the version leaderboard.

Routes under ``/review/batches/``, ``/review/runs/``, ``/review/versions/`` (the annotation app owns
the other ``/review/`` pages). Every page is reviewer-only (``role_required``); writes are POST with
CSRF and call one service each; domain errors become a message on the page they came from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import ObjectDoesNotExist
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from training import paths, run_settings, selectors, storage
from training.checks import batch_checks, checks_passed
from training.exceptions import TrainingError
from training.models import AuditAction, BatchStatus, Recipe, RunStatus, VersionStatus
from training.services import batches as batch_services
from training.services import evaluation as evaluation_services
from training.services import registry as registry_services
from training.services import runs as run_services
from webapp.roles import Role, role_required

reviewer_only = role_required(Role.REVIEWER)


def _reviewer(request: HttpRequest) -> User:
    """The logged-in reviewer (``role_required`` has let only reviewers in)."""
    assert isinstance(request.user, User)
    return request.user


def _domain_errors(request: HttpRequest, action: Any) -> bool:
    """Run a write; a domain error becomes a message on the page, a missing batch/run/version a 404."""
    try:
        action()
    except ObjectDoesNotExist:
        raise Http404("no such object") from None
    except (TrainingError, PermissionError) as exc:
        messages.error(request, str(exc))
        return False
    return True


# --- batches ------------------------------------------------------------------------------------------


@reviewer_only
@require_GET
def batch_list(request: HttpRequest) -> HttpResponse:
    batches = list(selectors.batches_list()[:200])
    pending = [b for b in batches if b.status == BatchStatus.PENDING_REVIEW]
    return render(
        request,
        "training/batch_list.html",
        {"section": "batches", "batches": batches, "pending": pending, "recipes": Recipe.choices},
    )


@reviewer_only
@require_POST
def batch_create(request: HttpRequest) -> HttpResponse:
    recipe = request.POST.get("recipe") or Recipe.SFT
    holder: dict[str, Any] = {}

    def act() -> None:
        holder["batch"] = batch_services.batch_create_from_resolved(recipe=recipe, actor=_reviewer(request))

    if _domain_errors(request, act):
        messages.success(request, f"Batch {holder['batch'].pk} created with {holder['batch'].size} labels.")
        return redirect("training:batch", batch_id=holder["batch"].pk)
    return redirect("training:batches")


@reviewer_only
@require_GET
def batch_detail(request: HttpRequest, batch_id: int) -> HttpResponse:
    batch = selectors.batch_get(batch_id=batch_id)
    if batch is None:
        raise Http404("no such batch")
    checks = batch_checks(batch)
    try:
        item_filter = selectors.item_filter_from_params(request.GET)
        filter_error = ""
    except selectors.ItemFilterInvalid as exc:
        item_filter, filter_error = selectors.ItemFilter(), str(exc)
    items = selectors.batch_items_filtered(batch=batch, item_filter=item_filter)
    page = Paginator(items, ITEMS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "section": "batches",
        "batch": batch,
        "checks": checks,
        "checks_passed": checks_passed(checks),
        "stats": batch.stats,
        "sample": selectors.batch_sample(batch=batch, size=25),
        "run": selectors.batch_run(batch),
        "trains_on": selectors.batch_trains_on(batch),
        "recipes": Recipe.choices,
        "item_filter": item_filter,
        "filter_error": filter_error,
        "items_page": page,
        "editable": batch.status == BatchStatus.PENDING_REVIEW,
        "items_matching": len(items),
        "filter_query": query.urlencode(),
        "annotators": selectors.batch_annotators(batch=batch),
        "verdicts": selectors.ITEM_VERDICTS,
        "excluded_count": sum(1 for item in items if item.excluded)
        if item_filter.state == "excluded"
        else batch.items.filter(excluded=True).count(),
        "run_choices": run_settings.choices(),
    }
    return render(request, "training/batch_detail.html", context)


ITEMS_PER_PAGE = 50


def _back_to_batch(request: HttpRequest, batch_id: int) -> HttpResponse:
    """Back to the batch page with the filter the reviewer was looking at."""
    url = reverse("training:batch", args=[batch_id])
    query = request.POST.get("filter_query", "")
    return redirect(f"{url}?{query}#items" if query else f"{url}#items")


def _posted_item_ids(request: HttpRequest, batch_id: int) -> list[int]:
    """The ticked items, or every item matching the posted filter (``scope=filtered``)."""
    if request.POST.get("scope") == "filtered":
        batch = selectors.batch_get(batch_id=batch_id)
        if batch is None:
            raise Http404("no such batch")
        params = QueryDict(request.POST.get("filter_query", ""))
        item_filter = selectors.item_filter_from_params(params)
        return [item.pk for item in selectors.batch_items_filtered(batch=batch, item_filter=item_filter)]
    return [int(raw) for raw in request.POST.getlist("item_ids") if raw.isdigit()]


@reviewer_only
@require_POST
def batch_exclude(request: HttpRequest, batch_id: int) -> HttpResponse:
    reason = request.POST.get("reason", "")
    holder: dict[str, Any] = {}

    def act() -> None:
        holder["ids"] = _posted_item_ids(request, batch_id)
        holder["batch"] = batch_services.batch_items_exclude(
            reviewer=_reviewer(request), batch_id=batch_id, item_ids=holder["ids"], reason=reason
        )

    try:
        done = _domain_errors(request, act)
    except selectors.ItemFilterInvalid as exc:
        messages.error(request, str(exc))
        done = False
    if done:
        messages.success(
            request,
            f"{len(holder['ids'])} item(s) excluded; {holder['batch'].size} item(s) left to approve.",
        )
    return _back_to_batch(request, batch_id)


@reviewer_only
@require_POST
def batch_restore(request: HttpRequest, batch_id: int) -> HttpResponse:
    holder: dict[str, Any] = {}

    def act() -> None:
        holder["ids"] = _posted_item_ids(request, batch_id)
        holder["batch"] = batch_services.batch_items_restore(
            reviewer=_reviewer(request), batch_id=batch_id, item_ids=holder["ids"]
        )

    if _domain_errors(request, act):
        messages.success(
            request, f"{len(holder['ids'])} item(s) restored; {holder['batch'].size} item(s) to approve."
        )
    return _back_to_batch(request, batch_id)


@reviewer_only
@require_POST
def batch_approve(request: HttpRequest, batch_id: int) -> HttpResponse:
    recipe = request.POST.get("recipe") or None
    override_reason = request.POST.get("override_reason", "")
    holder: dict[str, Any] = {}

    def act() -> None:
        chosen = run_settings.run_settings_parse(
            {name: request.POST.get(name, "") for name in run_settings.FIELDS}
        )
        holder["run"] = batch_services.batch_approve(
            reviewer=_reviewer(request),
            batch_id=batch_id,
            recipe=recipe,
            override_reason=override_reason,
            run_settings=chosen,
        )

    if _domain_errors(request, act):
        messages.success(request, f"Batch {batch_id} approved: run {holder['run'].pk} is queued.")
        return redirect("training:run", run_id=holder["run"].pk)
    return redirect("training:batch", batch_id=batch_id)


@reviewer_only
@require_POST
def batch_reject(request: HttpRequest, batch_id: int) -> HttpResponse:
    reason = request.POST.get("reason", "")

    def act() -> None:
        batch_services.batch_reject(reviewer=_reviewer(request), batch_id=batch_id, reason=reason)

    if _domain_errors(request, act):
        messages.success(request, f"Batch {batch_id} rejected.")
    return redirect("training:batch", batch_id=batch_id)


# --- runs ---------------------------------------------------------------------------------------------


@reviewer_only
@require_GET
def run_list(request: HttpRequest) -> HttpResponse:
    runs = list(selectors.runs_list()[:200])
    return render(request, "training/run_list.html", {"section": "runs", "runs": runs})


@reviewer_only
@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = selectors.run_get(run_id=run_id)
    if run is None:
        raise Http404("no such run")
    points = [
        {"step": p.step, "loss": p.loss, "learning_rate": p.learning_rate, "tokens_per_s": p.tokens_per_s}
        for p in selectors.run_points(run_id=run.pk)
    ]
    worker_silent_s = run_services.run_worker_silent_s(run)
    context = {
        "section": "runs",
        "run": run,
        "points": points,
        "gate": run.gate,
        "dataset": getattr(run, "dataset", None),
        "worker_silent_s": worker_silent_s,
        # The one retry form: a failed or cancelled run, or a running one whose worker is gone (the
        # bootstrap run of v1 is retried by running bootstrap_champion again).
        "retry_offered": run.batch_id is not None
        and (run.status in (RunStatus.FAILED, RunStatus.CANCELLED) or worker_silent_s is not None),
        "lease_s": settings.RETRAIN_RUN_LEASE_S,
        "stale_s": settings.RETRAIN_RUN_STALE_S,
        "chosen_settings": [
            f"{section}.{name}={value}"
            for section, values in sorted((run.hyperparameters or {}).items())
            if isinstance(values, dict)
            for name, value in sorted(values.items())
        ],
    }
    return render(request, "training/run_detail.html", context)


@reviewer_only
@require_POST
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    if _domain_errors(request, lambda: run_services.run_cancel(reviewer=_reviewer(request), run_id=run_id)):
        messages.success(request, f"Run {run_id}: cancel requested.")
    return redirect("training:run", run_id=run_id)


@reviewer_only
@require_POST
def run_retry(request: HttpRequest, run_id: int) -> HttpResponse:
    if _domain_errors(request, lambda: run_services.run_retry(reviewer=_reviewer(request), run_id=run_id)):
        messages.success(request, f"Run {run_id}: retry started.")
    return redirect("training:run", run_id=run_id)


# --- versions -----------------------------------------------------------------------------------------


@reviewer_only
@require_GET
def leaderboard(request: HttpRequest) -> HttpResponse:
    board = selectors.leaderboard()
    return render(
        request,
        "training/leaderboard.html",
        {
            "section": "versions",
            "rows": board["versions"][::-1],
            "baselines": board["baselines"],
            "audit": selectors.audit_events(limit=30),
            "champion": selectors.champion_get(),
            "statuses": VersionStatus,
        },
    )


@reviewer_only
@require_POST
def version_rollback(request: HttpRequest, number: int) -> HttpResponse:
    version = selectors.version_get(number=number)
    if version is None:
        raise Http404("no such version")
    reason = request.POST.get("reason", "")
    override_reason = request.POST.get("override_reason", "")
    if request.POST.get("confirm") != "yes":
        messages.error(request, f"Tick the confirmation to make {version.name} champion; nothing changed.")
        return redirect("training:versions")

    def act() -> None:
        registry_services.version_rollback(
            reviewer=_reviewer(request), version_id=version.pk, reason=reason, override_reason=override_reason
        )

    if _domain_errors(request, act):
        messages.success(request, f"{version.name} is champion again.")
    return redirect("training:versions")


@reviewer_only
@require_POST
def baselines_score(request: HttpRequest) -> HttpResponse:
    scored = evaluation_services.baselines_evaluate()
    messages.success(request, f"{len(scored)} baseline(s) scored on the test split.")
    return redirect("training:versions")


def _png(path: Path) -> FileResponse:
    if not path.is_file():
        raise Http404("chart not drawn yet")
    return _png_response(path.open("rb"))


def _stored_png(name: str) -> FileResponse:
    try:
        return _png_response(storage.file_open(name))
    except FileNotFoundError:
        raise Http404("chart not drawn yet") from None


def _png_response(handle: Any) -> FileResponse:
    response = FileResponse(handle, content_type="image/png")
    response["Cache-Control"] = "private, max-age=60"
    return response


@reviewer_only
@require_GET
def version_scatter(request: HttpRequest, number: int) -> FileResponse:
    version = selectors.version_get(number=number)
    evaluation = version.evaluations.order_by("-id").first() if version else None
    if evaluation is None or not evaluation.chart_path:
        raise Http404("no evaluation chart for this version")
    return _stored_png(evaluation.chart_path)


@reviewer_only
@require_GET
def baseline_scatter(request: HttpRequest, name: str) -> FileResponse:
    evaluation = next((e for e in selectors.leaderboard()["baselines"] if e.baseline == name), None)
    if evaluation is None or not evaluation.chart_path:
        raise Http404("no chart for this baseline")
    return _stored_png(evaluation.chart_path)


@reviewer_only
@require_GET
def podium(request: HttpRequest) -> FileResponse:
    """MAE of every scored version and baseline (95% intervals), drawn once per set of numbers."""
    from training.engine.charts import podium_chart

    board = selectors.leaderboard()
    entries = []
    for row in board["versions"]:
        evaluation = row["evaluation"]
        if evaluation is None:
            continue
        version = row["version"]
        low, high = evaluation.metrics.get("mae_ci95", [None, None])
        kind = "champion" if version.status == VersionStatus.CHAMPION else "version"
        entries.append(
            {
                "name": version.name,
                "mae": evaluation.metrics["mae"],
                "ci_low": low,
                "ci_high": high,
                "kind": kind,
            }
        )
    for evaluation in board["baselines"]:
        low, high = evaluation.metrics.get("mae_ci95", [None, None])
        entries.append(
            {
                "name": evaluation.baseline.replace("_", " "),
                "mae": evaluation.metrics["mae"],
                "ci_low": low,
                "ci_high": high,
                "kind": "baseline",
            }
        )
    if not entries:
        raise Http404("nothing scored yet")
    key = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:16]
    path = paths.chart_dir() / f"podium-{key}.png"
    if not path.is_file():
        podium_chart(entries, path)
    return _png(path)


# --- audit --------------------------------------------------------------------------------------------

AUDIT_PER_PAGE = 50


@reviewer_only
@require_GET
def audit(request: HttpRequest) -> HttpResponse:
    """Every decision with its actor and object, filtered and paginated (the API: ``/api/v1/audit``)."""
    try:
        audit_filter = selectors.audit_filter_from_params(request.GET)
        filter_error = ""
    except selectors.ItemFilterInvalid as exc:
        audit_filter, filter_error = selectors.AuditFilter(), str(exc)
    page = Paginator(selectors.audit_events_filtered(audit_filter), AUDIT_PER_PAGE).get_page(
        request.GET.get("page")
    )
    for event in page:
        event.object = selectors.audit_object(event)  # type: ignore[attr-defined]
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "training/audit.html",
        {
            "section": "audit",
            "page": page,
            "audit_filter": audit_filter,
            "filter_error": filter_error,
            "filter_query": query.urlencode(),
            "actions": AuditAction.values,
            "object_types": selectors.AUDIT_OBJECT_TYPES,
            "since": request.GET.get("since", ""),
        },
    )
