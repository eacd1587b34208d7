"""Pages: the annotator's one-item-at-a-time workspace (``/annotate/``) and the reviewer pages (``/review/``).

Every action is a plain form POST that works without JavaScript (redirect back to the page). With htmx the
forms post in the background and the answer is the workspace fragment (plus out-of-band side panels), so
the next item appears without a page reload. Views parse input with ``annotation.forms`` and call the
services (writes) and selectors (reads); the decisions are theirs.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotation import gold, quarantine, selectors, services
from annotation.conf import annotation_config
from annotation.consensus import PRICE_MAX, PRICE_MIN
from annotation.exceptions import AnnotationError, AnnotatorPaused, CodebookAckRequired
from annotation.flags import DEFAULT_FLAG_REASONS, flags_of, flags_open_count
from annotation.forms import (
    AcknowledgeForm,
    AdjudicationForm,
    AssignmentForm,
    CodebookForm,
    EditForm,
    VerdictForm,
    first_error,
)
from annotation.models import Annotation, Assignment, PriceFlag, Verdict
from annotation.page_selectors import codebook_changes_html, codebook_panel, codebook_previous
from webapp.roles import Role, role_required

annotator_only = role_required(Role.ANNOTATOR)
reviewer_only = role_required(Role.REVIEWER)

HISTORY_PAGE = 25
HISTORY_FLAGS = 50  # the newest flags the history page lists (all of them: GET /api/v1/annotate/flags)
MAX_SECONDS_SPENT = 3600.0  # a form left open over lunch says nothing about effort
ADJUDICATION_PAGE = 50


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)  # role_required has let only authenticated users through
    return user


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    if isinstance(exc, AnnotationError):
        return exc.message
    return str(exc)


# --- annotator ------------------------------------------------------------------------------------------


def _workspace_context(
    user: User,
    *,
    flash: str = "",
    flash_level: str = "info",
    price_value: str = "",
    price_unconfirmed: bool = False,
    refused: bool = False,
) -> dict[str, Any]:
    """What the workspace shows now: the codebook to acknowledge, a pause notice, nothing, or one item
    (and, with ``ANNOTATION_PREFETCH``, the next one, leased ahead for the page's script).

    ``price_value`` fills the price box: the price of an undone correction, or a correction the service
    refused as unusual (``price_unconfirmed``), which then waits for the annotator's confirmation (y).
    ``refused``: the action that led here was not carried out (the flash says why); the page's script
    names the item whose answer it sent in the background.
    """
    cfg = annotation_config()
    context: dict[str, Any] = {
        "flash": flash,
        "flash_level": flash_level,
        "refused": refused,
        "price_value": price_value,
        "price_unconfirmed": price_unconfirmed,
        # The script asks for a confirmation by the same rules as services.price_unusual.
        "price_min": PRICE_MIN,
        "price_max": PRICE_MAX,
        "confirm_factor": cfg.confirm_factor,
    }
    try:
        assignment = services.lease_next_task(annotator=user)
    except CodebookAckRequired:
        context["state"] = "ack"
    except AnnotatorPaused as exc:
        context.update(state="paused", pause_reason=exc.reason)
    else:
        if assignment is None:
            context["state"] = "empty"
        else:
            context.update(state="item", shown_at=f"{time.time():.3f}", **_item_context(assignment))
            ahead = services.lease_ahead(annotator=user) if cfg.prefetch else None
            if ahead is not None:
                context["ahead"] = _item_context(ahead)
    codebook = codebook_panel(annotator=user)
    context.update(
        codebook=codebook,
        reasons=codebook.reasons if codebook else [],
        flag_reasons=codebook.flag_reasons if codebook else DEFAULT_FLAG_REASONS,
        progress=selectors.annotator_progress(annotator=user),
    )
    return context


def _item_context(assignment: Assignment) -> dict[str, Any]:
    task = assignment.task
    return {
        "assignment": assignment,
        "product": task.product,
        "guess_shown": not task.is_blind and task.guess is not None,
        "guess_price": task.guess.price if task.guess is not None else None,
        # New per render: a double submit of this very form is recognised and counted once.
        "client_token": secrets.token_urlsafe(16),
    }


def _workspace_response(
    request: HttpRequest,
    *,
    flash: str = "",
    flash_level: str = "info",
    price_value: str = "",
    price_unconfirmed: bool = False,
    refused: bool = False,
) -> HttpResponse:
    """htmx: the fresh fragment. Plain browser: back to the page (post/redirect/get), notice as a message."""
    if _is_htmx(request):
        context = _workspace_context(
            _user(request),
            flash=flash,
            flash_level=flash_level,
            price_value=price_value,
            price_unconfirmed=price_unconfirmed,
            refused=refused,
        )
        return render(request, "annotation/_fragment.html", context)
    if flash:
        messages.add_message(request, messages.ERROR if flash_level == "error" else messages.INFO, flash)
    return HttpResponseRedirect(reverse("annotation:annotate"), status=303)


@annotator_only
@require_GET
def annotate(request: HttpRequest) -> HttpResponse:
    return render(request, "annotation/annotate.html", _workspace_context(_user(request)))


@annotator_only
@require_GET
def workspace(request: HttpRequest) -> HttpResponse:
    if not _is_htmx(request):
        return redirect("annotation:annotate")
    return render(request, "annotation/_fragment.html", _workspace_context(_user(request)))


def _seconds_spent(data: dict[str, Any]) -> float:
    seconds = data.get("seconds_spent")
    if seconds is None and data.get("shown_at"):  # no JavaScript: measure from the server's render time
        seconds = time.time() - float(data["shown_at"])
    return min(max(float(seconds or 0.0), 0.0), MAX_SECONDS_SPENT)


@annotator_only
@require_POST
def submit(request: HttpRequest) -> HttpResponse:
    form = VerdictForm(request.POST)
    if not form.is_valid():
        return _workspace_response(request, flash=first_error(form), flash_level="error", refused=True)
    data = form.cleaned_data
    try:
        annotation = services.annotation_submit(
            annotator=_user(request),
            assignment_id=data["assignment_id"],
            verdict=data["verdict"],
            corrected_price=data.get("corrected_price"),
            reason_code=data.get("reason_code") or "",
            seconds_spent=_seconds_spent(data),
            client_token=data.get("client_token") or "",
            confirm_price=bool(data.get("confirm_price")),
        )
    except ValidationError as exc:
        reason = _unconfirmed_reason(exc)
        if reason is None:
            return _workspace_response(request, flash=_error_text(exc), flash_level="error", refused=True)
        flash = f"{reason} If it is right, press y to save it anyway (or tick “The price is right”)."
        typed = f"{data['corrected_price']:.2f}"
        return _workspace_response(
            request, flash=flash, flash_level="error", price_value=typed, price_unconfirmed=True, refused=True
        )
    except AnnotationError as exc:
        return _workspace_response(request, flash=_error_text(exc), flash_level="error", refused=True)
    feedback = getattr(annotation, "gold_feedback", None)  # a check item answered wrongly: say so
    if feedback:
        return _workspace_response(
            request, flash=f"Saved: {data['verdict']}. {feedback['message']}", flash_level="error"
        )
    if annotation.price_flag == PriceFlag.OUT_OF_RANGE:
        return _workspace_response(
            request,
            flash=f"Saved: {data['verdict']}, ${annotation.corrected_price:,.2f}, flagged: outside "
            f"${PRICE_MIN}–${PRICE_MAX}, never trained on.",
        )
    return _workspace_response(request, flash=f"Saved: {data['verdict']}.")


def _unconfirmed_reason(exc: ValidationError) -> str | None:
    """The reason text when the service refused an unusual price for want of a confirmation."""
    for error in getattr(exc, "error_dict", {}).get("corrected_price", []):
        if error.code == services.PRICE_UNCONFIRMED and error.params:
            return str(error.params["reason"])
    return None


@annotator_only
@require_POST
def skip(request: HttpRequest) -> HttpResponse:
    form = AssignmentForm(request.POST)
    if not form.is_valid():
        return _workspace_response(request, flash=first_error(form), flash_level="error", refused=True)
    try:
        services.assignment_skip(annotator=_user(request), assignment_id=form.cleaned_data["assignment_id"])
    except (AnnotationError, ValidationError) as exc:
        return _workspace_response(request, flash=_error_text(exc), flash_level="error", refused=True)
    return _workspace_response(request, flash="Skipped: the item moved to the end of your queue.")


@annotator_only
@require_POST
def undo(request: HttpRequest) -> HttpResponse:
    # Undo takes back the last action: a skip (the skipped item returns) or else the last annotation.
    try:
        if services.assignment_unskip_last(annotator=_user(request)) is not None:
            return _workspace_response(request, flash="Undone: the item you skipped is back.")
        undone = services.annotation_undo_last(annotator=_user(request))
    except (AnnotationError, ValidationError) as exc:
        return _workspace_response(request, flash=_error_text(exc), flash_level="error", refused=True)
    if undone.verdict == Verdict.CORRECT and undone.corrected_price is not None:
        price = f"{undone.corrected_price:.2f}"
        flash = f"Undone: your last item is back with your price ${price} in the box (Esc leaves it)."
        return _workspace_response(request, flash=flash, price_value=price)
    what = "accepted the guess" if undone.verdict == Verdict.ACCEPT else f"rejected it ({undone.reason_code})"
    return _workspace_response(request, flash=f"Undone: your last item is back; you had {what}.")


@annotator_only
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    """The annotator's own answers, newest first; those whose item is still open can be changed. Then
    the items they flagged (newest first) and where each flag stands."""
    user = _user(request)
    rows = selectors.annotations_of(annotator=user).select_related("task__guess")
    page = Paginator(rows, HISTORY_PAGE).get_page(request.GET.get("page"))
    for annotation in page:
        annotation.editable = services.annotation_editable(annotation)  # type: ignore[attr-defined]
        version = annotation.codebook_version
        annotation.reasons = version.reason_codes if version is not None else []  # type: ignore[attr-defined]
    flags = flags_of(annotator=user)
    context = {
        "page": page,
        "verdicts": Verdict.choices,
        "flags": list(flags[:HISTORY_FLAGS]),
        "flags_total": flags.count(),
    }
    return render(request, "annotation/history.html", context)


@annotator_only
@require_POST
def history_edit(request: HttpRequest, annotation_id: int) -> HttpResponse:
    back = reverse("annotation:history") + (f"?page={request.GET['page']}" if request.GET.get("page") else "")
    form = EditForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Not changed: {first_error(form)}")
        return HttpResponseRedirect(back)
    data = form.cleaned_data
    try:
        annotation = services.annotation_edit(
            annotator=_user(request),
            annotation_id=annotation_id,
            verdict=data["verdict"],
            corrected_price=data.get("corrected_price") if data["verdict"] == Verdict.CORRECT else None,
            reason_code=(data.get("reason_code") or "") if data["verdict"] == Verdict.REJECT else "",
            confirm_price=bool(data.get("confirm_price")),
        )
    except Annotation.DoesNotExist:
        raise Http404("You have no such annotation.") from None
    except ValidationError as exc:
        reason = _unconfirmed_reason(exc)
        if reason is not None:
            messages.error(
                request, f"Not changed: {reason} If it is right, tick “The price is right” and save."
            )
        else:
            messages.error(request, f"Not changed: {_error_text(exc)}")
        return HttpResponseRedirect(back)
    except AnnotationError as exc:
        messages.error(request, f"Not changed: {_error_text(exc)}")
        return HttpResponseRedirect(back)
    price = f" (${annotation.corrected_price:,.2f})" if annotation.corrected_price is not None else ""
    messages.success(
        request, f"Changed: “{annotation.task.product.title}” is now {annotation.verdict}{price}."
    )
    return HttpResponseRedirect(back)


@annotator_only
@require_POST
def acknowledge(request: HttpRequest) -> HttpResponse:
    form = AcknowledgeForm(request.POST)
    if not form.is_valid():
        return _workspace_response(request, flash=first_error(form), flash_level="error", refused=True)
    number = form.cleaned_data["version_number"]
    try:
        services.codebook_acknowledge(annotator=_user(request), version_number=number)
    except (AnnotationError, ValidationError) as exc:
        return _workspace_response(request, flash=_error_text(exc), flash_level="error", refused=True)
    return _workspace_response(request, flash=f"Codebook v{number} acknowledged.")


# --- reviewer -------------------------------------------------------------------------------------------

CODEBOOK_STARTER = """# Pricing codebook

Accept the guess when it is within 10% of the price you would put on the product.

## Reject reasons
- `not-a-product`: the text describes no sellable item
- `bundle`: several items, no single price
- `unclear`: the text does not say enough to price it

## Flag reasons
- `broken-text`: the text is cut off, garbled or mixes several products
- `wrong-category`: the category does not match the product
- `duplicate`: the same product appears as another item
- `other`: something else a reviewer should see (say what in the note)
"""


@reviewer_only
@require_GET
def review_home(request: HttpRequest) -> HttpResponse:
    from training.models import BatchStatus, RetrainBatch

    context = {
        "section": "home",
        "stats": selectors.queue_stats(),
        "codebook": selectors.codebook_current(),
        "pending_batches": RetrainBatch.objects.filter(status=BatchStatus.PENDING_REVIEW).count(),
        "gold_pool": gold.gold_pool_status(),
        "quarantined": sum(row["held"] for row in quarantine.quarantine_summary()),
        "flags_open": flags_open_count(),
    }
    return render(request, "annotation/review/home.html", context)


@reviewer_only
@require_http_methods(["GET", "POST"])
def codebook_edit(request: HttpRequest) -> HttpResponse:
    current = selectors.codebook_current()
    if request.method == "POST":
        form = CodebookForm(request.POST)
        if form.is_valid():
            try:
                version = services.codebook_publish(
                    author=_user(request),
                    markdown=form.cleaned_data["markdown"],
                    change_note=form.cleaned_data["change_note"],
                )
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    form.add_error(field if field in form.fields else "markdown", errors)
            else:
                n_reasons, n_flags = len(version.reason_codes), len(version.flag_codes)
                flag_reasons = f"{n_flags} flag reason(s)" if n_flags else "the default flag reasons"
                messages.success(
                    request,
                    f"Published codebook v{version.number} with {n_reasons} reason code(s) and "
                    f"{flag_reasons}; annotators acknowledge it before their next item.",
                )
                return redirect("annotation:codebook")
    else:
        form = CodebookForm(initial={"markdown": current.markdown if current else CODEBOOK_STARTER})
    context = {
        "section": "codebook",
        "form": form,
        "current": current,
        "current_html": selectors.codebook_render(current),
        "versions": selectors.codebook_versions(),
    }
    return render(request, "annotation/review/codebook.html", context)


@reviewer_only
@require_GET
def codebook_version(request: HttpRequest, number: int) -> HttpResponse:
    version = selectors.codebook_get(number=number)
    if version is None:
        raise Http404(f"There is no codebook v{number}.")
    against_raw = request.GET.get("against", "")
    against = (
        selectors.codebook_get(number=int(against_raw))
        if against_raw.isdigit()
        else codebook_previous(version)
    )
    context = {
        "section": "codebook",
        "version": version,
        "html": selectors.codebook_render(version),
        "against": against,
        "diff_html": codebook_changes_html(against, version) if against else None,
        "versions": selectors.codebook_versions(),
    }
    return render(request, "annotation/review/codebook_version.html", context)


@reviewer_only
@require_GET
def adjudication(request: HttpRequest) -> HttpResponse:
    tasks = list(selectors.adjudication_queue()[:ADJUDICATION_PAGE])
    context = {"section": "adjudication", "tasks": tasks, "page_size": ADJUDICATION_PAGE}
    return render(request, "annotation/review/adjudication.html", context)


@reviewer_only
@require_POST
def adjudicate(request: HttpRequest, task_id: int) -> HttpResponse:
    form = AdjudicationForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Task {task_id}: {first_error(form)}")
        return redirect("annotation:adjudication")
    price = None if form.cleaned_data["no_price"] else form.cleaned_data["final_price"]
    try:
        label = services.adjudication_resolve(reviewer=_user(request), task_id=task_id, price=price)
    except (AnnotationError, ValidationError) as exc:
        messages.error(request, f"Task {task_id}: {_error_text(exc)}")
    else:
        shown = f"${label.price}" if label.price is not None else "no price (rejected)"
        messages.success(request, f"Task {task_id} resolved: {shown}.")
    return redirect("annotation:adjudication")


@reviewer_only
@require_GET
def agreement(request: HttpRequest) -> HttpResponse:
    anchoring = selectors.blind_vs_shown_report()
    context = {
        "section": "agreement",
        "report": selectors.agreement_report(),
        "anchoring": anchoring,
        "anchoring_rows": [("Guess shown", anchoring["shown"]), ("Blind (guess hidden)", anchoring["blind"])],
    }
    return render(request, "annotation/review/agreement.html", context)


@reviewer_only
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    context = {
        "section": "queue",
        "stats": selectors.queue_stats(),
        "paused": selectors.annotators_paused(),
        "quarantine": quarantine.quarantine_summary(),
    }
    return render(request, "annotation/review/queue.html", context)


@reviewer_only
@require_POST
def quarantine_decide(request: HttpRequest, user_id: int, decision: str) -> HttpResponse:
    annotator = get_object_or_404(User, id=user_id)
    if decision == "release":
        result = quarantine.quarantine_release(reviewer=_user(request), annotator=annotator)
        messages.success(
            request,
            f"Released {result.annotations} held annotation(s) of {annotator.get_username()} "
            f"({result.labels} label(s)): they can be batched.",
        )
    else:
        result = quarantine.quarantine_drop(reviewer=_user(request), annotator=annotator)
        messages.success(
            request,
            f"Dropped {result.annotations} held annotation(s) of {annotator.get_username()} "
            f"({result.labels} label(s)); {result.requeued} product(s) queued again.",
        )
    return redirect("annotation:queue")


@reviewer_only
@require_POST
def unpause(request: HttpRequest, user_id: int) -> HttpResponse:
    annotator = get_object_or_404(User, id=user_id)
    services.annotator_unpause(reviewer=_user(request), annotator=annotator)
    messages.success(request, f"{annotator.get_username()} can label again.")
    return redirect("annotation:queue")


GOLD_PAGE = 50


@reviewer_only
@require_http_methods(["GET", "POST"])
def gold_page(request: HttpRequest) -> HttpResponse:
    """The gold pool: its items with their answers, a warning when it runs low, a form to add more."""
    errors: list[str] = []
    pasted = ""
    if request.method == "POST":
        pasted = request.POST.get("lines", "").strip()
        if pasted:
            rows: list[tuple[int, Any]] = []
            for number, line in enumerate(pasted.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    rows.append((number, json.loads(line)))
                except ValueError as exc:
                    errors.append(f"line {number}: malformed JSON: {exc}")
        else:
            one = {k: request.POST.get(k, "").strip() for k in ("id", "price", "tolerance")}
            rows = [(1, {k: v for k, v in one.items() if v})]
        if not errors:
            result = gold.gold_items_create(rows=rows, actor=_user(request), partial=False)
            errors = [
                f"line {e.line}: {e.field + ': ' if e.field else ''}{e.reason}" if pasted else e.reason
                for e in result.errors
            ]
            if not errors:
                messages.success(
                    request,
                    f"{len(result.created)} gold item(s) added"
                    + (f", {len(result.existing)} already gold" if result.existing else "")
                    + ".",
                )
                return redirect("annotation:gold")
    paginator = Paginator(gold.gold_items(), GOLD_PAGE)
    page = paginator.get_page(request.GET.get("page"))
    tasks = list(page.object_list)
    correct = gold.gold_correct_counts(tasks)
    context = {
        "section": "gold",
        "page": page,
        "rows": [(t, correct.get(t.pk, 0)) for t in tasks],
        "pool": gold.gold_pool_status(),
        "errors": errors,
        "pasted": pasted,
        "form_values": request.POST if request.method == "POST" and not pasted else {},
    }
    return render(request, "annotation/review/gold.html", context, status=400 if errors else 200)
