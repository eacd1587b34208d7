"""Curation rules of the reference pricer, applied to every imported product (pure Python, no Django).

The model sees ``text`` inside the prompt (DESIGN.md §4), so it must be short, free of boilerplate that
says nothing about the price, and free of part numbers (they eat tokens and invite memorisation).
Prices are kept in 0.50-999.49 so that every label is a single token in Llama-3 tokenizers; a price
outside that range is stored but flagged.

``curate_text`` is a fixed point: curating curated text returns it unchanged, so re-importing an
exported catalogue changes nothing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

PRICE_MIN = Decimal("0.50")
PRICE_MAX = Decimal("999.49")
# Product.price is DecimalField(max_digits=12, decimal_places=2): anything larger cannot be stored.
PRICE_STORABLE_MAX = Decimal("9999999999.99")
_CENT = Decimal("0.01")

# Amazon detail-sheet phrases that carry no price signal. Longer phrases first, so that
# "Is Discontinued By Manufacturer" goes as a whole before "By Manufacturer"/"Manufacturer" could
# leave "Is Discontinued" behind. A yes/no answer right after the battery questions goes with them.
BOILERPLATE = (
    "Is Discontinued By Manufacturer",
    "Batteries Included?",
    "Batteries Required?",
    "Date First Available",
    "Item model number",
    "Best Sellers Rank",
    "By Manufacturer",
    "Manufacturer",
)
# A question or a flag is removed with its Yes/No answer ("Batteries Required? No").
_ANSWERED = tuple(phrase for phrase in BOILERPLATE if phrase.endswith("?") or phrase.startswith("Is "))
_ANSWER_RE = re.compile(r'[\s:"]*(?:Yes|No)\b')


# The reference pricer scrubs these characters (JSON debris of the detail sheets and CJK brackets).
_SCRUB_CHARS = '[]{}"【】'
# "Part-number-like" (reference rule): a word of 7+ characters that contains a digit (XR4821B,
# B07ZPKBL9V). Shorter ones ("2-Pack", "1500W", "15") carry price signal and stay.
PART_NUMBER_MIN_CHARS = 7
# Debris of removed words: "fits. . Dimensions" → "fits. Dimensions", "12, , black" → "12, black",
# and a space before punctuation goes: "size 12 , black" → "size 12, black".
_ORPHANS = tuple((f"{before} {orphan}", before) for before in ".,;:!?" for orphan in ".,;:")
_DOUBLED = ((",,", ","), (";;", ";"), (",;", ","), (";,", ";"))
_SPACED = tuple((f" {mark}", mark) for mark in ".,;:!?")

# The removals below use str.find/replace, not regular expressions: they run on every line of every
# imported product, and Python's regex engine costs about ten times more per character scanned.


# Every phrase contains one of these: five substring tests rule most lines out at once.
_BOILERPLATE_HINTS = ("Manufacturer", "Batteries", "Date First", "Item model", "Best Sellers")


def _drop_boilerplate(line: str) -> str:
    for hint in _BOILERPLATE_HINTS:
        if hint in line:
            break
    else:
        return line
    for phrase in BOILERPLATE:
        at = line.find(phrase)
        while at != -1:
            end = at + len(phrase)
            if phrase in _ANSWERED:
                answer = _ANSWER_RE.match(line, end)
                if answer:
                    end = answer.end()
            before_ok = at == 0 or not (line[at - 1].isalnum() or line[at - 1] == "_")
            after_ok = end == len(line) or not (line[end].isalnum() or line[end] == "_")
            if before_ok and after_ok:
                line = f"{line[:at]} {line[end:]}"
                at = line.find(phrase, at)
            else:
                at = line.find(phrase, at + 1)
    return line


def _scrub_chars(line: str) -> str:
    for char in _SCRUB_CHARS:
        if char in line:
            line = line.replace(char, " ")
    return line


# Quick tests on a line's UTF-8 bytes. bytes.translate maps every byte to its class in one C pass, and one
# search in the classes then stands for several searches in the line (ten for the digits, ten for the
# tidy marks). UTF-8 keeps ASCII bytes for ASCII characters only, so two adjacent ASCII bytes are two
# adjacent characters; "surrogatepass" only makes sure the encoding never raises (the reader lets no lone
# surrogate through). Positions in the classes are the str's only for ASCII lines.
# Classes: "0" a digit; "F" a space (the first character of a spaced mark " ."); "S" . : ! ?; "B" , ;
# (first and second character of a doubled mark ",,"); NUL an ASCII control character (the only ASCII
# characters that are not printable); "a" anything else.
def _class_of(byte: int) -> int:
    if byte in b"0123456789":
        return ord("0")
    if byte == ord(" "):
        return ord("F")
    if byte in b".:!?":
        return ord("S")
    if byte in b",;":
        return ord("B")
    return 0 if byte < 0x20 or byte == 0x7F else ord("a")


_CLASSES = bytes(_class_of(byte) for byte in range(256))


def _classes(line: str) -> bytes:
    return line.encode("utf-8", "surrogatepass").translate(_CLASSES)


def _tidy_punctuation(line: str) -> str:
    classes = _classes(line)
    # Each block runs only where the class test says one of its patterns may be in the line; the class
    # tests match every pattern of their block (and a few strings that none is: the block then does
    # nothing), so the result is the same as running every block.
    if b"SFS" in classes or b"SFB" in classes or b"BFS" in classes or b"BFB" in classes:
        for pattern, replacement in _ORPHANS:
            while pattern in line:
                line = line.replace(pattern, replacement)
        classes = _classes(line)
    if b"BB" in classes:
        for pattern, replacement in _DOUBLED:
            while pattern in line:
                line = line.replace(pattern, replacement)
        classes = _classes(line)
    if b"FS" in classes or b"FB" in classes:
        for pattern, replacement in _SPACED:
            if pattern in line:
                line = line.replace(pattern, replacement)
    return line


def _collapse_spaces(line: str) -> str:
    # isprintable() is False for every whitespace but the ASCII space: a fast test that spares most
    # lines the split/join.
    if line.isprintable() and "  " not in line:
        return line.strip()
    return " ".join(line.split())


def _drop_part_numbers(line: str, classes: bytes | None = None) -> str:
    """Remove the words (space-separated, as after ``_collapse_spaces``) that look like part numbers.

    Visits only the words that contain a digit: one search for any digit in the line's classes (ASCII
    lines; ``classes`` when the caller has them), or one search per digit (other lines). Several times
    faster than a regex or a loop over all words on catalogue text (the import's hottest loop).
    """
    if not line.isascii():
        return _drop_part_numbers_by_digit(line)
    if classes is None:
        classes = _classes(line)
    at = classes.find(b"0")
    if at == -1:
        return line
    # Left to right, one word at a time: the spans come sorted and distinct.
    spans: list[tuple[int, int]] = []
    while at != -1:
        start = line.rfind(" ", 0, at) + 1
        end = line.find(" ", at)
        if end == -1:
            end = len(line)
        if end - start >= PART_NUMBER_MIN_CHARS:
            spans.append((start, end))
        at = classes.find(b"0", end)
    return _without_spans(line, spans)


def _drop_part_numbers_by_digit(line: str) -> str:
    # The same word-span loop as the ASCII path above, kept written out twice on purpose: one loop shared
    # through a find function (functools.partial) cost 10% more per curated line (8.8 vs 8.0 us, 64,000
    # catalogue lines), and this is the import's hottest loop.
    spans: list[tuple[int, int]] = []
    for digit in "0123456789":
        at = line.find(digit)
        while at != -1:
            start = line.rfind(" ", 0, at) + 1
            end = line.find(" ", at)
            if end == -1:
                end = len(line)
            if end - start >= PART_NUMBER_MIN_CHARS:
                spans.append((start, end))
            at = line.find(digit, end)
    return _without_spans(line, sorted(set(spans)))


def _without_spans(line: str, spans: list[tuple[int, int]]) -> str:
    """``line`` without the (sorted, disjoint) word spans, words joined by single spaces again.

    ``line`` is as ``curate_line`` hands it over (after ``_collapse_spaces``, and ``_tidy_punctuation``
    keeps it so): words separated by single spaces, none at either end. The pieces between the spans are
    then whole words with a space at their ends, and stripping each piece gives what a split/join of the
    whole line would, in a fraction of the time.
    """
    if not spans:
        return line
    kept = []
    last = 0
    for start, end in spans:
        piece = line[last:start].strip(" ")
        if piece:
            kept.append(piece)
        last = end
    piece = line[last:].strip(" ")
    if piece:
        kept.append(piece)
    return " ".join(kept)


def _needs_tidy(classes: bytes) -> bool:
    """Whether the line of these classes holds " ." " ," " ;" " :" " !" " ?" ",," ";;" ",;" or ";,"."""
    return b"FS" in classes or b"FB" in classes or b"BB" in classes


def curate_line(line: str) -> str:
    """One line of text with the reference rules applied, whitespace collapsed."""
    line = _scrub_chars(_drop_boilerplate(line))
    if line.isascii():
        # _collapse_spaces and _drop_part_numbers on one set of classes, made again only when the line
        # changes: in an ASCII line, isprintable() means no control character and the only whitespace
        # left is the space.
        classes = _classes(line)
        if b"\0" in classes or b"FF" in classes:
            line = " ".join(line.split())
            classes = _classes(line)
        elif line[:1] == " " or line[-1:] == " ":
            line = line.strip()
            classes = _classes(line)
        dropped = _drop_part_numbers(line, classes)
        if len(dropped) != len(line):  # a part number has 7+ characters: a change always shortens
            line = dropped
            classes = _classes(line)
    else:
        line = _drop_part_numbers(_collapse_spaces(line))
        classes = _classes(line)
    while _needs_tidy(classes):
        # Tidying can join a word to a number ("Weight .45" → "Weight.45"): repeat to a fixed point.
        tidy = _drop_part_numbers(_tidy_punctuation(line))
        if tidy == line:
            break
        line = tidy
        classes = _classes(line)
    return line.strip(" ,;:")


def curate_title(title: str) -> str:
    """A title on one line, curated like the text (``curate_line`` collapses its newlines too)."""
    return curate_line(title)


def curate_text(title: str, text: str, *, max_chars: int, curated_title: str | None = None) -> str:
    """The description the model and the annotators see: ``title`` on the first line, then the text.

    Each line is curated; empty lines go; the title is prepended unless the text already starts
    with it (the reference data does); the result is cut to ``max_chars`` at a word boundary.
    ``curated_title`` saves curating the title twice when the caller has it.
    """
    if curated_title is None:
        curated_title = curate_title(title)
    raw_lines = text.splitlines()
    lines = []
    for number, raw in enumerate(raw_lines):
        # The text usually opens with the title itself: reuse its curated form.
        curated = curated_title if number == 0 and raw == title else curate_line(raw)
        if curated:
            lines.append(curated)
    if curated_title and (not lines or lines[0] != curated_title):
        lines.insert(0, curated_title)
    return truncate("\n".join(lines), max_chars)


def truncate(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars``, at the last space when that loses little."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if space >= max_chars * 0.8:
        cut = cut[:space]
    return cut.rstrip(" ,;:\n")


class PriceError(ValueError):
    """A price that cannot be stored; the message is the reason shown to the user."""


@dataclass(frozen=True, slots=True)
class CuratedPrice:
    value: Decimal | None
    flag: str  # one of annotation.models.PriceFlag's values: "", "missing", "out_of_range"


FLAG_OK = ""
FLAG_MISSING = "missing"
FLAG_OUT_OF_RANGE = "out_of_range"


# Catalogue prices repeat (37.99, 19.99, …): a float's curated price is remembered instead of going
# through Decimal again. 0.0 is left out: -0.0 equals it but curates to Decimal("-0.00").
_FLOAT_PRICES: dict[float, CuratedPrice] = {}
_FLOAT_PRICES_MAX = 100_000


def parse_price(raw: object) -> CuratedPrice:
    """Parse an import price: ``12.5``, ``"12.5"``, ``"$1,299.00"``; empty or ``None`` means no price.

    Raises ``PriceError`` (with the reason) for negative, non-numeric, NaN/infinite or absurdly
    large values. Prices outside 0.50-999.49 are kept, flagged ``out_of_range``.
    """
    if type(raw) is float:
        cached = _FLOAT_PRICES.get(raw)
        if cached is not None:
            return cached
        price = _parse_price(raw)
        if raw != 0.0 and len(_FLOAT_PRICES) < _FLOAT_PRICES_MAX:
            _FLOAT_PRICES[raw] = price
        return price
    return _parse_price(raw)


def _parse_price(raw: object) -> CuratedPrice:
    """Parse an import price: ``12.5``, ``"12.5"``, ``"$1,299.00"``; empty or ``None`` means no price.

    Raises ``PriceError`` (with the reason) for negative, non-numeric, NaN/infinite or absurdly
    large values. Prices outside 0.50-999.49 are kept, flagged ``out_of_range``.
    """
    if raw is None:
        return CuratedPrice(None, FLAG_MISSING)
    if isinstance(raw, bool):  # JSON true/false are ints to Python; never a price
        raise PriceError(f"price {raw!r} is not a number")
    if isinstance(raw, int | float):
        if isinstance(raw, float) and not math.isfinite(raw):
            raise PriceError(f"price {raw!r} is not a finite number")
        value = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)
    elif isinstance(raw, str):
        cleaned = raw.strip()
        if not cleaned:
            return CuratedPrice(None, FLAG_MISSING)
        cleaned = cleaned.removeprefix("$").replace(",", "").strip()
        if cleaned.startswith("-$"):
            cleaned = "-" + cleaned[2:]
        try:
            value = Decimal(cleaned)
        except InvalidOperation:
            raise PriceError(f"price {raw!r} is not a number (expected e.g. 12.50 or $1,299.00)") from None
        if not value.is_finite():
            raise PriceError(f"price {raw!r} is not a finite number")
    else:
        raise PriceError(f"price {raw!r} is not a number")
    if value < 0:
        raise PriceError(f"price {raw!r} is negative")
    try:
        value = value.quantize(_CENT)
    except InvalidOperation:  # more digits than Decimal's context holds: far beyond what can be stored
        raise PriceError(f"price {raw!r} is too large to store (max {PRICE_STORABLE_MAX})") from None
    if value > PRICE_STORABLE_MAX:
        raise PriceError(f"price {raw!r} is too large to store (max {PRICE_STORABLE_MAX})")
    if PRICE_MIN <= value <= PRICE_MAX:
        return CuratedPrice(value, FLAG_OK)
    return CuratedPrice(value, FLAG_OUT_OF_RANGE)
