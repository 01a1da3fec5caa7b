"""Memories encoded: compact JSON for the wire, request-sized batches, ``memories.json``.

An embedding read as compact JSON (:func:`akoshad.akosha.rows.read_memories`) is carried
as :class:`RawJSON` and written as it is, never parsed into floats and printed again (which
was most of the time spent on a big store). Batches stay under what Akosha's
MCP transport accepts.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

MAX_BATCH_ITEMS = 1000
# The MCP transport refuses bodies over 4 MiB; stay well under it.
MAX_BATCH_BYTES = 3 * 1024 * 1024
# JSON-RPC envelope around the items ({"jsonrpc":..,"params":{"name":..,"arguments":..}}).
ENVELOPE_BYTES = 1024

Memory = dict[str, Any]


class RawJSON(str):
    """Text that already is compact JSON (an embedding): :func:`encode_json` writes it as
    is. Only ever made from a checked float list (DuckDB's text form, or orjson's)."""


# stands in for a RawJSON value while the rest is encoded (random: cannot be in the data)
_RAW_MARK = f"akoshad-raw-{uuid.uuid4().hex}-"
_RAW_SLOT = re.compile(f'"{_RAW_MARK}([0-9]+)"')


def encode_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON: what goes on the wire and what the batch sizes are measured in.

    :class:`RawJSON` values (in dicts and lists, at any depth) are written as they are."""
    raws: list[str] = []

    def swap(value: Any) -> Any:
        if isinstance(value, RawJSON):
            raws.append(value)
            return f"{_RAW_MARK}{len(raws) - 1}"
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list | tuple) and value and not isinstance(value[0], float):
            return [swap(v) for v in value]
        return value

    text = json.dumps(swap(obj), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if raws:
        text = _RAW_SLOT.sub(lambda m: raws[int(m.group(1))], text)
    return text.encode()


def batches(
    memories: Iterable[Memory],
    *,
    max_items: int = MAX_BATCH_ITEMS,
    max_bytes: int = MAX_BATCH_BYTES,
) -> Iterator[list[Memory]]:
    """Consecutive batches of at most ``max_items`` whose encoded request stays under
    ``max_bytes`` (envelope included). An item too big on its own goes alone."""
    if max_items < 1:
        raise ValueError("max_items must be at least 1")
    budget = max_bytes - ENVELOPE_BYTES
    batch: list[Memory] = []
    size = 0
    for memory in memories:
        item = len(encode_json(memory)) + 1  # the comma
        if batch and (len(batch) >= max_items or size + item > budget):
            yield batch
            batch, size = [], 0
        batch.append(memory)
        size += item
    if batch:
        yield batch


def conversation_entry(memory: Memory) -> dict[str, Any]:
    """One memory in the ``memories.json`` shape of Akosha's ingestion worker."""
    meta = memory.get("metadata") or {}
    return {
        "id": memory["memory_id"],
        "content": memory["text"],
        "embedding": memory["embedding"],
        "timestamp": meta.get("created_at"),
        "source": meta.get("source"),
        "metadata": {k: v for k, v in meta.items() if k not in ("source", "created_at")},
    }


_ENTRY_META = frozenset({"source", "created_at", "original_id", "type"})


def encode_entry(memory: Memory) -> bytes:
    """``encode_json(conversation_entry(memory))``, byte for byte, made directly for the
    common memory (a raw embedding, the metadata :mod:`akoshad.akosha.rows` gives): by
    orjson, the raw embedding spliced in as a fragment; no dictionary walked for stand-ins
    (3.5 us for an entry of a big store, against 17.5 with ``json``'s string encoder and an
    f-string). orjson escapes what ``json`` escapes, in the same way (a test holds it)."""
    import orjson

    embedding = memory["embedding"]
    meta = memory.get("metadata") or {}
    mid, text = memory["memory_id"], memory["text"]
    if (
        type(embedding) is not RawJSON
        or type(mid) is not str
        or type(text) is not str
        or not meta.keys() <= _ENTRY_META
    ):
        return encode_json(conversation_entry(memory))
    entry = {
        "id": mid,
        "content": text,
        "embedding": orjson.Fragment(str(embedding)),  # RawJSON, a subclass: refused
        "timestamp": meta.get("created_at"),
        "source": meta.get("source"),
        "metadata": {k: v for k, v in meta.items() if k not in ("source", "created_at")},
    }
    return orjson.dumps(entry)


def memories_json(conversations: Iterable[Memory]) -> bytes:
    """``{"conversations": [{id, content, embedding, timestamp, source, metadata}]}``.

    Takes memories as produced by :func:`akoshad.akosha.rows.load_memories`; uncompressed
    UTF-8. Encodes one entry at a time so no second full copy of the objects is built.
    """
    parts: list[bytes] = [b'{"conversations":[']
    first = True
    for memory in conversations:
        if not first:
            parts.append(b",")
        parts.append(encode_json(conversation_entry(memory)))
        first = False
    parts.append(b"]}")
    return b"".join(parts)
