"""Keyed object names: with encryption on, no name in the target is a plaintext SHA-256.

A name key is 32 random bytes per system id and recipient set. Every name derived from a
plaintext hash goes through :meth:`NameKey.name` (``HMAC-SHA256(key, sha256 digest)``, 64
hex digits): document (index part, chunk list) names, and the chunk identities the ledger
dedupes on. Pack ids need no key: a pack's id is the sha256 of its (sealed) bytes, which
anyone who can read the pack can compute, so it tells nothing.

Where the key lives:
- in the target, ``systems/{sid}/keys/{fingerprint}-{key_id}.age``: a JSON record sealed to
  the recipients (``fingerprint`` = :attr:`Recipients.fingerprint`), so a new machine with
  the identity can decrypt it and continue with the same names (and dedupe);
- in ``state_dir/name_keys.json`` (mode 0600, :class:`NameKeyCache`): the daemon has only
  the recipients and cannot decrypt the target's copy, so it keeps the key it made (or one a
  run with the identity decrypted) here.

:func:`load_or_create_name_key` order: the cache; else the target's records for this
recipient set, decrypted with the identity when there is one (newest wins); else a new key
(cached first, then stored). A changed recipient list has another fingerprint, hence a new
key: new uploads share no chunk with uploads sealed to the old keys (every new upload is
readable with the new identity alone), and old records and uploads stay as they are,
readable with the old identity. Key files are never pruned.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from akoshad.errors import AkoshadError, PermanentError
from akoshad.private import FILE_MODE, make_private_dirs, sync_entry
from akoshad.storage.crypto import (
    Identities,
    IdentityError,
    Recipients,
    SealedDamaged,
    open_sealed,
    seal,
)
from akoshad.storage.documents import DocumentError, fetch_stored
from akoshad.storage.refs import HEX64_RE
from akoshad.targets.base import Target

KEY_BYTES = 32
RECORD_FORMAT = 1
MAX_RECORD = 64 * 1024  # plaintext of a key record
MAX_CACHE = 1024 * 1024
MAX_RECORDS_READ = 64  # key records of one recipient set tried with the identity
CACHE_NAME = "name_keys.json"
KEY_CONTENT_TYPE = "application/octet-stream"
_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_SYSTEM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
How = Literal["cached", "decrypted", "created"]


class NameKeyError(PermanentError):
    """The name-key cache in the state, or a key record in the target, is unusable."""


@dataclass(frozen=True)
class NameKey:
    """One name key. Its repr shows the ids only, never the secret."""

    system_id: str
    fingerprint: str
    key_id: str
    created: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise ValueError("a name key is 32 bytes")

    def name(self, sha256_hex: str) -> str:
        """The keyed name (64 hex digits) standing for a plaintext sha256."""
        if not HEX64_RE.match(sha256_hex):
            raise ValueError("expected 64 lowercase hex digits")
        return hmac.new(self.secret, bytes.fromhex(sha256_hex), hashlib.sha256).hexdigest()

    def name_of(self, plain: bytes) -> str:
        """The keyed name of some plaintext bytes (a document's JSON, a chunk)."""
        return self.name(hashlib.sha256(plain).hexdigest())

    @property
    def object_key(self) -> str:
        """Where its sealed record lives in the target."""
        return key_record_key(self.system_id, self.fingerprint, self.key_id)

    def record(self, recipients: Recipients) -> bytes:
        """The plaintext record stored sealed in the target."""
        doc = {
            "format": RECORD_FORMAT,
            "system_id": self.system_id,
            "key_id": self.key_id,
            "fingerprint": self.fingerprint,
            "created": self.created,
            "recipients": list(recipients.keys),
            "key": base64.b64encode(self.secret).decode("ascii"),
        }
        return json.dumps(doc, sort_keys=True).encode("ascii")

    def cache_entry(self) -> dict[str, str]:
        return {
            "system_id": self.system_id,
            "fingerprint": self.fingerprint,
            "key_id": self.key_id,
            "created": self.created,
            "key": base64.b64encode(self.secret).decode("ascii"),
        }

    @classmethod
    def from_fields(cls, doc: Any, what: str) -> NameKey:
        """Parse a record or cache entry; :class:`NameKeyError` when malformed."""
        if not isinstance(doc, dict):
            raise NameKeyError(f"{what} is not a JSON object")
        values = [doc.get(f) for f in ("system_id", "fingerprint", "key_id", "created", "key")]
        if not all(isinstance(v, str) for v in values):
            raise NameKeyError(f"{what} lacks system_id, fingerprint, key_id, created or key")
        sid, fp, kid, created, b64 = (str(v) for v in values)
        try:
            secret = base64.b64decode(b64, validate=True)
        except ValueError:
            secret = b""
        ok = _SYSTEM_ID_RE.match(sid) and _ID_RE.match(fp) and _ID_RE.match(kid)
        if not ok or len(secret) != KEY_BYTES:
            raise NameKeyError(f"{what} is malformed")
        return cls(sid, fp, kid, created[:64], secret)


def keys_prefix(system_id: str) -> str:
    """``systems/{system_id}/keys/``."""
    if not _SYSTEM_ID_RE.match(system_id):
        raise ValueError(f"invalid system_id {system_id!r}")
    return f"systems/{system_id}/keys/"


def key_record_key(system_id: str, fingerprint: str, key_id: str) -> str:
    """``systems/{sid}/keys/{fingerprint}-{key_id}.age``."""
    return f"{keys_prefix(system_id)}{fingerprint}-{key_id}.age"


def new_name_key(system_id: str, recipients: Recipients) -> NameKey:
    """A fresh random key for this system id and recipient set."""
    created = datetime.now(UTC).isoformat(timespec="seconds")
    fp, kid = recipients.fingerprint, secrets.token_hex(8)
    return NameKey(system_id, fp, kid, created, secrets.token_bytes(KEY_BYTES))


class NameKeyCache:
    """``state_dir/name_keys.json`` (0600): the name keys this machine uses. Blocking."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / CACHE_NAME

    def __repr__(self) -> str:
        return f"NameKeyCache({str(self.path)!r})"

    def load(self) -> list[NameKey]:
        """Every cached key; [] when there is no cache yet."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise NameKeyError(f"{self.path} cannot be read: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(MAX_CACHE + 1)
        fix = (
            "remove it: the next upload reads the key back from the target with "
            "encryption.identity_file, or without it makes a new key and stores everything again"
        )
        try:
            doc = json.loads(data) if len(data) <= MAX_CACHE else None
        except (ValueError, RecursionError):
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise NameKeyError(f"{self.path} is damaged", fix=fix)
        try:
            return [NameKey.from_fields(e, str(self.path)) for e in doc["keys"]]
        except NameKeyError:
            raise NameKeyError(f"{self.path} is damaged", fix=fix) from None

    def find(self, system_id: str, fingerprint: str) -> NameKey | None:
        """The newest cached key for this system id and recipient set."""
        found = [k for k in self.load() if (k.system_id, k.fingerprint) == (system_id, fingerprint)]
        return max(found, key=lambda k: (k.created, k.key_id)) if found else None

    def add(self, key: NameKey) -> None:
        """Keep ``key`` (atomically rewrites the file, mode 0600, fsynced)."""
        keys = [k for k in self.load() if k.object_key != key.object_key] + [key]
        data = json.dumps({"format": 1, "keys": [k.cache_entry() for k in keys]}).encode()
        make_private_dirs(self.state_dir)
        tmp = self.state_dir / f".{CACHE_NAME}.{secrets.token_hex(4)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            with os.fdopen(os.open(tmp, flags, FILE_MODE), "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            sync_entry(self.state_dir)  # a key lost to a power loss renames every object
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


@dataclass(frozen=True)
class LoadedNameKey:
    """What :func:`load_or_create_name_key` found: the key, how, and one-line notes."""

    key: NameKey
    how: How
    notes: tuple[str, ...] = ()


async def _read_record(
    target: Target, object_key: str, system_id: str, identities: Identities
) -> NameKey | None:
    """The key in one sealed record; None when it is not for this identity or damaged."""
    try:
        stored = await fetch_stored(target, object_key, MAX_RECORD + 16 * 1024, object_key)
        plain = open_sealed(stored, identities, MAX_RECORD, f"name key {object_key}")
        key = NameKey.from_fields(json.loads(plain), f"name key {object_key}")
    except (DocumentError, IdentityError, SealedDamaged, NameKeyError, ValueError, RecursionError):
        return None
    if key.system_id != system_id or key.object_key != object_key:
        return None
    return key


async def _from_target(
    target: Target, system_id: str, recipients: Recipients, identities: Identities
) -> tuple[NameKey | None, int]:
    """The newest record of this recipient set the identity opens, and how many exist."""
    prefix = f"{keys_prefix(system_id)}{recipients.fingerprint}-"
    listed = [k async for k in target.list_keys(prefix) if k.endswith(".age")]
    found: list[NameKey] = []
    for object_key in sorted(listed)[:MAX_RECORDS_READ]:
        key = await _read_record(target, object_key, system_id, identities)
        if key is not None:
            found.append(key)
    best = max(found, key=lambda k: (k.created, k.key_id)) if found else None
    return best, len(listed)


async def opens_every_key(target: Target, system_id: str, identities: Identities) -> bool:
    """Whether ``identities`` opens every name key record the target holds for
    ``system_id`` (at least one, at most ``MAX_RECORDS_READ``). Everything sealed for the
    system is then sealed to one of its recipients (an upload is sealed under one name key,
    to that key's recipients), so what does not open is damaged. False when in doubt."""
    try:
        listed = [k async for k in target.list_keys(keys_prefix(system_id)) if k.endswith(".age")]
        if not listed or len(listed) > MAX_RECORDS_READ:
            return False
        for object_key in listed:
            if await _read_record(target, object_key, system_id, identities) is None:
                return False
    except (AkoshadError, OSError):
        return False
    return True


async def _damaged(
    target: Target, key: NameKey, recipients: Recipients, identities: Identities | None
) -> Path | None:
    """The identity file, when ``key``'s record in the target no longer opens with
    ``identities``, which hold one of ``recipients`` (it is sealed to them all: it is
    damaged); None when it opens, or without such an identity (it cannot be checked)."""
    if identities is None or not set(identities.recipients) & set(recipients.keys):
        return None
    opened = await _read_record(target, key.object_key, key.system_id, identities)
    return identities.path if opened is None else None


async def keys_opened(target: Target, system_id: str, identities: Identities) -> list[NameKey]:
    """Every name key of ``system_id`` whose record in the target opens with
    ``identities`` (at most ``MAX_RECORDS_READ`` records read): what a machine whose state
    lost its cache still reads its uploads' keyed names with."""
    listed = [k async for k in target.list_keys(keys_prefix(system_id)) if k.endswith(".age")]
    found: list[NameKey] = []
    for object_key in sorted(listed)[:MAX_RECORDS_READ]:
        key = await _read_record(target, object_key, system_id, identities)
        if key is not None:
            found.append(key)
    return found


async def _store(target: Target, key: NameKey, recipients: Recipients) -> None:
    sealed = await asyncio.to_thread(seal, key.record(recipients), recipients)
    await target.put_bytes(key.object_key, sealed, KEY_CONTENT_TYPE)


async def find_name_key(
    target: Target,
    system_id: str,
    recipients: Recipients,
    identities: Identities | None,
    cache: NameKeyCache,
) -> NameKey | None:
    """The name key uploads for ``recipients`` use (as :func:`load_or_create_name_key`
    finds it: the cache, else the target's records opened with ``identities``), or None;
    never makes or stores one."""
    cached = await asyncio.to_thread(cache.find, system_id, recipients.fingerprint)
    if cached is not None or identities is None:
        return cached
    found, _ = await _from_target(target, system_id, recipients, identities)
    if found is not None:
        await asyncio.to_thread(cache.add, found)
    return found


async def load_or_create_name_key(
    target: Target,
    system_id: str,
    recipients: Recipients,
    identities: Identities | None,
    cache: NameKeyCache,
) -> LoadedNameKey:
    """The name key uploads for ``recipients`` use from now on (see the module docstring).

    A cached key whose record is missing from the target is stored again, and so is one
    whose record no longer opens with ``identities`` when they hold one of the recipients
    (damaged; the record is read only then). Target errors
    (``TransientError``...) pass through; nothing is cached from a record that does not
    open or parse."""
    fp = recipients.fingerprint
    cached = await asyncio.to_thread(cache.find, system_id, fp)
    if cached is not None:
        notes: tuple[str, ...] = ()
        if await target.head(cached.object_key) is None:
            await _store(target, cached, recipients)
            notes = (f"name key record {cached.object_key} was missing: stored it again",)
        elif (opener := await _damaged(target, cached, recipients, identities)) is not None:
            await _store(target, cached, recipients)
            notes = (
                f"name key record {cached.object_key} does not open with the identity in "
                f"{opener}, one of its recipients (damaged): stored it again",
            )
        return LoadedNameKey(cached, "cached", notes)
    listed = 0
    if identities is not None:
        found, listed = await _from_target(target, system_id, recipients, identities)
        if found is not None:
            await asyncio.to_thread(cache.add, found)
            return LoadedNameKey(found, "decrypted")
    else:
        listed = len([k async for k in target.list_keys(f"{keys_prefix(system_id)}{fp}-")])
    key = new_name_key(system_id, recipients)
    await asyncio.to_thread(cache.add, key)  # first: a crash before the PUT is repaired above
    await _store(target, key, recipients)
    notes = (_unread(identities, recipients),) if listed else ()
    return LoadedNameKey(key, "created", notes)


def _unread(identities: Identities | None, recipients: Recipients) -> str:
    """Why the target's name key for ``recipients`` was not used, and what that costs."""
    made = "made a new one, so the next upload stores everything again"
    if identities is None:
        return f"the target holds a name key this machine cannot read without the identity: {made}"
    if set(identities.recipients) & set(recipients.keys):
        return (
            f"the target's name key record for encryption.recipients does not open with the "
            f"identity in {identities.path}, one of them: it is damaged; {made}"
        )
    return (
        f"the target holds a name key the identity in {identities.path} cannot read (it is "
        f"not one of encryption.recipients): {made}"
    )
