"""What a secret rule's match must contain: literals for a cheap first look at a text.

:func:`needed_literals` reads a rule's regex (Python's own parse of it) and gives a set of
literals one of which every match contains, each with whether it matches ignoring case; None
when it cannot tell. The redactor skips a rule whose keywords occur but whose literals do
not (gitleaks' keyword ``ey`` occurs in "they" and "key"; the JWT regex needs ``.ey``).
:func:`start_literals` gives those a match starts with: :func:`anchored` then tries the
regex only where they occur instead of at every position of the text.

:func:`gate_pattern` joins, for every rule, its literals or its keywords (the stronger of
the two) into one regular expression that both RE2 (DuckDB's ``regexp_matches``) and Python
read the same way on ASCII text: an ASCII text it does not match holds nothing any rule
finds, so it need not be scanned at all. On other text, case-insensitive matching differs
between engines (the long s, the Kelvin sign): such text is always scanned.
"""

from __future__ import annotations

import re
import re._parser as _sre
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

Literal = tuple[str, bool]  # (text, matched ignoring case)
Literals = frozenset[Literal]

_REPEATS = (_sre.MAX_REPEAT, _sre.MIN_REPEAT, getattr(_sre, "POSSESSIVE_REPEAT", None))


def _literal(text: str, icase: bool) -> Literal:
    # a literal without letters matches the same either way: counted as case-sensitive;
    # one ignoring case is kept in lowercase (two spellings of it are one literal)
    icase = icase and text.lower() != text.upper()
    return (text.lower() if icase else text), icase


def strength(literals: Literals) -> float:
    """How rare a set of literals is in ordinary text: its weakest literal's length, half
    a character more when it is case-sensitive."""
    return min(len(t) + (0.0 if icase else 0.5) for t, icase in literals)


def _best(sets: Iterable[Literals | None]) -> Literals | None:
    found = [s for s in sets if s]
    return max(found, key=strength) if found else None


def _sequence(items: Any, icase: bool) -> list[Literals | None]:
    """Sets of literals, each needed by every match of the parsed sequence ``items``."""
    out: list[Literals | None] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            out.append(frozenset({_literal("".join(run), icase)}))
            run.clear()

    for op, av in items:
        if op is _sre.LITERAL:
            run.append(chr(av))
            continue
        if op is _sre.AT:  # zero-width (\b, ^): the literals around it are adjacent
            continue
        flush()
        if op is _sre.SUBPATTERN:
            _group, add, remove, sub = av
            inner = (icase or bool(add & re.IGNORECASE)) and not remove & re.IGNORECASE
            out.append(_best(_sequence(sub, inner)))
        elif op is _sre.ATOMIC_GROUP:
            out.append(_best(_sequence(av, icase)))
        elif op in _REPEATS and av[0] >= 1:
            out.append(_best(_sequence(av[2], icase)))
        elif op is _sre.BRANCH:
            each = [_best(_sequence(branch, icase)) for branch in av[1]]
            if all(each):
                out.append(frozenset().union(*[s for s in each if s]))
        # anything else (a class, any character, an optional part...) needs no literal
    flush()
    return out


def needed_literals(regex: re.Pattern[str]) -> Literals | None:
    """Literals one of which every match of ``regex`` contains (None: cannot tell)."""
    with warnings.catch_warnings():  # what compiling it warned about, once is enough
        warnings.simplefilter("ignore")
        parsed = _sre.parse(regex.pattern, regex.flags)
    return _best(_sequence(parsed, bool(parsed.state.flags & re.IGNORECASE)))


def _small_class(av: Any) -> list[str] | None:
    """The characters of a class made of a few plain characters (``[Aa]``), else None."""
    if len(av) > 4 or any(op is not _sre.LITERAL for op, _ in av):
        return None
    return [chr(c) for _, c in av]


