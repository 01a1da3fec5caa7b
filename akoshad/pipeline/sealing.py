"""Encryption of uploads on the writer side: what an upload to one target seals with.

With ``encryption.recipients`` set, every upload is sealed end to end:

- each chunk is compressed, then sealed (``crypto.seal_chunk``, ref ``encryption: "age"``);
  its identity in the chunk table (what uploads deduplicate on) is its keyed name
  (``NameKey.name(sha256)``), so a chunk stored unencrypted, or sealed under another name
  key (another recipient list), is never reused: the file is sent again, sealed;
- index parts and chunk lists are sealed documents with keyed names, and every entry (and
  ``metadata.skipped``) goes in ``metadata.index``, never inline;
- ``memories.json`` is sealed too (``memories.json.age``) when ``encrypt_memories`` is on.

A ledger row of a file stored as a whole format-1 object, or in chunks of another scope, is
sent again (:func:`in_scope`): an encrypted upload never references readable objects.

:class:`SealingSource` loads (or makes) the name key of a target once per process
(``name_key.load_or_create_name_key``: the state's cache, else the target's records opened
with the identity when ``identity_file`` is readable, else a new key) and keeps it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from akoshad.config import Settings
from akoshad.config.encryption import Encryption
from akoshad.errors import PermanentError
from akoshad.pipeline.routes import ExtraObject
from akoshad.storage.crypto import Identities, IdentityError, Recipients
from akoshad.storage.document_copies import DocumentCopies
from akoshad.storage.name_key import NameKey, NameKeyCache, load_or_create_name_key
from akoshad.storage.refs import ChunkRef
from akoshad.targets.base import Target

SEALED_MEMORIES_SUFFIX = ".age"
STREAM_BUFFER = 1 << 20  # the sealed memories.json is written through a buffer this large


@dataclass(frozen=True)
class Sealing:
    """What one upload seals with: the recipients and the target's name key."""

    recipients: Recipients
    key: NameKey
    encrypt_memories: bool = False
    # the plaintext of each sealed document made is kept here (a prune can then repack)
    copies: DocumentCopies | None = field(default=None, compare=False)

    def chunk_id(self, sha256: str) -> str:
        """The identity of a chunk in the chunk table and the ledger (its keyed name)."""
        return self.key.name(sha256)


def chunk_id(sha256: str, sealing: Sealing | None) -> str:
    """A chunk's identity: its sha256 unencrypted, its keyed name sealed."""
    return sha256 if sealing is None else sealing.chunk_id(sha256)


def sealing_label(recipients: Recipients | None) -> str:
    """How uploads under these recipients store files: ``none`` (unencrypted), or ``age:``
    and the fingerprint of the recipient list (chunks are shared under one list's name key
    only). A change of it means no file stored before can be referenced."""
    return "none" if recipients is None else f"age:{recipients.fingerprint}"


def label_of(sealing: Sealing | None) -> str:
    """:func:`sealing_label` of an upload's sealing."""
    return sealing_label(None if sealing is None else sealing.recipients)


def configured_label(encryption: Encryption) -> str:
    """:func:`sealing_label` of the configured encryption."""
    return sealing_label(encryption.parsed_recipients() if encryption.enabled else None)


def memories_label(encryption: Encryption) -> str:
    """How ``memories.json`` goes up under ``encryption``: ``none`` (readable), or sealed
    as :func:`configured_label` says (``encrypt_memories``)."""
    return configured_label(encryption) if encryption.encrypt_memories else "none"


def in_scope(table: Mapping[str, ChunkRef], sealing: Sealing | None) -> dict[str, ChunkRef]:
    """The chunks of ``table`` an upload may reference: unencrypted ones when
    ``sealing`` is None, else those sealed under its name key. Blocking (an HMAC each)."""
    if sealing is None:
        return {i: r for i, r in table.items() if r.encryption == "none" and i == r.sha256}
    return {
        i: r for i, r in table.items() if r.encryption == "age" and sealing.chunk_id(r.sha256) == i
    }


