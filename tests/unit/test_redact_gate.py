"""The redactor's shortcuts find exactly what the full scan finds: the literals a rule's
match needs or starts with, the anchored search, and the gate DuckDB evaluates."""

from __future__ import annotations

import random
import re
import re._parser as sre
import string
import warnings
from pathlib import Path
from typing import Any

import duckdb
import pytest

from akoshad.akosha.redact import SecretRedactor
from akoshad.akosha.redact_gate import (
    Literals,
    anchored,
    gate_pattern,
    needed_literals,
    start_literals,
)
from akoshad.akosha.redact_rules import Rule, load_rules
from akoshad.akosha.rows import list_rows
from akoshad.duckdb_commands import load_batches_here, write_memories_json
from tests.akosha_fixtures import make_reflection_db
from tests.unit.test_redact import BENIGN, SECRETS

_PRINTABLE = string.ascii_letters + string.digits + " _-./+=:\"'~,;"
_CATEGORIES = {
    sre.CATEGORY_DIGIT: string.digits,
    sre.CATEGORY_WORD: string.ascii_letters + string.digits + "_",
    sre.CATEGORY_SPACE: " \t\n",
    sre.CATEGORY_NOT_SPACE: string.ascii_letters + string.digits + ".-",
    sre.CATEGORY_NOT_WORD: " .-:=",
    sre.CATEGORY_NOT_DIGIT: string.ascii_letters + " .",
}


def _one_of(av: Any, rng: random.Random) -> str:
    """A character of the class ``av`` (a few tries at a negated one)."""
    pool: list[str] = []
    negate = False
    for op, arg in av:
        if op is sre.NEGATE:
            negate = True
        elif op is sre.LITERAL:
            pool.append(chr(arg))
        elif op is sre.RANGE:
            pool.extend(chr(c) for c in range(arg[0], min(arg[1], arg[0] + 60) + 1))
        elif op is sre.CATEGORY:
            pool.extend(_CATEGORIES.get(arg, "a"))
    if negate:
        return rng.choice([c for c in _PRINTABLE if c not in pool] or ["\x00"])
    return rng.choice(pool or ["a"])


def sample(items: Any, rng: random.Random, icase: bool) -> str:
    """A random string that the parsed regex ``items`` often matches."""
    out: list[str] = []
    for op, av in items:
        if op is sre.LITERAL:
            c = chr(av)
            out.append(c.swapcase() if icase and rng.random() < 0.3 else c)
        elif op is sre.IN:
            out.append(_one_of(av, rng))
        elif op is sre.ANY:
            out.append(rng.choice(_PRINTABLE))
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", None)):
            low, high, sub = av
            n = rng.randint(low, min(high, low + 3))
            out.extend(sample(sub, rng, icase) for _ in range(n))
        elif op is sre.BRANCH:
            out.append(sample(rng.choice(av[1]), rng, icase))
        elif op is sre.SUBPATTERN:
            _g, add, remove, sub = av
            inner = (icase or bool(add & re.IGNORECASE)) and not remove & re.IGNORECASE
            out.append(sample(sub, rng, inner))
        elif op is sre.ATOMIC_GROUP:
            out.append(sample(av, rng, icase))
    return "".join(out)


