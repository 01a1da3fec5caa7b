"""The embedded default target: a local directory laid out like the bucket.

Objects are written atomically: a temp file beside the final name, fsync, rename, fsync of
the directory. Temp files left by a crash are removed at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from akoshad.compress import READ_CHUNK, encoded_chunks, fsync_dir
from akoshad.errors import PermanentError, TransientError
from akoshad.targets.base import Compression, StoredObject

TMP_MARK = ".akoshad-tmp-"


class LocalTarget:
    """Stores objects as files under ``root``; keys are POSIX paths relative to it."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"LocalTarget(root={str(self.root)!r})"

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid object key {key!r}")
        return self.root.joinpath(*parts)

    async def start(self, *, clean_up: bool = True) -> None:
        if clean_up:
            await asyncio.to_thread(self._start_sync)

    def _start_sync(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PermanentError(
                f"local target {self.root} cannot be created: {exc.strerror}",
                fix="set local_target_dir to a writable directory",
            ) from None
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if TMP_MARK in name:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(dirpath, name))

    async def close(self) -> None:
        return None

    async def put_file(self, key: str, source: Path, compression: Compression) -> StoredObject:
        return await asyncio.to_thread(self._put_file_sync, key, source, compression)

    def _write_atomic(self, key: str, chunks: Iterator[bytes]) -> int:
        dest = self._path(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f"{dest.name}{TMP_MARK}{uuid.uuid4().hex[:8]}")
            written = 0
            try:
                with tmp.open("wb") as fh:
                    for chunk in chunks:
                        fh.write(chunk)
                        written += len(chunk)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, dest)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            fsync_dir(dest.parent)
        except FileNotFoundError:
            raise
        except OSError as exc:
            # a full disk or a flaky mount may clear up; a read-only tree will not
            if exc.errno in (30, 13, 1):  # EROFS, EACCES, EPERM
                raise PermanentError(
                    f"local target {self.root} is not writable: {exc.strerror}",
                    fix="make local_target_dir writable",
                ) from None
            raise TransientError(f"local target write failed: {exc.strerror}") from None
        return written

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

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        return await asyncio.to_thread(self._write_atomic, key, iter((data,)))

    async def read(self, key: str) -> AsyncIterator[bytes]:  # type: ignore[override]
        path = self._path(key)
        try:
            fh = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise KeyError(key) from None
        try:
            while chunk := await asyncio.to_thread(fh.read, READ_CHUNK):
                yield chunk
        finally:
            fh.close()

    async def head(self, key: str) -> int | None:
        try:
            st = await asyncio.to_thread(os.stat, self._path(key))
        except FileNotFoundError:
            return None
        return st.st_size

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        for key in await asyncio.to_thread(self._list_sync, prefix):
            yield key

    def _list_sync(self, prefix: str) -> list[str]:
        # walk only the deepest existing directory the prefix names
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*base.split("/")) if base else self.root
        keys: list[str] = []
        for dirpath, _dirs, files in os.walk(start):
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in files:
                if TMP_MARK in name:
                    continue
                key = name if rel_dir == "." else f"{Path(rel_dir).as_posix()}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        keys.sort()
        return keys

    async def delete_keys(self, keys: list[str]) -> None:
        await asyncio.to_thread(self._delete_sync, keys)

    def _delete_sync(self, keys: list[str]) -> None:
        parents: set[Path] = set()
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            parents.add(path.parent)
        for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            while parent != self.root and parent.is_relative_to(self.root):
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent
