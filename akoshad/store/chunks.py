"""The chunk table of bucket format 2, the packs of uploads in progress, the shared documents
the last upload referenced.

``chunks``: per target, every chunk stored there by its identity -> its location (pack
``key``, ``offset``, ``length``), ``compression``, plaintext ``size`` and ``encryption``.
The identity of a plain chunk is its sha256; that of a sealed chunk its keyed name
(``NameKey.name``), with the plaintext sha256 in ``plain``: chunks sealed under another
name key (or not sealed) never match, so they are never deduplicated against. Ledger rows
hold only chunk identities; their locations are resolved here when a manifest is built, so
a repack by prune (new locations recorded, a pack's rows forgotten before it is deleted)
keeps every ledger row correct. ``upload_packs``: each pack an upload in progress sealed,
recorded before its PUT, so a crash's packs can be found and removed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any, cast

from akoshad.storage.errors import RefError
from akoshad.storage.refs import ChunkCompression, ChunkRef, Encryption
from akoshad.store.base import StoreBase

CHUNKS_SCHEMA = """
ALTER TABLE ledger ADD COLUMN chunks TEXT;
CREATE TABLE chunks (
    target TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    key TEXT NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    compression TEXT NOT NULL,
    size INTEGER NOT NULL,
    encryption TEXT NOT NULL DEFAULT 'none',
    PRIMARY KEY (target, sha256)
);
CREATE INDEX chunks_key ON chunks(target, key);
CREATE TABLE upload_packs (
    upload_id TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (upload_id, key)
);
"""

_CHUNK_COLS = "sha256, size, key, offset, length, compression, encryption, plain"
KV_DOCUMENTS = "documents:{target}"  # the shared documents the last upload referenced
# set: the next upload to the target PUTs every document it makes (cleared at its commit)
KV_REWRITE = "documents_rewrite:{target}"


def _ref(row: tuple[Any, ...], shared: dict[str, str] | None = None) -> ChunkRef | None:
    """A chunk-table row as a ChunkRef (None when the row does not validate). ``shared``:
    the pack keys and codec names met so far, one string each for the refs of one load
    (the chunks of a pack share its key)."""
    sha, size, key, offset, length, comp, enc, plain = row
    if shared is not None:
        key, comp, enc = (
            shared.setdefault(v, v) if isinstance(v, str) else v for v in (key, comp, enc)
        )
    try:
        return ChunkRef(
            plain or sha,
            size,
            key,
            offset,
            length,
            cast(ChunkCompression, comp),
            cast(Encryption, enc),
        )
    except RefError:
        return None


class ChunkOps(StoreBase):
    """Chunk-table operations of :class:`~akoshad.store.db.StateDB`."""

    @staticmethod
    def chunk_table(c: sqlite3.Connection, target: str) -> dict[str, ChunkRef]:
        """Every chunk stored in ``target`` by identity (see the module docstring)."""
        rows = c.execute(f"SELECT {_CHUNK_COLS} FROM chunks WHERE target = ?", (target,))
        out: dict[str, ChunkRef] = {}
        shared: dict[str, str] = {}
        for row in rows:  # as they come: all of them at once took as much again
            ref = _ref(tuple(row), shared)
            if ref is not None:
                out[ref.sha256 if ref.sha256 == row[0] else str(row[0])] = ref
        return out

    async def chunks_of(self, target: str) -> dict[str, ChunkRef]:
        """``target``'s chunk table (sha256 -> where the chunk is stored)."""
        return await self.transaction(lambda c: ChunkOps.chunk_table(c, target))

    @staticmethod
    def write_chunks(
        c: sqlite3.Connection, target: str, refs: Iterable[ChunkRef] | Mapping[str, ChunkRef]
    ) -> None:
        """Inside a transaction: upsert the locations of ``refs`` in ``target``'s table
        (a mapping: by identity; else each by its sha256)."""
        pairs = refs.items() if isinstance(refs, Mapping) else ((r.sha256, r) for r in refs)
        c.executemany(
            f"INSERT OR REPLACE INTO chunks (target, {_CHUNK_COLS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    target,
                    ident,
                    r.size,
                    r.key,
                    r.offset,
                    r.length,
                    r.compression,
                    r.encryption,
                    None if ident == r.sha256 else r.sha256,
                )
                for ident, r in pairs
            ],
        )

    async def record_chunks(
        self, target: str, refs: Iterable[ChunkRef] | Mapping[str, ChunkRef]
    ) -> None:
        """New locations of chunks a repack moved (prune's ``record_chunks`` hook: by
        identity; a list: each by its sha256)."""
        await self.transaction(lambda c: ChunkOps.write_chunks(c, target, refs))

    async def forget_pack(self, target: str, key: str) -> int:
        """Drop every chunk stored in pack ``key`` (before the pack is deleted, so no new
        upload dedupes against it). Returns the rows dropped."""
        return await self.transaction(lambda c: ChunkOps.forget_pack_in(c, target, key))

    @staticmethod
    def forget_pack_in(c: sqlite3.Connection, target: str, key: str) -> int:
        """Inside a transaction: :meth:`forget_pack`."""
        return int(
            c.execute("DELETE FROM chunks WHERE target = ? AND key = ?", (target, key)).rowcount
        )

    @staticmethod
    def forget_target_chunks(c: sqlite3.Connection, target: str) -> None:
        """Inside a transaction: forget every chunk and document known in ``target`` (its
        contents are to be learnt again from its newest manifest, e.g. after a takeover)."""
        c.execute("DELETE FROM chunks WHERE target = ?", (target,))
        ChunkOps.forget_documents_in(c, target)

    # ---- packs of uploads in progress -----------------------------------------------
    async def add_upload_pack(self, upload_id: str, key: str) -> None:
        """Record a pack of ``upload_id`` before it is sent."""
        await self.transaction(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO upload_packs (upload_id, key) VALUES (?, ?)",
                (upload_id, key),
            )
        )

    async def orphan_packs(self, target: str, upload_id: str) -> list[str]:
        """The packs ``upload_id`` recorded that no chunk of ``target`` lives in."""

        def op(c: sqlite3.Connection) -> list[str]:
            rows = c.execute(
                "SELECT key FROM upload_packs p WHERE upload_id = ? AND NOT EXISTS "
                "(SELECT 1 FROM chunks WHERE target = ? AND chunks.key = p.key) ORDER BY key",
                (upload_id, target),
            )
            return [str(r[0]) for r in rows.fetchall()]

        return await self.transaction(op)

    @staticmethod
    def forget_upload_packs(c: sqlite3.Connection, upload_id: str) -> None:
        """Inside a transaction: the attempt is settled, its pack records go."""
        c.execute("DELETE FROM upload_packs WHERE upload_id = ?", (upload_id,))

    # ---- shared documents the last upload referenced ----------------------------------
    @staticmethod
    def set_documents(c: sqlite3.Connection, target: str, keys: Iterable[str]) -> None:
        """Inside a transaction: the documents of the upload being committed (which wrote
        them all, when a rewrite was asked: the request is done)."""
        c.execute(
            "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
            (KV_DOCUMENTS.format(target=target), json.dumps(sorted(keys))),
        )
        c.execute("DELETE FROM kv WHERE key = ?", (KV_REWRITE.format(target=target),))

    async def known_documents(self, target: str) -> frozenset[str] | None:
        """The index parts and chunk lists the last committed upload to ``target`` made
        sure of; None when not known (no upload yet, a lost state, after a prune or a
        takeover): the writer then asks the target which are there. Empty while a rewrite
        of every document is asked (:meth:`rewrite_documents_in`)."""

        def op(c: sqlite3.Connection) -> frozenset[str] | None:
            if ChunkOps.rewrite_asked(c, target):
                return frozenset()
            row = c.execute(
                "SELECT value FROM kv WHERE key = ?", (KV_DOCUMENTS.format(target=target),)
            ).fetchone()
            try:
                keys = json.loads(row[0]) if row else None
            except ValueError:
                return None
            if not isinstance(keys, list):
                return None
            return frozenset(k for k in keys if isinstance(k, str))

        return await self.transaction(op)

    async def forget_documents(self, target: str) -> None:
        """A prune may have replaced documents: the next upload writes its own again."""
        await self.transaction(lambda c: ChunkOps.forget_documents_in(c, target))

    @staticmethod
    def rewrite_documents_in(c: sqlite3.Connection, target: str) -> None:
        """Inside a transaction: the next upload to ``target`` PUTs every document it makes,
        none taken as stored (not even after a HEAD: one may be there, and damaged), and is
        made even when no file changed; a prune's :meth:`forget_documents` leaves the
        request standing, the upload's commit ends it."""
        c.execute(
            "INSERT OR REPLACE INTO kv (key, value) VALUES (?, '1')",
            (KV_REWRITE.format(target=target),),
        )

    @staticmethod
    def rewrite_asked(c: sqlite3.Connection, target: str) -> bool:
        """Whether :meth:`rewrite_documents_in` was asked for ``target`` and no upload has
        committed since."""
        key = KV_REWRITE.format(target=target)
        return c.execute("SELECT 1 FROM kv WHERE key = ?", (key,)).fetchone() is not None

    async def documents_rewrite_asked(self, target: str) -> bool:
        """:meth:`rewrite_asked`."""
        return await self.transaction(lambda c: ChunkOps.rewrite_asked(c, target))

    @staticmethod
    def forget_documents_in(c: sqlite3.Connection, target: str) -> None:
        """Inside a transaction: :meth:`forget_documents`."""
        c.execute("DELETE FROM kv WHERE key = ?", (KV_DOCUMENTS.format(target=target),))
