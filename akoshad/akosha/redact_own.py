"""akoshad's own secret rules, beside gitleaks' (:mod:`akoshad.akosha.redact_rules` compiles
both): what gitleaks' rules do not cover, as coding sessions print it (passwords in URLs,
secrets named in a URL's query, ``password=`` assignments, an ``Authorization`` header's
credentials outside a curl command, a password on a command line or set in SQL, a secret
environment variable given as a name and a value, a Discord webhook's token, a Tailscale
key, a .netrc password, the AWS secret key next to its name, a PEM private key cut short,
a password told in a sentence)."""

from __future__ import annotations

import re

# akoshad's own rules: (id, regex, secret group, keywords).
OWN_RULES: tuple[tuple[str, str, int, tuple[str, ...]], ...] = (
    (
        "url-password",
        # the user may be empty (redis://:pw@host); the password runs to the last @ before
        # the host: an unencoded @ in it (P@ssw0rd) does not leave its tail behind; no [ in
        # the user: a placeholder there ([REDACTED:github-pat]:...) is not read as one; in
        # JSON that escapes its slashes (PHP's json_encode), :\/\/ as well
        r"\b[A-Za-z][A-Za-z0-9+.-]{1,20}:(?://|\\/\\/)[^\s:/@\"'<>\[\]\\]{0,128}:"
        r"([^\s/\"'<>]{1,256})@[^\s@/]",
        1,
        ("://", ":\\/\\/"),
    ),
    (
        "url-query-secret",
        # a secret named as such in a URL's query, followed by more parameters (&...), which
        # gitleaks' generic rule does not take: ?access_token=...&page=2, a presigned URL's
        # X-Amz-Signature, an OAuth callback's ?code=, a session id or ticket in a link, an
        # Azure Functions key; only these names, and values of 16 characters or more
        r"(?i)[?&](?:access_token|refresh_token|id_token|auth_token|token|client_secret|"
        r"secret|api_key|apikey|password|x-amz-signature|x-amz-security-token|"
        r"x-goog-signature|signature|sig|code|session|session_id|sessionid|jwt|ticket|"
        r"otp|hmac)=([^&#\s\"'<>]{16,1024})",
        1,
        (
            "token=",
            "secret=",
            "api_key=",
            "apikey=",
            "password=",
            "signature=",
            "sig=",
            "code=",
            "session=",
            "session_id=",
            "sessionid=",
            "jwt=",
            "ticket=",
            "otp=",
            "hmac=",
        ),
    ),
    (
        "password-assignment",
        # also an environment variable's *_PASS (DB_PASS, SMTP_PASS: capitals only, as
        # first_pass = ... in code is no password) and Ansible's ansible_*_pass
        r"(?i)\b(?:[a-z0-9_.-]{0,30}(?:passw(?:or)?d|_pwd)|passwd|pwd|passphrase"
        r"|(?-i:[A-Z][A-Z0-9_]{0,30}_PASS)|ansible_(?:ssh_|become_|sudo_)?pass)[\"']?[ \t]*"
        r"(?:=|:=|:)(?!=)[ \t]*(?:[\"'](?!\[REDACTED)([^\n\"']{4,200})[\"']"
        r"|([^\s\"'`,;()\[\]{}]{4,200}))",
        0,
        ("passw", "pwd", "passphrase", "_pass"),
    ),
    (
        "authorization-header",
        # an HTTP Authorization header's credentials anywhere (a log, a request dump, code:
        # "Authorization": "Bearer ..."), which gitleaks finds only inside a curl command
        r"(?i)\b(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?"
        r"(?:bearer|basic|token|api-?key)[ \t]+([\w.~+/=-]{12,4096})(?![\w.~+/=-])",
        1,
        ("authorization",),
    ),
    (
        "cli-password",
        # a password given on a command line: mysql's -pSECRET (attached; a bare -p asks
        # for it), a registry or Azure login's -p/--password SECRET (docker, podman,
        # nerdctl, helm registry, oras, skopeo, buildah, az), sshpass -p, redis-cli -a,
        # mongo's -p/--password, sqlcmd's -P and openssl's -passin/-passout pass:SECRET;
        # quoted or not; a $VARIABLE is no secret; case matters (mysql's -P is a port),
        # and docker's other -p (docker run -p 8080:80) is a port
        r"(?:\b(?:mysql(?:dump|admin|sh)?|mariadb)\b[^\n]{0,200}?[ \t]-p"
        r"|\b(?:docker|podman|nerdctl|buildah|skopeo|oras|helm[ \t]+registry|az)[ \t]+login\b"
        r"[^\n]{0,200}?[ \t](?:-p|--password)(?:[ \t]+|=)"
        r"|\bmongo(?:sh|dump|restore|import|export)?\b[^\n]{0,200}?[ \t](?:-p|--password)"
        r"(?:[ \t]+|=)"
        r"|\bsshpass\b[^\n]{0,50}?[ \t]-p[ \t]*|\bsqlcmd\b[^\n]{0,200}?[ \t]-P[ \t]*"
        r"|\bredis-cli\b[^\n]{0,200}?[ \t](?:-a|--pass)[ \t]+"
        r"|\bopenssl\b[^\n]{0,300}?[ \t]-pass(?:in|out)?[ \t]+pass:)"
        r"(?![$\[])(?:'(?!\$)([^'\n]{4,200})'|\"(?!\$)([^\"\n]{4,200})\"|([^\s\"'`]{4,200}))",
        0,
        ("mysql", "mariadb", " login", "mongo", "sshpass", "sqlcmd", "redis-cli", "openssl"),
    ),
    (
        "sql-password",
        # a password set in SQL: in a CREATE/ALTER USER|ROLE or GRANT statement,
        # PostgreSQL's PASSWORD '...' and MySQL's IDENTIFIED [WITH plugin] BY '...'
        # (not "identified by 'name'" in prose), and SET PASSWORD FOR ... = '...'
        r"(?i)(?:\b(?:(?:create|alter)[ \t]+(?:user|role)|grant)\b[^\n;]{0,200}?[ \t]"
        r"(?:password|identified[ \t]+(?:with[ \t]+\w+[ \t]+)?by(?:[ \t]+password)?)"
        r"|\bset[ \t]+password\b[^\n;=]{0,200})[ \t]*=?[ \t]*'([^'\n]{4,200})'",
        1,
        ("password", "identified"),
    ),
    (
        "env-var-value",
        # an environment variable given as a name and a value: a Kubernetes container's
        # env (- name: DB_PASSWORD, then value: ... on the next line), an ECS task
        # definition's {"name": "API_TOKEN", "value": "..."}; a $(VAR), ${...} or {{ }}
        # template is no secret
        r"(?i)\bname[\"']?[ \t]*:[ \t]*[\"']?[\w.-]*(?:passw(?:or)?d|secret|token"
        r"|(?:api|secret|access|private|signing|encryption|master)_?key|credentials?)"
        r"[\"']?[ \t]*,?\s{0,40}?-?[ \t]*[\"']?value[\"']?[ \t]*:"
        r"[ \t]*(?:\"(?![$\{<])([^\"\n]{4,200})\"|'(?![$\{<])([^'\n]{4,200})'"
        r"|(?![$\{<])([^\s\"',\{}]{4,200}))",
        0,
        (
            *("passw", "secret", "token", "credential", "api_key", "apikey", "access_key"),
            *("accesskey", "private_key", "privatekey", "signing_key", "signingkey"),
            *("encryption_key", "encryptionkey", "master_key", "masterkey"),
        ),
    ),
    (
        "discord-webhook-url",
        # a Discord webhook's URL holds its token (gitleaks has Slack's and Teams', not
        # Discord's): https://discord.com/api/webhooks/ID/TOKEN
        r"(?i)\bhttps?://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/api/(?:v\d+/)?webhooks/"
        r"\d{17,20}/([\w-]{60,80})",
        1,
        ("discord",),
    ),
    (
        "tailscale-key",
        # a Tailscale auth, API or OAuth client key (tskey-auth-<id>-<secret>: joins a
        # machine to the tailnet); gitleaks has none, and its generic rule drops a value
        # that holds a stop word ("auth")
        r"\b(tskey-(?:auth|api|client|scim|webhook)-[A-Za-z0-9]{6,40}-[A-Za-z0-9]{20,80})"
        r"(?![A-Za-z0-9])",
        1,
        ("tskey-",),
    ),
    (
        "netrc-password",
        # ~/.netrc (curl, git, ftp, heroku): machine HOST login USER password SECRET, on
        # one line or one entry a line
        r"(?i)\bmachine[ \t]+[\w.:-]{1,200}(?:(?:[ \t]+|[ \t]*\r?\n[ \t]*)(?:login|account)"
        r"[ \t]+[^\s]{1,200}){1,2}(?:[ \t]+|[ \t]*\r?\n[ \t]*)password[ \t]+([^\s]{4,200})",
        1,
        ("machine",),
    ),
    (
        "aws-secret-access-key",
        # aws_secret_access_key = KEY, and as the AWS CLI asks for it and takes it: the
        # prompt of `aws configure` (AWS Secret Access Key [None]: KEY) and `aws configure
        # set aws_secret_access_key KEY` (a name without spaces, then blanks)
        r"(?i)aws(?:[\w. -]{0,20}secret[\w. -]{0,20}(?:\[[^\]\n]{0,40}\])?[\"']?[ \t]*"
        r"(?:=|:=|:)[ \t]*[\"']?|[\w.-]{0,20}secret[\w.-]{0,20}[ \t]+)"
        r"([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
        1,
        ("secret",),
    ),
    (
        "private-key",
        # a PEM private key cut short (no END line: `head` of the file, a paste cut off,
        # "..." in its place): its header, then its base64 lines (or as JSON text spells
        # the line breaks); gitleaks' rule needs the END line. Lines of 32 characters or
        # more, so that the prose after it is left
        r"(?i)-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----"
        r"(?:(?:\s|\\[rn])+[A-Za-z-]{1,40}:[^\n\\]{0,200})*"
        r"(?:(?:\s|\\[rn])+[A-Za-z0-9+/=]{32,})+",
        0,
        ("-----begin",),
    ),
    (
        "prose-password",
        # a password told in a sentence: "my password is hunter2!", "the root password
        # was `Xy7!k9`", "passphrase is now 'tr0ub4dor'", "the password for the wifi is
        # Summ3r2024"; only a value that reads as one (prose_password_value), as "the
        # password is sha256-hashed" is none
        r"(?i)\b(?:password|passphrase|passcode)"
        r"(?:[ \t]+(?:for|of|on|to)[ \t]+[^\n.,;:!?]{1,40}?)?[ \t]+(?:is|was)"
        r"(?:[ \t]+(?:now|still))?(?:[ \t]+(?:set|changed|reset))?(?:[ \t]+to)?"
        r"(?:[ \t]*:[ \t]*|[ \t]+)"
        r"(?:`([^`\n]{4,64})`|\"([^\"\n]{4,64})\"|'([^'\n]{4,64})'"
        r"|([^\s\"'`<{$\[(][^\s\"'`]{2,62}[^\s\"'`.,;:?)\]]))(?![^\s.,;:?)\]`'\"])",
        0,
        ("password", "passphrase", "passcode"),
    ),
)