def matches_of(rule: Rule, rng: random.Random, tries: int = 40) -> list[re.Match[str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = sre.parse(rule.regex.pattern, rule.regex.flags)
    icase = bool(parsed.state.flags & re.IGNORECASE)
    found = []
    for _ in range(tries):
        text = " " + sample(parsed, rng, icase) + " "
        m = rule.regex.search(text)
        if m is not None and m.group(0):
            found.append(m)
    return found


def holds(literals: Literals, text: str) -> bool:
    return any((lit.lower() in text.lower()) if icase else lit in text for lit, icase in literals)


def starts(literals: Literals, text: str) -> bool:
    low = text.lower()
    return any(
        low.startswith(lit.lower()) if icase else text.startswith(lit) for lit, icase in literals
    )


@pytest.fixture(scope="module")
def redactor() -> SecretRedactor:
    return SecretRedactor()


def test_every_rule_match_holds_its_needed_literals_and_starts_with_its_start_literals() -> None:
    rng = random.Random(15)
    checked = 0
    for rule in load_rules().rules:
        needed, first = needed_literals(rule.regex), start_literals(rule.regex)
        for m in matches_of(rule, rng):
            checked += 1
            if needed is not None:
                assert holds(needed, m.group(0)), (rule.kind, m.group(0), needed)
            if first is not None:
                assert starts(first, m.group(0)), (rule.kind, m.group(0), first)
    assert checked > 2000  # the sampler does reach most rules


def test_literals_read_through_groups_branches_classes_and_case() -> None:
    jwt = re.compile(r"\b(ey[a-zA-Z0-9]{17,}\.ey[a-z]{17,})")
    assert needed_literals(jwt) == {(".ey", False)}
    assert start_literals(jwt) == {("ey", False)}
    mixed = re.compile(r"(?i)(?:token|(?-i:[Aa]pi|API))x")
    assert start_literals(mixed) == {
        ("token", True),
        ("Api", False),
        ("api", False),
        ("API", False),
    }
    assert needed_literals(re.compile(r"a?b*[cd]")) is None  # nothing is needed
    assert start_literals(re.compile(r"x?abc")) is None  # the match may start with a


def test_the_anchored_search_finds_what_finditer_finds() -> None:
    rng = random.Random(7)
    corpus = [t for _, t, _ in SECRETS] + BENIGN
    for rule in load_rules().rules:
        if rule.starts is None:
            continue
        texts = [*corpus, " ".join(m.string for m in matches_of(rule, rng, 10))]
        for text in texts:
            want = [m.span() for m in rule.regex.finditer(text)]
            got = [m.span() for m in anchored(rule.regex, rule.starts, text, text.lower())]
            assert got == want, (rule.kind, text)


def test_a_secret_after_characters_that_lowercase_longer_is_still_found(
    redactor: SecretRedactor,
) -> None:
    secret = "ghp_" + "1234567890abcdefghijABCDEFGHIJ123456"
    # "İ" lowercases to two characters: the keyword offsets of the lowercased text are
    # further on than in the text (here, on the next line)
    text = "İ" * 100 + "\ntoken " + secret + "\n" + "y" * 200
    out, kinds = redactor.redact(text)
    assert secret not in out and kinds == ["github-pat"]


def test_the_gate_matches_every_sample_secret_in_duckdb(redactor: SecretRedactor) -> None:
    gate = redactor.gate
    assert gate is not None
    con = duckdb.connect()
    for kind, text, _ in SECRETS:
        assert con.execute("SELECT regexp_matches(?, ?)", [text, gate]).fetchone() == (True,), kind
        assert re.search(gate, text), kind
    # most ordinary prose needs no scan
    prose = "We moved the cache to the new bucket and ran the tests twice."
    assert con.execute("SELECT regexp_matches(?, ?)", [prose, gate]).fetchone() == (False,)


def test_redaction_through_duckdb_equals_the_full_scan(
    tmp_path: Path, redactor: SecretRedactor
) -> None:
    texts = [t for _, t, _ in SECRETS] + BENIGN
    texts += ["clé: password=hunter2go é", "\u017fk ok", "We ran the tests twice."]
    db = make_reflection_db(tmp_path / "reflection.duckdb")
    con = duckdb.connect(str(db))
    emb = "[" + ",".join(["0.5"] * 384) + "]"
    for i, text in enumerate(texts):
        con.execute(
            "INSERT INTO conversations_v2 (id, content, category, embedding, timestamp) "
            "VALUES (?, ?, 'c', CAST(? AS FLOAT[384]), TIMESTAMP '2025-01-01 00:00:00')",
            [f"c{i:04d}", text, emb],
        )
    con.close()
    refs = list_rows(db, "s")
    batches, _, found = load_batches_here(db, "s", refs, 1000, 1 << 30, redactor)
    got = {m["memory_id"]: m["text"] for b in batches for m in b}
    for i, text in enumerate(texts):
        want, kinds = redactor.redact(text)
        assert got[f"s:c{i:04d}"] == want
        assert found.get(f"s:c{i:04d}", []) == kinds
    out = tmp_path / "memories.json"
    ids, found_json = write_memories_json(db, "s", refs, 7, True, out)
    assert found_json == found and len(ids) == len(texts)
    body = out.read_text("utf-8")
    for _, _, secret in SECRETS:
        assert secret not in body


def test_the_gate_keeps_only_the_literals_no_shorter_one_covers() -> None:
    rules = [
        (frozenset({("xABCDy", False)}), None),  # covered by "bc" ignoring case
        (frozenset({("bc", True)}), frozenset({("b", True)})),  # the literal is the stronger
        (None, frozenset({("q.z", False), ("token", True)})),  # keywords only
    ]
    gate = gate_pattern(rules)
    assert gate == r"(?i:bc)|(?i:token)|q\.z"
    for text in ("xABCDy", "abcd", "my Token", "q.z"):
        assert re.search(gate, text)
    assert not re.search(gate, "qxz AB-CD")
    assert gate_pattern([*rules, (None, None)]) is None  # a rule with neither: scan all


def test_the_default_redactor_is_made_once_per_process() -> None:
    from akoshad.duckdb_commands import _redactor

    first = _redactor(True)
    assert first is not None and _redactor(True) is first  # not a new gate per request
    assert _redactor(False) is None
