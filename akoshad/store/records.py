"""The rows the state database hands out, and their columns."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from akoshad.compress import Compression
from akoshad.fileio import LiveStat
from akoshad.redaction import redact

HISTORY_KEEP = 2000
_HEX_ID = re.compile(r"[0-9a-f]{1,128}")  # a chunk identity JSON spells as it is


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What was last uploaded for one captured path on one target."""

    target: str
    path: str
    group_path: str
    size: int  # of the captured bytes (what the manifest lists)
    live: LiveStat  # the live file when captured (what reconcile compares)
    sha256: str
    key: str
    name: str
    stored_size: int
    compression: Compression
    kind: str
    upload_id: str
    facts: str | None = None  # capture facts as JSON (``capture_facts.Facts.to_json``)
    mode: int | None = None  # permission bits at capture; None when not known
    # format 2: the file's chunks in order, JSON of [sha256, size] pairs (``chunk_ids``);
    # None for a whole object of a format-1 upload (``key``/``stored_size``/``compression``)
    chunks: str | None = None

    @property
    def chunk_ids(self) -> list[tuple[str, int]] | None:
        """The file's chunks as (sha256, size) in order, or None for a whole object."""
        return None if self.chunks is None else decode_chunk_ids(self.chunks)


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One path waiting on the durable queue."""

    path: str
    event: str
    first_seen: float
    last_seen: float
    seq: int
    attempts: int
    next_attempt: float
    state: str
    last_error: str | None


@dataclass(frozen=True)
class UploadRecord:
    """One row of the upload history."""

    upload_id: str
    target: str
    method: str
    started_at: float
    finished_at: float | None
    files: int
    bytes_sent: int
    outcome: str
    error: str | None


_LEDGER_COLS = (
    "target, path, group_path, size, live_size, mtime_ns, ctime_ns, inode, sha256, key, name, "
    "stored_size, compression, kind, upload_id, facts, mode, chunks"
)


def encode_chunk_ids(ids: Iterable[tuple[str, int]]) -> str:
    """The ledger's ``chunks`` column: compact JSON of [sha256, size] pairs (spelt out
    directly when every identity is lowercase hex and every size an int: the same text)."""
    pairs = list(ids)
    if all(type(size) is int and _HEX_ID.fullmatch(sha) for sha, size in pairs):
        return "[" + ",".join(f'["{sha}",{size}]' for sha, size in pairs) + "]"
    return json.dumps([[sha, size] for sha, size in pairs], separators=(",", ":"))


def decode_chunk_ids(text: str) -> list[tuple[str, int]]:
    """The (sha256, size) pairs of a ledger ``chunks`` column; ValueError when malformed."""
    raw = json.loads(text)
    if not isinstance(raw, list):
        raise ValueError("chunks is not a list")
    out: list[tuple[str, int]] = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2):
            raise ValueError("a chunk is not a [sha256, size] pair")
        sha, size = item
        if not isinstance(sha, str) or isinstance(size, bool) or not isinstance(size, int):
            raise ValueError("a chunk is not a [sha256, size] pair")
        out.append((sha, size))
    return out


def _scrub(error: str | None) -> str | None:
    """Error text as it may be stored: no registered secret, no URL credential."""
    return None if error is None else redact(error)


_QUEUE_COLS = "path, event, first_seen, last_seen, seq, attempts, next_attempt, state, last_error"
_UPLOAD_COLS = (
    "upload_id, target, method, started_at, finished_at, files, bytes_sent, outcome, error"
)
