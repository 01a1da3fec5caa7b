"""Where things land in a target, and the manifest that commits an upload.

``systems/{system_id}/uploads/{upload_id}/{name}`` for every object, and
``manifest.json`` in that folder, written last. The manifest is a valid Akosha
``SystemMemoryUploadManifest`` with akoshad's per-file truth in ``metadata.files``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from akoshad import __version__
from akoshad.compress import Compression
from akoshad.manifest.facts import Facts
from akoshad.names import MANIFEST_NAME, MEMORIES_NAME, SYSTEM_ID_RE

# Akosha's SystemMemoryUploadManifest bounds (INTEROP.md)
MAX_CONVERSATIONS = 1_000_000
MAX_TOTAL_BYTES = 100_000_000_000
UPLOAD_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")
RESERVED_NAMES = frozenset({MANIFEST_NAME, MEMORIES_NAME})
MANIFEST_VERSION = "1.0"
_NAME_MAX = 180
KINDS = ("duckdb", "duckdb-wal", "sqlite", "file")
COMPRESSIONS = ("gzip", "none")
# A manifest larger than this is refused before it is parsed (a million entries take
# ~400 MB as JSON; this bounds what a hostile target can make a reader allocate).
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
# Upload ids dated this far ahead of the clock still count as "now" (clock skew).
FUTURE_SKEW = timedelta(minutes=5)
_ID_TIME = "%Y%m%dT%H%M%S%fZ"  # an upload id's first 22 characters
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_KEY_RE = re.compile(r"^systems/[A-Za-z0-9_-]{1,100}/uploads/[A-Za-z0-9_.-]{1,100}/[^/]+$")


class ManifestError(ValueError):
    """A manifest's ``metadata.files`` cannot be trusted (one clear reason)."""


def system_prefix(system_id: str) -> str:
    if not SYSTEM_ID_RE.match(system_id):
        raise ValueError(f"invalid system_id {system_id!r}")
    return f"systems/{system_id}/uploads/"


def upload_prefix(system_id: str, upload_id: str) -> str:
    if not UPLOAD_ID_RE.match(upload_id) or ".." in upload_id:
        raise ValueError(f"invalid upload_id {upload_id!r}")
    return f"{system_prefix(system_id)}{upload_id}/"


def manifest_key(system_id: str, upload_id: str) -> str:
    return upload_prefix(system_id, upload_id) + MANIFEST_NAME


def new_upload_id(now: datetime | None = None, after: str | None = None) -> str:
    """A time-sortable id (``20261124T085033123456Z-1a2b3c``), greater than ``after``
    (pass the last id not dated in the future, :func:`current_id_time`: an id continued
    after one a clock running ahead dated would be in the future too)."""
    ts = now or datetime.now(UTC)
    while True:
        candidate = f"{ts.strftime(_ID_TIME)}-{secrets.token_hex(3)}"
        if after is None or candidate > after:
            return candidate
        ts += timedelta(microseconds=1)
        if after and ts.strftime(_ID_TIME) < after[:22]:
            # the clock went backwards: continue just after the last id instead
            ts = datetime.strptime(after[:22], _ID_TIME).replace(tzinfo=UTC) + timedelta(
                microseconds=1
            )


def current_id_time(now: datetime | None = None) -> str:
    """The time part of the last upload id not dated in the future (``in_future``): ids
    whose first 22 characters sort at or before it."""
    return ((now or datetime.now(UTC)) + FUTURE_SKEW).strftime(_ID_TIME)


