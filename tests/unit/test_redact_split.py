"""Secrets split across lines: a token wrapped by a terminal, also inside JSON text."""

from __future__ import annotations

import json

import pytest

from akoshad.akosha.redact import SecretRedactor
from akoshad.akosha.redact_wrap import wraps

# Samples built at run time so that no scanner mistakes this file for a leak.
GITHUB = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
ANTHROPIC = "sk-ant-api03-" + "aB3dE5gH7j" * 9 + "xyz" + "AA"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9l"
    "In0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"


@pytest.fixture(scope="module")
def redactor() -> SecretRedactor:
    return SecretRedactor()


def _wrapped(token: str, first: int, width: int = 80, brk: str = "\n") -> str:
    lines = [token[:first]]
    rest = token[first:]
    while rest:
        lines.append(rest[:width])
        rest = rest[width:]
    return brk.join(lines)


@pytest.mark.parametrize(
    ("token", "kind", "text"),
    [
        (GITHUB, "github-pat", "export GITHUB_TOKEN={}\nnext line"),
        (GITHUB, "github-pat", "$ echo the token is {} ok"),
        (ANTHROPIC, "anthropic-api-key", "key: {}"),
        (JWT, "jwt", "Authorization: Bearer {}"),
        (AWS_SECRET, "aws-secret-access-key", "aws_secret_access_key = {}"),
    ],
)
@pytest.mark.parametrize("brk", ["\n", "\r\n", "json"])
@pytest.mark.parametrize("first", [6, 28])
def test_a_token_wrapped_over_lines_is_redacted(
    redactor: SecretRedactor, token: str, kind: str, text: str, brk: str, first: int
) -> None:
    """A token cut by a terminal's width and copied with the line break (or that copy
    stored as JSON text, the break spelt \\n) reached Akosha: neither part alone has the
    token's shape (the first too short, the second no prefix)."""
    sample = text.format(_wrapped(token, first, brk="\n" if brk == "json" else brk))
    if brk == "json":
        sample = json.dumps({"content": sample})
    out, kinds = redactor.redact(sample)
    assert token[-12:] not in out and token[first : first + 12] not in out, out
    assert kind in kinds
    assert redactor.redact(out) == (out, [])


@pytest.mark.parametrize(
    "text",
    [
        "AUTHTYPE_SERVER = 2\nCERT_CHAIN_POLICY_SSL = 4\n",
        "implementation details\nconsiderations below\n",
        "sha256sum:\n3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b\n"
        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9\n",
        "token = get_token()\nrefresh_token_1234567890 = None\n",
    ],
)
def test_lines_that_are_no_wrapped_token_are_left(redactor: SecretRedactor, text: str) -> None:
    """Joining lines finds nothing new where no token was cut: two assignments, prose,
    a list of hashes."""
    assert redactor.redact(text) == (text, [])


def test_only_breaks_between_token_characters_are_read() -> None:
    """Ordinary line breaks (indented code, prose, short words) are not looked at twice."""
    assert wraps("def f(x):\n    return x\n\nsome prose\nwith words\n") == []
    assert len(wraps("ghp_" + "a1" * 10 + "\n" + "b2" * 10)) == 1
    assert len(wraps("ghp_" + "a1" * 10 + "\\n" + "b2" * 10)) == 1


PEM_BODY = [
    "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi0r1r3hqrA5xq2ZLkq5g6A1bQ" + str(i) for i in range(5)
]


@pytest.mark.parametrize(
    "text",
    [
        "$ head -4 id_rsa\n-----BEGIN RSA PRIVATE KEY-----\n{0}\n{1}\n{2}\n",
        "-----BEGIN PRIVATE KEY-----\n{0}\n{1}\n...\nthanks, that was it",
        json.dumps(
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"
            "DEK-Info: AES-128-CBC,ABCDEF0123456789\n\n{0}\n{1}\n{2}"
        ),
        "-----BEGIN OPENSSH PRIVATE KEY----- {0} {1} {2} {3}",
    ],
)
def test_a_private_key_cut_short_is_redacted(redactor: SecretRedactor, text: str) -> None:
    """A PEM private key without its END line (the head of the file, a paste cut off)
    reached Akosha whole: gitleaks' rule needs the END line."""
    sample = text.format(*PEM_BODY)
    out, kinds = redactor.redact(sample)
    assert not any(line in out for line in PEM_BODY), out
    assert "private-key" in kinds
    assert "thanks, that was it" in out or "thanks" not in sample
    assert redactor.redact(out) == (out, [])


