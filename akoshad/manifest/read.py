"""Reading manifests back from a target: the uploads it holds, one manifest bounded in size
and checked whole, the newest valid one, and its files (format 1 or 2) as
:class:`~akoshad.storage.stored.StoredFile`. Restore, verify, drills and the start-up
recovery all read through here."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from loguru import logger

from akoshad.errors import RestoreError
from akoshad.manifest.layout import (
    MAX_MANIFEST_BYTES,
    ManifestError,
    entries_of,
    in_future,
    manifest_format,
    manifest_key,
    system_prefix,
    upload_ids_from_keys,
    validate_manifest,
)
from akoshad.storage.crypto import Identities
from akoshad.storage.documents import DocumentMissing
from akoshad.storage.format2_read import Keep, Unreadable, read_entries
from akoshad.storage.stored import StoredFile
from akoshad.targets.base import Target


class DocumentGone(RestoreError):
    """A document the manifest names is not in the target (a prune may have replaced it
    since the manifest was read: ``load_files`` reads them again once)."""


async def list_uploads(target: Target, system_id: str) -> list[str]:
    """Completed upload ids (those with a manifest), oldest first."""
    keys = [k async for k in target.list_keys(system_prefix(system_id))]
    return upload_ids_from_keys(keys, system_id)


async def read_manifest_bytes(target: Target, key: str) -> bytes:
    """The bytes of the manifest ``key``, refused past ``MAX_MANIFEST_BYTES`` (before it is
    parsed, and without reading more than that). KeyError when there is none. One request
    (a GET): the size is asked for only to name it when the manifest is refused."""
    parts: list[bytes] = []
    total = 0
    async for chunk in target.read(key):
        total += len(chunk)
        if total > MAX_MANIFEST_BYTES:
            break
        parts.append(chunk)
    if total <= MAX_MANIFEST_BYTES:
        return b"".join(parts)
    size = await target.head(key)
    if size is not None and size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest is {size} bytes, over the {MAX_MANIFEST_BYTES} limit")
    raise ManifestError(f"manifest is over the {MAX_MANIFEST_BYTES} byte limit")


def another_upload(manifest: Any, upload_id: str) -> str | None:
    """Why a (valid) manifest found at ``upload_id`` is not that upload's: its
    ``metadata.upload_id`` names another (a copy, or a folder renamed: restoring it as
    ``upload_id`` would restore another snapshot than the one listed), else None."""
    meta = manifest.get("metadata") if isinstance(manifest, dict) else None
    named = meta.get("upload_id") if isinstance(meta, dict) else None
    if isinstance(named, str) and named != upload_id:
        return f"it is the manifest of upload {named:.100} (copied or moved)"
    return None


async def load_manifest(target: Target, system_id: str, upload_id: str) -> dict[str, Any]:
    """The manifest of ``upload_id``, bounded in size and checked whole, its entries too
    (RestoreError with one clear reason otherwise)."""
    key = manifest_key(system_id, upload_id)
    try:
        data = await read_manifest_bytes(target, key)
    except KeyError:
        raise RestoreError(f"upload {upload_id} has no manifest in {target.name}") from None
    except ManifestError as exc:
        raise RestoreError(f"manifest of upload {upload_id} is refused: {exc}") from None
    try:
        manifest = await asyncio.to_thread(json.loads, data)
    except (ValueError, RecursionError):  # RecursionError: absurd nesting
        raise RestoreError(f"manifest of upload {upload_id} is not valid JSON") from None
    problems = validate_manifest(manifest, now=None)
    problems = [
        p for p in problems if "out of range" not in p
    ]  # Akosha's bounds: read all the same
    if problems:
        raise RestoreError(f"manifest of upload {upload_id} is invalid: {problems[0]}")
    moved = another_upload(manifest, upload_id)
    if moved is not None:
        raise RestoreError(f"manifest of upload {upload_id} is invalid: {moved}")
    try:
        if manifest_format(manifest) == 1:
            entries_of(manifest)  # format 2: its documents are read by ``load_files``
    except ManifestError as exc:
        raise RestoreError(f"manifest of upload {upload_id} is invalid: {exc}") from None
    return dict(manifest)


async def manifest_files(
    target: Target,
    system_id: str,
    upload_id: str,
    manifest: dict[str, Any],
    identities: Identities | None = None,
    keep: Keep | None = None,
    lost: list[Unreadable] | None = None,
) -> list[StoredFile]:
    """Every file of ``manifest`` (format 1 or 2: index parts and chunk lists read with
    their bounds, sealed ones opened with ``identities``), validated together;
    RestoreError with one clear reason otherwise (``IdentityError`` when the upload is
    encrypted and the identity is missing or wrong; :class:`DocumentGone`, a RestoreError,
    when a document is missing). ``lost`` given: the files whose chunk list is missing or
    damaged go there instead (``read_entries``)."""
    try:
        return await read_entries(
            target, manifest, system_id=system_id, identities=identities, keep=keep, lost=lost
        )
    except DocumentMissing as exc:
        raise DocumentGone(f"manifest of upload {upload_id} is invalid: {exc}") from None
    except ManifestError as exc:
        raise RestoreError(f"manifest of upload {upload_id} is invalid: {exc}") from None


async def load_files(
    target: Target,
    system_id: str,
    upload_id: str,
    identities: Identities | None = None,
    keep: Keep | None = None,
    lost: list[Unreadable] | None = None,
) -> tuple[dict[str, Any], list[StoredFile]]:
    """The manifest of ``upload_id`` (``load_manifest``) and its files (``manifest_files``).
    When a document it names is missing, both are read once more: a daemon's prune may have
    rewritten the manifest and replaced its documents in between (a repack); still missing,
    the :class:`DocumentGone` is raised. ``lost`` given: the files whose chunk list is
    missing or damaged (read once more too) go there, the others are returned."""
    manifest = await load_manifest(target, system_id, upload_id)
    found: list[Unreadable] | None = None if lost is None else []
    try:
        files = await manifest_files(
            target, system_id, upload_id, manifest, identities, keep, found
        )
        again = bool(found)
    except DocumentGone:
        again = True
    if again:
        found = None if lost is None else []
        manifest = await load_manifest(target, system_id, upload_id)
        files = await manifest_files(
            target, system_id, upload_id, manifest, identities, keep, found
        )
    if lost is not None and found:
        lost.extend(found)
    return manifest, files


async def newest_valid_manifest(
    target: Target, system_id: str
) -> tuple[str, dict[str, Any]] | None:
    """The newest upload not dated in the future whose manifest is valid, with that
    manifest; a malformed newer one is skipped with a warning (older ones serve)."""
    uploads = await list_uploads(target, system_id)
    for upload_id in reversed(uploads):
        if in_future(upload_id):
            logger.warning("ignoring upload {}: it is dated in the future", upload_id)
            continue
        try:
            return upload_id, await load_manifest(target, system_id, upload_id)
        except RestoreError as exc:
            logger.warning("ignoring upload {}: {}", upload_id, exc)
    return None


def latest_upload(uploads: list[str]) -> str | None:
    """The newest upload id not dated in the future (one named ``2999...`` by a broken
    clock or a hostile writer would otherwise stay "latest" for ever)."""
    current = [u for u in uploads if not in_future(u)]
    return current[-1] if current else None
