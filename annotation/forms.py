"""Forms of the annotator and reviewer pages: they parse and validate input, the services decide."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms

from annotation.models import Verdict

PRICE_HELP = "Type a price in dollars, like 129 or 129.99."


def parse_price(raw: str) -> Decimal:
    """A price typed by a person: digits with an optional decimal point or comma, at most 2 decimals."""
    text = raw.strip().lstrip("$").replace(",", ".")
    try:
        price = Decimal(text)
    except InvalidOperation:
        raise forms.ValidationError(f"“{raw}” is not a price. {PRICE_HELP}", code="invalid") from None
    if not price.is_finite() or price <= 0:
        raise forms.ValidationError(f"“{raw}” is not a positive price. {PRICE_HELP}", code="invalid")
    if price.as_tuple().exponent < -2:  # type: ignore[operator]
        raise forms.ValidationError(f"“{raw}” has more than 2 decimals. {PRICE_HELP}", code="invalid")
    if price >= Decimal("10000000000"):
        raise forms.ValidationError(f"“{raw}” is too large to be a price.", code="invalid")
    return price


class PriceField(forms.Field):
    """A typed price (see ``parse_price``); empty is None."""

    def to_python(self, value: Any) -> Decimal | None:
        text = str(value or "").strip()[:64]
        return parse_price(text) if text else None


class VerdictForm(forms.Form):
    """One submit from the annotator page (accept, correct with a price, or reject with a reason)."""

    assignment_id = forms.IntegerField(min_value=1)
    verdict = forms.ChoiceField(choices=Verdict.choices)
    corrected_price = PriceField(required=False)
    reason_code = forms.CharField(required=False, max_length=64)
    # Filled in by the page's script; without JavaScript the server measures from ``shown_at``.
    seconds_spent = forms.FloatField(required=False, min_value=0)
    shown_at = forms.FloatField(required=False, min_value=0)
    client_token = forms.CharField(required=False, max_length=64)
    # Set by the page's script once the annotator confirmed an unusual price (the y key), or ticked
    # without JavaScript; the service decides what is unusual.
    confirm_price = forms.BooleanField(required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        verdict = data.get("verdict")
        if (
            verdict == Verdict.CORRECT
            and data.get("corrected_price") is None
            and "corrected_price" not in self.errors
        ):
            self.add_error("corrected_price", f"A correction needs a price. {PRICE_HELP}")
        if verdict == Verdict.REJECT and not data.get("reason_code"):
            self.add_error("reason_code", "A rejection needs a reason: press r, then the reason's number.")
        return data


class EditForm(forms.Form):
    """A change to one of the annotator's own answers (the history page)."""

    verdict = forms.ChoiceField(choices=Verdict.choices)
    corrected_price = PriceField(required=False)
    reason_code = forms.CharField(required=False, max_length=64)
    confirm_price = forms.BooleanField(required=False)


class AssignmentForm(forms.Form):
    assignment_id = forms.IntegerField(min_value=1)


class FlagForm(forms.Form):
    """A flag from the annotator page: the live item goes to the reviewers (annotation/flags.py)."""

    assignment_id = forms.IntegerField(min_value=1)
    reason_code = forms.CharField(
        max_length=64,
        error_messages={"required": "A flag needs a reason: press f, then the reason's number."},
    )
    note = forms.CharField(required=False, max_length=500)


class FlagDecisionForm(forms.Form):
    action = forms.ChoiceField(choices=[("requeue", "Return to queue"), ("drop", "Drop item")])


class AcknowledgeForm(forms.Form):
    version_number = forms.IntegerField(min_value=1)


class CodebookForm(forms.Form):
    markdown = forms.CharField(
        label="Codebook (markdown)",
        widget=forms.Textarea(attrs={"rows": 24, "spellcheck": "true"}),
        max_length=200_000,
        help_text="Reason codes: list items like “- `too_vague`: the text does not say what it is”.",
    )
    change_note = forms.CharField(
        label="Change note",
        required=False,
        max_length=2000,
        widget=forms.TextInput(attrs={"size": 80}),
        help_text="What changed and why, in a sentence (required from v2 on; annotators see it).",
    )


class AdjudicationForm(forms.Form):
    final_price = PriceField(label="Final price ($)", required=False)
    no_price = forms.BooleanField(required=False, help_text="resolve as rejected: the item gets no price")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("no_price") and data.get("final_price") is None and "final_price" not in self.errors:
            self.add_error(
                "final_price", f"Enter the final price, or resolve the item without one. {PRICE_HELP}"
            )
        return data


def first_error(form: forms.Form) -> str:
    """The first error message of a form, for the one-line notice of the annotator page."""
    for errors in form.errors.values():
        if errors:
            return str(errors[0])
    return "The submission was not valid."
