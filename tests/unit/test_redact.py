"""Secret redaction of memory text bound for Akosha: every kind, no false positives."""

from __future__ import annotations

import base64
import random
import re
import time

import pytest

from akoshad.akosha.redact import KEYWORD_REACH, SecretRedactor, shannon_entropy
from akoshad.akosha.redact_rules import go_to_python_regex, load_rules

# Samples built at run time so that no scanner mistakes this file for a leak.
OPENAI = "sk-proj-" + "a1B2c3D4e5" * 7 + "abcd" + "T3BlbkFJ" + "z9Y8x7W6v5" * 7 + "wxyz"
ANTHROPIC = "sk-ant-api03-" + "aB3dE5gH7j" * 9 + "xyz" + "AA"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n" + "MIIEowIBAAKCAQEA" * 8 + "\n-----END RSA PRIVATE KEY-----"
)
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9l"
    "In0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)

# (kind expected, text, the secret that must be gone)
SECRETS = [
    ("aws-access-token", "my id is AKIA" + "IOSFODNN7QWERTYZ ok", "AKIA" + "IOSFODNN7QWERTYZ"),
    (
        "aws-secret-access-key",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzzzKEY123",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzzzKEY123",
    ),
    ("github-pat", "token ghp_" + "1234567890abcdefghijABCDEFGHIJ123456 x", "ghp_1234567890abc"),
    (
        "github-fine-grained-pat",
        "use github_pat_" + "11ABCDEFG0123456789abc_" + "Qm4rT8wZ2kLp9XvB3nHs" * 3 + " now",
        "github_pat_11ABCDEFG",
    ),
    ("gitlab-pat", "export GL=glpat-" + "abcdefghij1234567890", "glpat-abcdefghij1234567890"),
    (
        "slack-bot-token",
        "slack: xoxb-" + "1234567890-1234567890123-abcdefghijABCDEFGHIJabcd",
        "xoxb-1234567890",
    ),
    (
        "stripe-access-token",
        "stripe sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc ",
        "4eC39HqLyjWDarjtT1zdp7dc",
    ),
    ("openai-api-key", f"OPENAI_API_KEY={OPENAI} ", OPENAI),
    ("anthropic-api-key", f"key {ANTHROPIC} here", ANTHROPIC),
    ("gcp-api-key", "maps key AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY ", "SyD-9tSrke72PouQ"),
    ("jwt", f"Authorization: Bearer {JWT} ", JWT),
    ("private-key", f"here is the key\n{PEM}\nthanks", "MIIEowIBAAKCAQEA"),
    ("password-assignment", "login with password=hunter2go please", "hunter2go"),
    ("password-assignment", 'DB_PASSWORD: "correct horse"', "correct horse"),
    ("url-password", "postgres://admin:s3cr3tP4ss@db.example.com/app", "s3cr3tP4ss"),
    # an unencoded @ in the password: all of it goes, not only what precedes the first @
    ("url-password", "mysql://root:P@ssw0rd@localhost/db", "ssw0rd"),
    ("url-password", "redis://:s3cretRedis9@cache.local:6379/0", "s3cretRedis9"),  # no user
    ("password-assignment", "password=/s3cr3t9", "/s3cr3t9"),  # a slash is no directory
    # a shell variable's value is the text itself, letters only or not
    ("password-assignment", "export PGPASSWORD=correcthorsebattery", "correcthorsebattery"),
    ("password-assignment", "MYSQL_PWD=letmein mysql -u root shop", "letmein"),
    # a secret in a URL's query with more parameters after it (gitleaks' rule stops at &)
    (
        "url-query-secret",
        "GET https://api.example.com/v1/items?access_token=Q7vLm2Xk9PzR4tW8yB1nC6dF&page=2",
        "Q7vLm2Xk9PzR4tW8yB1nC6dF",
    ),
    (  # an OAuth callback's code, more parameters after it
        "url-query-secret",
        "redirected to https://app.example.com/cb?code=Zk3p9QwErTy7uIoP1aSdF&state=af0ifjsldkj",
        "Zk3p9QwErTy7uIoP1aSdF",
    ),
    (
        "url-query-secret",
        "open https://portal.example.com/view?session_id=8f2KqX0vLm3NwPz7TbY4&tab=logs",
        "8f2KqX0vLm3NwPz7TbY4",
    ),
    (
        "url-query-secret",
        "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature="
        "8f3a1c0e9b7d6f5a4c3b2a19e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9&X-Amz-Date=2026",
        "8f3a1c0e9b7d6f5a4c3b2a19e8d7c6b5",
    ),
    (
        "sumologic-access-token",
        "SUMO_ACCESS_TOKEN=9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c0b2d4f6e8a1c3e5b7d9f0a2c4e6b8d0f",
        "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c",
    ),
    ("sumologic-access-id", "sumo_access_id=suABCDEFGH1234", "suABCDEFGH1234"),
    # a token as the user name: both go, and a second pass finds nothing more
    (
        "url-password",
        "git clone https://ghp_"
        + "1234567890abcdefghijABCDEFGHIJ123456:x-oauth-basic@github.com/o",
        "x-oauth-basic",
    ),
    # an Authorization header's credentials outside a curl command (a request dump, code)
    (
        "authorization-header",
        "Authorization: Bearer 8f2d9c1a7b3e4f5a6c7d8e9f0a1b2c3d",
        "8f2d9c1a7b3e4f5a6c7d8e9f0a1b2c3d",
    ),
    (
        "authorization-header",
        'requests.get(url, headers={"Authorization": "Bearer Qm4rT8wZ2kLp9XvB3nHsQm4r"})',
        "Qm4rT8wZ2kLp9XvB3nHsQm4r",
    ),
    ("authorization-header", "Authorization: Basic YWRtaW46aHVudGVyMg==", "YWRtaW46aHVudGVyMg"),
    # a password on a command line (gitleaks has no rule for these)
    ("cli-password", "mysql -u root -pHunterTwo42 shop < dump.sql", "HunterTwo42"),
    ("cli-password", "mysqldump --user=app -pqwertyuiop appdb", "qwertyuiop"),
    ("cli-password", "docker login -u bob -p correcthorse registry.example.com", "correcthorse"),
    ("cli-password", "podman login --password=Tr0ub4dor quay.io", "Tr0ub4dor"),
    ("generic-api-key", 'api_token: "a8f5f167f44f4964e6c998dee827110c9"', "a8f5f167f44f4964e6c9"),
    ("generic-api-key", "secret = Zx81kQp0vN3mW7sLr2Yt", "Zx81kQp0vN3mW7sLr2Yt"),
    # base64 with its == padding: the padding is no comparison (a third of such keys end so)
    (
        "generic-api-key",
        'api_secret = "dGhpc2lzYXZlcnlzZWNyZXRrZXkxMjM0NTY3ODkw=="',
        "dGhpc2lzYXZlcnlzZWNy",
    ),
    (
        "generic-api-key",
        "AccountName=acct;AccountKey=Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5d2FsZG9m"
        "cmVkcGx1Z3h5enp5MDEyMzQ1Njc4OQ==;EndpointSuffix=core.windows.net",
        "Zm9vYmFyYmF6cXV4",
    ),
]

