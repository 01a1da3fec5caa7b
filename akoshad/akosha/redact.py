"""Secrets out of memory text before it leaves for Akosha.

Every memory text sent over HTTP or written into ``memories.json`` goes through
:meth:`SecretRedactor.redact`: each recognised secret is replaced by ``[REDACTED:<kind>]``.
The rules are gitleaks' published rule set (``data/secret_rules.toml``, MIT, see
``data/secret_rules.LICENSE``) plus a few of akoshad's own for what it does not cover
(passwords in URLs, ``password=`` assignments, the AWS secret key next to its name).

Speed comes from gitleaks' keyword prefilter: a rule's regex only runs on the lines that
contain one of its keywords (found in one pass over the lowercased text), except the few
rules that span lines (PEM blocks), which run on the whole text when their keyword occurs;
and a rule runs only if the text also holds one of the literals its regex needs
(:mod:`akoshad.akosha.redact_gate`). :attr:`SecretRedactor.gate` lets a reader with a
fast regex engine (DuckDB's RE2) tell the ASCII texts that need no scan at all.
Redaction is idempotent: ``[REDACTED:<kind>]`` matches no rule.
"""

from __future__ import annotations

import math
import re
import tomllib
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import ahocorasick

from akoshad.akosha.redact_gate import (
    Literals,
    anchored,
    gate_pattern,
    has_literal,
    keyword_literals,
    needed_literals,
    start_literals,
    strength,
)

PLACEHOLDER = "[REDACTED:{kind}]"
# how far a finding's line is read either side of it, for the allow lists that look at lines
LINE_CONTEXT = 4096
# gitleaks opens many rules with this left context; it only widens the match leftwards,
# so it is matched by hand (a regex that starts with it is five times slower).
_LEFT_CONTEXT = "(?i)[\\w.-]{0,50}?"
_LEFT_CHARS = re.compile(r"[\w.-]{0,50}\Z")
# Values that only name or hide a secret: never redacted (false positives cost memories).
# An unquoted value that reads as code (a name, an attribute, a call) is not a password.
_CODE_LIKE = re.compile(r"^(?:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*|[A-Za-z_][\w.]*\(.*)$")
_PLACEHOLDER_VALUE = re.compile(
    r"^(?:\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|<[^>]*>|\*+|x+|\.+|\[REDACTED:[^\]]*\]?|"
    r"(?i:none|null|true|false|changeme|password|secret|example|redacted))$"
)

# akoshad's own rules: (id, regex, secret group, keywords).
_OWN_RULES: tuple[tuple[str, str, int, tuple[str, ...]], ...] = (
    (
        "url-password",
        # the user may be empty (redis://:pw@host); the password runs to the last @ before
        # the host: an unencoded @ in it (P@ssw0rd) does not leave its tail behind; no [ in
        # the user: a placeholder there ([REDACTED:github-pat]:...) is not read as one
        r"\b[A-Za-z][A-Za-z0-9+.-]{1,20}://[^\s:/@\"'<>\[\]]{0,128}:([^\s/\"'<>]{1,256})@[^\s@/]",
        1,
        ("://",),
    ),
    (
        "password-assignment",
        r"(?i)\b(?:[a-z0-9_.-]{0,30}passw(?:or)?d|passwd|pwd|passphrase)[\"']?[ \t]*"
        r"(?:=|:=|:)(?!=)[ \t]*(?:[\"'](?!\[REDACTED)([^\n\"']{4,200})[\"']"
        r"|([^\s\"'`,;()\[\]{}]{4,200}))",
        0,
        ("passw", "pwd", "passphrase"),
    ),
    (
        "aws-secret-access-key",
        r"(?i)aws[\w.-]{0,20}secret[\w.-]{0,20}[\"']?[ \t]*(?:=|:=|:)[ \t]*[\"']?"
        r"([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
        1,
        ("secret",),
    ),
)


