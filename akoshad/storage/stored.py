"""One stored file, whatever the manifest format: the type restore, verify and drill share.

A format-1 entry is one whole object (:class:`WholeObject`: ``key``, ``stored_size``,
``compression`` gzip|none); a format-2 entry is an ordered list of :class:`ChunkRef` whose
decoded contents, concatenated, are the file (an empty file has no chunk). A format-2
manifest may also list whole objects (files kept unchanged since a format-1 upload).

:func:`check_stored_file` and :func:`check_paths` are the single validation both the writer
(before anything is stored) and the reader (before anything is restored) run; every problem
is one :class:`~akoshad.manifest.layout.ManifestError` line naming the entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from akoshad.manifest.facts import Facts
from akoshad.manifest.layout import (
    KINDS,
    NAME_RE,
    FileEntry,
    ManifestError,
    check_store_path,
    check_unique_paths,
)
from akoshad.names import SYSTEM_ID_RE
from akoshad.storage.errors import RefError
from akoshad.storage.refs import ChunkRef, check_file_chunks, check_key, check_sha256

WholeCompression = Literal["gzip", "none"]
WHOLE_COMPRESSIONS: tuple[WholeCompression, ...] = ("gzip", "none")
# Largest file a manifest may declare (bounds what decoding a hostile entry may produce).
MAX_FILE_SIZE = 1 << 44  # 16 TiB


@dataclass(frozen=True, slots=True)
class WholeObject:
    """A file stored as one object (format 1): ``stored_size`` bytes at ``key`` that
    decode (``compression``) to ``size`` bytes with ``sha256``. Chunk-like: offset 0,
    length ``stored_size``, no encryption."""

    key: str
    stored_size: int
    compression: WholeCompression
    size: int
    sha256: str

    @property
    def offset(self) -> int:
        return 0

    @property
    def length(self) -> int:
        return self.stored_size

    @property
    def encryption(self) -> Literal["none"]:
        return "none"

    def to_json(self) -> dict[str, Any]:
        """The entry fields of a whole object (``key``, ``stored_size``, ``compression``)."""
        return {"key": self.key, "stored_size": self.stored_size, "compression": self.compression}


Part = ChunkRef | WholeObject


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file of an upload: what it is (path, kind, size, sha256, mode, capture facts) and
    where its bytes are (``parts``: chunk refs, or exactly one whole object).

    ``name`` is informative (the bare object name for format 1, the flattened path for
    format 2); the writer assigns it for chunked files. ``mtime_ns``: the live file's
    modification time when it was captured (None: not recorded, as by earlier versions)."""

    path: str
    kind: str
    size: int
    sha256: str
    parts: tuple[Part, ...]
    mode: int | None = None
    facts: Facts | None = None
    name: str = ""
    mtime_ns: int | None = None

    @property
    def whole(self) -> WholeObject | None:
        """The whole object holding the file (format 1), or None for a chunked file."""
        if len(self.parts) == 1 and isinstance(self.parts[0], WholeObject):
            return self.parts[0]
        return None

    @property
    def chunks(self) -> tuple[ChunkRef, ...]:
        """The file's chunks in order (empty for a whole object or an empty file); no copy
        (``check_stored_file`` makes sure a file has chunks only, or one whole object)."""
        if self.whole is not None:
            return ()
        return cast(tuple[ChunkRef, ...], self.parts)

    @property
    def stored_size(self) -> int:
        """Stored bytes the file's parts take (shared chunks counted each time)."""
        return sum(p.length for p in self.parts)

    def keys(self) -> set[str]:
        """Every object key the file's bytes live in."""
        return {p.key for p in self.parts}

    @classmethod
    def from_file_entry(cls, entry: FileEntry) -> StoredFile:
        """A format-1 entry (``layout.FileEntry``) as a stored file of one whole object."""
        if entry.compression not in WHOLE_COMPRESSIONS:
            raise ManifestError(f"{entry.path!r}: unknown compression {entry.compression!r}")
        comp: WholeCompression = "gzip" if entry.compression == "gzip" else "none"
        whole = WholeObject(entry.key, entry.stored_size, comp, entry.size, entry.sha256)
        return cls(
            path=entry.path,
            kind=entry.kind,
            size=entry.size,
            sha256=entry.sha256,
            parts=(whole,),
            mode=entry.mode,
            facts=entry.facts,
            name=entry.name,
        )


MTIME_MAX = 1 << 63