BENIGN = [
    # a code or session in a query that is no secret: short, or no value at all
    "see https://github.com/search?q=redact&type=code&l=Python and ?code=ABC123&x=1",
    "https://example.com/app?session=new&page=2",
    "docker run -p 8080:80 -p 443:443 nginx",  # docker's -p is a port outside a login
    "mysql -u root -p shop",  # a bare -p asks for the password
    'mysql -u root -p"$MYSQL_PWD" shop && docker login -u bob -p $REGISTRY_TOKEN',
    "login to the box first: ssh -p 2222 deploy@host, then mysql --protocol=tcp -P3306",
    "The quick brown fox jumps over the lazy dog. We talked about rotating the API key.",
    "Remember: the secret to good tests is that they can fail.",
    "uuid 123e4567-e89b-12d3-a456-426614174000 and 0f8fad5b-d9cb-469f-a165-70867728950e",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b\nAuthor: Ann <ann@example.com>\n"
    "Merge: a1b2c3d e4f5a6b\n    Fix the token refresh (closes #12)",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  file.tar",
    "def get_key(self, key_id: str) -> bytes:\n    return self.keys[key_id]",
    "username, password = decoded.split(':', 1)",
    "password = getpass.getpass()",
    "if auth_type == 'v4-unsigned-body':\n    pass",
    "password: ${DB_PASSWORD}",
    "DB_PASSWORD=DEFAULT_PASSWORD",  # a constant's name
    "REDIS_PASSWORD=$REDIS_PW; PGPASSWORD=settings.password",
    "cd build; PWD=workdir make",  # the shell's working directory, not a password
    "token = os.environ['GITHUB_TOKEN']",
    "https://example.com/search?q=duckdb+wal&page=2",
    "https://example.com/docs?section=keyboard-shortcuts&monkey=banana-bread-2024&sort=key",
    "https://api.example.com/v1/items?token=short&page=2",
    "ssh://git@github.com/org/repo.git",
    "![plot](data:image/png;base64," + base64.b64encode(bytes(range(256)) * 4).decode() + ")",
    "SELECT count(*) FROM conversations_v2 WHERE id = 'c000042'",
    'if api_key == "b7e6c5d4a3f2e1d0c9b8a7f6e5d4c3b2a1":',
    'assert token != "b7e6c5d4a3f2e1d0c9b8a7f6e5d4c3b2a1"',
    # the shell's working directory, as sessions print it
    "cd $(pwd); pwd: /work/main",
    "$ pwd: /home/ann/src/akoshad/",
    "PWD=/tmp pwd=~/projects",
    "pwd: /tmp",
    # words that end in a product's name (Portuguese: summary, consumption) before a hash
    "resumo: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "consumo, 4d967a30111bf29f0eba01c448b375c1629b2fed01cdfcc3aed91f1b57d5dd5e",
    "resumo: suZYXWVUTS9876",
    # an Authorization header that names its credentials, or shows a placeholder
    "Authorization: Bearer ${GITHUB_TOKEN}",
    "Authorization: Bearer <your-token-here>",
    "Authorization: Bearer YOUR_TOKEN_HERE",
    "headers['Authorization'] = 'Bearer ' + token",
    "Authorization header: Bearer scheme, see RFC 6750",
]