def seal_file(src: Path, recipients: Recipients) -> Path:
    """``src`` sealed to ``recipients`` beside it (``<src>.age``, mode 0600), streamed;
    ``src`` is removed. Blocking."""
    dest = src.with_name(src.name + SEALED_MEMORIES_SUFFIX)
    dest.unlink(missing_ok=True)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb", buffering=STREAM_BUFFER) as out, src.open("rb") as inp:
            recipients.writer.seal_stream(inp, out)
    except OSError as exc:
        dest.unlink(missing_ok=True)
        raise PermanentError(f"sealing {src.name} failed: {exc.strerror or exc}") from None
    src.unlink(missing_ok=True)
    return dest


async def put_extras(
    target: Target, prefix: str, extras: Sequence[ExtraObject], sealing: Sealing | None
) -> tuple[int, list[str]]:
    """PUT an upload's extra objects under ``prefix`` (streamed from their files: never
    whole in memory; those stored while built are only counted), sealed first when
    ``encrypt_memories`` is on: (bytes sent, the names of those sealed)."""
    sent = 0
    sealed: list[str] = []
    for extra in extras:
        if extra.sent is not None:  # stored while it was built
            sent += extra.sent
            continue
        name, path = extra.name, extra.path
        if sealing is not None and sealing.encrypt_memories:
            path = await asyncio.to_thread(seal_file, path, sealing.recipients)
            name += SEALED_MEMORIES_SUFFIX
            sealed.append(name)
        put = await target.put_file(prefix + name, path, "none")
        sent += put.bytes_sent
    return sent, sealed


class SealingSource:
    """The :class:`Sealing` of each target (None when encryption is off)."""

    def __init__(self, encryption: Encryption | None, state_dir: Path, system_id: str) -> None:
        self.encryption = encryption if encryption is not None and encryption.enabled else None
        self.cache = NameKeyCache(state_dir)
        self.state_dir = state_dir
        self.system_id = system_id
        self._recipients: Recipients | None = None
        self._by_target: dict[str, Sealing] = {}
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.encryption is not None

    def identities_here(self, why: str = "") -> Identities | None:
        """The identity when ``identity_file`` is set and readable (None otherwise, a set
        one that cannot be read with one warning, prefixed by ``why``). Blocking."""
        enc = self.encryption
        if enc is None or enc.identity_file is None:
            return None
        try:
            return enc.load_identities()
        except IdentityError as exc:
            logger.warning("{}the identity is not usable here: {}", why, exc)
            return None

    async def for_target(self, target: Target) -> Sealing | None:
        """The sealing of uploads to ``target``; the name key is loaded once."""
        enc = self.encryption
        if enc is None:
            return None
        async with self._lock:
            found = self._by_target.get(target.name)
            if found is not None:
                return found
            if self._recipients is None:
                self._recipients = enc.parsed_recipients()
            # to continue with the name key a machine before this one stored
            identities = await asyncio.to_thread(self.identities_here, "name key: ")
            loaded = await load_or_create_name_key(
                target, self.system_id, self._recipients, identities, self.cache
            )
            for note in loaded.notes:
                logger.warning("name key: {}", note)
            logger.info(
                "uploads to {} are encrypted (name key {}, {})",
                target.name,
                loaded.key.key_id,
                loaded.how,
            )
            copies = DocumentCopies(self.state_dir, target.name)
            sealing = Sealing(self._recipients, loaded.key, enc.encrypt_memories, copies)
            self._by_target[target.name] = sealing
            return sealing


def sealing_source(settings: Settings) -> SealingSource | None:
    """What reads and seals this machine's encrypted uploads (None: encryption off)."""
    enc = settings.encryption
    if not enc.enabled:
        return None
    return SealingSource(enc, settings.state_dir, settings.cloud_sync.system_id)
