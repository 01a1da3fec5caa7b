"""References stored in format-2 manifests, exactly as CONTRACT.md spells them.

A chunk ref ``{sha256, size, key, offset, length, compression, encryption}`` locates the
stored bytes of one chunk (``length`` bytes at ``offset`` inside object ``key``) and
describes its plaintext (``sha256``, ``size``). ``from_json`` is strict: every field must be
present with the right type, no unknown field, and the numbers must be consistent. Every
problem raises :class:`RefError` with one line naming the field.
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, cast

from akoshad.storage.errors import RefError

ChunkCompression = Literal["gzip", "zstd", "none"]
Encryption = Literal["none", "age"]
COMPRESSIONS: tuple[ChunkCompression, ...] = ("gzip", "zstd", "none")
ENCRYPTIONS: tuple[Encryption, ...] = ("none", "age")

# Hard limits of the format. A chunk's plaintext bounds its decompression, so a manifest
# must not be able to declare a huge one; CDC chunks are at most 1 MiB today.
MAX_CHUNK_SIZE = 16 * 1024 * 1024
# Largest object a chunk may live in (S3's object size limit).
MAX_OBJECT_SIZE = 5 * 1024**4
# Stored bytes of a chunk may exceed its plaintext a little (codec and age framing).
MAX_STORED_OVERHEAD = 64 * 1024
MAX_KEY_LENGTH = 1024

HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_KEY_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_.~+=@-]+$")

CHUNK_FIELDS = ("sha256", "size", "key", "offset", "length", "compression", "encryption")
CHUNK_LIST_FIELDS = ("key", "compression")
INDEX_PART_FIELDS = ("key", "compression", "encryption")
INLINE_PART_FIELDS = ("name", "inline", "compression", "encryption")
# A sealed index part of at most this many sealed bytes goes in the manifest (base64)
MAX_INLINE_PART_BYTES = 64 * 1024
CHUNK_LIST_PART_FIELDS = ("key", "compression", "encryption", "count", "size")
# A chunk list split into parts: at most this many parts, each of at most this many chunks.
MAX_CHUNK_LIST_PARTS = 1 << 16
MAX_PART_CHUNKS = 1 << 16
MAX_FILE_SIZE = 1 << 50  # 1 PiB: a bound on a declared size, far past any store


def _fields(obj: object, fields: tuple[str, ...], what: str) -> Mapping[str, Any]:
    if type(obj) is dict and len(obj) == len(fields) and all(f in obj for f in fields):
        return obj  # the usual case: exactly the fields (a manifest has thousands)
    if not isinstance(obj, Mapping):
        raise RefError(f"{what}: expected an object, got {type(obj).__name__}")
    missing = [f for f in fields if f not in obj]
    if missing:
        raise RefError(f"{what}: missing field {', '.join(missing)}")
    unknown = sorted(str(k) for k in obj if k not in fields)
    if unknown:
        raise RefError(f"{what}: unknown field {', '.join(unknown)}")
    return cast(Mapping[str, Any], obj)


class _Validating(Protocol):
    def validate(self, what: str) -> None: ...


_R = TypeVar("_R", bound=_Validating)


_SHARED_FIELDS = ("key", "compression", "encryption")  # of a chunk ref: few values


def _validated(cls: type[_R], fields: Mapping[str, Any], what: str) -> _R:
    """An instance of the frozen dataclass ``cls`` holding ``fields`` (checked by
    :func:`_fields`), validated: :class:`RefError` names the bad field."""
    ref = cls.__new__(cls)
    for name, value in fields.items():
        object.__setattr__(ref, name, value)
    ref.validate(what)
    return ref


def _int(value: object, field: str, what: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RefError(f"{what}: {field} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise RefError(f"{what}: {field} must not be negative, got {value}")
    if value > maximum:
        raise RefError(f"{what}: {field} {value} exceeds the limit {maximum}")
    return value


def check_sha256(value: object, what: str, field: str = "sha256") -> str:
    """``value`` if it is 64 lowercase hex digits, else :class:`RefError`."""
    if not isinstance(value, str) or not HEX64_RE.match(value):
        raise RefError(f"{what}: {field} must be 64 lowercase hex digits, got {value!r:.80}")
    return value


_GOOD_KEYS: set[str] = set()  # keys found safe (a pack's key is in thousands of refs)
_GOOD_KEYS_MAX = 4096


def check_key(value: object, what: str) -> str:
    """``value`` if it is a safe relative object key (no ``..``, no empty segment)."""
    if type(value) is str and value in _GOOD_KEYS:
        return value
    if not isinstance(value, str) or not value:
        raise RefError(f"{what}: key must be a non-empty string")
    if len(value) > MAX_KEY_LENGTH:
        raise RefError(f"{what}: key longer than {MAX_KEY_LENGTH} characters")
    for segment in value.split("/"):
        if segment in ("", ".", "..") or not _KEY_SEGMENT_RE.match(segment):
            raise RefError(f"{what}: key {value!r:.120} is not a safe relative object key")
    if len(_GOOD_KEYS) >= _GOOD_KEYS_MAX:
        _GOOD_KEYS.clear()
    _GOOD_KEYS.add(value)
    return value


def _choice(value: object, field: str, allowed: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise RefError(f"{what}: {field} must be one of {'|'.join(allowed)}, got {value!r:.40}")
    return value


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk of a file: where its stored bytes are and what they decode to."""

    sha256: str
    size: int
    key: str
    offset: int
    length: int
    compression: ChunkCompression
    encryption: Encryption

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, what: str = "chunk ref") -> None:
        """Raise :class:`RefError` unless every field is valid and consistent."""
        check_sha256(self.sha256, what)
        _int(self.size, "size", what, MAX_CHUNK_SIZE)
        check_key(self.key, what)
        _int(self.offset, "offset", what, MAX_OBJECT_SIZE)
        _int(self.length, "length", what, self.size + MAX_STORED_OVERHEAD)
        _choice(self.compression, "compression", COMPRESSIONS, what)
        _choice(self.encryption, "encryption", ENCRYPTIONS, what)
        if self.offset + self.length > MAX_OBJECT_SIZE:
            raise RefError(f"{what}: offset + length exceeds the object size limit")
        plain = self.compression == "none" and self.encryption == "none"
        if plain and self.length != self.size:
            raise RefError(
                f"{what}: length {self.length} differs from size {self.size} "
                "for a chunk stored without compression or encryption"
            )
        if self.size > 0 and self.length == 0:
            raise RefError(f"{what}: length 0 for a chunk of {self.size} bytes")

    @property
    def end(self) -> int:
        """Offset just past the stored bytes inside ``key``."""
        return self.offset + self.length

    def to_json(self) -> dict[str, Any]:
        """The manifest form (field order as in the contract: ``CHUNK_FIELDS``)."""
        return {
            "sha256": self.sha256,
            "size": self.size,
            "key": self.key,
            "offset": self.offset,
            "length": self.length,
            "compression": self.compression,
            "encryption": self.encryption,
        }

    @classmethod
    def from_json(cls, obj: object, what: str = "chunk ref") -> ChunkRef:
        """Parse and validate one chunk ref; :class:`RefError` names the bad field. Its
        pack key and codec names are interned: the refs of an upload read back share one
        string each (a JSON document spells them out anew for every chunk)."""
        ref = _validated(cls, _fields(obj, CHUNK_FIELDS, what), what)
        for name in _SHARED_FIELDS:
            value = getattr(ref, name)
            if isinstance(value, str):
                object.__setattr__(ref, name, sys.intern(value))
        return ref


