"""JSON-RPC errors from Akosha: which pass (retried on the backoff) and which are refusals."""

from __future__ import annotations

import pytest

from akoshad.akosha.results import rpc_result
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
