"""Plaintext copies of the sealed documents this machine wrote, kept in its state.

A repack moves the live chunks of half-dead packs and rewrites the index parts and chunk
lists that locate them. An encrypted upload's documents are sealed, and the daemon has only
the recipients: without a copy of what it sealed, a prune without the identity keeps such
an upload's packs whole, and an encrypted target grows past what its kept uploads use.
The machine that made a document keeps its compressed plaintext (the bytes it sealed) in
``state_dir/document_copies/{target}/``, a file per document (0700 / 0600): the same facts
the ledger and the chunk table already hold there (paths, sizes, sha256s), nothing more.

A copy proves itself before it is used: a sealed document's object name is the name key's
keyed hash of its plaintext (``sealed_documents.Resealing.named``), so a copy that is
damaged, or is not the plaintext of that object, is not used. A missing or refused copy
costs only the repack of that upload's packs (the prune keeps them whole, as it does
without copies), never data. A prune keeps only the copies of documents still stored, or
held in a manifest (a small store's sealed index part, under its name)
(:meth:`DocumentCopies.keep_only`). Blocking: call from threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from loguru import logger

from akoshad.private import FILE_MODE, make_private_dirs
from akoshad.storage.documents import MAX_DOCUMENT_BYTES

DIR_NAME = "document_copies"
_WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class DocumentCopies:
    """The copies kept for one target (a file per document key, named by the key's
    sha256, so no key can name a path outside the folder)."""

    def __init__(self, state_dir: Path, target_name: str) -> None:
        self.root = state_dir / DIR_NAME / _digest(target_name)[:16]
        self._warned = False

    def __repr__(self) -> str:
        return f"DocumentCopies({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / _digest(key)

    def put(self, key: str, body: bytes) -> None:
        """Keep ``body``, the compressed plaintext of the sealed document ``key`` (replaced
        whole, never torn). A failure is logged once: it costs only a repack."""
        path = self._path(key)
        tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        try:
            make_private_dirs(self.root)
            with os.fdopen(os.open(tmp, _WRITE, FILE_MODE), "wb") as fh:
                fh.write(body)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if not self._warned:
                self._warned = True
                logger.warning(
                    "a copy of a sealed document cannot be kept in {} ({}): a prune without "
                    "the identity keeps that upload's packs whole",
                    self.root,
                    exc.strerror or exc,
                )

    def get(self, key: str, limit: int = MAX_DOCUMENT_BYTES) -> bytes | None:
        """The copy kept for ``key``; None when there is none, it cannot be read or it is
        over ``limit`` bytes."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb") as fh:
                data = fh.read(limit + 1)
        except OSError:
            return None
        return data if len(data) <= limit else None

    def keep_only(self, keys: Iterable[str]) -> int:
        """Remove every copy but those of ``keys`` (and what an interrupted :meth:`put`
        left); how many files were removed."""
        wanted = {_digest(k) for k in keys}
        try:
            names = os.listdir(self.root)
        except OSError:
            return 0
        removed = 0
        for name in names:
            if name not in wanted:
                with contextlib.suppress(OSError):
                    os.unlink(self.root / name)
                    removed += 1
        return removed
