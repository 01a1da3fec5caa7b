"""The embedded default target: a local directory laid out like the bucket.

Objects are written atomically: a temp file beside the final name, fsync, rename, fsync of
the directory. Temp files left by a crash, and empty upload folders (a prune killed between
a manifest and its folder), are removed at start and after each prune, under this
system's own prefix only (``own_prefix``): other system ids sharing the outbox keep theirs.

Nothing under the root is reached through a symlink: every directory is opened relative to
its parent's descriptor with ``O_NOFOLLOW`` (``local_dirs``), files too, so a link planted
in the outbox (or swapped in meanwhile) is never listed, read, written or deleted through.
A link where a key is expected counts as a missing object and is named in a warning; a
link where a directory is needed fails the write. The root itself may be a link (the user
chose it). The outbox is a copy of private data: directories are 0700 and objects 0600,
whatever the umask.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import stat
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO

from loguru import logger

from akoshad.compress import encoded_chunks
from akoshad.errors import PermanentError, TransientError
from akoshad.fileio import CHUNK, directory_problem, read_chunks
from akoshad.private import make_private_dirs, sync_entry
from akoshad.storage.errors import PackError
from akoshad.targets.base import Compression, Created, StoredObject
from akoshad.targets.local_dirs import (
    NOT_FOLLOWED,
    LinkInTarget,
    open_dir,
    remove_empty_uploads,
    system_ids_in,
    tighten_root,
    walk_files,
)
from akoshad.targets.local_files import NO_LINK, TMP_MARK, link_in, pread_exact, write_in

WARN_INTERVAL = 60.0


class LocalTarget:
    """Stores objects as files under ``root``; keys are POSIX paths relative to it."""

    name = "local"

    def __init__(self, root: Path, own_prefix: str = "") -> None:
        self.root = root
        # where this system's writes go (``systems/{id}/``): only there does a start clean
        # up; other system ids may share the outbox, and their writers may be at work
        self.own_prefix = own_prefix
        self._warned: dict[str, float] = {}
        # once this machine has uploaded here (this process wrote, or the state has an
        # upload on record), a missing root is a disk not mounted or a hand, never made
        # again: the store would land on the disk beneath, every sign of a backup shown
        self.keep_root = False

    def __repr__(self) -> str:
        return f"LocalTarget(root={str(self.root)!r})"

    @staticmethod
    def _parts(key: str) -> list[str]:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid object key {key!r}")
        return parts

    def _warn_link(self, rel: str, doing: str) -> None:
        """One warning per path and minute: a planted link must not flood the log."""
        now = time.monotonic()
        if now - self._warned.get(rel, -WARN_INTERVAL) >= WARN_INTERVAL:
            self._warned[rel] = now
            logger.warning(
                "local target: {} in {} is a symlink or not a regular entry: not {} (akoshad "
                "never follows links in its outbox)",
                rel,
                self.root,
                doing,
            )

    def _dir(self, parts: Sequence[str], *, create: bool) -> AbstractContextManager[int]:
        """A descriptor of ``root/parts...``, never through a link (``local_dirs.open_dir``);
        the root itself made only while no upload is known to be there (``keep_root``)."""
        if create and self.keep_root and not os.path.exists(self.root):
            raise TransientError(self.root_gone())
        return open_dir(self.root, parts, create=create, create_root=not self.keep_root)

    def root_gone(self) -> str:
        """The line for a missing root this machine has uploaded to."""
        return (
            f"local_target_dir {self.root} does not exist, though this machine has uploaded "
            "there (a disk not mounted?): it is not made again, so that no upload lands on "
            "the disk beneath; mount it, or make the directory (mkdir) to begin a new "
            "outbox there"
        )

    def absent(self) -> str | None:
        """For a reader: why nothing can be in this outbox (its directory is missing or is
        no directory: a typo in ``local_target_dir`` is not "no uploads"), else None. A
        link to a directory is one: the writes go through it (``open_dir`` opens the root
        as any path)."""
        return directory_problem(self.root, "local_target_dir", "no upload can be there")

    def _check_root(self) -> None:
        """A root this machine has uploaded to (``keep_root``) that is gone is an outage (a
        disk not mounted), not an outbox emptied: TransientError then. Blocking."""
        if self.keep_root and not os.path.exists(self.root):
            raise TransientError(self.root_gone())

    async def start(self, *, clean_up: bool = True) -> None:
        if clean_up:
            await asyncio.to_thread(self._start_sync)
        else:  # gone since this machine uploaded there: down from the start
            await asyncio.to_thread(self._check_root)

    def _start_sync(self) -> None:
        self._check_root()
        try:
            make_private_dirs(self.root)
        except OSError as exc:
            raise PermanentError(
                f"local target {self.root} cannot be created: {exc.strerror}",
                fix="set local_target_dir to a writable directory",
            ) from None
        with self._dir([], create=False) as fd:
            tighten_root(fd, self.root)
        self._remove_temps()

    async def abort_leftover_uploads(self) -> int:
        """Remove the temporary files under this system's prefix: writes that never
        finished (a crash, a ``prune`` by hand killed in the middle of a repack), the local
        outbox's leftover multipart uploads; and the empty folders in its ``uploads/`` (a
        prune killed between an upload's manifest and its folder). Call only while no write of
        this system is in progress (the owner between passes). Returns how many temporary
        files were removed."""
        return await asyncio.to_thread(self._remove_temps)

    def _remove_temps(self) -> int:
        own = self.own_prefix.strip("/")
        try:
            with self._dir(self._parts(own) if own else [], create=False) as fd:
                keys = walk_files(fd, own, self._warn_link, temps=True)
                temps = [k for k in keys if TMP_MARK in k.rsplit("/", 1)[-1]]
                removed = sum(1 for key in temps if self._unlink(key))
                if own:  # and the upload folders left empty (a prune killed between a
                    remove_empty_uploads(fd)  # manifest and its folder)
        except FileNotFoundError:
            return 0  # nothing written for this system yet
        except LinkInTarget as exc:
            self._warn_link(exc.rel, "cleaned up")
            return 0
        if removed:
            logger.info("local target: removed {} temporary files of unfinished writes", removed)
        return removed

    async def close(self) -> None:
        return None

    async def put_file(self, key: str, source: Path, compression: Compression) -> StoredObject:
        return await asyncio.to_thread(self._put_file_sync, key, source, compression)

    def _write_atomic(self, key: str, chunks: Iterator[bytes], *, exclusive: bool = False) -> int:
        parts = self._parts(key)
        try:
            with self._dir(parts[:-1], create=True) as dfd:
                written = write_in(dfd, parts[-1], chunks, exclusive=exclusive)
            self.keep_root = True  # written there: an upload may be there from now on
            return written
        except LinkInTarget as exc:
            raise PermanentError(
                f"local target: {exc.rel} in {self.root} is a symlink or not a directory; "
                "akoshad does not write through it",
                fix="remove it from local_target_dir",
            ) from None
        except (FileNotFoundError, FileExistsError):
            raise
        except OSError as exc:
            if exclusive and exc.errno in NO_LINK:
                raise  # no hard links here: create_exclusive writes it unchecked
            # a full disk or a flaky mount may clear up; a read-only tree will not
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise PermanentError(
                    f"local target {self.root} is not writable: {exc.strerror}",
                    fix="make local_target_dir writable",
                ) from None
            raise TransientError(f"local target write failed: {exc.strerror}") from None

    def _put_file_sync(self, key: str, source: Path, compression: Compression) -> StoredObject:
        digest = hashlib.sha256()
        written = self._write_atomic(key, encoded_chunks(source, compression, digest=digest))
        return StoredObject(
            key=key,
            stored_size=written,
            compression=compression,
            bytes_sent=written,
            sha256=digest.hexdigest(),
        )

    async def put_object_file(self, key: str, source: Path, size: int, crc32: int) -> int:
        return await asyncio.to_thread(self._put_object_file_sync, key, source, size)

    def _put_object_file_sync(self, key: str, source: Path, size: int) -> int:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        with os.fdopen(os.open(source, flags), "rb", buffering=0) as fh:
            st = os.fstat(fh.fileno())
            if st.st_size != size:
                raise TransientError(f"local target: {source.name} is not the {size} bytes given")
            if self._link_atomic(key, source, st):
                return size
            written = self._write_atomic(key, read_chunks(fh))
        if written != size:
            raise TransientError(f"local target: {source.name} held {written} of {size} bytes")
        return written

    def _link_atomic(self, key: str, source: Path, st: os.stat_result) -> bool:
        """Store the finished file ``source`` (whose stat is ``st``) under ``key`` as a hard
        link, fsynced, then renamed into place: no copy of a pack that is only deleted from
        staging afterwards. False when the file system cannot (another device, no links):
        the caller copies it."""
        parts = self._parts(key)
        try:
            with self._dir(parts[:-1], create=True) as dfd:
                linked = link_in(dfd, parts[-1], source, st)
            self.keep_root = self.keep_root or linked
            return linked
        except LinkInTarget:
            return False  # the copy reports it
        except OSError as exc:
            if exc.errno in NO_LINK:
                return False
            raise TransientError(f"local target write failed: {exc.strerror}") from None

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        return await asyncio.to_thread(self._write_atomic, key, iter((data,)))

    async def create_exclusive(self, key: str, data: bytes, content_type: str) -> Created:
        """``put_bytes`` only when ``key`` is free: a hard link, which no other writer's
        file (or link) at ``key`` lets through. A file system without hard links (FAT,
        exFAT, some network and FUSE mounts) gets the record written when ``key`` is free
        the moment it looks, ``unchecked``: the caller reads it back after a while."""
        try:
            await asyncio.to_thread(self._write_atomic, key, iter((data,)), exclusive=True)
        except FileExistsError:
            return "exists"
        except OSError as exc:
            if exc.errno not in NO_LINK:
                raise
            if await self.head(key) is not None:
                return "exists"
            await asyncio.to_thread(self._write_atomic, key, iter((data,)))
            return "unchecked"
        return "created"

    def _open_object(self, key: str) -> BinaryIO | None:
        """The object's file opened for reading, or None when missing or not a regular file
        (a link is not followed, a FIFO not waited on)."""
        parts = self._parts(key)
        try:
            with self._dir(parts[:-1], create=False) as dfd:
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                fd = os.open(parts[-1], flags, dir_fd=dfd)
        except FileNotFoundError:
            return None
        except LinkInTarget as exc:
            self._warn_link(exc.rel, "read")
            return None
        except OSError as exc:
            if exc.errno not in NOT_FOLLOWED:
                raise
            self._warn_link(key, "read")
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            self._warn_link(key, "read")
            return None
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    async def read(self, key: str) -> AsyncIterator[bytes]:
        fh = await asyncio.to_thread(self._open_object, key)
        if fh is None:
            raise KeyError(key)
        try:
            while chunk := await asyncio.to_thread(fh.read, CHUNK):
                yield chunk
        finally:
            fh.close()

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        return await asyncio.to_thread(self._read_range_sync, key, offset, length)

    def _read_range_sync(self, key: str, offset: int, length: int) -> bytes:
        """``pread`` of the object opened without following a link (KeyError when it is
        missing or not a regular file, PackError when it ends too soon)."""
        if offset < 0 or length < 0:
            raise PackError(f"object {key}: invalid range {offset}+{length}")
        fh = self._open_object(key)
        if fh is None:
            raise KeyError(key)
        with fh:
            return pread_exact(fh.fileno(), key, offset, length)

    def _head_sync(self, key: str) -> int | None:
        parts = self._parts(key)
        try:
            with self._dir(parts[:-1], create=False) as dfd:
                st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            self._check_root()  # the outbox gone, not the object: it cannot say
            return None
        except LinkInTarget as exc:
            self._warn_link(exc.rel, "read")
            return None
        if not stat.S_ISREG(st.st_mode):
            self._warn_link(key, "read")
            return None
        return st.st_size

    async def head(self, key: str) -> int | None:
        return await asyncio.to_thread(self._head_sync, key)

    async def system_ids(self, limit: int) -> list[str]:
        return await asyncio.to_thread(system_ids_in, self.root, limit)

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:
        for key in await asyncio.to_thread(self._list_sync, prefix):
            yield key

    async def list_stored(self, prefix: str) -> AsyncIterator[tuple[str, int, float]]:
        """Keys under ``prefix`` with their sizes and modification times (one walk)."""
        stats: dict[str, tuple[int, float]] = {}
        for key in await asyncio.to_thread(self._list_sync, prefix, stats):
            yield key, *stats[key]

    def _list_sync(
        self, prefix: str, stats: dict[str, tuple[int, float]] | None = None
    ) -> list[str]:
        # walk only the deepest existing directory the prefix names
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        parts = self._parts(base) if base else []
        try:
            with self._dir(parts, create=False) as fd:
                keys = walk_files(fd, base, self._warn_link, stats=stats)
        except FileNotFoundError:
            self._check_root()  # the outbox gone, not the prefix: "no uploads" would be false
            return []
        except LinkInTarget as exc:
            self._warn_link(exc.rel, "listed")
            return []
        return sorted(k for k in keys if k.startswith(prefix))

    async def delete_keys(self, keys: list[str]) -> None:
        await asyncio.to_thread(self._delete_sync, keys)

    def _unlink(self, key: str) -> bool:
        """Remove the entry ``key`` (a link itself, never what it points at). True when
        its directory was reached."""
        parts = self._parts(key)
        try:
            with self._dir(parts[:-1], create=False) as dfd, contextlib.suppress(FileNotFoundError):
                os.unlink(parts[-1], dir_fd=dfd)
        except FileNotFoundError:
            return False
        except LinkInTarget as exc:
            self._warn_link(exc.rel, "deleted through")
            return False
        except IsADirectoryError:
            self._warn_link(key, "deleted")
            return False
        return True

    def _delete_sync(self, keys: list[str]) -> None:
        """Unlink ``keys``, remove the directories left empty, then fsync each directory
        that changed: the removals outlive a power loss before the caller deletes anything
        next (a prune's manifests before the packs they named)."""
        parents: set[tuple[str, ...]] = set()
        for key in keys:
            if self._unlink(key):
                parents.add(tuple(self._parts(key)[:-1]))
        changed: set[tuple[str, ...]] = set()
        for parent in sorted(parents, key=len, reverse=True):
            while parent:
                try:
                    with self._dir(parent[:-1], create=False) as dfd:
                        os.rmdir(parent[-1], dir_fd=dfd)  # a link is ENOTDIR: not followed
                except (OSError, LinkInTarget):
                    break
                parent = parent[:-1]
            changed.add(parent)
        for parent in changed:
            with contextlib.suppress(OSError, LinkInTarget), self._dir(parent, create=False) as fd:
                sync_entry(fd)