@pytest.fixture(scope="module")
def redactor() -> SecretRedactor:
    return SecretRedactor()


@pytest.mark.parametrize(("kind", "text", "secret"), SECRETS, ids=[s[0] for s in SECRETS])
def test_each_kind_is_redacted(redactor: SecretRedactor, kind: str, text: str, secret: str) -> None:
    out, kinds = redactor.redact(text)
    assert secret not in out
    assert f"[REDACTED:{kind}]" in out
    assert kind in kinds


@pytest.mark.parametrize("text", BENIGN)
def test_ordinary_text_is_left_alone(redactor: SecretRedactor, text: str) -> None:
    assert redactor.redact(text) == (text, [])


def test_redaction_is_idempotent(redactor: SecretRedactor) -> None:
    text = "\n".join(t for _, t, _ in SECRETS)
    once, kinds = redactor.redact(text)
    assert len(kinds) >= len(SECRETS)
    assert redactor.redact(once) == (once, [])


def test_surrounding_text_survives(redactor: SecretRedactor) -> None:
    out, _ = redactor.redact("before ghp_" + "1234567890abcdefghijABCDEFGHIJ123456 after")
    assert out == "before [REDACTED:github-pat] after"


NEXT_LINE_VALUE = "Q7vLm2Xk9PzR4tW8yB1nC6dF3gH5jK0s"


@pytest.mark.parametrize(
    "text",
    [
        f"my staging api_token:\n  {NEXT_LINE_VALUE}\nkeep it safe",  # YAML block style
        f"deploy:\n  token:\n    {NEXT_LINE_VALUE}\n",
        f"secret:\napi_key:\n{NEXT_LINE_VALUE}",  # a keyword line, then another, then the value
        f"CRLF api_token:\r\n  {NEXT_LINE_VALUE}\r\nend",
    ],
)
def test_a_value_on_the_line_after_its_key_is_redacted(redactor: SecretRedactor, text: str) -> None:
    """gitleaks' generic rule allows a line break between the key and its value; the scan of
    the keyword's line must take the next line in too (it did not: the value went out)."""
    out, kinds = redactor.redact(text)
    assert NEXT_LINE_VALUE not in out
    assert kinds == ["generic-api-key"]
    assert redactor.redact(out) == (out, [])


def test_a_value_two_lines_after_its_key_or_with_prose_between_is_left_alone(
    redactor: SecretRedactor,
) -> None:
    """Only the next line: what gitleaks' rule itself would not match stays as it is."""
    for text in (
        f"the token is\n\n{NEXT_LINE_VALUE}",
        "api_token:\nwe rotate it every month, see the runbook",
    ):
        assert redactor.redact(text) == (text, [])


def test_many_secrets_on_one_long_line_take_linear_time(redactor: SecretRedactor) -> None:
    """A minified JSON dump (one 600 kB line, 10,000 keys): each finding's allow-list checks
    look at the text around it, not at the whole line again (that was quadratic: 24 s)."""
    text = ",".join(
        f'{{"id":{i},"api_key":"a8f5f167f44f{i:08d}c998dee827110c9"}}' for i in range(10_000)
    )
    started = time.process_time()
    _, kinds = redactor.redact(text)
    elapsed = time.process_time() - started
    assert len(kinds) > 9_000  # (a few values hold one of gitleaks' stopwords)
    assert elapsed < 10, f"{elapsed:.1f} s of CPU"