def shannon_entropy(text: str) -> float:
    """Bits per character, as gitleaks measures a candidate secret."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def go_to_python_regex(pattern: str) -> str:
    """Translate the RE2 spellings Python's ``re`` does not take.

    ``\\z`` becomes ``\\Z``; a flag group such as ``(?i)`` in the middle of a pattern (RE2
    applies it to the rest of the enclosing group) becomes a scoped ``(?i:...)``.
    """
    out: list[str] = []
    closers: list[int] = [0]  # per open group: how many scoped flag groups to close
    i, n, in_class = 0, len(pattern), False
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            out.append("\\Z" if nxt == "z" and not in_class else ch + nxt)
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
            out.append(ch)
        elif ch == "[":
            in_class = True
            out.append(ch)
            if pattern.startswith("^]", i + 1) or pattern.startswith("]", i + 1):
                skip = 2 if pattern[i + 1] == "^" else 1
                out.append(pattern[i + 1 : i + 1 + skip])
                i += skip
        elif ch == "(":
            flags = re.match(r"\(\?([a-zA-Z]+)\)", pattern[i:])
            if flags and i > 0:
                out.append(f"(?{flags.group(1)}:")
                closers[-1] += 1
                i += len(flags.group(0))
                continue
            closers.append(0)
            out.append(ch)
        elif ch == ")":
            out.append(")" * closers.pop() + ")")
            if not closers:
                closers.append(0)
        else:
            out.append(ch)
        i += 1
    out.append(")" * sum(closers))
    return "".join(out)


@dataclass(frozen=True)
class Allowlist:
    """One of a rule's allow lists: a finding it matches is not a secret."""

    regexes: tuple[re.Pattern[str], ...] = ()
    stopwords: tuple[str, ...] = ()
    target: str = "secret"  # "secret" | "match" | "line"
    all_of: bool = False  # condition AND: regexes and stopwords must both hold

    def allows(self, secret: str, match: str, line: str) -> bool:
        """True when the finding is allowed (not a secret)."""
        subject = {"match": match, "line": line}.get(self.target, secret)
        checks = []
        if self.regexes:
            checks.append(any(r.search(subject) for r in self.regexes))
        if self.stopwords:
            low = secret.lower()
            checks.append(any(w in low for w in self.stopwords))
        if not checks:
            return False
        return all(checks) if self.all_of else any(checks)


@dataclass(frozen=True, eq=False)
class Rule:
    """One detection rule: a regex, the group holding the secret, and its filters."""

    kind: str
    regex: re.Pattern[str]
    secret_group: int = 0
    entropy: float = 0.0
    keywords: tuple[str, ...] = ()
    allowlists: tuple[Allowlist, ...] = ()
    multiline: bool = False
    left_context: bool = False  # the match extends left over up to 50 [\w.-] characters
    literals: Literals | None = None  # one of them is in every match (None: unknown)
    starts: Literals | None = None  # every match starts with one of them (None: unknown)

    def secret_span(self, m: re.Match[str]) -> tuple[int, int]:
        """The span of the secret inside a match (the group, else the whole match)."""
        group = self.secret_group
        if group == 0 and m.re.groups:
            group = next((g for g in range(1, m.re.groups + 1) if m.group(g)), 0)
        return m.span(group) if m.group(group) is not None else m.span(0)


@dataclass
class Finding:
    """A secret found in a text: where, and of which kind."""

    start: int
    end: int
    kind: str


def _compile(pattern: str) -> re.Pattern[str] | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return re.compile(go_to_python_regex(pattern))
        except re.error:
            return None


def _allowlists(raw: Iterable[dict[str, Any]]) -> tuple[Allowlist, ...]:
    out = []
    for entry in raw:
        regexes = tuple(p for p in (_compile(r) for r in entry.get("regexes", [])) if p)
        stopwords = tuple(w.lower() for w in entry.get("stopwords", []))
        if not regexes and not stopwords:
            continue  # path-only allow lists do not apply to memory text
        out.append(
            Allowlist(
                regexes=regexes,
                stopwords=stopwords,
                target=entry.get("regexTarget", "secret"),
                all_of=str(entry.get("condition", "OR")).upper() == "AND",
            )
        )
    return tuple(out)


def _is_multiline(pattern: str) -> bool:
    return "[\\s\\S" in pattern or "(?s" in pattern or "\\n" in pattern.replace("\\\\n", "")


