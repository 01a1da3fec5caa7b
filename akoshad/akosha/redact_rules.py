"""The secret rules of the redactor (:mod:`akoshad.akosha.redact`): gitleaks' published
rule set (``data/secret_rules.toml``, MIT, see ``data/secret_rules.LICENSE``) compiled for
Python's ``re`` (RE2 spellings translated; a rule that does not compile is skipped), plus a
few of akoshad's own for what it does not cover (:mod:`akoshad.akosha.redact_own`). Each rule
comes with its keywords, its allow lists and the literals its matches need
(:mod:`akoshad.akosha.redact_gate`)."""

from __future__ import annotations

import re
import re._parser as sre_parse
import tomllib
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from akoshad.akosha.redact_gate import Literals, needed_literals, start_literals, strength
from akoshad.akosha.redact_own import MULTILINE_OWN, OWN_RULES

# gitleaks opens many rules with this left context; it only widens the match leftwards,
# so it is matched by hand (a regex that starts with it is five times slower).
_LEFT_CONTEXT = "(?i)[\\w.-]{0,50}?"
# ... and a few (okta, sumo, meraki, cohere, privateai) with this doubled one: as a regex it
# is tried at every position of a line, some 2,500 steps each (a long line took minutes)
_DOUBLE_LEFT_CONTEXT = "[\\w.-]{0,50}?(?i:[\\w.-]{0,50}?"
# the longest match a rule with an unbounded repeat is looked for (:attr:`Rule.width`)
MAX_MATCH = 4096
# how gitleaks ends a token's match: a quote, a space, ``;``, an escaped line end, the end
_TOKEN_END = r"""(?:[\x60'"\s;]|\\[nr]|$)"""
# ... and how akoshad ends one whose match opens with its own prefix (``sk-ant-api03-``,
# ``AIza``, ``eyJ``): also at the punctuation that follows a token in prose, Markdown and
# URLs (``my key is sk-ant-....``, ``(sk_test_...)``, ``**AIza...**``, ``?key=AIza...&``)
_PROSE_TOKEN_END = r"""(?:[\x60'"\s;.,:!?)\]}>|&*]|\\[nrt]|$)"""


def go_to_python_regex(pattern: str) -> str:
    """Translate the RE2 spellings Python's ``re`` does not take.

    ``\\z`` becomes ``\\Z``; a flag group such as ``(?i)`` in the middle of a pattern (RE2
    applies it to the rest of the enclosing group, its later alternatives included) becomes
    a scoped ``(?i:...)``, closed before each ``|`` of that group and opened again after it
    (``(?:"(?i)a"|'b')`` is ``(?:"(?i:a")|(?i:'b'))``, not ``"`` before either).
    """
    out: list[str] = []
    scoped: list[list[str]] = [[]]  # per open group: the flags scoped since it opened
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
                scoped[-1].append(flags.group(1))
                i += len(flags.group(0))
                continue
            scoped.append([])
            out.append(ch)
        elif ch == "|":
            flags_here = scoped[-1]
            out.append(")" * len(flags_here) + "|" + "".join(f"(?{f}:" for f in flags_here))
        elif ch == ")":
            out.append(")" * len(scoped.pop()) + ")")
            if not scoped:
                scoped.append([])
        else:
            out.append(ch)
        i += 1
    out.append(")" * sum(len(f) for f in scoped))
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
    width: int = MAX_MATCH  # the longest match (at most MAX_MATCH)
    # a regex that is this head then ``(?:.*``: one attempt per line (``redact_gate.anchored``)
    line_head: re.Pattern[str] | None = None

    def secret_span(self, m: re.Match[str]) -> tuple[int, int]:
        """The span of the secret inside a match (the group, else the whole match)."""
        group = self.secret_group
        if group == 0 and m.re.groups:
            group = next((g for g in range(1, m.re.groups + 1) if m.group(g)), 0)
        return m.span(group) if m.group(group) is not None else m.span(0)


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


# a regex that opens with a whole word and reads on over the rest of its line
_LINE_HEAD = re.compile(r"(\\b\w+\\b)\(\?:\.\*")


def _line_head(pattern: str) -> re.Pattern[str] | None:
    """``\\bcurl\\b`` of ``\\bcurl\\b(?:.*...``, compiled; None for other regexes."""
    m = _LINE_HEAD.match(pattern)
    return None if m is None else re.compile(m.group(1))


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
        pattern, left = _strip_left_context(entry.get("regex") or "")
        compiled = _compile(pattern) if pattern else None
        if compiled is None:
            rules.skipped.append(entry.get("id", "?"))
            continue
        if not left and _starts(compiled) is not None:
            compiled = _compile(_prose_end(pattern)) or compiled
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
                width=_width(compiled),
                line_head=_line_head(pattern),
            )
        )
    for kind, pattern, group, keywords in OWN_RULES:
        regex = re.compile(pattern)
        rules.rules.append(
            Rule(
                kind,
                regex,
                group,
                0.0,
                keywords,
                multiline=kind in MULTILINE_OWN,
                literals=needed_literals(regex),
                starts=_starts(regex),
                width=_width(regex),
            )
        )
    return rules


def _prose_end(pattern: str) -> str:
    """A token rule's pattern ending at punctuation too (:data:`_PROSE_TOKEN_END`); only
    for a rule whose every match starts with its own prefix, so that no name, hash or
    word followed by a full stop becomes a secret."""
    if pattern.endswith(_TOKEN_END):
        return pattern[: -len(_TOKEN_END)] + _PROSE_TOKEN_END
    return pattern


def _strip_left_context(pattern: str) -> tuple[str, bool]:
    """The pattern without gitleaks' left context, and whether it had one."""
    if pattern.startswith(_LEFT_CONTEXT):
        return "(?i)" + pattern[len(_LEFT_CONTEXT) :], True
    if pattern.startswith(_DOUBLE_LEFT_CONTEXT):
        return "(?i:" + pattern[len(_DOUBLE_LEFT_CONTEXT) :], True
    return pattern, False


def _width(regex: re.Pattern[str]) -> int:
    """The longest match of ``regex``, at most MAX_MATCH."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        longest = sre_parse.parse(regex.pattern, regex.flags).getwidth()[1]
    return min(int(longest), MAX_MATCH)


def _starts(regex: re.Pattern[str]) -> Literals | None:
    """:func:`start_literals`, when they are rare enough to be worth looking for (two
    characters at least: an ``A`` occurs everywhere)."""
    starts = start_literals(regex)
    return starts if starts is not None and strength(starts) >= 2 else None
