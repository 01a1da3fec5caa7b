"""One redaction for every text that leaves the process: logs, status, state, errors.

Registered secrets (the S3 secret key, webhook secrets, the passwords and tokens inside
configured URLs) are replaced by ``**********`` wherever they appear; any URL in a text also
loses the password of its user info and the values of query parameters with secret names
(``token``, ``key``, ``secret``, ``signature``, ``password``, ``code``, ``X-Amz-*``, ...),
registered or not. ``redact_url`` is the form to print a URL in.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, unquote, urlsplit

if TYPE_CHECKING:
    from akoshad.config import Settings

REDACTED = "**********"
MIN_SECRET = 4  # shorter values are too ambiguous to replace in free text
SECRET_WORDS = ("token", "key", "secret", "signature", "password", "passwd", "credential", "auth")
SECRET_PREFIXES = ("x-amz-",)
# names that hold a credential without a secret word in them: an Azure Functions key and
# an OAuth authorization code (``?code=``), a session id or ticket, a one-time password
SECRET_NAMES = frozenset(
    {"sig", "pwd", "pass", "code", "jwt", "session", "sessionid", "ticket", "hmac", "otp"}
)

_replacements: dict[str, str] = {}
_order: list[tuple[str, str]] = []  # longest first, so a whole URL wins over its parts

# scheme://userinfo@ (greedy: the user info runs to the last @ before the path)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^\s/?#]*)@")
# ?name=value or &name=value (also ; and # as separators)
_QUERY_PAIR = re.compile(r"([?&;#])([^=&;#\s\"'<>]+)=([^&;#\s\"'<>]*)")


def is_secret_name(name: str) -> bool:
    """True for a query parameter name whose value is a credential."""
    low = unquote(name).lower()
    return (
        low in SECRET_NAMES
        or any(word in low for word in SECRET_WORDS)
        or low.startswith(SECRET_PREFIXES)
    )


def _userinfo(match: re.Match[str]) -> str:
    scheme, info = match.group(1), match.group(2)
    if info == REDACTED:
        return match.group(0)
    user, sep, _password = info.partition(":")
    # a user name alone may be a token (https://TOKEN@host): hide it as well
    return f"{scheme}{user}:{REDACTED}@" if sep else f"{scheme}{REDACTED}@"


def _query_pair(match: re.Match[str]) -> str:
    sep, name, value = match.groups()
    if not value or value == REDACTED or not is_secret_name(name):
        return match.group(0)
    return f"{sep}{name}={REDACTED}"


def scrub_urls(text: str) -> str:
    """``text`` with URL passwords and secret query values replaced, registered or not."""
    if "://" in text:
        text = _USERINFO.sub(_userinfo, text)
    if "=" in text:
        text = _QUERY_PAIR.sub(_query_pair, text)
    return text


def redact_url(url: str) -> str:
    """``url`` fit to print: no user-info password, no secret query value."""
    return redact(url)


def _add(raw: str, safe: str) -> None:
    if raw and raw != safe and _replacements.get(raw) != safe:
        _replacements[raw] = safe
        _order[:] = sorted(_replacements.items(), key=lambda kv: len(kv[0]), reverse=True)


def register_secret(value: str | None) -> None:
    """Never let ``value`` reach a log line, a status or a stored error (values shorter
    than 4 characters are too ambiguous to replace)."""
    if value and len(value) >= MIN_SECRET:
        _add(value, REDACTED)
        _add(json.dumps(value)[1:-1], REDACTED)  # as it reads inside JSON text


def _variants(value: str) -> set[str]:
    """``value`` as written, decoded and encoded (libraries print URLs either way)."""
    return {value, unquote(value), quote(unquote(value), safe="")}


def register_url(url: str | None) -> None:
    """Register the credentials inside ``url``: the password (or bare user name) of its
    user info and the values of its secret query parameters, with the whole URL itself."""
    if not url:
        return
    _add(url, scrub_urls(url))
    match = _USERINFO.search(url)
    if match is not None:
        user, sep, password = match.group(2).partition(":")
        secret = password if sep else user
        for form in _variants(secret):
            register_secret(form)
        # short ones only in context, where they cannot be mistaken
        _add(match.group(0), _userinfo(match))
        if sep:
            _add(f"{user}:{password}@", f"{user}:{REDACTED}@")
    for match in _QUERY_PAIR.finditer(url):
        _sep, name, value = match.groups()
        if value and is_secret_name(name):
            for form in _variants(value):
                register_secret(form)
            _add(f"{name}={value}", f"{name}={REDACTED}")


def register_settings(settings: Settings) -> None:
    """Register every secret of the configuration: the S3 secret key, webhook secrets and
    the credentials in ``akosha_url``, ``cloud_endpoint`` and webhook URLs."""
    cs = settings.cloud_sync
    if cs.secret_access_key is not None:
        register_secret(cs.secret_access_key.get_secret_value())
    urls: list[str | None] = [settings.akosha_url, cs.cloud_endpoint]
    for hook in settings.webhooks:
        urls.append(hook.url)
        if hook.secret is not None:
            register_secret(hook.secret.get_secret_value())
    for url in urls:
        register_url(url)


def redact(text: str) -> str:
    """``text`` with every registered secret and every URL credential replaced."""
    for raw, safe in _order:
        if raw in text:
            text = text.replace(raw, safe)
    return scrub_urls(text)


def _token_like(segment: str) -> bool:
    """A path segment that may be a credential (Slack/Discord style webhook URLs, a secret
    topic): 16 characters or more with a digit, or letters of both cases, or no word
    separator (``-``, ``_``, ``.``). Only plain words joined by separators stay."""
    if len(segment) < 16:
        return False
    if any(ch.isdigit() for ch in segment) or not any(ch in "-_." for ch in segment):
        return True
    return any(ch.isupper() for ch in segment) and any(ch.islower() for ch in segment)


def topic_host(host: str | None) -> bool:
    """A ntfy server (``ntfy.sh``, ``ntfy.example.com``): its URL's path is the topic,
    which whoever knows may read and post to, however short or plain."""
    host = (host or "").lower()
    return host == "ntfy.sh" or host.endswith(".ntfy.sh") or host.startswith("ntfy.")


def _path_secrets(path: str, topics: bool = False) -> list[str]:
    """What :func:`redact_webhook_url` hides in a URL path: token-like segments (every
    segment with ``topics``: a ntfy server's) and the values of ``;name=value`` path
    parameters (``;jsessionid=...``)."""
    found: list[str] = []
    for segment in path.split("/"):
        head, *params = segment.split(";")
        if topics or _token_like(head):
            found.append(head)
        found += [p.partition("=")[2] if "=" in p else p for p in params]
    return [s for s in found if s]


def _redact_path(path: str, topics: bool = False) -> str:
    hidden = set(_path_secrets(path, topics))
    out = []
    for segment in path.split("/"):
        head, *params = segment.split(";")
        kept = [REDACTED if head in hidden else head]
        for p in params:
            name, eq, _ = p.partition("=")
            kept.append(f"{name}={REDACTED}" if eq else REDACTED)
        out.append(";".join(kept))
    return "/".join(out)


def redact_webhook_url(url: str) -> str:
    """A webhook ``url`` for logs, status and ``config show``, stricter than
    :func:`redact_url` (a webhook URL is often itself the credential): no userinfo, every
    query value and token-like path segment replaced by ``**********``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    path = _redact_path(parts.path, topic_host(parts.hostname))
    query = "&".join(f"{k}={REDACTED}" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return f"{parts.scheme}://{host}{port}{path}" + (f"?{query}" if query else "")


def webhook_url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that ``redact_webhook_url`` hides (registered as log secrets).
    A ntfy topic shorter than 16 characters (``alerts``) may be a plain word seen
    elsewhere: it comes with its host (``ntfy.sh/alerts``), not alone."""
    parts = urlsplit(url)
    found = [v for _, v in parse_qsl(parts.query, keep_blank_values=True)]
    # ... also as written (percent-encoded: ab%2Fcd), as a printed URL shows them
    found += [p.partition("=")[2] for p in parts.query.split("&")]
    topics = topic_host(parts.hostname)
    for secret in _path_secrets(parts.path, topics):
        short = topics and len(secret) < 16 and not _token_like(secret)
        found.append(f"{parts.netloc.rpartition('@')[2]}/{secret}" if short else secret)
    if parts.password:
        found += [parts.password, f"{parts.username}:{parts.password}"]
    return list(dict.fromkeys(s for s in found if s))
