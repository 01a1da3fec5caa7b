"""Secrets split across lines: a token wrapped by a terminal (``ghp_...`` cut at column 80
and copied with the line break), or such a capture stored in JSON text (the break then
reads ``\\n``). Each part alone is no known shape (``ghp_`` then too few characters), so
the redactor (:mod:`akoshad.akosha.redact`) also reads the lines around such a break joined
and keeps what it finds there across the break.

A break is looked at only between two characters of a token, with a run of 16 token
characters or more on one side of it and a digit in the joined run: a line of prose or
indented code ends or starts otherwise (a space, punctuation, a short word), so ordinary
text costs one look per line break.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+/=.-")
MIN_RUN = 16  # a wrapped token's longer part holds at least this many characters
# for the redactor's gate (RE2 and Python alike): a text with a break that may cut a token
# (a superset of :func:`wraps`'s), which its prefix split in two would otherwise not open
_T = "[A-Za-z0-9_+/=.-]"
_B = r"(?:\r?\n|\\r\\n|\\n)"
WRAP_GATE = f"{_T}{{{MIN_RUN}}}{_B}{_T}|{_T}{_B}{_T}{{{MIN_RUN}}}"
MAX_READ = 256  # how far a run of token characters is read either side of a break
MAX_LINES = 64  # a chain of wrapped lines is read joined up to this many lines
READ_AROUND = 2048  # of the first and last line, at most this much either side


@dataclass(frozen=True, order=True)
class Break:
    """A line break inside a token: ``text[start:end]`` is the break itself."""

    start: int
    end: int


def _run(text: str, pos: int, step: int) -> tuple[int, bool]:
    """The length (up to MAX_READ) of the run of token characters from ``pos`` going
    ``step`` (1 or -1), and whether it holds a digit."""
    n, digit = 0, False
    while n < MAX_READ and 0 <= pos < len(text) and text[pos] in _TOKEN_CHARS:
        digit = digit or text[pos].isdigit()
        n += 1
        pos += step
    return n, digit


def _is_wrap(text: str, start: int, end: int) -> bool:
    """Whether the break ``text[start:end]`` may cut a token in two."""
    if start == 0 or end >= len(text):
        return False
    if text[start - 1] not in _TOKEN_CHARS or text[end] not in _TOKEN_CHARS:
        return False
    head, head_digit = _run(text, start - 1, -1)
    tail, tail_digit = _run(text, end, 1)
    return max(head, tail) >= MIN_RUN and (head_digit or tail_digit)


def wraps(text: str) -> list[Break]:
    """The breaks of ``text`` that may cut a token, in text order: a line feed, after a
    carriage return or not, and the same as JSON text spells them (a backslash and
    ``n``), found with ``str.find`` (a regex would read every position of the text)."""
    found: list[Break] = []
    chars, size = _TOKEN_CHARS, len(text)
    for needle, cr in (("\n", "\r"), ("\\n", "\\r")):
        i = text.find(needle)
        while i != -1:
            end = i + len(needle)
            # the cheap look first: most line breaks have no token character after them
            if end < size and text[end] in chars:
                start = i - len(cr) if i >= len(cr) and text.startswith(cr, i - len(cr)) else i
                if _is_wrap(text, start, end):
                    found.append(Break(start, end))
            i = text.find(needle, end)
    return sorted(found)


def _chains(text: str, breaks: list[Break]) -> Iterator[list[Break]]:
    """Breaks grouped into chains: consecutive breaks with only token characters between
    them (the lines of one wrapped token), up to MAX_LINES lines each."""
    chain: list[Break] = []
    for b in breaks:
        if (
            chain
            and len(chain) < MAX_LINES
            and all(c in _TOKEN_CHARS for c in text[chain[-1].end : b.start])
        ):
            chain.append(b)
            continue
        if chain:
            yield chain
        chain = [b]
    if chain:
        yield chain


def _window(text: str, chain: list[Break]) -> tuple[int, int]:
    """The lines around ``chain``: from the first one's line start to the last one's line
    end, at most READ_AROUND characters beyond the chain either side."""
    low = max(0, chain[0].start - READ_AROUND)
    start = max(text.rfind("\n", low, chain[0].start) + 1, low)
    high = min(len(text), chain[-1].end + READ_AROUND)
    eol = text.find("\n", chain[-1].end, high)
    return start, high if eol == -1 else eol


Find = Callable[[str], list[tuple[int, int, str]]]


def wrapped_findings(text: str, find: Find) -> list[tuple[int, int, str]]:
    """What ``find`` (a redactor's search of one text: ``(start, end, kind)``) finds in the
    lines of ``text`` joined at each chain of wrapping breaks, that crosses a break: as
    spans of ``text`` (a span holds the breaks it crosses). A value found by a generic
    rule (no prefix of its own) needs MIN_RUN characters before the first break."""
    out: list[tuple[int, int, str]] = []
    if "\n" not in text and "\\n" not in text:
        return out  # a text of one line: nothing to join
    for chain in _chains(text, wraps(text)):
        start, end = _window(text, chain)
        pieces: list[str] = []
        # (offset in the joined text, offset in text) at the start of each piece
        marks: list[tuple[int, int]] = []
        cuts: list[int] = []  # offsets of the breaks in the joined text
        pos = joined = start
        for b in chain:
            marks.append((joined - start, pos))
            pieces.append(text[pos : b.start])
            joined += b.start - pos
            cuts.append(joined - start)
            pos = b.end
        marks.append((joined - start, pos))
        pieces.append(text[pos:end])
        for f_start, f_end, kind in find("".join(pieces)):
            crossed = [cut for cut in cuts if f_start < cut < f_end]
            if not crossed:
                continue
            if kind.startswith("generic") and crossed[0] - f_start < MIN_RUN:
                continue  # "X = 2" then "NAME" on the next line: no token of its own
            out.append((_back(marks, f_start), _back(marks, f_end - 1) + 1, kind))
    return out


def _back(marks: list[tuple[int, int]], offset: int) -> int:
    """``offset`` of the joined text as an offset of the original text."""
    joined, original = marks[0]
    for mark in marks:
        if mark[0] > offset:
            break
        joined, original = mark
    return original + offset - joined
