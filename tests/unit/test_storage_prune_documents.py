"""Prune and the format-2 writer share one document codec: a chunk list or index part that
prune re-encodes has exactly the key and bytes ``format2.build_manifest2`` gives it, and a
document that cannot be read is one error type for the restore reader and for prune."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from akoshad.manifest.layout import ManifestError, encode_manifest, manifest_key
from akoshad.storage.documents import (
    DOCUMENT_COMPRESSION,
    DocumentError,
    DocumentKind,
    DocumentMissing,
    decode_document,
    encode_document,
)
from akoshad.storage.errors import StorageError
from akoshad.storage.format2 import CHUNKS_INLINE_MAX, Format2Manifest, build_manifest2
from akoshad.storage.format2_read import read_entries
from akoshad.storage.prune_documents import PruneError
from akoshad.storage.prune_load import load_for_prune
from akoshad.storage.prune_refs import ChunkRef as PlanChunk
from akoshad.storage.prune_rewrite import Relocator, Rewriter
from akoshad.storage.refs import ChunkRef
from akoshad.storage.repack import NewPack, PackRepack
from akoshad.storage.stored import StoredFile
from tests.format2_store import MemTarget, write_upload
from tests.helpers import same_document

SID = "host-a"
UPLOAD = "20261130T010000000000Z-aaaaaa"
WHEN = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
P = f"systems/{SID}/packs/"
OLD_PACK = P + "aa/" + "a" * 64  # repacked: the big file's chunks, with dead gaps between
NEW_PACK = P + "bb/" + "b" * 64
STILL = P + "cc/" + "c" * 64  # not repacked: the small files
BIG_CHUNKS = CHUNKS_INLINE_MAX + 36  # past the inline limit: a chunk list
STORED = 700  # stored bytes of each big-file chunk (zstd), 1000 plaintext
SMALL_FILES = 150  # with use_index, cut into several content-defined parts


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def big_file(pack: str, offset_of: dict[int, int]) -> StoredFile:
    chunks = tuple(
        ChunkRef(sha(f"big{i}"), 1000, pack, offset_of[i], STORED, "zstd", "none")
        for i in range(BIG_CHUNKS)
    )
    return StoredFile("data/big.duckdb", "duckdb", 1000 * BIG_CHUNKS, sha("big"), chunks, 0o600)


def small_files() -> list[StoredFile]:
    return [
        StoredFile(
            f"sessions/s{i:03d}.json",
            "file",
            100,
            sha(f"s{i}"),
            (ChunkRef(sha(f"s{i}"), 100, STILL, 100 * i, 100, "none", "none"),),
        )
        for i in range(SMALL_FILES)
    ]


def build(big: StoredFile) -> Format2Manifest:
    return build_manifest2(
        system_id=SID,
        upload_id=UPLOAD,
        files=[*small_files(), big],
        skipped={},
        uploaded_at=WHEN,
        use_index=True,
    )


def kind_of(key: str) -> DocumentKind:
    return "chunklists" if "/chunklists/" in key else "index"


def decoded(built: Format2Manifest) -> dict[str, dict[str, object]]:
    return {k: decode_document(d, DOCUMENT_COMPRESSION, k, 1 << 26) for k, d in built.documents}


# the big file's chunks sit at every other STORED bytes of the old pack: half of it is dead
BEFORE = build(big_file(OLD_PACK, {i: 2 * STORED * i for i in range(BIG_CHUNKS)}))


def test_every_document_the_writer_made_re_encodes_to_its_key_and_bytes() -> None:
    assert {kind_of(k) for k, _ in BEFORE.documents} == {"chunklists", "index"}
    assert len(BEFORE.manifest["metadata"]["index"]["parts"]) > 2
    for key, obj in decoded(BEFORE).items():
        assert same_document(
            encode_document(SID, kind_of(key), obj), (key, dict(BEFORE.documents)[key])
        )


async def test_a_repack_rewrite_gives_what_the_writer_gives_for_the_moved_chunks() -> None:
    live = tuple((2 * STORED * i, STORED) for i in range(BIG_CHUNKS))
    pack = NewPack((PackRepack(OLD_PACK, 2 * STORED * BIG_CHUNKS, live),))
    assert pack.relocate(PlanChunk(OLD_PACK, 2 * STORED * 5, STORED)) == STORED * 5
    relocator = Relocator()
    relocator.add(pack, NEW_PACK)
    target = MemTarget()
    rewriter = Rewriter(target, SID, relocator, decoded(BEFORE))
    key = manifest_key(SID, UPLOAD)

    rewritten = await rewriter.rewrite(key, BEFORE.manifest)

    # the writer, given the chunks where the repack put them (packed end to end)
    after = build(big_file(NEW_PACK, {i: STORED * i for i in range(BIG_CHUNKS)}))
    assert rewritten == after.manifest
    assert target.objects[key] == encode_manifest(after.manifest)
    new_docs = dict(after.documents)
    changed = set(new_docs) - BEFORE.document_keys
    assert {kind_of(k) for k in changed} == {"chunklists", "index"}  # the list and its part
    assert set(target.objects) - {key} == changed  # unchanged parts: not written again
    for doc_key in changed:
        assert same_document((doc_key, target.objects[doc_key]), (doc_key, new_docs[doc_key]))
    assert len(after.document_keys & BEFORE.document_keys) >= 2  # parts without the big file
    assert {r.key for r in relocator.moved.values()} == {NEW_PACK}
    assert len(relocator.moved) == BIG_CHUNKS


async def test_prune_reads_a_writer_upload_and_an_empty_rewrite_writes_nothing() -> None:
    target = MemTarget()
    await write_upload(target, SID, UPLOAD, BEFORE)
    loaded = await load_for_prune(target, SID)
    assert loaded.documents == decoded(BEFORE)
    (refs,) = loaded.refs()
    assert BEFORE.document_keys <= refs.objects
    assert {c.pack for c in refs.chunk_refs()} == {OLD_PACK, STILL}
    objects = dict(target.objects)
    rewriter = Rewriter(target, SID, Relocator(), dict(loaded.documents))
    assert await rewriter.rewrite(manifest_key(SID, UPLOAD), BEFORE.manifest) is None
    assert target.objects == objects


def _missing(data: bytes) -> bytes | None:
    return None


def _truncated(data: bytes) -> bytes | None:
    return data[: len(data) // 2]


def _not_a_list(data: bytes) -> bytes | None:
    return gzip.compress(b"[1, 2]", mtime=0)


@pytest.mark.parametrize(
    ("damage", "restore_error", "said"),
    [
        (_missing, DocumentMissing, "is missing"),
        (_truncated, DocumentError, "is truncated"),
        (_not_a_list, ManifestError, "is not an object with a list 'chunks'"),
    ],
)
async def test_a_damaged_chunk_list_stops_restore_and_prune_naming_it(
    damage: Callable[[bytes], bytes | None], restore_error: type[ManifestError], said: str
) -> None:
    target = MemTarget()
    await write_upload(target, SID, UPLOAD, BEFORE)
    chunk_list = next(k for k in BEFORE.document_keys if "/chunklists/" in k)
    new = damage(target.objects[chunk_list])
    if new is None:
        del target.objects[chunk_list]
    else:
        target.objects[chunk_list] = new
    with pytest.raises(restore_error, match=f"chunk list {chunk_list}") as err:
        await read_entries(target, BEFORE.manifest)
    # the codec's errors are one type, a ManifestError and a StorageError alike
    assert isinstance(err.value, StorageError) == (restore_error is not ManifestError)
    before = dict(target.objects)
    with pytest.raises(PruneError, match=f"chunk list {chunk_list} {said}.*nothing deleted"):
        await load_for_prune(target, SID)
    assert target.objects == before
