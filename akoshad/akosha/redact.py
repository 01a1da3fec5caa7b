"""Secrets out of memory text before it leaves for Akosha.

Every memory text sent over HTTP or written into ``memories.json`` goes through
:meth:`SecretRedactor.redact`: each recognised secret is replaced by ``[REDACTED:<kind>]``.
The rules are gitleaks' published rule set plus akoshad's own for what it does not cover
(:mod:`akoshad.akosha.redact_own`: passwords in URLs, on command lines and in SQL,
``password=`` assignments, ``Authorization`` headers, the AWS secret key next to its name,
...), compiled by :mod:`akoshad.akosha.redact_rules`.

Speed comes from gitleaks' keyword prefilter: a rule's regex only runs on the lines that
contain one of its keywords (found in one pass over the lowercased text), except the few
rules that span lines (PEM blocks), which run on the whole text when their keyword occurs;
and a rule runs only if the text also holds one of the literals its regex needs
(:mod:`akoshad.akosha.redact_gate`). On a keyword's line, a match is looked for only where
it starts within ``KEYWORD_REACH`` characters of the keyword (or the rule's longest match):
a long line costs in proportion to its length, not to its length times its keywords.
:attr:`SecretRedactor.gate` lets a reader with a fast regex engine (DuckDB's RE2) tell the
ASCII texts that need no scan at all.
Redaction is idempotent: ``[REDACTED:<kind>]`` matches no rule.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache

import ahocorasick

from akoshad.akosha.redact_gate import anchored, gate_pattern, has_literal, keyword_literals
from akoshad.akosha.redact_own import prose_password_value
from akoshad.akosha.redact_rules import Rule, RuleSet, load_rules
from akoshad.akosha.redact_wrap import WRAP_GATE, wrapped_findings

PLACEHOLDER = "[REDACTED:{kind}]"
# how far a finding's line is read either side of it, for the allow lists that look at lines
LINE_CONTEXT = 4096
# how far from a keyword a rule's match may start (or the rule's longest match, if longer):
# a long line is not searched in full for each keyword in it
KEYWORD_REACH = 1000
# the left context gitleaks opens many rules with (``redact_rules``), matched by hand
_LEFT_CHARS = re.compile(r"[\w.-]{0,50}\Z")
# Values that only name or hide a secret: never redacted (false positives cost memories).
# An unquoted value that reads as code (a name, an attribute, a call) is not a password.
_CODE_LIKE = re.compile(r"^(?:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*|[A-Za-z_][\w.]*\(.*)$")
# ... nor one that reads as a directory (``pwd: /home/ann/src``: the shell's working
# directory, in many a coding session): an absolute or home path of two parts or more,
# or of one part that is only letters
# ... except after a shell variable's name (``export PGPASSWORD=letmein``, ``MYSQL_PWD=...``):
# a shell assignment's value is the text itself, never a name (a name would be ``$NAME``);
# a value in capitals (``DB_PASSWORD=DEFAULT_PASSWORD``) still reads as a constant's name;
# ``PWD`` alone is the shell's working directory
_SHELL_ASSIGNMENT = re.compile(r"[A-Z][A-Z0-9_]*(?:PASSWORD|PASSWD|PWD|_PASS)=")
_CONSTANT_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_PATH_LIKE = re.compile(r"^~?/(?:[\w.@+-]+/)+[\w.@+-]*$|^~?/[A-Za-z]+$")
# Rules keyed on a product name that ends other words too (resumo, consumo): the name in
# lower case right after a lower-case letter is part of such a word, not the product's
_PRODUCT_NAMES = {
    "sumologic-access-id": "sumo",
    "sumologic-access-token": "sumo",
    "okta-access-token": "okta",
}
_PLACEHOLDER_VALUE = re.compile(
    r"^(?:\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|<[^>]*>|\*+|x+|\.+|\[REDACTED:[^\]]*\]?|"
    r"(?i:none|null|true|false|changeme|password|secret|example|redacted))$"
)


def shannon_entropy(text: str) -> float:
    """Bits per character, as gitleaks measures a candidate secret."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


@dataclass(frozen=True)
class _Span:
    """Where a rule's regex runs: matches starting in [start, last_start], read up to end."""

    start: int
    last_start: int
    end: int