def _starts(items: Any, icase: bool) -> Literals | None:
    """Literals one of which every match of the parsed sequence ``items`` starts with."""
    run = [""]  # the literal text read so far, one per way of reading a small class
    for op, av in items:
        chars = [chr(av)] if op is _sre.LITERAL else None
        if op is _sre.IN:
            chars = _small_class(av)
        if chars is not None and len(run) * len(chars) <= 16:
            run = [r + c for r in run for c in chars]
            continue
        if run != [""]:
            break  # the literal read so far starts every match
        if op in (_sre.AT, _sre.ASSERT, _sre.ASSERT_NOT):
            continue  # zero-width: the match starts after it all the same
        if op is _sre.SUBPATTERN:
            _group, add, remove, sub = av
            inner = (icase or bool(add & re.IGNORECASE)) and not remove & re.IGNORECASE
            return _starts(sub, inner)
        if op is _sre.ATOMIC_GROUP:
            return _starts(av, icase)
        if op in _REPEATS and av[0] >= 1:
            return _starts(av[2], icase)
        if op is _sre.BRANCH:
            each = [_starts(branch, icase) for branch in av[1]]
            return frozenset().union(*each) if all(each) else None  # type: ignore[arg-type]
        return None
    return frozenset(_literal(r, icase) for r in run) if run != [""] else None


def start_literals(regex: re.Pattern[str]) -> Literals | None:
    """Literals one of which every match of ``regex`` starts with (None: cannot tell): the
    regex need only be tried where one of them occurs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = _sre.parse(regex.pattern, regex.flags)
    return _starts(parsed, bool(parsed.state.flags & re.IGNORECASE))


def keyword_literals(keywords: Iterable[str]) -> Literals | None:
    """A rule's keywords (found in the lowercased text) as literals ignoring case."""
    return frozenset(_literal(k, True) for k in keywords) or None


def has_literal(literals: Literals, text: str, lower: str, ascii_text: bool) -> bool:
    """Whether ``text`` (``lower`` is its lowercase) may contain one of ``literals``: on
    non-ASCII text a literal ignoring case is assumed present (Python's case-insensitive
    matching is not ``str.lower``'s there)."""
    for literal, icase in literals:
        if not icase:
            if literal in text:
                return True
        elif not ascii_text or literal.lower() in lower:
            return True
    return False


_META = frozenset("\\.+*?()|[]{}^$")  # what RE2 and Python read as syntax outside a class


def _escaped(literal: Literal) -> str:
    text, icase = literal
    body = "".join("\\" + c if c in _META else c for c in text)
    return f"(?i:{body})" if icase else body


def gate_pattern(rules: Iterable[tuple[Literals | None, Literals | None]]) -> str | None:
    """One regex that an ASCII text holding a finding of any rule matches, from each rule's
    (needed literals, keywords); None when some rule has neither (every text is scanned)."""
    alternatives: set[Literal] = set()
    for literals, keywords in rules:
        choice = _best([literals, keywords])
        if choice is None:
            return None
        alternatives |= choice
    return "|".join(sorted(_escaped(a) for a in _shortest(alternatives)))


def _covers(shorter: Literal, longer: Literal) -> bool:
    """Whether text holding ``longer`` always holds ``shorter`` (ASCII text)."""
    (short, short_icase), (long, long_icase) = shorter, longer
    if short_icase:
        return short.lower() in long.lower()
    return not long_icase and short in long


def _shortest(alternatives: set[Literal]) -> list[Literal]:
    """The alternatives that no other one covers: the same texts match, with fewer."""
    return [a for a in alternatives if not any(b != a and _covers(b, a) for b in alternatives)]


def anchored(
    regex: re.Pattern[str],
    starts: Literals,
    text: str,
    lower: str,
    line_head: re.Pattern[str] | None = None,
) -> Iterator[re.Match[str]]:
    """``regex.finditer(text)`` for a regex whose every match starts with one of
    ``starts``: tried only where one of them occurs (``lower``: the ASCII ``text``
    lowercased), not at every position of the text. ``line_head``: the regex is that head
    followed by ``(?:.*``, reading on over the rest of the line (``\\bcurl\\b(?:.*...``):
    when it fails where the head matched, it fails at every later start on that line too
    (a match from there would be one from here), so those are not tried: one attempt per
    line, however many starts a line holds."""
    at: set[int] = set()
    for literal, icase in starts:
        where, needle = (lower, literal.lower()) if icase else (text, literal)
        i = where.find(needle)
        while i != -1:
            at.add(i)
            i = where.find(needle, i + 1)
    end = 0
    for i in sorted(at):
        if i < end:
            continue  # inside the last match: finditer goes on after it
        m = regex.match(text, i)
        if m is not None:
            yield m
            end = max(m.end(), i + 1)
        elif line_head is not None and line_head.match(text, i) is not None:
            eol = text.find("\n", i)
            end = len(text) if eol < 0 else eol + 1
