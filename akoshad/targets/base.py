"""The ``Target`` protocol: what a storage backend must do, and nothing more.

A target stores opaque objects under string keys relative to its root (the bucket for
S3, ``local_target_dir`` for the local target). Layout, manifests, dedupe, compression
choice and verification live above it, so adding a target is one module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from akoshad.compress import Compression

__all__ = ["Compression", "Created", "ExclusiveCreate", "StoredObject", "Target"]

# "created": the object is ours and no other writer's was there; "exists": another object
# held the key, nothing was written; "unchecked": written, but the target may not honour the
# condition (an S3 server that ignores If-None-Match): the caller must check by reading back.
Created = Literal["created", "exists", "unchecked"]


@dataclass(frozen=True)
class StoredObject:
    """The receipt for one object written by ``Target.put_file``."""

    key: str
    stored_size: int
    compression: Compression
    bytes_sent: int
    sha256: str  # of the plaintext read in the same pass as it was sent: what is stored


@runtime_checkable
class Target(Protocol):
    """A place uploads land. Implementations: ``local`` (embedded default), ``cloud`` (S3)."""

    name: str

    async def start(self, *, clean_up: bool = True) -> None:
        """Connect; with ``clean_up``, also remove what a crash left (temp files, abandoned
        multipart uploads). Readers (``verify``, ``restore``), which may run beside a daemon
        that is uploading, pass ``clean_up=False`` and change nothing."""

    async def close(self) -> None:
        """Release connections; idempotent."""

    async def put_file(self, key: str, source: Path, compression: Compression) -> StoredObject:
        """Store ``source`` under ``key``, gzip-encoding it on the way when asked.

        One pass over the file: read, SHA-256 of the plaintext (in the receipt), encode,
        send. The object appears whole or not at all. Raises ``TransientError`` or
        ``PermanentError``.
        """

    async def put_object_file(self, key: str, source: Path, size: int, crc32: int) -> int:
        """Store the finished file ``source`` (a pack: ``size`` bytes whose CRC32 is
        ``crc32``, both known from writing it) as ``key``, unchanged: one request, read once,
        no digest of its own. The object appears whole or not at all; returns bytes sent."""

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        """Store small bytes (a manifest, ``memories.json``) whole; returns bytes sent."""

    def read(self, key: str) -> AsyncIterator[bytes]:
        """Stream the stored (possibly gzip) bytes of ``key``; ``KeyError`` if missing."""

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` stored bytes of ``key`` from ``offset`` (chunks of a pack, in one
        request); ``KeyError`` when ``key`` is missing, ``storage.errors.PackError`` when
        the object ends before ``offset + length``."""

    async def head(self, key: str) -> int | None:
        """The stored size of ``key``, or None when it does not exist."""

    def list_keys(self, prefix: str) -> AsyncIterator[str]:
        """Every key starting with ``prefix``, in lexical order."""

    async def delete_keys(self, keys: list[str]) -> None:
        """Delete these keys; missing ones are fine."""


@runtime_checkable
class CountsRetries(Protocol):
    """A target that counts the requests it sent again within one call (the status's
    ``retries``)."""

    retries: int


@runtime_checkable
class Answers(Protocol):
    """A target that says when the server answered one of its requests (S3): the daemon
    hears there that the target is back while its uploads wait for an open circuit."""

    on_answer: Callable[[], None] | None


@runtime_checkable
class ReadCheck(Protocol):
    """A target with a read-only reachability check (S3: the bucket exists and the
    credentials work). A writer calls ``check`` before its first write and again after any
    failure, and writes nothing unless it succeeded: a missing bucket must be reported,
    never created by a write (SeaweedFS creates one on PutObject)."""

    async def check(self) -> None:
        """Raise ``TransientError`` or ``PermanentError`` unless the target is usable."""


@runtime_checkable
class ExclusiveCreate(Protocol):
    """A target that can store an object only when its key is free (the local target: a
    hard link; S3: ``If-None-Match: *``), so that of two writers exactly one wins."""

    async def create_exclusive(self, key: str, data: bytes, content_type: str) -> Created:
        """Store ``data`` under ``key`` unless an object is there (see ``Created``)."""


@runtime_checkable
class ListsSystems(Protocol):
    """A target that can name the system ids it holds (one listing), so that "no uploads
    for system X" can say which ones it does hold (a new machine's host name)."""

    async def system_ids(self, limit: int) -> list[str]:
        """Up to ``limit`` system ids with a folder under ``systems/``, sorted."""