@dataclass
class Finding:
    """A secret found in a text: where, and of which kind."""

    start: int
    end: int
    kind: str


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
        if self.gate is not None:  # ... nor a token wrapped over lines (redact_wrap)
            self.gate += f"|{WRAP_GATE}"

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

    def _windows(self, text: str, offsets: list[int]) -> Iterator[tuple[int, int, list[int]]]:
        """The line of each keyword offset and the line after it (a value may follow its key
        on the next line: ``token:\\n  <value>``, which gitleaks' rules match), merged, as
        (start, end, the offsets in it). Each character is searched for a line end once at
        most."""
        start = end = -1
        last_line = 0  # where the window's last line starts
        inside: list[int] = []
        for pos in sorted(offsets):
            if pos < end:
                if pos >= last_line:  # on the window's last line: it takes the next one
                    last_line, end = end + 1, _line_end(text, end + 1)
                inside.append(pos)
                continue
            if end >= 0:
                yield start, end, inside
            start = text.rfind("\n", 0, pos) + 1
            eol = _line_end(text, pos)
            last_line, end = eol + 1, _line_end(text, eol + 1)
            inside = [pos]
        if end >= 0:
            yield start, end, inside

    def _spans(self, rule: Rule, text: str, offsets: list[int]) -> Iterator[_Span]:
        """Where ``rule`` is looked for: its match starts within KEYWORD_REACH characters
        (or its longest match) of a keyword, on the keyword's line or the next."""
        reach = max(KEYWORD_REACH, rule.width)
        for w_start, w_end, hits in self._windows(text, offsets):
            first = last = -1
            for pos in hits:
                low, high = max(w_start, pos - reach), min(w_end, pos + reach)
                if first >= 0 and low > last:
                    yield _Span(first, last, min(w_end, last + rule.width + 2))
                    first = -1
                if first < 0:
                    first = low
                last = high
            yield _Span(first, last, min(w_end, last + rule.width + 2))

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
        if rule.kind in _PRODUCT_NAMES and _inside_a_word(
            rule.kind, m.string[max(0, m.start() - 1) : start]
        ):
            return None
        check = _VALUE_CHECKS.get(rule.kind)
        if check is not None and not check(secret):
            return None
        if rule.kind == "password-assignment" and m.group(1) is None:
            # unquoted: only a value with a digit or a symbol that does not read as code
            plain = secret.replace("_", "")
            if _CODE_LIKE.match(secret) and (plain.isalpha() or "." in secret):
                shell = _SHELL_ASSIGNMENT.fullmatch(m.string, m.start(), start)
                if not shell or "." in secret or _CONSTANT_NAME.fullmatch(secret):
                    return None
            if _PATH_LIKE.match(secret):
                return None
        text = m.string
        line = _line_around(text, m.start(), m.end())
        for allow in (*rule.allowlists, *self.rules.global_allow):
            if allow.allows(secret, match, line):
                return None
        return start, end

    def find(self, text: str) -> list[Finding]:
        """Every secret in ``text``, as non-overlapping spans in text order; also a token
        wrapped over lines (:mod:`akoshad.akosha.redact_wrap`)."""
        found = self._find(text)
        for start, end, kind in wrapped_findings(text, self._spans_of):
            found.append(Finding(start, end, kind))
        return _merge(found)

    def _spans_of(self, text: str) -> list[tuple[int, int, str]]:
        return [(f.start, f.end, f.kind) for f in self._find(text)]

    def _find(self, text: str) -> list[Finding]:
        """The findings of every rule in ``text`` (not merged)."""
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
            spans = [_Span(0, len(text), len(text))] if whole else self._spans(rule, text, offsets)
            for span in spans:
                for m in _matches(rule, text, lower, ascii_text, span):
                    found_at = self._accept(rule, m)
                    if found_at is not None:
                        start, end = found_at
                        found.append(Finding(span.start + start, span.start + end, rule.kind))
        return found

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


def _matches(
    rule: Rule, text: str, lower: str, ascii_text: bool, span: _Span
) -> Iterator[re.Match[str]]:
    """The matches of ``rule`` that start in ``span``, in the window ``text[span.start:
    span.end]`` (a match's offsets are the window's, as if it were the whole text)."""
    whole = span.start == 0 and span.end == len(text)
    window = text if whole else text[span.start : span.end]
    if rule.starts is None or not ascii_text:
        matches: Iterable[re.Match[str]] = rule.regex.finditer(window)
    else:
        low = lower if whole else lower[span.start : span.end]
        matches = anchored(rule.regex, rule.starts, window, low, rule.line_head)
    last = span.last_start - span.start
    for m in matches:
        if m.start() > last:
            return
        yield m


def _credential_like(value: str) -> bool:
    """An Authorization header's value that reads as a credential: a digit in it, or
    letters of both cases (not ``YOUR_TOKEN_HERE``, ``xxxxxxxxxxxx``); a JWT is left to
    the jwt rule, which names it."""
    if value.startswith("eyJ"):
        return False
    if any(c.isdigit() for c in value):
        return True
    return any(c.isupper() for c in value) and any(c.islower() for c in value)


# rules whose value must also read as a credential
_VALUE_CHECKS = {
    "authorization-header": _credential_like,
    "prose-password": prose_password_value,
}


def _inside_a_word(kind: str, before: str) -> bool:
    """Whether every mention of a rule's product name before the secret ends another word
    (``resumo: <sha256>`` is a summary, not a SumoLogic token)."""
    name = _PRODUCT_NAMES[kind]
    mentions = before.lower().count(name)
    return mentions > 0 and len(re.findall(f"[a-z]{name}", before)) == mentions


def _line_end(text: str, pos: int) -> int:
    """Where the line holding ``pos`` ends (a newline's offset, or the text's length)."""
    end = text.find("\n", pos)
    return len(text) if end == -1 else end


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