@pytest.mark.parametrize(
    "text",
    [
        'if line.startswith("-----BEGIN PRIVATE KEY-----"):\n    return parse_key(line)\n',
        "-----BEGIN PRIVATE KEY-----\nthe key goes here\n-----END PRIVATE KEY-----",
        '"-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXk=": "a prefix"',
    ],
)
def test_a_private_key_header_alone_is_left(redactor: SecretRedactor, text: str) -> None:
    """A header with no key body after it (code that looks for it, a placeholder) is no
    secret."""
    assert redactor.redact(text) == (text, [])


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("my password is hunter2!", "hunter2"),
        ("The root password was `Xy7!k9zz`.", "Xy7!k9zz"),
        ("passphrase is now 'tr0ub4dor&3'", "tr0ub4dor&3"),
        ("ok so the wifi password is Summ3r2024, thanks", "Summ3r2024"),
        ("Password is: P@ssw0rd", "P@ssw0rd"),
        ("the db password is 12345678.", "12345678"),
        ("in Markdown: `my password is hunter2!` (inline code)", "hunter2"),
        ('he said "my password is hunter2" and left', "hunter2"),
        ("the password for the wifi is Summ3r2024", "Summ3r2024"),
        ("password for root on db1 was Xy7!k9zz.", "Xy7!k9zz"),
    ],
)
def test_a_password_told_in_prose_is_redacted(
    redactor: SecretRedactor, text: str, secret: str
) -> None:
    """'my password is hunter2!' reached Akosha: no rule reads a password in a sentence."""
    out, kinds = redactor.redact(text)
    assert secret not in out
    assert kinds == ["prose-password"]
    assert redactor.redact(out) == (out, [])


@pytest.mark.parametrize(
    "text",
    [
        "the password is sha256-hashed",
        "the password is 8-16 characters",
        "password is SHA-256 hashed",
        "the password is correct!",
        "password is required",
        "The password is stored in 1Password",
        "password is 2FA-protected",
        "the password is ${DB_PASSWORD}",
        "password is <your password>",
        "the password is getpass()",
        "password is os.environ['PW']",
        "assert password is user.password",
        "password is DEFAULT_PASSWORD",
        "the password is argon2id-hashed",
        "The password is: ********",
        "password is None.",
        "the password is 12 chars",
        "the password is 4096-bit",
        "the password for this account is stored hashed",
        "the password for pgbouncer is in ~/.pgpass",
        "password for the db user is DB_PASSWORD",
        "the rule reads password/passphrase/passcode is|was [now|still]",
    ],
)
def test_prose_about_a_password_is_left(redactor: SecretRedactor, text: str) -> None:
    """What describes, names or computes a password is none (false positives cost
    memories)."""
    assert redactor.redact(text) == (text, [])


@pytest.mark.parametrize("first", [2, 20])
@pytest.mark.parametrize("brk", ["\n", "\\n"])
def test_the_gate_lets_a_wrapped_token_be_scanned(
    redactor: SecretRedactor, first: int, brk: str
) -> None:
    """A token whose prefix a wrap cut in two (gh then p_...) holds none of the gate's
    literals: DuckDB's gate (RE2) let the text go unscanned on the snapshot path."""
    import duckdb

    text = "here " + _wrapped(GITHUB, first, brk=brk)
    gate = redactor.gate
    assert gate is not None
    con = duckdb.connect()
    assert con.execute("SELECT regexp_matches(?, ?)", [text, gate]).fetchone() == (True,)
    assert con.execute("SELECT regexp_matches(?, ?)", ["two\nlines", gate]).fetchone() == (False,)
    out, kinds = redactor.redact(text)
    assert kinds == ["github-pat"] and GITHUB[-12:] not in out
