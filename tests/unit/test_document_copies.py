"""The copies of sealed documents kept in the state (``document_copies``) and their proof
(``Resealing.copy_of``): a copy is used only when its plaintext gives the object's name."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from akoshad.storage.crypto import Recipients
from akoshad.storage.document_copies import DIR_NAME, DocumentCopies
from akoshad.storage.documents import DOCUMENT_COMPRESSION, canonical_json, compress_document
from akoshad.storage.name_key import NameKey
from akoshad.storage.sealed_documents import Resealing, encode_document_sealed

KEY = "systems/s/index/ab/abcd.json.gz.age"


def _name_key(secret: bytes = b"k" * 32) -> NameKey:
    return NameKey("s", "f" * 16, "0" * 16, "2026-01-01T00:00:00+00:00", secret)


def _recipients() -> Recipients:
    from pyrage import x25519

    public = str(x25519.Identity.generate().to_public())
    return Recipients.parse([public])


def test_a_copy_is_kept_private_and_read_back(tmp_path: Path) -> None:
    copies = DocumentCopies(tmp_path, "local")
    assert copies.get(KEY) is None
    copies.put(KEY, b"body")
    assert copies.get(KEY) == b"body"
    assert copies.get("systems/s/index/ab/other.json.gz.age") is None
    assert copies.root.parent == tmp_path / DIR_NAME
    assert stat.S_IMODE(copies.root.stat().st_mode) == 0o700
    (path,) = copies.root.iterdir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "abcd" not in path.name  # named by the key's hash: no key names a path
    copies.put(KEY, b"again")
    assert copies.get(KEY) == b"again" and len(list(copies.root.iterdir())) == 1


def test_targets_keep_their_own_copies(tmp_path: Path) -> None:
    DocumentCopies(tmp_path, "local").put(KEY, b"one")
    assert DocumentCopies(tmp_path, "s3").get(KEY) is None


def test_a_copy_over_the_bound_or_behind_a_link_is_not_read(tmp_path: Path) -> None:
    copies = DocumentCopies(tmp_path, "local")
    copies.put(KEY, b"x" * 100)
    assert copies.get(KEY, limit=99) is None and copies.get(KEY, limit=100) == b"x" * 100
    (path,) = copies.root.iterdir()
    outside = tmp_path / "outside"
    outside.write_bytes(b"secret")
    path.unlink()
    path.symlink_to(outside)
    assert copies.get(KEY) is None


def test_keep_only_removes_the_rest_and_leftovers(tmp_path: Path) -> None:
    copies = DocumentCopies(tmp_path, "local")
    for i in range(3):
        copies.put(f"{KEY}{i}", b"b")
    (copies.root / "x.123-4.tmp").write_bytes(b"left by a kill")
    assert copies.keep_only([f"{KEY}1", "not/there"]) == 3
    assert copies.get(f"{KEY}1") == b"b" and copies.get(f"{KEY}0") is None
    assert DocumentCopies(tmp_path, "none").keep_only([]) == 0


def test_a_copy_that_cannot_be_written_is_logged_once(tmp_path: Path) -> None:
    from loguru import logger

    (tmp_path / DIR_NAME).write_bytes(b"a file where the folder goes")
    copies = DocumentCopies(tmp_path, "local")
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING")
    try:
        copies.put(KEY, b"a")
        copies.put(KEY + "2", b"b")
    finally:
        logger.remove(sink)
    assert copies.get(KEY) is None
    assert len(warnings) == 1 and "packs whole" in warnings[0]


def test_a_copy_is_used_only_when_it_gives_the_objects_name(tmp_path: Path) -> None:
    copies = DocumentCopies(tmp_path, "local")
    resealing = Resealing(_name_key(), _recipients(), copies)
    doc = {"files": [{"path": "a.md", "sha256": "0" * 64}]}
    key, stored = resealing.encode("s", "index", doc)
    assert stored.startswith(b"age-encryption.org/v1")
    what, limit = "index part", 1 << 20
    assert resealing.copy_of(key, DOCUMENT_COMPRESSION, what, limit) == doc
    # another document's plaintext under this key's name: refused
    copies.put(key, compress_document(canonical_json({"files": []})))
    assert resealing.copy_of(key, DOCUMENT_COMPRESSION, what, limit) is None
    # damaged bytes: refused, no error
    copies.put(key, b"\x1f\x8b not gzip")
    assert resealing.copy_of(key, DOCUMENT_COMPRESSION, what, limit) is None
    # the same plaintext named by another name key: refused
    other = Resealing(_name_key(b"o" * 32), resealing.recipients, copies)
    resealing.keep_copy(key, doc)
    assert other.copy_of(key, DOCUMENT_COMPRESSION, what, limit) is None
    # keep_copy keeps only documents this key named
    other.keep_copy("systems/s/index/cd/cdef.json.gz.age", doc)
    assert copies.get("systems/s/index/cd/cdef.json.gz.age") is None


def test_encoding_without_copies_keeps_none(tmp_path: Path) -> None:
    key, _ = encode_document_sealed("s", "index", {"files": []}, _name_key(), _recipients())
    assert key.endswith(".json.gz.age")
    assert not os.path.exists(tmp_path / DIR_NAME)
