"""Client-side encryption with age: recipients, identities, sealed chunks and documents,
keyed names and the name key, against real age (pyrage) and the real local target."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pyrage import x25519

from akoshad.errors import ConfigError, PermanentError
from akoshad.storage.chunk_decode import chunk_decoder
from akoshad.storage.chunker import iter_stream_chunks
from akoshad.storage.crypto import (
    MAX_RECIPIENTS,
    BadRecipient,
    Identities,
    IdentityFileError,
    IdentityNeeded,
    NotForThisIdentity,
    Recipients,
    SealedDamaged,
    SealedTooLarge,
    decode_sealed_chunk,
    load_identity,
    open_sealed,
    seal,
    seal_chunk,
    sealed_size_bound,
    write_new_identity,
)
from akoshad.storage.documents import DocumentError
from akoshad.storage.errors import CorruptChunk, DecompressionBomb, StorageError
from akoshad.storage.name_key import (
    NameKeyCache,
    keys_prefix,
    load_or_create_name_key,
    new_name_key,
)
from akoshad.storage.packs import PackWriter
from akoshad.storage.refs import MAX_CHUNK_SIZE, MAX_STORED_OVERHEAD, ChunkRef
from akoshad.storage.sealed_documents import (
    document_encryption,
    encode_document_sealed,
    read_document_sealed,
    sealed_index_part_json,
)
from akoshad.targets.local import LocalTarget

if sys.version_info >= (3, 14):  # pragma: no cover
    from compression import zstd
else:
    from backports import zstd

SID = "box"
MiB = 1024 * 1024
MARKER = b"MARKER-PLAINTEXT-7f3a"


def keypair(tmp_path: Path, name: str) -> tuple[Recipients, Identities, Path]:
    path = tmp_path / f"{name}.key"
    public = write_new_identity(path)
    return Recipients.parse([public]), load_identity(path), path


# -- recipients and identities -------------------------------------------------------------


def test_recipients_are_canonical_sorted_without_duplicates() -> None:
    a = str(x25519.Identity.generate().to_public())
    b = str(x25519.Identity.generate().to_public())
    r = Recipients.parse([b, f"  {a} ", b.upper()])
    assert r.keys == tuple(sorted([a, b]))
    assert r.fingerprint == Recipients.parse([a, b]).fingerprint
    assert r.fingerprint != Recipients.parse([a]).fingerprint
    assert len(r.fingerprint) == 16


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (["ssh-ed25519 AAAAC3Nza"], r"recipients\[0\] is not an age public key"),
        (["age1notakey"], r"'age1notakey' is not an age public key"),
        ([], "is empty"),
        ([42], "is not a string"),
    ],
)
def test_a_bad_recipient_is_one_config_line(values: list[str], match: str) -> None:
    with pytest.raises(BadRecipient, match=match) as info:
        Recipients.parse(values)
    assert isinstance(info.value, ConfigError) and info.value.exit_code == 78
    assert "\n" not in str(info.value)


def test_a_secret_key_given_as_recipient_is_refused_and_never_echoed() -> None:
    secret = str(x25519.Identity.generate())
    with pytest.raises(BadRecipient, match="is an age identity") as info:
        Recipients.parse([secret])
    assert secret not in str(info.value) and secret[15:30] not in str(info.value)


def test_identity_file_with_comments_loads_and_an_open_mode_warns(tmp_path: Path) -> None:
    rec, ids, path = keypair(tmp_path, "me")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ids.recipients == rec.keys and ids.warnings == ()
    assert "# public key: age1" in path.read_text()
    secret = path.read_text().splitlines()[-1]
    assert secret not in repr(ids)
    os.chmod(path, 0o644)
    assert "chmod 600" in load_identity(path).warnings[0]
    with pytest.raises(FileExistsError):
        write_new_identity(path)  # never overwrites an identity


def test_identity_file_errors_are_one_line_and_show_no_key(tmp_path: Path) -> None:
    with pytest.raises(IdentityFileError, match="does not exist"):
        load_identity(tmp_path / "nope.key")
    with pytest.raises(IdentityFileError, match="not a regular file"):
        load_identity(tmp_path)
    empty = tmp_path / "empty.key"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(IdentityFileError, match="holds no age identity"):
        load_identity(empty)
    bad = tmp_path / "bad.key"
    almost = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQ"
    bad.write_text(f"# c\n{almost}\n")
    with pytest.raises(IdentityFileError, match=r"line 2 of .* is not an age identity") as info:
        load_identity(bad)
    assert almost not in str(info.value) and info.value.exit_code == 1
    assert "recipient" not in str(info.value)
    public = tmp_path / "public.txt"  # the recipient, given where the identity goes
    public.write_text(f"{write_new_identity(tmp_path / 'real.key')}\n")
    with pytest.raises(IdentityFileError) as info:
        load_identity(public)
    assert str(info.value).startswith(f"line 1 of {public} is not an age identity")
    assert "but a recipient (a public key, age1...)" in str(info.value)
    big = tmp_path / "big.key"
    big.write_bytes(b"#" * (65 * 1024))
    with pytest.raises(IdentityFileError, match="too large"):
        load_identity(big)


def test_an_identity_from_an_inherited_pipe_is_read_once_and_kept(tmp_path: Path) -> None:
    """``--identity <(age -d key.age)`` (the shell's /dev/fd/N) or ``/dev/stdin``: the pipe
    is read once, and a command's later loads of it get the same identities; a named
    FIFO elsewhere stays refused (no writer need ever come)."""
    public = write_new_identity(tmp_path / "real.key")
    text = (tmp_path / "real.key").read_bytes()
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, text)
        os.close(write_end)
        path = Path(f"/dev/fd/{read_end}")
        assert load_identity(path).recipients == (public,)
        assert load_identity(path).recipients == (public,)  # the pipe is empty by now
    finally:
        os.close(read_end)
    # another pipe on the same descriptor number is read for itself
    other = write_new_identity(tmp_path / "other.key")
    again_r, again_w = os.pipe()
    try:
        os.write(again_w, (tmp_path / "other.key").read_bytes())
        os.close(again_w)
        assert load_identity(Path(f"/dev/fd/{again_r}")).recipients == (other,)
    finally:
        os.close(again_r)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(IdentityFileError, match="not a regular file"):
        load_identity(fifo)


def test_a_plugin_identity_or_an_ssh_key_is_named_as_such(tmp_path: Path) -> None:
    """An identity file holding an age plugin identity or an ssh private key is said to
    be one (before: only 'is not an age identity'), never showing the line."""
    plugin = "AGE-PLUGIN-YUBIKEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"
    cases = {
        plugin: "but an age plugin identity (AGE-PLUGIN-...)",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=": "but an ssh or PEM private key",
    }
    for n, (text, expected) in enumerate(cases.items()):
        path = tmp_path / f"id{n}.txt"
        path.write_text(f"# created by hand\n{text}\n")
        with pytest.raises(IdentityFileError) as info:
            load_identity(path)
        assert str(info.value).startswith(f"line 2 of {path} is not an age identity")
        assert expected in str(info.value) and "QQQQ" not in str(info.value)


@pytest.mark.parametrize(
    ("encode", "expected"),
    [
        (lambda t: b"\xef\xbb\xbf" + t.encode(), "starts with a byte order mark"),
        (lambda t: t.encode("utf-16"), "is UTF-16 text"),
    ],
)
def test_an_identity_saved_with_a_bom_or_as_utf16_is_named(
    tmp_path: Path, encode: Callable[[str], bytes], expected: str
) -> None:
    """An identity an editor saved as UTF-8 with BOM or as UTF-16 (age refuses both) is
    said to be one, with what to do: before, '... is not an age identity file (not text)'."""
    secret = str(x25519.Identity.generate())
    path = tmp_path / "id.txt"
    path.write_bytes(encode(f"# public key\n{secret}\n"))
    with pytest.raises(IdentityFileError) as info:
        load_identity(path)
    assert expected in str(info.value) and "not text" not in str(info.value)
    assert secret[20:] not in str(info.value)


def test_a_passphrase_protected_identity_is_named_as_such(tmp_path: Path) -> None:
    """An identity encrypted with ``age -p`` (binary or armored) is said to be one, with
    how to use it: before, 'is not an age identity file (not text)' or 'line 1 of ... is
    not an age identity'."""
    import base64

    import pyrage

    secret = str(x25519.Identity.generate())
    sealed = pyrage.passphrase.encrypt(f"{secret}\n".encode(), "correct horse")
    binary = tmp_path / "id.age"
    binary.write_bytes(sealed)
    armored = tmp_path / "id.asc"
    body = base64.b64encode(sealed).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    armored.write_text(
        "\n".join(
            ["-----BEGIN AGE ENCRYPTED FILE-----", *lines, "-----END AGE ENCRYPTED FILE-----"]
        )
    )
    for path in (binary, armored):
        with pytest.raises(IdentityFileError) as info:
            load_identity(path)
        assert str(info.value).startswith(f"{path} is encrypted (a passphrase-protected identity")
        assert "age -d -o FILE" in str(info.value) and info.value.exit_code == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_identity_file(tmp_path: Path) -> None:
    _, _, path = keypair(tmp_path, "me")
    os.chmod(path, 0)
    with pytest.raises(IdentityFileError, match="cannot be read"):
        load_identity(path)


# -- sealing -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * MiB + 5])
def test_seal_round_trips_within_the_size_bound(tmp_path: Path, size: int) -> None:
    rec, ids, _ = keypair(tmp_path, "me")
    body = random.Random(size).randbytes(size)
    sealed = seal(body, rec)
    assert sealed != body and len(sealed) <= sealed_size_bound(size)
    assert open_sealed(sealed, ids, size) == body


def test_the_seal_bound_holds_for_the_most_recipients_and_fits_chunk_refs() -> None:
    many = [str(x25519.Identity.generate().to_public()) for _ in range(MAX_RECIPIENTS)]
    rec = Recipients.parse(many)
    for _ in range(20):  # age adds a random grease stanza now and then
        assert len(seal(b"", rec)) <= sealed_size_bound(0)
    assert sealed_size_bound(MAX_CHUNK_SIZE) - MAX_CHUNK_SIZE <= MAX_STORED_OVERHEAD
    with pytest.raises(BadRecipient, match="over 32"):
        Recipients.parse([*many, str(x25519.Identity.generate().to_public())])


def test_every_recipient_can_open(tmp_path: Path) -> None:
    r1, i1, _ = keypair(tmp_path, "a")
    r2, i2, _ = keypair(tmp_path, "b")
    both = Recipients.parse([*r1.keys, *r2.keys])
    sealed = seal(b"x" * 1000, both)
    assert open_sealed(sealed, i1, 1000) == open_sealed(sealed, i2, 1000) == b"x" * 1000


def test_wrong_and_missing_identity_are_typed_one_line_errors(tmp_path: Path) -> None:
    r1, _, _ = keypair(tmp_path, "a")
    _, i2, path2 = keypair(tmp_path, "b")
    sealed = seal(b"private", r1)
    with pytest.raises(NotForThisIdentity) as info:
        open_sealed(sealed, i2, 100)
    assert str(info.value) == (
        f"this upload is encrypted to other keys: the identity in {path2} cannot read it"
    )
    with pytest.raises(IdentityNeeded, match=r"needs encryption\.identity_file") as info2:
        open_sealed(sealed, None, 100)
    for err in (info.value, info2.value):
        assert isinstance(err, PermanentError) and err.exit_code == 1
        assert not isinstance(err, StorageError)  # not reported as damage by a restore


def test_damaged_sealed_bodies_are_refused(tmp_path: Path) -> None:
    rec, ids, _ = keypair(tmp_path, "me")
    sealed = seal(b"y" * 200_000, rec)
    flipped = bytearray(sealed)
    flipped[-100] ^= 1
    for bad in (bytes(flipped), sealed[:-10], sealed + b"z", b"\x28\xb5\x2f\xfd" + sealed):
        with pytest.raises(SealedDamaged):
            open_sealed(bad, ids, 200_000)


def test_an_oversize_sealed_blob_is_refused_before_decrypting(tmp_path: Path) -> None:
    rec, _, _ = keypair(tmp_path, "me")
    _, other, _ = keypair(tmp_path, "other")
    sealed = seal(bytes(2 * MiB), rec)
    # decrypting would say "other keys"; refusing on size says it never tried
    with pytest.raises(SealedTooLarge, match="over its"):
        open_sealed(sealed, other, 64 * 1024)
    with pytest.raises(NotForThisIdentity):
        open_sealed(sealed, other, 2 * MiB)


def test_a_sealed_decompression_bomb_stops_at_the_declared_size(tmp_path: Path) -> None:
    rec, ids, _ = keypair(tmp_path, "me")
    bomb = zstd.compress(bytes(16 * MiB), level=3)
    stored = seal(bomb, rec)
    ref = ChunkRef(hashlib.sha256(bytes(MiB)).hexdigest(), MiB, "k", 0, len(stored), "zstd", "age")
    with pytest.raises(DecompressionBomb):
        decode_sealed_chunk(stored, ref, ids)


def test_sealed_chunk_round_trip_and_checks(tmp_path: Path) -> None:
    rec, ids, _ = keypair(tmp_path, "me")
    data = MARKER * 5000
    used, stored = seal_chunk(data, rec)
    assert used == "zstd" and MARKER not in stored
    ref = ChunkRef(hashlib.sha256(data).hexdigest(), len(data), "k", 0, len(stored), used, "age")
    assert decode_sealed_chunk(stored, ref, ids) == data
    wrong = ChunkRef("0" * 64, len(data), "k", 0, len(stored), used, "age")
    with pytest.raises(CorruptChunk, match="sha256"):
        decode_sealed_chunk(stored, wrong, ids)
    with pytest.raises(CorruptChunk, match="not sealed"):
        decode_sealed_chunk(stored, ChunkRef(ref.sha256, len(data), "k", 0, 9, "zstd", "none"), ids)


def _header_letter_changed(stored: bytes) -> bytes:
    """``stored`` with one letter of its X25519 key share changed (still base64)."""
    at = len(b"age-encryption.org/v1\n-> X25519 ") + 5
    assert stored[at - 11 : at - 6] == b"25519"
    out = bytearray(stored)
    out[at] = ord("B") if out[at] != ord("B") else ord("C")
    return bytes(out)


@pytest.mark.parametrize("check", [True, False])
def test_a_sealed_chunk_with_a_damaged_header_is_damage(tmp_path: Path, check: bool) -> None:
    """age reads a changed key share as "no matching key"; for a chunk (named by documents
    that opened with the identity) that is damage, which a drill heals, not "other keys".
    A body on its own (a document, a name key record) keeps saying other keys."""
    rec, ids, _ = keypair(tmp_path, "me")
    data = MARKER * 5000
    used, stored = seal_chunk(data, rec)
    ref = ChunkRef(hashlib.sha256(data).hexdigest(), len(data), "k", 0, len(stored), used, "age")
    bad = _header_letter_changed(stored)
    with pytest.raises(NotForThisIdentity):
        open_sealed(bad, ids, len(data))
    decode = chunk_decoder(ids, check=check)
    assert decode(stored, ref) == data
    with pytest.raises(SealedDamaged, match="age header opens with no key") as info:
        decode(bad, ref)
    assert not isinstance(info.value, NotForThisIdentity)
    assert isinstance(info.value, CorruptChunk)
    _, other, _ = keypair(tmp_path, "other")
    with pytest.raises(IdentityNeeded):  # no identity at all is still not damage
        chunk_decoder(None, check=check)(stored, ref)
    with pytest.raises(SealedDamaged):  # the chunk of an upload its documents said is ours
        chunk_decoder(other, check=check)(stored, ref)


def test_recipient_change_keeps_old_data_readable_with_the_old_identity(tmp_path: Path) -> None:
    old_r, old_i, _ = keypair(tmp_path, "old")
    new_r, new_i, _ = keypair(tmp_path, "new")
    old_blob = seal(b"before the change", old_r)
    new_blob = seal(b"after the change", new_r)
    assert open_sealed(old_blob, old_i, 100) == b"before the change"
    assert open_sealed(new_blob, new_i, 100) == b"after the change"
    with pytest.raises(NotForThisIdentity):
        open_sealed(new_blob, old_i, 100)  # new uploads use the new keys only
    with pytest.raises(NotForThisIdentity):
        open_sealed(old_blob, new_i, 100)


# -- keyed names and the name key ----------------------------------------------------------


def test_keyed_names_differ_from_sha256_and_are_stable_per_key(tmp_path: Path) -> None:
    rec, _, _ = keypair(tmp_path, "me")
    k1, k2 = new_name_key(SID, rec), new_name_key(SID, rec)
    sha = hashlib.sha256(b"chunk").hexdigest()
    assert k1.name(sha) != sha and len(k1.name(sha)) == 64
    assert k1.name(sha) == k1.name(sha) == k1.name_of(b"chunk")
    assert k2.name(sha) != k1.name(sha)
    assert k1.secret.hex() not in repr(k1)
    with pytest.raises(ValueError):
        k1.name("not hex")


async def test_name_key_created_once_cached_and_reread_on_a_new_machine(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "outbox")
    rec, ids, _ = keypair(tmp_path, "me")
    daemon = NameKeyCache(tmp_path / "state-a")
    first = await load_or_create_name_key(target, SID, rec, None, daemon)
    assert first.how == "created" and first.notes == ()
    assert stat.S_IMODE(os.stat(daemon.path).st_mode) == 0o600
    again = await load_or_create_name_key(target, SID, rec, None, daemon)
    assert again.how == "cached" and again.key == first.key
    listed = [k async for k in target.list_keys(keys_prefix(SID))]
    assert listed == [first.key.object_key]
    stored = (tmp_path / "outbox" / first.key.object_key).read_bytes()
    assert first.key.secret not in stored and b'"key"' not in stored
    # a new machine with the identity continues with the same key, and caches it
    fresh = NameKeyCache(tmp_path / "state-b")
    moved = await load_or_create_name_key(target, SID, rec, ids, fresh)
    assert moved.how == "decrypted" and moved.key == first.key
    assert (await load_or_create_name_key(target, SID, rec, None, fresh)).how == "cached"
    # a new machine without the identity cannot read it: a new key, and a note that says so
    blind = await load_or_create_name_key(target, SID, rec, None, NameKeyCache(tmp_path / "c"))
    assert blind.how == "created" and blind.key != first.key and "cannot read" in blind.notes[0]


async def test_a_cached_key_missing_from_the_target_is_stored_again(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "outbox")
    rec, ids, _ = keypair(tmp_path, "me")
    cache = NameKeyCache(tmp_path / "state")
    made = await load_or_create_name_key(target, SID, rec, None, cache)
    await target.delete_keys([made.key.object_key])
    back = await load_or_create_name_key(target, SID, rec, None, cache)
    assert back.key == made.key and "stored it again" in back.notes[0]
    reread = await load_or_create_name_key(target, SID, rec, ids, NameKeyCache(tmp_path / "n"))
    assert reread.key == made.key


async def test_changed_recipients_get_a_new_key_and_old_keys_stay(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "outbox")
    old_r, old_i, _ = keypair(tmp_path, "old")
    new_r, new_i, _ = keypair(tmp_path, "new")
    cache = NameKeyCache(tmp_path / "state")
    old = await load_or_create_name_key(target, SID, old_r, None, cache)
    new = await load_or_create_name_key(target, SID, new_r, None, cache)
    assert new.how == "created" and new.key.secret != old.key.secret
    listed = sorted([k async for k in target.list_keys(keys_prefix(SID))])
    assert listed == sorted([old.key.object_key, new.key.object_key])
    # each identity reads the key of its own recipient set, on a machine with no state
    got_old = await load_or_create_name_key(target, SID, old_r, old_i, NameKeyCache(tmp_path / "x"))
    got_new = await load_or_create_name_key(target, SID, new_r, new_i, NameKeyCache(tmp_path / "y"))
    assert (got_old.key, got_new.key) == (old.key, new.key)


async def test_a_damaged_key_record_is_named_and_stored_again_by_its_maker(
    tmp_path: Path,
) -> None:
    """A new machine whose identity is one of the recipients, meeting a key record whose
    age header was damaged: a new key, and the note says the record is damaged (not
    'no identity, or not one of the recipients', which sent the user after another key).
    The machine that caches the key stores the record again once it has the identity
    (before: only a missing record was stored again, a damaged one stayed for good)."""
    target = LocalTarget(tmp_path / "outbox")
    rec, ids, _ = keypair(tmp_path, "me")
    _, other, _ = keypair(tmp_path, "other")
    made = await load_or_create_name_key(target, SID, rec, None, NameKeyCache(tmp_path / "a"))
    record = tmp_path / "outbox" / made.key.object_key
    body = bytearray(record.read_bytes())
    body[60:66] = b"garbag"  # inside the X25519 stanza: no identity opens it any more
    record.write_bytes(bytes(body))
    fresh = await load_or_create_name_key(target, SID, rec, ids, NameKeyCache(tmp_path / "b"))
    assert fresh.how == "created" and fresh.key != made.key
    assert "does not open with the identity" in fresh.notes[0]
    assert "it is damaged" in fresh.notes[0]
    stranger = await load_or_create_name_key(target, SID, rec, other, NameKeyCache(tmp_path / "c"))
    assert "is not one of encryption.recipients" in stranger.notes[0]
    blind = await load_or_create_name_key(target, SID, rec, None, NameKeyCache(tmp_path / "d"))
    assert "without the identity" in blind.notes[0]
    # the machine that made it, given the identity (identity_file), stores it again: a new
    # machine with the identity then goes on under the same key
    owner = NameKeyCache(tmp_path / "a")
    assert (await load_or_create_name_key(target, SID, rec, None, owner)).notes == ()
    mended = await load_or_create_name_key(target, SID, rec, ids, owner)
    assert mended.key == made.key and "(damaged): stored it again" in mended.notes[0]
    assert open_sealed(record.read_bytes(), ids, 64 * 1024, "record")  # opens again
    assert (await load_or_create_name_key(target, SID, rec, ids, owner)).notes == ()


def test_a_damaged_cache_is_one_line_with_the_fix(tmp_path: Path) -> None:
    cache = NameKeyCache(tmp_path)
    cache.path.write_text('{"keys": [{"key": "short"}]}')
    with pytest.raises(PermanentError, match=r"is damaged.*remove it"):
        cache.load()


# -- sealed documents ----------------------------------------------------------------------


async def test_sealed_documents_round_trip_with_bounds_and_identity_errors(
    tmp_path: Path,
) -> None:
    target = LocalTarget(tmp_path / "outbox")
    rec, ids, _ = keypair(tmp_path, "me")
    _, other, _ = keypair(tmp_path, "other")
    nk = new_name_key(SID, rec)
    doc = {"files": [{"path": "notes/secret-plan.md", "sha256": "ab" * 32}]}
    key, data = encode_document_sealed(SID, "index", doc, nk, rec)
    assert key.endswith(".json.gz.age") and document_encryption(key) == "age"
    assert b"secret-plan" not in data
    await target.put_bytes(key, data, "application/octet-stream")
    part = sealed_index_part_json(key)
    assert part["encryption"] == "age"
    got = await read_document_sealed(target, key, part["compression"], "age", ids, what="part")
    assert got == doc
    again, _ = encode_document_sealed(SID, "index", doc, nk, rec)
    assert again == key  # identical documents share one object
    with pytest.raises(NotForThisIdentity):
        await read_document_sealed(target, key, "gzip", "age", other)
    with pytest.raises(IdentityNeeded):
        await read_document_sealed(target, key, "gzip", "age", None)
    with pytest.raises(DocumentError, match=r"decrypts to .* over 10"):
        await read_document_sealed(target, key, "gzip", "age", ids, limit=10)
    huge = f"systems/{SID}/index/00/{'0' * 64}.json.gz.age"
    await target.put_bytes(huge, data + bytes(sealed_size_bound(1000)), "x")
    with pytest.raises(DocumentError, match="over the"):  # refused while fetching
        await read_document_sealed(target, huge, "gzip", "age", ids, limit=1000)
    await target.put_bytes(key, data[:-5], "application/octet-stream")
    with pytest.raises(DocumentError, match="does not decrypt"):
        await read_document_sealed(target, key, "gzip", "age", ids)


# -- nothing readable in the target --------------------------------------------------------


async def test_stored_bytes_hold_no_plaintext_marker_name_or_sha256(tmp_path: Path) -> None:
    """A small upload written the encrypted way: packs of sealed chunks, a sealed chunk
    list and index part, the sealed name key; then every stored byte is scanned."""
    target = LocalTarget(tmp_path / "outbox")
    rec, ids, _ = keypair(tmp_path, "me")
    nk = (await load_or_create_name_key(target, SID, rec, None, NameKeyCache(tmp_path / "s"))).key
    rng = random.Random(5)
    files = {
        "project-zebra/notes.md": MARKER * 3000,
        "reflection.duckdb": rng.randbytes(3 * MiB) + MARKER * 100,
    }
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)
    entries, secrets_seen = [], [nk.secret]
    plain: dict[str, list[tuple[str, int, str]]] = {}
    with PackWriter(staging, SID, target=MiB) as writer:
        sealed_packs = []
        for path, data in files.items():
            for piece in iter_stream_chunks(io.BytesIO(data)):
                body = piece.data
                used, stored = seal_chunk(body, rec)
                sealed_packs += writer.add(nk.name_of(body), stored)
                plain.setdefault(path, []).append((piece.sha256, len(body), used))
        last = writer.flush()
        sealed_packs += [last] if last else []
    where = {s.name: (p.key, s.offset, s.length) for p in sealed_packs for s in p.slots}
    for path, data in files.items():
        chunks = [
            ChunkRef(sha, size, *where[nk.name(sha)], comp, "age")  # type: ignore[arg-type]
            for sha, size, comp in plain[path]
        ]
        list_key, list_data = encode_document_sealed(
            SID, "chunklists", {"chunks": [c.to_json() for c in chunks]}, nk, rec
        )
        await target.put_bytes(list_key, list_data, "application/octet-stream")
        sha = hashlib.sha256(data).hexdigest()
        entries.append({"path": path, "sha256": sha, "size": len(data), "chunk_list": list_key})
        secrets_seen += [sha.encode(), bytes.fromhex(sha)]
        secrets_seen += [c.sha256.encode() for c in chunks]
    for p in sealed_packs:
        await target.put_file(p.key, p.path, "none")
    part_key, part_data = encode_document_sealed(SID, "index", {"files": entries}, nk, rec)
    await target.put_bytes(part_key, part_data, "application/octet-stream")
    manifest = {"metadata": {"format": 2, "index": {"parts": [sealed_index_part_json(part_key)]}}}
    manifest_key = f"systems/{SID}/uploads/u1/manifest.json"
    await target.put_bytes(manifest_key, json.dumps(manifest).encode(), "application/json")

    stored_files = [p for p in (tmp_path / "outbox").rglob("*") if p.is_file()]
    assert len(stored_files) >= 6
    needles = [MARKER, b"project-zebra", b"notes.md", b"reflection", *secrets_seen]
    for stored_file in stored_files:
        blob = stored_file.read_bytes() + str(stored_file.relative_to(tmp_path / "outbox")).encode()
        for needle in needles:
            assert needle not in blob, f"{needle[:20]!r} readable in {stored_file.name}"

    # and the identity gets everything back
    part = await read_document_sealed(target, part_key, "gzip", "age", ids)
    for entry in part["files"]:
        clist = await read_document_sealed(
            target, entry["chunk_list"], "gzip", document_encryption(entry["chunk_list"]), ids
        )
        out = b""
        for raw in clist["chunks"]:
            ref = ChunkRef.from_json(raw)
            blob = (tmp_path / "outbox" / ref.key).read_bytes()[ref.offset : ref.end]
            out += decode_sealed_chunk(blob, ref, ids)
        assert out == files[entry["path"]]