@dataclass
class RuleSet:
    """The compiled rules, the global allow list, and what could not be compiled."""

    rules: list[Rule] = field(default_factory=list)
    global_allow: tuple[Allowlist, ...] = ()
    skipped: list[str] = field(default_factory=list)


@cache
def load_rules() -> RuleSet:
    """The shipped rule set, compiled once per process."""
    raw = tomllib.loads(
        resources.files("akoshad").joinpath("data/secret_rules.toml").read_text("utf-8")
    )
    rules = RuleSet(global_allow=_allowlists([raw.get("allowlist", {})]))
    for entry in raw.get("rules", []):
        pattern = entry.get("regex")
        left = bool(pattern) and pattern.startswith(_LEFT_CONTEXT)
        if left:
            pattern = "(?i)" + pattern[len(_LEFT_CONTEXT) :]
        compiled = _compile(pattern) if pattern else None
        if compiled is None:
            rules.skipped.append(entry.get("id", "?"))
            continue
        rules.rules.append(
            Rule(
                kind=entry["id"],
                regex=compiled,
                secret_group=int(entry.get("secretGroup", 0)),
                entropy=float(entry.get("entropy", 0.0)),
                keywords=tuple(k.lower() for k in entry.get("keywords", [])),
                allowlists=_allowlists(entry.get("allowlists", [])),
                multiline=_is_multiline(pattern),
                left_context=left,
                literals=needed_literals(compiled),
                starts=_starts(compiled),
            )
        )
    for kind, pattern, group, keywords in _OWN_RULES:
        regex = re.compile(pattern)
        rules.rules.append(
            Rule(
                kind,
                regex,
                group,
                0.0,
                keywords,
                literals=needed_literals(regex),
                starts=_starts(regex),
            )
        )
    return rules


def _starts(regex: re.Pattern[str]) -> Literals | None:
    """:func:`start_literals`, when they are rare enough to be worth looking for (two
    characters at least: an ``A`` occurs everywhere)."""
    starts = start_literals(regex)
    return starts if starts is not None and strength(starts) >= 2 else None