def system_root(system_id: str) -> str:
    """``systems/{system_id}/``: every key a manifest references lives under it."""
    if not isinstance(system_id, str) or not SYSTEM_ID_RE.match(system_id):
        raise ManifestError(f"invalid system_id {system_id!r:.80}")
    return f"systems/{system_id}/"


def _check_int(value: object, field: str, where: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ManifestError(f"{where}: {field} must be an integer in 0..{maximum}")
    return value


def check_mtime(value: object, where: str) -> int:
    """A recorded modification time: nanoseconds since the epoch, a signed 64-bit value
    (what ``os.utime`` takes); :class:`ManifestError` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not -MTIME_MAX <= value < MTIME_MAX:
        raise ManifestError(f"{where}: mtime_ns must be an integer (nanoseconds since the epoch)")
    return value


def _check_key(key: str, root: str, where: str) -> None:
    try:
        check_key(key, where)
    except RefError as exc:
        raise ManifestError(str(exc)) from None
    if not key.startswith(root):
        raise ManifestError(f"{where}: key {key!r:.120} is not under {root}")


def _check_whole(whole: WholeObject, f: StoredFile, root: str, where: str) -> None:
    _check_key(whole.key, root, where)
    _check_int(whole.stored_size, "stored_size", where, MAX_FILE_SIZE)
    if whole.compression not in WHOLE_COMPRESSIONS:
        raise ManifestError(f"{where}: unknown compression {whole.compression!r:.40}")
    if (whole.size, whole.sha256) != (f.size, f.sha256):
        raise ManifestError(f"{where}: its object describes other content than the entry")
    if whole.compression == "none" and whole.stored_size != whole.size:
        raise ManifestError(
            f"{where}: stored_size {whole.stored_size} differs from size {whole.size} "
            "for an object stored without compression"
        )


def check_stored_file(
    f: StoredFile, system_id: str, where: str = "", *, keys_ok: set[str] | None = None
) -> None:
    """:class:`ManifestError` (one line naming ``where``) unless ``f`` is safe to write
    and to restore: a safe relative path, known kind, sizes and hashes well-formed, parts
    either one whole object or chunks adding up to ``size``, keys under the system. Each
    chunk ref is valid as made (``ChunkRef.validate`` runs when one is made). ``keys_ok``:
    chunk keys found good already (a pack's key is checked once; good ones are added)."""
    where = where or "entry"
    if not isinstance(f.path, str):
        raise ManifestError(f"{where}: path is not a string")
    check_store_path(f.path, where)
    named = f"({f.path!r:.200})"
    if not where.endswith(named):  # a format-2 entry's ``where`` names its path already
        where = f"{where} {named}"
    if f.kind not in KINDS:
        raise ManifestError(f"{where}: unknown kind {f.kind!r:.40}")
    _check_int(f.size, "size", where, MAX_FILE_SIZE)
    try:
        check_sha256(f.sha256, where)
    except RefError as exc:
        raise ManifestError(str(exc)) from None
    if f.mode is not None:
        _check_int(f.mode, "mode", where, 0o777)
    if f.mtime_ns is not None:
        check_mtime(f.mtime_ns, where)
    if f.name and (not NAME_RE.match(f.name) or ".." in f.name):
        raise ManifestError(f"{where}: bad object name {f.name!r:.80}")
    root = system_root(system_id)
    whole = f.whole
    if whole is not None:
        _check_whole(whole, f, root, where)
        return
    chunks = f.parts
    if not all(isinstance(p, ChunkRef) for p in chunks):
        raise ManifestError(f"{where}: a whole object must be the file's only part")
    try:
        check_file_chunks(cast(list[ChunkRef], list(chunks)), f.size, where)
    except RefError as exc:
        raise ManifestError(str(exc)) from None
    for i, ref in enumerate(chunks):
        if keys_ok is None or ref.key not in keys_ok:
            _check_key(ref.key, root, f"{where}: chunk {i + 1}")
            if keys_ok is not None:
                keys_ok.add(ref.key)


def check_paths(files: Iterable[StoredFile]) -> None:
    """:class:`ManifestError` when a path is listed twice, or is both a file and another
    file's directory (``a`` and ``a/b``)."""
    check_unique_paths(f.path for f in files)


def check_files(files: Sequence[StoredFile], system_id: str) -> None:
    """Every file checked (:func:`check_stored_file`) and the paths together
    (:func:`check_paths`)."""
    keys_ok: set[str] = set()
    for i, f in enumerate(files):
        check_stored_file(f, system_id, f"file {i + 1}", keys_ok=keys_ok)
    check_paths(files)