def object_name(path: str, compression: str, taken: set[str] | None = None) -> str:
    """A bare object name for a store path, unique within ``taken`` (which it joins).

    ``sessions/a/state.json`` -> ``sessions__a__state.json`` (``.gz`` added for gzip).
    Names that had to be altered, or would collide, get a short hash of the path.
    """
    flat = path.replace("/", "__")
    safe = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9_.-]", "_", flat)).strip(".")
    base = safe[:_NAME_MAX].rstrip(".") or "file"
    altered = base != flat or "__" in path
    suffix = ".gz" if compression == "gzip" else ""
    name = f"{base}{suffix}"
    if altered or name in RESERVED_NAMES or (taken is not None and name in taken):
        digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:10]
        name = f"{base}-{digest}{suffix}"
    n = 1
    while taken is not None and name in taken:
        name = f"{base}-{digest}-{n}{suffix}"
        n += 1
    if taken is not None:
        taken.add(name)
    return name


@dataclass(frozen=True)
class FileEntry:
    """One captured file as listed in ``metadata.files``."""

    path: str
    name: str
    key: str
    size: int
    sha256: str
    stored_size: int
    compression: Compression
    kind: str
    facts: Facts | None = None  # what the capture established (rows, json_ok); optional
    mode: int | None = None  # permission bits at capture (absent in older manifests)


def _entry_dict(entry: FileEntry) -> dict[str, Any]:
    out = asdict(entry)
    del out["facts"]
    if entry.facts is not None:
        out.update(entry.facts.as_fields())
    if entry.mode is None:
        del out["mode"]
    return out


