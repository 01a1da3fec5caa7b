"""Which of Akosha's per-item errors reject the row itself, and which skip records are final.

``batch_store_memories`` reports each failed item with a free-text error. Only the checks
Akosha makes of the row itself (INTEROP.md section 3; ``akosha/mcp/tools/
session_buddy_tools.py`` in 0.24.5) fail the same way on every resend: the embedding
("Embedding is required", "dim mismatch", a vector that is not numbers), ``created_at``
that is not ISO 8601 (``datetime.fromisoformat``: "Invalid isoformat string"), an empty
id or text. Anything else (a lock, a write conflict, "storage temporarily unavailable",
"backlog too large, try again later") may pass: the memory stays pending.
"""

from __future__ import annotations

import re

# Skip reasons that come from Akosha start with this.
REJECTED_PREFIX = "rejected by Akosha: "
# A memory that alone is refused for its size (413, or a connection reset every time).
TOO_LARGE = "too large to send alone: "

ROW_REJECTION = re.compile(
    r"\bembedding is required\b"
    r"|\bembedding must be\b"
    r"|\bdim(ension)? mismatch\b"
    r"|\binvalid isoformat string\b"
    r"|\bcreated_at is not iso\b"
    r"|^invalid (memory_id|text): must be\b"
    r"|^missing required field \(memory_id or text\)"
    r"|^(memory_id|text) is required$",
    re.IGNORECASE,
)

# A recorded skip that stays: a row rejection, or a memory too large to send alone (a 413
# recorded by an earlier akoshad says "HTTP 413"). Other "rejected by Akosha" records were
# left by an akoshad that gave up on a passing error: such memories are sent again.
_FINAL = re.compile(rf"{re.escape(TOO_LARGE)}|\bHTTP 413\b")


def rejects_row(error: str) -> bool:
    """Is Akosha's per-item ``error`` a rejection of the row itself (never retried)?"""
    return ROW_REJECTION.search(error.strip()) is not None


def final_skip(reason: str) -> bool:
    """Is a recorded ``rejected by Akosha`` skip ``reason`` final (the memory is not sent
    again unless its row changes)? False for any other reason."""
    if not reason.startswith(REJECTED_PREFIX):
        return False
    error = reason[len(REJECTED_PREFIX) :]
    return _FINAL.search(error) is not None or rejects_row(error)
