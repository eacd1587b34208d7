"""Codebook text: reason codes parsed from the markdown, sanitized rendering, diffs. Pure functions.

Reject reasons are the bullet items of the first section whose heading mentions "reason" but not "flag";
flag reasons (an item sent to reviewers, ``annotation/flags.py``) those of the first section whose heading
mentions "flag". Both are written as ``- code: what it means`` (code: lowercase letters, digits, ``-`` or
``_``; backticks allowed)::

    ## Reject reasons
    - `not-a-product`: the text describes no sellable item
    - bundle: several items, no single price

    ## Flag reasons
    - `broken-text`: the text is cut off, garbled or not about one product
"""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Callable

import markdown as md
import nh3

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_REASON = re.compile(r"^\s*[-*+]\s+`?([a-z0-9][a-z0-9_-]{0,63})`?\s*[:—–-]\s*(.+?)\s*$")

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "strong", "em", "b", "i",
    "code", "pre", "blockquote", "a", "table", "thead", "tbody", "tr", "th", "td", "del", "ins", "span",
}  # fmt: skip


def _section_codes(markdown_text: str, wanted: Callable[[str], bool]) -> list[dict[str, str]]:
    """The ``- code: label`` items of the first section whose heading (lower-cased) is ``wanted``."""
    codes: list[dict[str, str]] = []
    in_section, level = False, 0
    for line in markdown_text.splitlines():
        heading = _HEADING.match(line.strip())
        if heading:
            if in_section and len(heading.group(1)) <= level:
                break
            if not in_section and wanted(heading.group(2).lower()):
                in_section, level = True, len(heading.group(1))
            continue
        if in_section:
            item = _REASON.match(line)
            if item and item.group(1) not in {c["code"] for c in codes}:
                codes.append({"code": item.group(1), "label": item.group(2)})
    return codes


def reason_codes_parse(markdown_text: str) -> list[dict[str, str]]:
    """The reject reasons (a section whose heading mentions "reason", not "flag")."""
    return _section_codes(markdown_text, lambda heading: "reason" in heading and "flag" not in heading)


def flag_codes_parse(markdown_text: str) -> list[dict[str, str]]:
    """The flag reasons (a section whose heading mentions "flag"); empty when the codebook has none."""
    return _section_codes(markdown_text, lambda heading: "flag" in heading)


def markdown_render(markdown_text: str) -> str:
    """Markdown → HTML with only harmless tags left (no scripts, handlers, styles or iframes)."""
    raw = md.markdown(markdown_text, extensions=["tables", "fenced_code", "sane_lists"])
    return nh3.clean(
        raw, tags=ALLOWED_TAGS, attributes={"a": {"href", "title"}}, link_rel="noopener noreferrer"
    )


def markdown_diff(old: str, new: str, *, old_name: str = "old", new_name: str = "new") -> str:
    """A unified diff of two codebook texts (empty when equal)."""
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), fromfile=old_name, tofile=new_name
        )
    )


def markdown_diff_html(old: str, new: str, *, old_name: str = "old", new_name: str = "new") -> str:
    """The unified diff as escaped HTML lines with ``diff-add``/``diff-del`` classes."""
    lines = []
    for line in markdown_diff(old, new, old_name=old_name, new_name=new_name).splitlines():
        css = "diff-add" if line.startswith("+") else "diff-del" if line.startswith("-") else "diff-ctx"
        lines.append(f'<span class="{css}">{html.escape(line)}</span>')
    return '<pre class="codebook-diff">' + "\n".join(lines) + "</pre>"


def _words_changed(old: str, new: str) -> str:
    """One changed line: removed words struck out, added words marked (both escaped)."""
    a, b = old.split(" "), new.split(" ")
    out: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            out.append(html.escape(" ".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(f"<del>{html.escape(' '.join(a[i1:i2]))}</del>")
        if j2 > j1:
            out.append(f"<ins>{html.escape(' '.join(b[j1:j2]))}</ins>")
    return " ".join(out)


def markdown_changes_html(old: str, new: str, *, context: int = 1) -> str:
    """What changed between two codebook texts, for a reader rather than a patch tool: each line marked
    Added, Removed or Changed (changed lines show the words struck out and added), ``context`` unchanged
    lines around each change, no ``@@``/``+``/``-`` syntax. Every piece of text is escaped."""
    a, b = old.splitlines(), new.splitlines()
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    added = removed = changed = 0
    items: list[str] = []

    def line(css: str, label: str, body: str) -> None:
        items.append(f'<li class="{css}"><span class="diff-label">{label}</span> {body}</li>')

    for group in matcher.get_grouped_opcodes(context):
        if items:
            items.append('<li class="diff-gap">…</li>')
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                for text in a[i1:i2]:
                    line("diff-ctx", "", html.escape(text))
                continue
            pairs = min(i2 - i1, j2 - j1) if tag == "replace" else 0
            for k in range(pairs):
                changed += 1
                line("diff-change", "Changed", _words_changed(a[i1 + k], b[j1 + k]))
            for text in a[i1 + pairs : i2]:
                removed += 1
                line("diff-del", "Removed", f"<del>{html.escape(text)}</del>")
            for text in b[j1 + pairs : j2]:
                added += 1
                line("diff-add", "Added", f"<ins>{html.escape(text)}</ins>")
    if not items:
        return '<div class="codebook-changes"><p>No change in the text.</p></div>'
    summary = f"{changed} line(s) changed, {added} added, {removed} removed."
    return (
        f'<div class="codebook-changes"><p class="diff-summary">{summary}</p>'
        f'<ul class="diff-lines">{"".join(items)}</ul></div>'
    )