@dataclass(frozen=True, slots=True)
class ChunkListRef:
    """``chunk_list``: a stored ``{"chunks": [...]}`` object shared between uploads."""

    key: str
    compression: ChunkCompression

    def __post_init__(self) -> None:
        check_key(self.key, "chunk_list")
        _choice(self.compression, "compression", COMPRESSIONS, "chunk_list")

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "compression": self.compression}

    @classmethod
    def from_json(cls, obj: object, what: str = "chunk_list") -> ChunkListRef:
        m = _fields(obj, CHUNK_LIST_FIELDS, what)
        check_key(m["key"], what)
        comp = _choice(m["compression"], "compression", COMPRESSIONS, what)
        return cls(m["key"], cast(ChunkCompression, comp))


@dataclass(frozen=True, slots=True)
class IndexPartRef:
    """One part of ``metadata.index.parts``: a stored ``{"files": [...]}`` object
    (``{key, compression, encryption}``), or a sealed one held in the manifest itself
    (``{name, inline, compression, encryption}``: ``inline`` the base64 of its sealed
    bytes, at most :data:`MAX_INLINE_PART_BYTES`; ``name`` the keyed name it would have
    stored under, kept in ``key`` here; ``encryption`` always ``age``)."""

    key: str
    compression: ChunkCompression
    encryption: Encryption
    inline: bytes | None = None

    def __post_init__(self) -> None:
        check_key(self.key, "index part")
        _choice(self.compression, "compression", COMPRESSIONS, "index part")
        _choice(self.encryption, "encryption", ENCRYPTIONS, "index part")
        if self.inline is not None:
            _inline_checks(self.inline, self.encryption, "index part")

    def to_json(self) -> dict[str, Any]:
        if self.inline is None:
            return {f: getattr(self, f) for f in INDEX_PART_FIELDS}
        return inline_part_json(self.key, self.inline, self.compression)

    @classmethod
    def from_json(cls, obj: object, what: str = "index part") -> IndexPartRef:
        inline = isinstance(obj, Mapping) and "inline" in obj
        m = _fields(obj, INLINE_PART_FIELDS if inline else INDEX_PART_FIELDS, what)
        key = check_key(m["name" if inline else "key"], what)
        comp = _choice(m["compression"], "compression", COMPRESSIONS, what)
        enc = _choice(m["encryption"], "encryption", ENCRYPTIONS, what)
        data = _inline_bytes(m["inline"], what) if inline else None
        if data is not None:
            _inline_checks(data, enc, what)
        return cls(key, cast(ChunkCompression, comp), cast(Encryption, enc), data)