class SecretRedactor:
    """Finds and replaces secrets in text; safe to share between threads."""

    def __init__(self, rules: RuleSet | None = None) -> None:
        self.rules = rules or load_rules()
        by_keyword: dict[str, list[Rule]] = {}
        self._always = [r for r in self.rules.rules if not r.keywords]
        for rule in self.rules.rules:
            for k in rule.keywords:
                by_keyword.setdefault(k, []).append(rule)
        self._keyword_rules = list(by_keyword.values())
        self._automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for i, k in enumerate(by_keyword):
            self._automaton.add_word(k, i)
        self._automaton.make_automaton()
        # an ASCII text this does not match holds nothing any rule finds (RE2 and Python)
        self.gate: str | None = gate_pattern(
            (r.literals, keyword_literals(r.keywords)) for r in self.rules.rules
        )

    def _present(self, lower: str) -> dict[Rule, list[int]]:
        """Rules whose keywords occur in the text, with the offsets of those keywords
        (one pass of an Aho-Corasick automaton over the text)."""
        per_keyword: dict[int, list[int]] = {}
        for end, kid in self._automaton.iter(lower):
            per_keyword.setdefault(kid, []).append(end)
        hits: dict[Rule, list[int]] = {}
        for kid, ends in per_keyword.items():
            for rule in self._keyword_rules[kid]:
                hits.setdefault(rule, []).extend(ends)
        return hits

    def _windows(self, text: str, offsets: list[int]) -> Iterator[tuple[int, int]]:
        """The lines around keyword offsets, merged, as (start, end) spans."""
        last_end = -1
        for pos in sorted(offsets):
            if pos < last_end:
                continue
            start = text.rfind("\n", 0, pos) + 1
            end = text.find("\n", pos)
            end = len(text) if end == -1 else end
            yield start, end
            last_end = end

    def _accept(self, rule: Rule, m: re.Match[str]) -> tuple[int, int] | None:
        start, end = rule.secret_span(m)
        secret = m.string[start:end]
        match = m.group(0)
        if rule.left_context:
            left = _LEFT_CHARS.search(m.string, max(0, m.start() - 50), m.start())
            match = (left.group(0) if left else "") + match
        if not secret or _PLACEHOLDER_VALUE.match(secret):
            return None
        if rule.entropy and shannon_entropy(secret) <= rule.entropy:
            return None
        # a comparison (key == "..."), not an assignment; looked for before the secret only,
        # as base64 padding ends many a secret with ==
        operator = m.string[m.start() : start]
        if rule.kind.startswith("generic") and (
            not any(c.isdigit() for c in secret) or "==" in operator or "!=" in operator
        ):
            return None
        if rule.kind == "password-assignment" and m.group(1) is None:
            # unquoted: only a value with a digit or a symbol that does not read as code
            plain = secret.replace("_", "")
            if _CODE_LIKE.match(secret) and (plain.isalpha() or "." in secret):
                return None
        text = m.string
        line = _line_around(text, m.start(), m.end())
        for allow in (*rule.allowlists, *self.rules.global_allow):
            if allow.allows(secret, match, line):
                return None
        return start, end

    def find(self, text: str) -> list[Finding]:
        """Every secret in ``text``, as non-overlapping spans in text order."""
        lower = text.lower()
        ascii_text = text.isascii()
        found: list[Finding] = []
        hits = self._present(lower)
        for rule in self._always:
            hits.setdefault(rule, [])
        # the keywords' offsets are the text's own unless lowercasing changed its length
        aligned = len(lower) == len(text)
        for rule, offsets in hits.items():
            if rule.literals is not None and not has_literal(
                rule.literals, text, lower, ascii_text
            ):
                continue  # its keyword occurs, but not what its regex needs
            whole = rule.multiline or not offsets or not aligned
            for w_start, w_end in [(0, len(text))] if whole else self._windows(text, offsets):
                window = text if whole else text[w_start:w_end]
                if rule.starts is None or not ascii_text:
                    matches: Iterable[re.Match[str]] = rule.regex.finditer(window)
                else:
                    low = lower if whole else lower[w_start:w_end]
                    matches = anchored(rule.regex, rule.starts, window, low)
                for m in matches:
                    span = self._accept(rule, m)
                    if span is not None:
                        found.append(Finding(w_start + span[0], w_start + span[1], rule.kind))
        return _merge(found)

    def redact(self, text: str) -> tuple[str, list[str]]:
        """``text`` with every secret replaced by ``[REDACTED:<kind>]``, and the kinds."""
        findings = self.find(text)
        if not findings:
            return text, []
        pieces: list[str] = []
        pos = 0
        for f in findings:
            pieces.append(text[pos : f.start])
            pieces.append(PLACEHOLDER.format(kind=f.kind))
            pos = f.end
        pieces.append(text[pos:])
        return "".join(pieces), [f.kind for f in findings]


@cache
def default_redactor() -> SecretRedactor:
    """The redactor of the shipped rules, made once per process (its automaton and gate
    take a few hundred ms: not for every request of the long-lived DuckDB child)."""
    return SecretRedactor()


def _line_around(text: str, start: int, end: int) -> str:
    """The line of the match ``text[start:end]``, at most LINE_CONTEXT characters either side
    of it: a line-wide allow list is about the code around a finding, and a text of one
    long line (minified JSON) with many findings is not read again in full for each."""
    low = max(0, start - LINE_CONTEXT)
    high = min(len(text), end + LINE_CONTEXT)
    first = text.rfind("\n", low, start) + 1 or low
    last = text.find("\n", end, high)
    return text[first : high if last == -1 else last]


def _merge(findings: list[Finding]) -> list[Finding]:
    """Overlapping findings become one (the longest span's kind wins)."""
    findings.sort(key=lambda f: (f.start, -(f.end - f.start), f.kind.startswith("generic")))
    out: list[Finding] = []
    for f in findings:
        if out and f.start < out[-1].end:
            if f.end > out[-1].end:
                out[-1].end = f.end
            continue
        out.append(Finding(f.start, f.end, f.kind))
    return out
