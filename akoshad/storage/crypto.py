"""Client-side encryption with age: recipients, identities, sealed bodies.

Every stored body (a chunk, a document, a name-key record) is compressed first, then sealed
with :func:`seal` to the configured recipients (``age1...`` public keys): the daemon needs
only those. Sealing is :mod:`akoshad.storage.age_write` (OpenSSL's cipher); parsing keys
and opening sealed bodies is ``pyrage``. :func:`open_sealed` needs an identity
(``AGE-SECRET-KEY-1...``, from ``encryption.identity_file``, read by :func:`load_identity`)
and refuses, before decrypting, a body larger than its bound (age never expands: plaintext
< ciphertext), so a hostile target cannot make a reader allocate more than the manifest allows.

Errors, one line each: :class:`BadRecipient` (a :class:`~akoshad.errors.ConfigError`,
exit 78), :class:`IdentityFileError`, :class:`IdentityNeeded` and
:class:`NotForThisIdentity` (``PermanentError``, exit 1; deliberately not a
``StorageError``, so a restore does not report them as damage), :class:`SealedDamaged`
(a :class:`~akoshad.storage.errors.CorruptChunk`). No message ever holds a secret key.
Blocking (CPU, file reads): call from a thread.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyrage
from pyrage import x25519

from akoshad.errors import ConfigError, PermanentError
from akoshad.storage.codec import compress, decompress
from akoshad.storage.errors import CorruptChunk, DecompressionBomb
from akoshad.storage.refs import ChunkCompression, ChunkRef

if TYPE_CHECKING:  # loaded by Recipients.parse: a daemon that seals nothing never loads it
    from akoshad.storage.age_write import AgeWriter

AGE_MAGIC = b"age-encryption.org/v1\n"
MAX_RECIPIENTS = 32
MAX_IDENTITY_FILE = 64 * 1024
# Bound of an age header: one X25519 stanza (~110 bytes) per recipient, a grease stanza
# and the MAC line; 8 KiB leaves room for MAX_RECIPIENTS.
SEAL_HEADER_MAX = 8 * 1024
_STREAM_CHUNK = 64 * 1024
_TAG = 16
_NONCE = 16
_NO_MATCH = "no matching keys"
_SECRET_PREFIX = "AGE-SECRET-KEY-"
_ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
IDENTITY_HINT = "the age identity (AGE-SECRET-KEY-1...) of one of encryption.recipients"


class BadRecipient(ConfigError):
    """A configured recipient is not an age public key (exit 78 at config check)."""


class IdentityError(PermanentError):
    """The identity is missing, unreadable, or cannot open what was asked (exit 1)."""


class IdentityFileError(IdentityError):
    """``encryption.identity_file`` is missing, unreadable or holds no age identity."""


class IdentityNeeded(IdentityError):
    """Encrypted data was asked for and no identity is configured."""


def identity_needed(what: str) -> IdentityNeeded:
    """The error for ``what`` (a sealed body) asked for without an identity."""
    return IdentityNeeded(
        f"{what} is encrypted: reading it needs encryption.identity_file",
        fix=f"set it to {IDENTITY_HINT}",
    )


class NotForThisIdentity(IdentityError):
    """The data is encrypted to other keys than the configured identity's."""


class SealedDamaged(CorruptChunk):
    """A sealed body is not age data, is truncated or altered, or does not decrypt."""


class SealedTooLarge(SealedDamaged, DecompressionBomb):
    """A sealed body (or what it decrypts to) is over its bound; refused, not decrypted."""