def inline_part_json(name: str, sealed: bytes, compression: str) -> dict[str, Any]:
    """One of ``metadata.index.parts`` holding the sealed part ``sealed`` itself."""
    return {
        "name": name,
        "inline": base64.b64encode(sealed).decode("ascii"),
        "compression": compression,
        "encryption": "age",
    }


def _inline_bytes(value: object, what: str) -> bytes:
    """The bytes of an ``inline`` field: strict base64, at most the inline bound."""
    if not isinstance(value, str):
        raise RefError(f"{what}: inline must be a base64 string")
    if len(value) > 4 * ((MAX_INLINE_PART_BYTES + 2) // 3):
        raise RefError(f"{what}: inline is over {MAX_INLINE_PART_BYTES} bytes")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        data = None
    if data is None or base64.b64encode(data).decode("ascii") != value:  # canonical only
        raise RefError(f"{what}: inline is not valid base64")
    return data


def _inline_checks(data: bytes, encryption: str, what: str) -> None:
    if encryption != "age":
        raise RefError(f"{what}: an inline part must be sealed (encryption age)")
    if not data or len(data) > MAX_INLINE_PART_BYTES:
        raise RefError(
            f"{what}: inline holds {len(data)} bytes, expected 1 to {MAX_INLINE_PART_BYTES}"
        )


@dataclass(frozen=True, slots=True)
class ChunkListPartRef:
    """One part of a split chunk list ``{"parts": [...]}``: a stored ``{"chunks": [...]}``
    of ``count`` chunks whose plaintext sizes add up to ``size``."""

    key: str
    compression: ChunkCompression
    encryption: Encryption
    count: int
    size: int

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, what: str = "chunk list part") -> None:
        """Raise :class:`RefError` unless every field is valid (at least one chunk)."""
        check_key(self.key, what)
        _choice(self.compression, "compression", COMPRESSIONS, what)
        _choice(self.encryption, "encryption", ENCRYPTIONS, what)
        _int(self.count, "count", what, MAX_PART_CHUNKS)
        _int(self.size, "size", what, MAX_FILE_SIZE)
        if self.count == 0:
            raise RefError(f"{what}: count must be at least 1")

    def to_json(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in CHUNK_LIST_PART_FIELDS}

    @classmethod
    def from_json(cls, obj: object, what: str = "chunk list part") -> ChunkListPartRef:
        """Parse and validate one part ref; :class:`RefError` names the bad field."""
        return _validated(cls, _fields(obj, CHUNK_LIST_PART_FIELDS, what), what)


def chunks_from_json(
    obj: object, what: str = "chunks", max_chunks: int = 1 << 24
) -> list[ChunkRef]:
    """Parse an ordered list of chunk refs (an entry's ``chunks`` or a chunk list's)."""
    if not isinstance(obj, list):
        raise RefError(f"{what}: expected a list, got {type(obj).__name__}")
    if len(obj) > max_chunks:
        raise RefError(f"{what}: {len(obj)} chunks exceed the limit {max_chunks}")
    return [ChunkRef.from_json(item, f"{what}[{i}]") for i, item in enumerate(obj)]


def chunk_list_from_json(
    obj: object, what: str = "chunk list", max_chunks: int = 1 << 24
) -> list[ChunkRef]:
    """Parse a stored chunk list object ``{"chunks": [...]}`` (or one part of a split one)."""
    m = _fields(obj, ("chunks",), what)
    return chunks_from_json(m["chunks"], f"{what}.chunks", max_chunks)


def chunk_list_parts_from_json(
    obj: object, what: str = "chunk list", max_parts: int = MAX_CHUNK_LIST_PARTS
) -> list[ChunkListPartRef]:
    """Parse a split chunk list ``{"parts": [...]}`` (at most ``max_parts``, at least one)."""
    m = _fields(obj, ("parts",), what)
    items = m["parts"]
    if not isinstance(items, list):
        raise RefError(f"{what}.parts: expected a list, got {type(items).__name__}")
    if not items or len(items) > max_parts:
        raise RefError(f"{what}.parts: {len(items)} parts, expected 1 to {max_parts}")
    return [ChunkListPartRef.from_json(p, f"{what}.parts[{i}]") for i, p in enumerate(items)]


def check_file_chunks(chunks: list[ChunkRef], size: int, what: str = "file") -> None:
    """:class:`RefError` unless the chunks' plaintext sizes add up to the file's ``size``."""
    total = sum(c.size for c in chunks)
    if total != size:
        raise RefError(f"{what}: chunk sizes add up to {total}, the file has {size} bytes")
