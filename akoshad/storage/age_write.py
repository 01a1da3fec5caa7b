"""Writing age (format v1, X25519 recipients) with OpenSSL's ChaCha20-Poly1305.

``pyrage`` encrypts at about 430 MiB/s and holds the GIL while it does; the same cipher
from OpenSSL (through ``cryptography``) runs at about 3 GB/s on the same core and lets other
threads run. This module writes the age format itself (age-encryption.org/v1, the C2SP
``age.md`` specification): a 16-byte file key wrapped to each recipient in an ``X25519``
stanza (an ephemeral X25519 share, HKDF-SHA-256 with ``age-encryption.org/v1/X25519``, the
key sealed with ChaCha20-Poly1305 under a zero nonce), the header's HMAC-SHA-256 under
HKDF(file key, "header"), then a 16-byte nonce and the payload in 64 KiB chunks, each sealed
under HKDF(file key, nonce, "payload") with an 11-byte counter and a last-chunk flag as its
nonce. Reading stays with ``pyrage``: a second implementation, which the tests use to open
everything this one writes. Blocking (CPU): call from a thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

MAGIC = b"age-encryption.org/v1\n"
CHUNK = 64 * 1024  # plaintext bytes of one payload chunk
TAG = 16  # ChaCha20-Poly1305's tag
NONCE = 16  # the payload nonce that follows the header
FILE_KEY = 16
_X25519_INFO = b"age-encryption.org/v1/X25519"
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
Start = tuple[bytes, ChaCha20Poly1305]  # a body's header and nonce, and its payload cipher
_BECH32_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _bech32_polymod(values: Sequence[int]) -> int:
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate(_BECH32_GEN):
            if (top >> i) & 1:
                check ^= gen
    return check


def recipient_bytes(key: str) -> bytes:
    """The 32-byte X25519 public key of an age recipient (``age1...``, Bech32); ValueError
    when ``key`` is not one."""
    text = key.strip()
    if text != text.lower() and text != text.upper():
        raise ValueError("an age recipient is not in one case")
    text = text.lower()
    hrp, sep, data = text.rpartition("1")
    if not sep or hrp != "age" or len(data) < 6:
        raise ValueError("not an age recipient (age1...)")
    try:
        values = [_BECH32.index(c) for c in data]
    except ValueError:
        raise ValueError("an age recipient holds a character outside Bech32's") from None
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if _bech32_polymod(expanded + values) != 1:
        raise ValueError("an age recipient's checksum does not match")
    acc, bits, out = 0, 0, bytearray()
    for value in values[:-6]:
        acc = acc << 5 | value
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append(acc >> bits & 0xFF)
    if bits >= 5 or acc & ((1 << bits) - 1):
        raise ValueError("an age recipient has bad padding")
    if len(out) != 32:
        raise ValueError("an age recipient is not 32 bytes")
    return bytes(out)


def low_order(public: bytes) -> bool:
    """True when the X25519 key ``public`` is a low-order point: the share of any key with
    it is all zero, so nothing can be sealed to it (age refuses it)."""
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        return True
    return False


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """32 bytes of HKDF-SHA-256 (RFC 5869)."""
    prk = hmac.digest(salt, ikm, hashlib.sha256)
    return hmac.digest(prk, info + b"\x01", hashlib.sha256)


def _chunks(size: int) -> int:
    """Payload chunks of a plaintext of ``size`` bytes (an empty one has one, empty)."""
    return max(1, -(-size // CHUNK))


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class AgeWriter:
    """Seals bodies to a fixed set of X25519 recipients (their raw 32-byte keys); each
    body gets a file key, ephemeral shares and a nonce of its own."""

    def __init__(self, public_keys: Sequence[bytes]) -> None:
        if not public_keys:
            raise ValueError("age needs at least one recipient")
        self._recipients = [(k, X25519PublicKey.from_public_bytes(k)) for k in public_keys]
        # the header's length is fixed by the number of recipients
        self.header_size = len(self._header(bytes(FILE_KEY))[0])

    def _header(self, file_key: bytes) -> tuple[bytes, bytes]:
        """The header (ending with its MAC line) and the payload's nonce."""
        lines = [MAGIC]
        for raw, public in self._recipients:
            ephemeral = X25519PrivateKey.generate()
            share = ephemeral.public_key().public_bytes_raw()
            secret = ephemeral.exchange(public)
            if not any(secret):
                raise ValueError("an age recipient is a low-order point")
            wrap = ChaCha20Poly1305(_hkdf(secret, share + raw, _X25519_INFO))
            body = wrap.encrypt(bytes(12), file_key, None)
            lines.append(b"-> X25519 " + _b64(share) + b"\n" + _b64(body) + b"\n")
        head = b"".join(lines) + b"---"
        mac = hmac.digest(_hkdf(file_key, b"", b"header"), head, hashlib.sha256)
        return head + b" " + _b64(mac) + b"\n", os.urandom(NONCE)

    def sealed_size(self, size: int) -> int:
        """The length of a sealed body of ``size`` plaintext bytes."""
        return self.header_size + NONCE + size + TAG * _chunks(size)

    def start(self) -> Start:
        """A new body's header and nonce, and its payload cipher (a fresh file key and
        ephemeral shares): for one body only."""
        file_key = os.urandom(FILE_KEY)
        header, nonce = self._header(file_key)
        return header + nonce, ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))

    def seal_into(
        self, body: bytes | memoryview, out: memoryview, prepared: Start | None = None
    ) -> int:
        """Seal ``body`` into the start of ``out`` (at least :meth:`sealed_size` bytes),
        with ``prepared`` (from :meth:`start`, never used for another body) or a new
        start; the length written."""
        size = len(body)
        if len(out) < self.sealed_size(size):
            raise ValueError("the output is too small for the sealed body")
        start, cipher = self.start() if prepared is None else prepared
        out[: len(start)] = start
        pos = len(start)
        view = memoryview(body)
        count = _chunks(size)
        for i in range(count):
            piece = view[i * CHUNK : (i + 1) * CHUNK]
            end = pos + len(piece) + TAG
            pos += cipher.encrypt_into(_nonce(i, i == count - 1), piece, None, out[pos:end])
        return pos

    def seal(self, body: bytes | memoryview) -> bytes:
        """``body`` sealed (binary age format)."""
        out = bytearray(self.sealed_size(len(body)))
        written = self.seal_into(body, memoryview(out))
        return bytes(memoryview(out)[:written])

    def seal_stream(self, src: BinaryIO, dest: BinaryIO) -> int:
        """Everything ``src`` holds, sealed, written to ``dest`` a chunk at a time (never
        whole in memory); the bytes written."""
        start, cipher = self.start()
        dest.write(start)
        written = len(start)
        counter = 0
        piece = _read_full(src, CHUNK)
        while True:
            following = _read_full(src, CHUNK) if len(piece) == CHUNK else b""
            last = not following
            sealed = cipher.encrypt(_nonce(counter, last), piece, None)
            dest.write(sealed)
            written += len(sealed)
            if last:
                return written
            piece, counter = following, counter + 1


def _read_full(src: BinaryIO, size: int) -> bytes:
    """``size`` bytes of ``src``, fewer only at its end."""
    parts: list[bytes] = []
    got = 0
    while got < size:
        part = src.read(size - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)
