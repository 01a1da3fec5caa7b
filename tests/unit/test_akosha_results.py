"""JSON-RPC errors from Akosha: which pass (retried on the backoff) and which are refusals;
what a batch result says went wrong."""

from __future__ import annotations

import pytest

from akoshad.akosha.results import parse_store_result, rpc_result
from akoshad.errors import PermanentError, TransientError


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (-32603, "Internal error"),
        (-32000, "Connection closed"),  # the MCP SDK, while its server shuts down
        (-32001, "Request 'tools/call' timed out"),
        (-32800, "Request cancelled"),
    ],
)
def test_errors_that_pass_are_transient(code: int, message: str) -> None:
    reply = {"jsonrpc": "2.0", "id": 3, "error": {"code": code, "message": message}}
    with pytest.raises(TransientError, match=f"JSON-RPC {code}"):
        rpc_result(reply, "tools/call")


@pytest.mark.parametrize("code", [-32601, -32602, -32700, 42, None])
def test_other_errors_are_refusals(code: int | None) -> None:
    reply = {"jsonrpc": "2.0", "id": 3, "error": {"code": code, "message": "no"}}
    with pytest.raises(PermanentError, match="Akosha refused tools/call: no"):
        rpc_result(reply, "tools/call")


def test_a_result_is_returned() -> None:
    assert rpc_result({"jsonrpc": "2.0", "id": 1, "result": {"x": 1}}, "initialize") == {"x": 1}


@pytest.mark.parametrize(
    "payload",
    [
        # Akosha's answer to a batch it failed whole (its store raised): the reason is the
        # batch's own "error", its "errors" list empty
        {"status": "failed", "total": 2, "stored": 0, "failed": 2, "errors": [], "error": "X"},
        {"status": "failed", "total": 2, "stored": 0, "failed": 2, "error": "X"},  # over 1000
    ],
)
def test_the_reason_of_a_batch_failed_whole_is_kept(payload: dict[str, object]) -> None:
    """The reason Akosha gives for a batch it stored none of reaches each memory's error
    (status, the log, the pass's report), not a bare 'batch failed'."""
    payload["error"] = "IO Error: could not write to the hot store:\n disk full"
    result = parse_store_result({"structuredContent": payload}, ["a", "b"])
    assert result.stored == ()
    reason = "IO Error: could not write to the hot store: disk full"
    assert result.failed == {"a": reason, "b": reason}
    assert result.batch_error == reason


def test_a_per_memory_error_comes_before_the_batch_error() -> None:
    payload = {
        "status": "partial",
        "stored": 1,
        "errors": [{"memory_id": "a", "error": "dim mismatch"}],
        "error": "ignored",
    }
    result = parse_store_result({"structuredContent": payload}, ["a", "b"])
    assert (result.stored, result.failed) == (("b",), {"a": "dim mismatch"})


@pytest.mark.parametrize(
    "error",
    [
        'Constraint Error: Duplicate key "conversation_id: s:a" violates primary key constraint.',
        # DuckDB's words for the same inside a transaction, or at a commit that met another
        'Constraint Error: PRIMARY KEY or UNIQUE constraint violation: duplicate key "s:a"',
        "TransactionContext Error: Failed to commit: PRIMARY KEY or UNIQUE constraint "
        'violation: duplicate key "s:a"',
    ],
)
def test_an_id_akosha_already_holds_is_delivered(error: str) -> None:
    """However the store words it, a duplicate key is a memory Akosha has: delivered, not
    held back and sent again for ever."""
    payload = {
        "status": "partial",
        "stored": 1,
        "failed": 1,
        "errors": [{"memory_id": "s:a", "error": error}],
    }
    result = parse_store_result({"structuredContent": payload}, ["s:a", "s:b"])
    assert (result.duplicates, result.failed) == (("s:a",), {})
    assert set(result.delivered) == {"s:a", "s:b"}
