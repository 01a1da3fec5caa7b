"""akoshad's age writer: everything it seals opens with pyrage (rage), a second
implementation of the format, and with age, the reference one, for every payload size
around the 64 KiB chunk edges."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pyrage
import pytest
from pyrage import x25519

from akoshad.storage.age_write import CHUNK, MAGIC, AgeWriter, recipient_bytes

SIZES = [0, 1, 100, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 7]


@pytest.fixture(scope="module")
def identities() -> list[x25519.Identity]:
    return [x25519.Identity.generate() for _ in range(3)]


def _writer(identities: list[x25519.Identity]) -> AgeWriter:
    return AgeWriter([recipient_bytes(str(i.to_public())) for i in identities])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("recipients", [1, 3])
def test_every_recipient_opens_what_is_sealed(
    identities: list[x25519.Identity], size: int, recipients: int
) -> None:
    writer = _writer(identities[:recipients])
    body = os.urandom(size)
    sealed = writer.seal(body)
    assert len(sealed) == writer.sealed_size(size)
    for identity in identities[:recipients]:
        assert pyrage.decrypt(sealed, [identity]) == body
    if recipients == 1:
        with pytest.raises(pyrage.DecryptError):
            pyrage.decrypt(sealed, [identities[2]])


@pytest.mark.parametrize("size", SIZES)
def test_a_stream_seals_to_what_opens(identities: list[x25519.Identity], size: int) -> None:
    writer = _writer(identities[:2])
    body = os.urandom(size)
    out = io.BytesIO()
    written = writer.seal_stream(io.BytesIO(body), out)
    assert written == len(out.getvalue()) == writer.sealed_size(size)
    assert pyrage.decrypt(out.getvalue(), [identities[1]]) == body


def test_seal_into_writes_at_the_start_and_refuses_a_short_output(
    identities: list[x25519.Identity],
) -> None:
    writer = _writer(identities[:1])
    body = os.urandom(CHUNK + 5)
    out = bytearray(writer.sealed_size(len(body)) + 10)
    written = writer.seal_into(body, memoryview(out))
    assert written == writer.sealed_size(len(body))
    assert pyrage.decrypt(bytes(out[:written]), [identities[0]]) == body
    with pytest.raises(ValueError, match="too small"):
        writer.seal_into(body, memoryview(bytearray(written - 1)))


def test_each_seal_has_its_own_keys_and_hides_the_body(
    identities: list[x25519.Identity],
) -> None:
    writer = _writer(identities[:1])
    body = b"the same memory text " * 100
    first, second = writer.seal(body), writer.seal(body)
    assert first != second
    assert first[: len(MAGIC)] == MAGIC == second[: len(MAGIC)]
    assert b"memory text" not in first


def test_the_header_is_one_x25519_stanza_per_recipient_and_a_mac(
    identities: list[x25519.Identity],
) -> None:
    writer = _writer(identities)
    sealed = writer.seal(b"x")
    header = sealed[: writer.header_size].decode("ascii")
    b64 = r"[A-Za-z0-9+/]"
    stanza = rf"-> X25519 {b64}{{43}}\n{b64}{{43}}\n"
    assert re.fullmatch(rf"age-encryption\.org/v1\n(?:{stanza}){{3}}--- {b64}{{43}}\n", header)


@pytest.mark.parametrize("where", ["mac", "payload", "last tag"])
def test_an_altered_byte_does_not_open(identities: list[x25519.Identity], where: str) -> None:
    writer = _writer(identities[:1])
    sealed = bytearray(writer.seal(os.urandom(2 * CHUNK)))
    spot = {"mac": writer.header_size - 5, "payload": writer.header_size + 40, "last tag": -1}
    sealed[spot[where]] ^= 0x01
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(bytes(sealed), [identities[0]])


def test_a_recipient_decodes_to_its_32_byte_key(identities: list[x25519.Identity]) -> None:
    key = str(identities[0].to_public())
    raw = recipient_bytes(key)
    assert len(raw) == 32
    assert recipient_bytes(key.upper()) == raw
    assert recipient_bytes(f"  {key}\n") == raw


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "age1",
        "agf1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
        "not a key at all",
    ],
)
def test_what_is_not_a_recipient_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        recipient_bytes(bad)


def test_a_recipient_with_a_changed_character_or_mixed_case_is_refused(
    identities: list[x25519.Identity],
) -> None:
    key = str(identities[0].to_public())
    changed = key[:-1] + ("q" if key[-1] != "q" else "p")
    with pytest.raises(ValueError, match="checksum"):
        recipient_bytes(changed)
    with pytest.raises(ValueError, match="one case"):
        recipient_bytes(key[:6] + key[6:].upper())
    with pytest.raises(ValueError, match="outside"):
        recipient_bytes(key[:-8] + "b" + key[-7:])  # 'b' is not a Bech32 character


def test_a_recipient_of_another_length_is_refused() -> None:
    # a valid Bech32 string under "age" whose data is 20 bytes, not 32
    charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
    data = [0] * 32  # 160 bits: 20 bytes
    hrp = "age"
    values = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + data + [0] * 6
    from akoshad.storage.age_write import _bech32_polymod

    check = _bech32_polymod(values) ^ 1
    tail = [(check >> 5 * (5 - i)) & 31 for i in range(6)]
    text = hrp + "1" + "".join(charset[v] for v in data + tail)
    with pytest.raises(ValueError, match="32 bytes"):
        recipient_bytes(text)


def test_no_recipient_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        AgeWriter([])


def test_the_share_in_each_stanza_is_a_fresh_x25519_point(
    identities: list[x25519.Identity],
) -> None:
    writer = _writer(identities[:1])
    shares = set()
    for _ in range(4):
        header = writer.seal(b"").split(b"\n")
        share = header[1].split(b" ")[2]
        assert len(base64.b64decode(share + b"=")) == 32
        shares.add(share)
    assert len(shares) == 4


def test_a_daemon_that_seals_nothing_never_loads_the_writer() -> None:
    """cryptography costs some 7 MiB of resident memory: it is loaded by the first
    recipient list parsed, not by the daemon's modules."""
    import subprocess
    import sys

    code = (
        "import sys, akoshad.runtime.run, akoshad.runtime.wiring, akoshad.cli.main, "
        "akoshad.pipeline.packing, akoshad.storage.crypto as c\n"
        "before = 'cryptography' in sys.modules\n"
        "from pyrage import x25519\n"
        "c.Recipients.parse([str(x25519.Identity.generate().to_public())])\n"
        "print(before, 'cryptography' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


AGE_CLI = shutil.which("age")


@pytest.mark.skipif(
    AGE_CLI is None, reason="age not found (Debian package 'age'; scripts/test.sh fetches it)"
)
@pytest.mark.parametrize("size", SIZES)
def test_the_reference_age_opens_what_is_sealed(
    identities: list[x25519.Identity], size: int, tmp_path: Path
) -> None:
    """age itself (the format's reference implementation, in Go), a third implementation,
    opens every size around the chunk edges sealed to two recipients, each in place, as a
    stream and with a header prepared ahead; a body whose last byte is altered it
    refuses."""
    assert AGE_CLI is not None
    key = tmp_path / "identity.txt"
    key.write_text(str(identities[1]) + "\n")
    writer = _writer(identities[:2])
    body = os.urandom(size)
    streamed = io.BytesIO()
    writer.seal_stream(io.BytesIO(body), streamed)
    ahead = bytearray(writer.sealed_size(size))  # with a header prepared before (seal_child)
    writer.seal_into(body, memoryview(ahead), writer.start())
    for sealed in (writer.seal(body), streamed.getvalue(), bytes(ahead)):
        opened = subprocess.run(
            [AGE_CLI, "--decrypt", "-i", str(key)], input=sealed, capture_output=True, check=False
        )
        assert opened.returncode == 0, opened.stderr
        assert opened.stdout == body
    altered = bytearray(writer.seal(body))
    altered[-1] ^= 1
    refused = subprocess.run(
        [AGE_CLI, "--decrypt", "-i", str(key)], input=bytes(altered), capture_output=True
    )
    assert refused.returncode != 0
    assert b"authenticate" in refused.stderr  # (the chunks before the altered one it writes)