def build_manifest(
    *,
    system_id: str,
    upload_id: str,
    entries: Sequence[FileEntry],
    skipped: dict[str, str],
    uploaded_at: datetime | None = None,
    conversation_count: int = 0,
    has_memories: bool = False,
    extra_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest dict; ``files`` names only the objects stored in this upload's folder."""
    own = upload_prefix(system_id, upload_id)
    stored_here = sorted((e for e in entries if e.key.startswith(own)), key=lambda e: e.name)
    names = [e.name for e in stored_here]
    if has_memories:
        names.append(MEMORIES_NAME)
    compressed = any(e.compression == "gzip" for e in stored_here)
    stored = {e.path for e in entries}
    metadata: dict[str, Any] = {
        "system_id": system_id,
        "upload_id": upload_id,
        "uploader": "akoshad",
        "akoshad_version": __version__,
        "files": [_entry_dict(e) for e in sorted(entries, key=lambda e: e.path)],
        # a path is either stored or skipped: a stale skip of a file stored now is dropped
        "skipped": [
            {"path": p, "reason": r} for p, r in sorted(skipped.items()) if p not in stored
        ],
    }
    if extra_metadata:
        metadata.update(extra_metadata)
    total = sum(e.size for e in entries)
    # Akosha's schema bounds both; past a bound the exact figure goes in metadata
    if conversation_count > MAX_CONVERSATIONS:
        metadata["conversation_count"] = conversation_count
    if total > MAX_TOTAL_BYTES:
        metadata["total_size_bytes"] = total
    when = uploaded_at or datetime.now(UTC)
    return {
        "uploaded_at": when.isoformat(),
        "conversation_count": min(conversation_count, MAX_CONVERSATIONS),
        "total_size_bytes": min(total, MAX_TOTAL_BYTES),
        "version": MANIFEST_VERSION,
        "system_type": "session-buddy",
        "checksum": None,
        "compressed": compressed,
        "compression_format": "gzip" if compressed else None,
        "files": names,
        "metadata": metadata,
    }


def encode_manifest(manifest: dict[str, Any]) -> bytes:
    """The manifest as stored: compact JSON, keys sorted (small on a large store)."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")


def validate_manifest(manifest: Any, now: datetime | None = None) -> list[str]:
    """Problems under Akosha's ``SystemMemoryUploadManifest`` rules (empty = valid)."""
    if not isinstance(manifest, dict):
        return ["manifest is not a JSON object"]
    return _header_problems(manifest, now or datetime.now(UTC)) + _body_problems(manifest)


def _header_problems(manifest: dict[str, Any], now: datetime) -> list[str]:
    """The upload's date, counts, version, type and checksum."""
    problems: list[str] = []
    raw = manifest.get("uploaded_at")
    try:
        when = datetime.fromisoformat(str(raw))
        if when.tzinfo is None:
            problems.append("uploaded_at is not timezone-aware")
        elif not (now - timedelta(days=365) <= when <= now + timedelta(minutes=5)):
            problems.append("uploaded_at is out of range")
    except ValueError:
        problems.append("uploaded_at is missing or not ISO 8601")
    count = manifest.get("conversation_count")
    if not isinstance(count, int) or isinstance(count, bool):
        problems.append("conversation_count must be an int")
    elif not 0 <= count <= MAX_CONVERSATIONS:
        problems.append(f"conversation_count is out of range (0..{MAX_CONVERSATIONS})")
    total = manifest.get("total_size_bytes")
    if total is not None and (not isinstance(total, int) or isinstance(total, bool)):
        problems.append("total_size_bytes must be an int")
    elif total is not None and not 0 <= total <= MAX_TOTAL_BYTES:
        problems.append(f"total_size_bytes is out of range (0..{MAX_TOTAL_BYTES})")
    if not re.match(r"^\d+\.\d+$", str(manifest.get("version", "1.0"))):
        problems.append("version must look like 1.0")
    st = manifest.get("system_type")
    if st is not None and not (isinstance(st, str) and 1 <= len(st) <= 50):
        problems.append("system_type length must be 1..50")
    checksum = manifest.get("checksum")
    if checksum is not None and not re.match(r"^[a-f0-9]{64}$", str(checksum)):
        problems.append("checksum must be 64 lowercase hex")
    return problems


def _body_problems(manifest: dict[str, Any]) -> list[str]:
    """Compression, file names and metadata."""
    problems: list[str] = []
    compressed = manifest.get("compressed", False)
    fmt = manifest.get("compression_format")
    if bool(compressed) != (fmt is not None):
        problems.append("compression_format must be set iff compressed")
    if fmt is not None and fmt not in ("gzip", "zstd", "lz4"):
        problems.append("compression_format must be gzip, zstd or lz4")
    files = manifest.get("files", [])
    if not isinstance(files, list):
        problems.append("files must be a list")
    else:
        for name in files:
            if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name or "~" in name:
                problems.append(f"bad file name {name!r}")
    if not isinstance(manifest.get("metadata", {}), dict):
        problems.append("metadata must be an object")
    return problems


def entries_of(manifest: dict[str, Any]) -> list[FileEntry]:
    """The ``metadata.files`` of a manifest as ``FileEntry`` objects, all validated at once:
    ManifestError names the first entry that cannot be trusted (a missing or mistyped
    field, an unsafe or duplicate path, a path that is also another's directory)."""
    metadata = manifest.get("metadata", {})
    raw_files = metadata.get("files", []) if isinstance(metadata, dict) else None
    if not isinstance(raw_files, list):
        raise ManifestError("metadata.files is not a list")
    out = [_parse_entry(i, raw) for i, raw in enumerate(raw_files)]
    check_unique_paths(entry.path for entry in out)
    return out


def check_unique_paths(paths: Iterable[str]) -> None:
    """:class:`ManifestError` when a path is listed twice, or is both a file and another
    file's directory (``a`` and ``a/b``): restoring either would fail half-way."""
    listed = list(paths)
    seen: set[str] = set()
    for path in listed:
        if path in seen:
            raise ManifestError(f"path {path!r:.200} is listed twice")
        seen.add(path)
    for path in listed:
        parts = path.split("/")
        for n in range(1, len(parts)):
            parent = "/".join(parts[:n])
            if parent in seen:
                raise ManifestError(f"{parent!r:.200} is listed as a file and as a directory")


def _field(raw: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = raw.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ManifestError(f"{where}: {name} is missing or not a {kind.__name__}")
    return value


def _parse_entry(index: int, raw: Any) -> FileEntry:
    """One ``metadata.files`` item, checked field by field."""
    where = f"metadata.files[{index}]"
    if not isinstance(raw, dict):
        raise ManifestError(f"{where} is not an object")
    path = _field(raw, "path", str, where)
    check_store_path(path, where)
    where = f"{where} ({path!r})"
    compression = _field(raw, "compression", str, where)
    if compression not in COMPRESSIONS:
        raise ManifestError(f"{where}: unknown compression {compression!r}")
    entry = FileEntry(
        path=path,
        name=_field(raw, "name", str, where),
        key=_field(raw, "key", str, where),
        size=_field(raw, "size", int, where),
        sha256=_field(raw, "sha256", str, where),
        stored_size=_field(raw, "stored_size", int, where),
        compression=cast(Compression, compression),
        kind=_field(raw, "kind", str, where),
        mode=None if raw.get("mode") is None else _field(raw, "mode", int, where),
        facts=Facts.from_fields(raw),
    )
    if not NAME_RE.match(entry.name) or ".." in entry.name:
        raise ManifestError(f"{where}: bad object name {entry.name!r}")
    if not _KEY_RE.match(entry.key) or ".." in entry.key.split("/"):
        raise ManifestError(f"{where}: bad object key {entry.key!r}")
    if entry.size < 0 or entry.stored_size < 0:
        raise ManifestError(f"{where}: negative size")
    if not _SHA256_RE.match(entry.sha256):
        raise ManifestError(f"{where}: sha256 is not 64 lowercase hex digits")
    if entry.kind not in KINDS:
        raise ManifestError(f"{where}: unknown kind {entry.kind!r}")
    if entry.mode is not None and not 0 <= entry.mode <= 0o777:
        raise ManifestError(f"{where}: mode {entry.mode} is not permission bits")
    return entry


def check_store_path(path: str, where: str = "manifest") -> None:
    """A store path safe to write under a directory: relative, no ``.``/``..``/empty part,
    no NUL, at most 4096 bytes."""
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or "\x00" in path
        or len(path.encode("utf-8", "surrogateescape")) > 4096
    ):
        raise ManifestError(f"{where}: unsafe path {path!r}")


def upload_time(upload_id: str) -> datetime | None:
    """When an upload id (``20261124T085033123456Z-...``) says it was made; None if it
    does not start with a time."""
    try:
        return datetime.strptime(upload_id[:22], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def in_future(upload_id: str, now: datetime | None = None) -> bool:
    """The upload id is dated ahead of ``now`` (beyond clock skew)."""
    when = upload_time(upload_id)
    return when is not None and when > (now or datetime.now(UTC)) + FUTURE_SKEW


def upload_ids_from_keys(keys: Iterable[str], system_id: str) -> list[str]:
    """Upload ids that have a manifest, sorted ascending, from a key listing."""
    prefix = system_prefix(system_id)
    ids = set()
    for key in keys:
        if key.startswith(prefix) and key.endswith("/" + MANIFEST_NAME):
            middle = key[len(prefix) : -len(MANIFEST_NAME) - 1]
            if UPLOAD_ID_RE.match(middle) and "/" not in middle:
                ids.add(middle)
    return sorted(ids)


MAX_FORMAT = 2  # the newest manifest format this version reads (and writes)


def manifest_format(manifest: Mapping[str, Any]) -> int:
    """``metadata.format`` (1 when absent); ManifestError for anything but 1 or 2."""
    metadata = manifest.get("metadata")
    if not isinstance(metadata, dict):
        raise ManifestError("metadata is not an object")
    fmt = metadata.get("format", 1)
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > MAX_FORMAT:
        writer = metadata.get("akoshad_version")
        by = f" (written by akoshad {writer:.40})" if isinstance(writer, str) else ""
        raise ManifestError(
            f"manifest format {fmt} is newer than this akoshad {__version__} reads{by}: "
            "upgrade akoshad to read it"
        )
    if isinstance(fmt, bool) or fmt not in (1, 2):
        raise ManifestError(f"unsupported manifest format {fmt!r:.40}")
    return int(fmt)