# a value after "password is" that names, describes or computes the password, not it:
# words joined by hyphens (sha256-hashed, 2FA-protected), a name (DEFAULT_PASSWORD,
# user.password: "assert password is user.password"), a call or an index, a number range
# or a short number (8-16, 12); or one that opens with an algorithm's name (SHA-256,
# AES-128, argon2id, pbkdf2_sha256)
_NOT_A_PASSWORD = re.compile(
    r"(?i:[a-z0-9]+(?:-[a-z]+)+)|[A-Za-z_]+|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+"
    r"|[A-Za-z_][\w.]*[\[(].*|[^A-Za-z]{0,5}"
)
_ALGORITHM = re.compile(r"(?i)(?:sha|md|aes|rsa|utf|base|argon|pbkdf|ed|hs|rs|es)[-_]?\d")


def prose_password_value(value: str) -> bool:
    """Whether ``value``, told as a password in prose, reads as one: with a digit or a
    symbol inside it (trailing punctuation aside), and none of _NOT_A_PASSWORD."""
    core = value.rstrip("!.?")
    if _NOT_A_PASSWORD.fullmatch(core) or _ALGORITHM.match(core):
        return False
    return any(not c.isalpha() for c in core)


# own rules whose match spans lines, read over the whole text when a keyword occurs (the
# others only on a keyword's line and the next)
MULTILINE_OWN = frozenset({"netrc-password", "private-key"})
