"""What Akosha's replies mean: the result of a batch (``StoreResult``), a JSON-RPC error or
an HTTP error reply turned into a typed error (``RequestTooLarge`` for a 413)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from akoshad.backoff import parse_retry_after
from akoshad.errors import PermanentError, TransientError

TOOL_NAME = "batch_store_memories"
# the names Akosha has served the tool under: 0.24.5 (INTEROP.md), then its later
# releases, which prefix every tool with akosha_ (same arguments, same result)
TOOL_NAMES = (TOOL_NAME, "akosha_batch_store_memories")
# what Akosha's store says of an id it already holds, in any case: DuckDB's 'Duplicate key
# "..." violates primary key constraint', and its 'PRIMARY KEY or UNIQUE constraint
# violation: duplicate key "..."' (an insert in a transaction, a commit that met another)
DUPLICATE_MARK = "duplicate key"
URL_FIX = "set akosha_url to Akosha's MCP endpoint, e.g. http://127.0.0.1:8682/mcp"


class RequestTooLarge(PermanentError):
    """The server refused the request body as too large (413): send fewer items."""


class ConnectionReset(TransientError):
    """The connection was reset or closed before an answer came (a proxy in front of
    Akosha may do that to a body over its limit instead of answering 413)."""


@dataclass(frozen=True)
class StoreResult:
    """What Akosha did with one batch.

    ``stored``: newly stored ids. ``duplicates``: ids Akosha already had (``Duplicate
    key``): as good as stored. ``failed``: id -> error for the others. ``batch_error``: an
    error not tied to one id (e.g. the batch was refused as a whole).
    """

    status: str
    stored: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)
    batch_error: str | None = None

    @property
    def delivered(self) -> tuple[str, ...]:
        """Ids Akosha now holds: stored now or before."""
        return self.stored + self.duplicates


# the most of a message from Akosha kept in an error (logs, status, state, webhooks)
MAX_MESSAGE_CHARS = 500


def one_line(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` from Akosha on one line (whitespace runs folded), at most ``limit`` chars."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _error_message(body: bytes) -> str:
    """The JSON-RPC error message of an HTTP error body, else its first line."""
    try:
        data = json.loads(body)
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return one_line(data["error"].get("message") or data["error"])
    except ValueError:
        pass
    text = body.decode("utf-8", errors="replace").strip().splitlines()
    return one_line(text[0], 200) if text else "(empty body)"


# JSON-RPC errors that pass: an internal error, and what the MCP SDK answers while the
# server shuts down or gives up on a request (connection closed, request timeout, request
# cancelled); any other error code is a refusal that a retry would meet again
TRANSIENT_RPC_CODES = frozenset({-32603, -32000, -32001, -32800})


def rpc_result(reply: dict[str, Any], method: str) -> Any:
    """The ``result`` of a JSON-RPC reply; its ``error`` raised as a typed error."""
    error = reply.get("error")
    if error is not None:
        code = error.get("code") if isinstance(error, dict) else None
        msg = one_line(error.get("message") if isinstance(error, dict) else error)
        text = f"Akosha refused {method}: {msg} (JSON-RPC {one_line(code, 20)})"
        if code in TRANSIENT_RPC_CODES:
            raise TransientError(text)
        raise PermanentError(text)
    return reply.get("result")


def http_error(
    url: str, status: int, body: bytes, headers: Mapping[str, str], method: str
) -> Exception:
    """The typed error of an HTTP error reply to ``method`` sent to ``url``."""
    msg = f"Akosha answered {method} with HTTP {status}: {_error_message(body)}"
    if status == 413:
        return RequestTooLarge(msg, fix="send smaller batches")
    if status in (408, 429) or status >= 500:
        return TransientError(msg, retry_after=parse_retry_after(headers.get("Retry-After")))
    if 300 <= status < 400:
        where = headers.get("Location", "elsewhere")
        return PermanentError(f"{url} redirects to {where}", fix=URL_FIX)
    if status == 404:
        return PermanentError(f"no MCP endpoint at {url} (HTTP 404)", fix=URL_FIX)
    if status in (401, 403):
        if urlsplit(url).username is not None:  # sent with each request (HTTP Basic)
            fix = "Akosha refused the user name and password in akosha_url: check them"
        else:
            fix = "Akosha wants credentials: put them in akosha_url (https://user:password@...)"
        return PermanentError(msg, fix=fix)
    if status == 421:
        return PermanentError(msg, fix="Akosha refuses this Host header; use its own address")
    return PermanentError(msg)


def content_text(result: Mapping[str, Any]) -> str:
    for block in result.get("content") or []:
        if isinstance(block, dict) and block.get("type") == "text":
            return str(block.get("text", ""))
    return "(no text)"


def parse_store_result(result: Mapping[str, Any], ids: Sequence[str]) -> StoreResult:
    """Sort the ids of a sent batch by what ``batch_store_memories`` reported.

    Reads ``status`` (``isError`` stays false on failure) and the batch's own ``error``
    (what Akosha says when it failed the batch whole). An id without an error counts as
    stored only when the reported ``stored`` count agrees; otherwise it is reported failed
    ("unconfirmed"): resending is harmless, ``Duplicate key`` then confirms it.
    """
    payload = result.get("structuredContent")
    if not isinstance(payload, dict):
        try:
            payload = json.loads(content_text(result))
        except ValueError:
            payload = None
    if not isinstance(payload, dict) or payload.get("status") not in (
        "completed",
        "partial",
        "failed",
    ):
        raise PermanentError(f"unexpected {TOOL_NAME} result: {str(payload)[:300]}")
    status = str(payload["status"])
    sent = set(ids)
    failed: dict[str, str] = {}
    duplicates: list[str] = []
    batch_error: str | None = None
    for err in payload.get("errors") or []:
        if not isinstance(err, dict):
            continue
        mid, text = err.get("memory_id"), str(err.get("error") or "unknown error")
        if isinstance(mid, str) and mid in sent:
            if DUPLICATE_MARK in text.lower():
                duplicates.append(mid)
            else:
                failed[mid] = one_line(text)
        elif batch_error is None:
            batch_error = one_line(text)
    top = payload.get("error")  # Akosha's reason for a batch it refused or failed whole
    if batch_error is None and isinstance(top, str) and top.strip():
        batch_error = one_line(top)
    mentioned = set(failed) | set(duplicates)
    rest = [i for i in ids if i not in mentioned]
    reported = payload.get("stored")
    confirmed = (
        status != "failed" and (not isinstance(reported, int) or reported == len(rest))
    ) or not rest
    if confirmed:
        stored = tuple(rest)
    else:
        stored = ()
        reason = batch_error or (
            "batch failed" if status == "failed" else "not confirmed as stored by Akosha"
        )
        for i in rest:
            failed[i] = reason
    return StoreResult(status, stored, tuple(duplicates), failed, batch_error)
