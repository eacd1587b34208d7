"""Pages of flags (``annotation/flags.py``): the annotator's flag action on ``/annotate/`` (the workspace
fragment answers, as after a submit) and the reviewers' "Flagged items" page with its two decisions."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation import flags
from annotation.exceptions import AnnotationError
from annotation.forms import FlagDecisionForm, FlagForm, first_error
from annotation.models import FlagState, ItemFlag
from annotation.views import _error_text, _user, _workspace_response, annotator_only, reviewer_only

FLAGS_PAGE = 50


@annotator_only
@require_POST
def flag(request: HttpRequest) -> HttpResponse:
    form = FlagForm(request.POST)
    if not form.is_valid():
        return _workspace_response(request, flash=first_error(form), flash_level="error", refused=True)
    data = form.cleaned_data
    try:
        item_flag = flags.item_flag(
            annotator=_user(request),
            assignment_id=data["assignment_id"],
            reason_code=data["reason_code"],
            note=data.get("note") or "",
        )
    except (AnnotationError, ValidationError) as exc:
        return _workspace_response(request, flash=_error_text(exc), flash_level="error", refused=True)
    return _workspace_response(
        request,
        flash=f"Flagged ({item_flag.reason_code}): a reviewer will look at the item; it left the queue.",
    )


@reviewer_only
@require_GET
def flagged(request: HttpRequest) -> HttpResponse:
    """Open flags, oldest first, each with its two decisions; the decided ones below, newest first."""
    page = Paginator(flags.flags_list(state=FlagState.OPEN), FLAGS_PAGE).get_page(request.GET.get("page"))
    decided = flags.flags_list().exclude(state=FlagState.OPEN).order_by("-decided_at", "-id")[:20]
    context = {"section": "flags", "page": page, "decided": decided}
    return render(request, "annotation/review/flags.html", context)


@reviewer_only
@require_POST
def flag_decide(request: HttpRequest, flag_id: int) -> HttpResponse:
    form = FlagDecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Flag {flag_id}: {first_error(form)}")
        return redirect("annotation:flags")
    action = form.cleaned_data["action"]
    try:
        decided = flags.flag_decide(reviewer=_user(request), flag_id=flag_id, action=action)
    except ItemFlag.DoesNotExist:
        raise Http404(f"There is no flag {flag_id}.") from None
    except (AnnotationError, ValidationError) as exc:
        messages.error(request, _error_text(exc))
        return redirect("annotation:flags")
    title = decided.task.product.title
    if action == "requeue":
        messages.success(
            request,
            f"“{title}” is back in the queue; the answers it had ({decided.task.completed_count}) are kept.",
        )
    else:
        messages.success(
            request, f"“{title}” was dropped: it will never be labelled or put in a retrain batch."
        )
    return redirect("annotation:flags")