def sealed_size_bound(plain_max: int) -> int:
    """The most stored bytes a sealed body of at most ``plain_max`` plaintext bytes takes
    (header, nonce and one tag per 64 KiB of payload)."""
    if plain_max < 0:
        raise ValueError("plain_max must not be negative")
    return plain_max + SEAL_HEADER_MAX + _NONCE + _TAG * (plain_max // _STREAM_CHUNK + 1)


def is_sealed(data: bytes) -> bool:
    """True when ``data`` starts like an age file (binary form)."""
    return data.startswith(AGE_MAGIC)


@dataclass(frozen=True)
class Recipients:
    """The age public keys uploads are sealed to: canonical, sorted, without duplicates."""

    keys: tuple[str, ...]
    _parsed: tuple[Any, ...] = field(repr=False, compare=False)
    writer: AgeWriter = field(repr=False, compare=False)

    @classmethod
    def parse(cls, values: Sequence[str], where: str = "encryption.recipients") -> Recipients:
        """:class:`BadRecipient` (one line, never echoing a secret key) unless every value
        is an age X25519 public key; at least one, at most :data:`MAX_RECIPIENTS`."""
        if not values:
            raise BadRecipient(f"{where} is empty: list at least one age public key (age1...)")
        if len(values) > MAX_RECIPIENTS:
            raise BadRecipient(f"{where} lists {len(values)} keys, over {MAX_RECIPIENTS}")
        parsed: dict[str, Any] = {}
        for i, raw in enumerate(values):
            item = f"{where}[{i}]"
            if not isinstance(raw, str):
                raise BadRecipient(f"{item} is not a string")
            value = raw.strip()
            if value.upper().startswith(_SECRET_PREFIX):
                raise BadRecipient(
                    f"{item} is an age identity (a secret key), not a recipient: put its "
                    "public key (age1..., `age-keygen -y`) here and keep the identity private"
                )
            try:
                recipient = x25519.Recipient.from_str(value)
            except pyrage.RecipientError:
                shown = f" {value[:24]!r}" if value.startswith("age1") else ""
                raise BadRecipient(
                    f"{item}{shown} is not an age public key (age1..., as age-keygen prints it)"
                ) from None
            parsed[str(recipient)] = recipient
        from akoshad.storage.age_write import AgeWriter, recipient_bytes

        keys = tuple(sorted(parsed))
        writer = AgeWriter([recipient_bytes(k) for k in keys])
        return cls(keys, tuple(parsed[k] for k in keys), writer)

    @property
    def fingerprint(self) -> str:
        """16 hex digits naming this set of recipients (in key-file names)."""
        return hashlib.sha256("\n".join(self.keys).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Identities:
    """The identities of one identity file. ``recipients``: their public keys;
    ``warnings``: one-line complaints (a file readable by others) for the caller to show."""

    path: Path
    recipients: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    _parsed: tuple[Any, ...] = field(default=(), repr=False, compare=False)


# an identity given as an inherited descriptor: ``--identity <(age -d key.age)`` (the
# shell's /dev/fd/N) or ``--identity /dev/stdin``; a named FIFO elsewhere stays refused
# (nothing says a writer will ever come: a daemon's drill would wait for one for good)
_INHERITED = ("/dev/fd/", "/proc/self/fd/", "/dev/stdin")
# what such a pipe held, by the pipe (device, inode: a descriptor number may be reused for
# another pipe): it can be read once, and a command loads its identity more than once (the
# name key, the documents, the chunks); kept for the process's life
_PIPED: dict[tuple[int, int], bytes] = {}


def _inherited_pipe(path: Path) -> bool:
    text = str(path)
    return text == "/dev/stdin" or text.startswith(_INHERITED[:2])


def _read_pipe(fd: int, path: Path, st: os.stat_result) -> tuple[bytes, int]:
    """All of an inherited pipe (blocking until its writer closes it, as ``age -i``
    would), bounded by ``MAX_IDENTITY_FILE``; remembered for the next load of it."""
    pipe = (st.st_dev, st.st_ino)
    if pipe in _PIPED:
        os.close(fd)
        return _PIPED[pipe], st.st_mode
    os.set_blocking(fd, True)
    data = bytearray()
    with os.fdopen(fd, "rb", buffering=0) as fh:
        while len(data) <= MAX_IDENTITY_FILE:
            try:
                piece = fh.read(MAX_IDENTITY_FILE + 1 - len(data))
            except OSError as exc:
                raise IdentityFileError(
                    f"encryption.identity_file {path} cannot be read: {exc.strerror}"
                ) from None
            if not piece:
                break
            data += piece
    _PIPED[pipe] = bytes(data)
    return bytes(data), st.st_mode


def _read_identity_file(path: Path) -> tuple[bytes, int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise IdentityFileError(
            f"encryption.identity_file {path} does not exist", fix=f"point it at {IDENTITY_HINT}"
        ) from None
    except OSError as exc:
        raise IdentityFileError(
            f"encryption.identity_file {path} cannot be read: {exc.strerror}"
        ) from None
    st = os.fstat(fd)
    if stat.S_ISFIFO(st.st_mode) and _inherited_pipe(path):
        return _read_pipe(fd, path, st)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        fifo = stat.S_ISFIFO(st.st_mode)
        how = " (a pipe is read only as --identity <(command) or /dev/stdin)" if fifo else ""
        raise IdentityFileError(f"encryption.identity_file {path} is not a regular file{how}")
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(MAX_IDENTITY_FILE + 1)
        except OSError as exc:
            raise IdentityFileError(
                f"encryption.identity_file {path} cannot be read: {exc.strerror}"
            ) from None
    if len(data) > MAX_IDENTITY_FILE:
        raise IdentityFileError(f"encryption.identity_file {path} is too large for an identity")
    return data, st.st_mode


def readable_by_others(path: Path, mode: int) -> str | None:
    """The warning for an identity file of ``mode`` that group or others may read."""
    if not stat.S_IMODE(mode) & 0o077:
        return None
    return (
        f"identity file {path} is readable by others (mode {stat.S_IMODE(mode):04o}): "
        f"run chmod 600 {path}"
    )


def _what_instead(line: str) -> str:
    """What a line that is no X25519 identity looks like instead (never the line)."""
    if line.startswith("age1"):
        return " but a recipient (a public key, age1...)"
    if line.upper().startswith("AGE-PLUGIN-"):
        return " but an age plugin identity (AGE-PLUGIN-...): akoshad reads X25519 ones only"
    if line.startswith("-----BEGIN") and "PRIVATE KEY" in line:
        return " but an ssh or PEM private key: akoshad reads age X25519 identities only"
    return ""


def _encoding(data: bytes) -> str:
    """Why an identity file is no ASCII text: a byte order mark or UTF-16, which editors
    write (age refuses them too), else just not text."""
    if data.startswith(b"\xef\xbb\xbf"):
        return "it starts with a byte order mark, UTF-8 with BOM: save it without one"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "it is UTF-16 text: save it as plain ASCII text"
    return "not text"


def load_identity(path: Path) -> Identities:
    """Read an age identity file (``age-keygen`` format: ``#`` comments, blank lines, one
    ``AGE-SECRET-KEY-1...`` per line). :class:`IdentityFileError` when it is missing,
    unreadable or holds a line that is not an identity (the line is named, never shown).
    A file others may read is accepted with a warning."""
    data, mode = _read_identity_file(path)
    if data.startswith(AGE_MAGIC) or data.lstrip().startswith(_ARMOR_BEGIN):
        raise IdentityFileError(
            f"{path} is encrypted (a passphrase-protected identity, age -p): akoshad "
            f"cannot ask for the passphrase; give it decrypted through a pipe (--identity "
            f"<(age -d {path})), or decrypt it to a file of mode 0600 (age -d -o FILE) for "
            "the command and remove that file after"
        )
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise IdentityFileError(f"{path} is not an age identity file ({_encoding(data)})") from None
    parsed: list[Any] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            parsed.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise IdentityFileError(
                f"line {n} of {path} is not an age identity (AGE-SECRET-KEY-1...)"
                f"{_what_instead(line)}"
            ) from None
    if not parsed:
        raise IdentityFileError(f"{path} holds no age identity", fix=f"point it at {IDENTITY_HINT}")
    exposed = readable_by_others(path, mode)
    warnings = [] if exposed is None else [exposed]
    public = tuple(str(i.to_public()) for i in parsed)
    return Identities(path, public, tuple(warnings), tuple(parsed))


def write_new_identity(path: Path) -> str:
    """Create ``path`` (mode 0600, never overwriting) holding a new identity in age-keygen
    format; returns its recipient (the public key to configure)."""
    identity = x25519.Identity.generate()
    public = str(identity.to_public())
    created = datetime.now(UTC).isoformat(timespec="seconds")
    text = f"# created: {created}\n# public key: {public}\n{identity}\n"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(path, flags, 0o600), "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return public


def seal(body: bytes, recipients: Recipients) -> bytes:
    """``body`` (already compressed) encrypted to every recipient (binary age format)."""
    return recipients.writer.seal(body)


def open_sealed(
    data: bytes,
    identities: Identities | None,
    expected_max: int,
    what: str = "this upload",
) -> bytes:
    """The plaintext of a sealed body, at most ``expected_max`` bytes.

    :class:`IdentityNeeded` without identities, :class:`NotForThisIdentity` when none of
    them is a recipient, :class:`SealedTooLarge` (before decrypting) when ``data`` is over
    :func:`sealed_size_bound`, :class:`SealedDamaged` when it is not intact age data.
    """
    if identities is None:
        raise identity_needed(what)
    if not is_sealed(data):
        raise SealedDamaged(f"{what}: stored body is not age-encrypted data")
    bound = sealed_size_bound(expected_max)
    if len(data) > bound:
        raise SealedTooLarge(f"{what}: sealed body of {len(data)} bytes is over its {bound}")
    try:
        out: bytes = pyrage.decrypt(data, list(identities._parsed))
    except pyrage.DecryptError as exc:
        if _NO_MATCH in str(exc).lower():
            raise NotForThisIdentity(
                f"{what} is encrypted to other keys: the identity in {identities.path} "
                "cannot read it"
            ) from None
        raise SealedDamaged(f"{what}: sealed body does not decrypt (damaged)") from None
    if len(out) > expected_max:
        raise SealedTooLarge(f"{what}: decrypts to {len(out)} bytes, over {expected_max}")
    return out


def seal_chunk(
    data: bytes, recipients: Recipients, compression: ChunkCompression = "zstd"
) -> tuple[ChunkCompression, bytes]:
    """``(compression used, stored bytes)`` of one chunk: compressed, then sealed (its ref
    says ``encryption: "age"``)."""
    used, packed = compress(data, compression)
    return used, seal(packed, recipients)


def open_sealed_chunk(stored: bytes, ref: ChunkRef, identities: Identities | None) -> bytes:
    """:func:`open_sealed` of a chunk (at most ``ref.size`` bytes), named by documents of
    its upload that ``identities`` opened.

    A chunk is sealed to the recipients of the name key its keyed name is under, and the
    documents naming it are sealed under that key too (chunks are deduplicated only under
    one key: ``store.chunks``). So when no identity opens the chunk, its age header is
    damaged (a changed letter of its key share reads to age as "no matching key"):
    :class:`SealedDamaged`, which a drill heals, not :class:`NotForThisIdentity`."""
    try:
        return open_sealed(stored, identities, ref.size)  # "this upload ..." to a user
    except NotForThisIdentity:
        raise SealedDamaged(
            f"chunk {ref.sha256[:12]}: its age header opens with no key of the identity "
            "that opened the upload's documents (damaged)"
        ) from None


def decode_sealed_chunk(stored: bytes, ref: ChunkRef, identities: Identities | None) -> bytes:
    """The plaintext of a chunk whose ref says ``encryption: "age"``: opened (at most
    ``ref.size`` bytes: compression never grows a stored chunk), decompressed with the
    codec's bound, size and sha256 checked."""
    if ref.encryption != "age":
        raise CorruptChunk(f"chunk {ref.sha256[:12]} is not sealed ({ref.encryption})")
    if len(stored) != ref.length:
        raise CorruptChunk(
            f"chunk {ref.sha256[:12]}: got {len(stored)} stored bytes, expected {ref.length}"
        )
    packed = open_sealed_chunk(stored, ref, identities)
    data = decompress(packed, ref.compression, ref.size)
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise CorruptChunk(f"chunk {ref.sha256[:12]} does not match its sha256")
    return data