def _one_line(size: int, head: str = "", middle: str = "") -> str:
    """One line of random base64 (a pasted screenshot), ``head`` first, ``middle`` halfway."""
    half = base64.b64encode(random.Random(size).randbytes(size * 3 // 8)).decode()
    return head + half + middle + half[::-1]


OKTA_TOKEN = "00" + "Qm4rT8wZ2kLp9XvB3nHs" * 2


def test_a_long_line_is_searched_only_near_its_keywords(redactor: SecretRedactor) -> None:
    """A rule's regex runs on the characters around each keyword, not on the whole line:
    a 2 MB one-line memory with "okta" in it took 68 s (the okta rule at every position)."""
    text = _one_line(2_000_000, head="my okta login screenshot: data:image/png;base64,")
    rule = next(r for r in redactor.rules.rules if r.kind == "okta-access-token")
    spans = list(redactor._spans(rule, text, [text.lower().index("okta")]))
    assert sum(s.end - s.start for s in spans) <= 2 * max(KEYWORD_REACH, rule.width) + 2
    started = time.process_time()
    assert redactor.redact(text) == (text, [])
    assert time.process_time() - started < 2


def test_gitleaks_doubled_left_context_is_matched_by_hand() -> None:
    """The rules that open with ``[\\w.-]{0,50}?(?i:[\\w.-]{0,50}?`` are tried only where
    their product's name occurs (as a regex: some 2,500 steps at every position)."""
    kinds = {"okta-access-token", "sumologic-access-id", "cisco-meraki-api-key"}
    kinds |= {"cohere-api-token", "privateai-api-token"}
    rules = [r for r in load_rules().rules if r.kind in kinds]
    assert len(rules) == len(kinds)
    assert all(r.left_context and r.starts is not None for r in rules)


@pytest.mark.parametrize(
    "secret",
    [
        f"my_okta_token: {OKTA_TOKEN}",
        f"{'x' * 60}_okta_api_token = '{OKTA_TOKEN}'",
        f"okta:\n  {OKTA_TOKEN}\n",
    ],
)
def test_a_secret_by_its_keyword_in_a_huge_line_is_found(
    redactor: SecretRedactor, secret: str
) -> None:
    text = _one_line(2_000_000, middle=f" {secret} ")
    out, kinds = redactor.redact(text)
    assert kinds == ["okta-access-token"]
    assert OKTA_TOKEN not in out
    assert len(out) == len(text) - len(OKTA_TOKEN) + len("[REDACTED:okta-access-token]")


def test_every_text_rule_of_the_shipped_set_compiles() -> None:
    rules = load_rules()
    # only gitleaks' path-only rule (no regex for content) is left out
    assert rules.skipped == ["pkcs12-file"]
    assert len(rules.rules) > 200


def test_go_flag_groups_become_scoped() -> None:
    assert go_to_python_regex(r"ab(?i)cd") == r"ab(?i:cd)"
    assert go_to_python_regex(r"(x(?i)y)z") == r"(x(?i:y))z"
    assert go_to_python_regex(r"(?i)abc\z") == r"(?i)abc\Z"
    assert go_to_python_regex(r"[(?i)]x") == r"[(?i)]x"
    assert re.fullmatch(go_to_python_regex(r"ab(?i)cd"), "abCD")
    assert not re.fullmatch(go_to_python_regex(r"ab(?i)cd"), "ABcd")
    # the flag reaches the group's later alternatives, which keep their own openings (the
    # curl rule's single-quoted header needed a double quote before it)
    quoted = go_to_python_regex(r"""(?:"(?i)a"|'b')""")
    assert quoted == r"""(?:"(?i:a")|(?i:'b'))"""
    assert re.fullmatch(quoted, "'B'") and re.fullmatch(quoted, '"A"')
    assert not re.fullmatch(quoted, "\"'b'")


def test_entropy() -> None:
    assert shannon_entropy("aaaa") == 0
    assert shannon_entropy("abcd") == 2


def test_a_line_packed_with_curl_words_is_tried_once_per_line(redactor: SecretRedactor) -> None:
    """The curl rules read on over the rest of their line: a failed attempt at one ``curl``
    is not tried again at every later ``curl`` of that line (50 KB of ``curl `` took 23.6 s
    of CPU, one attempt per word across the rest of the line); what they find is unchanged."""
    rules = {r.kind: r for r in load_rules().rules}
    assert rules["curl-auth-header"].line_head is not None
    assert rules["curl-auth-user"].line_head is not None
    secret = "Zq8vN2xR7tLm4Kp9Wd3s"
    text = "curl " * 20_000 + f"-H 'Authorization: Bearer {secret}'\nok"
    started = time.process_time()
    redacted, kinds = redactor.redact(text)
    assert time.process_time() - started < 2.0  # minutes before
    assert secret not in redacted and "curl-auth-header" in kinds
    # a start where the rule's head does not match ("xcurl") does not hide the line's others
    text = f"xcurl then curl -u admin:{secret} done"
    redacted, kinds = redactor.redact(text)
    assert secret not in redacted and kinds == ["curl-auth-user"]
