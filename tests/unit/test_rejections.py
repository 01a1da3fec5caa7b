"""Which of Akosha's per-item errors reject the row, and which skip records are final."""

from __future__ import annotations

import pytest

from akoshad.akosha.rejections import REJECTED_PREFIX, TOO_LARGE, final_skip, rejects_row


@pytest.mark.parametrize(
    "error",
    [
        "Embedding is required: must be a 384-dimensional vector",  # Akosha 0.24.5
        "Embedding is required",
        "Embedding dim mismatch: expected 384, got 10",
        "dimension mismatch",
        "Embedding must be a list of numbers",
        "Invalid isoformat string: 'yesterday'",  # created_at, datetime.fromisoformat
        "created_at is not ISO 8601: 'x'",
        "Invalid memory_id: must be non-empty string",
        "Invalid text: must be non-empty string",
        "Missing required field (memory_id or text)",
        "text is required",
    ],
)
def test_akoshas_row_errors_reject_the_row(error: str) -> None:
    assert rejects_row(error)


@pytest.mark.parametrize(
    "error",
    [
        "Invalid Input Error: storage temporarily unavailable",
        "ingestion backlog too large, try again later",
        "TransactionContext Error: Catalog write-write conflict",
        "database is locked",
        "IO Error: value must be flushed first",
        "validation of the store failed, retry",
        "the queue is required to drain first",
        "temporary storage error",
        "not confirmed as stored by Akosha",
    ],
)
def test_free_text_is_no_rejection(error: str) -> None:
    assert not rejects_row(error)


def test_final_skips() -> None:
    assert final_skip(REJECTED_PREFIX + "Embedding dim mismatch: expected 384")
    assert final_skip(REJECTED_PREFIX + TOO_LARGE + "the connection was reset 2 times")
    assert final_skip(REJECTED_PREFIX + "Akosha answered tools/call with HTTP 413: too big")
    # what an older akoshad gave up on after a few quick retries goes out again
    assert not final_skip(REJECTED_PREFIX + "database is locked (after 3 attempts)")
    assert not final_skip(REJECTED_PREFIX + "Invalid Input Error: storage unavailable")
    assert not final_skip("no embedding")  # reconsidered when the row changes, elsewhere
