"""Large chunk lists split into content-defined parts (``chunk_parts``): how lists are cut,
what one changed region rewrites, reading both shapes back from the real local target with
every bound checked against the entry, a missing part named, sealed parts that reveal
nothing, and what prune counts as live."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from pyrage import x25519

from akoshad.manifest.layout import ManifestError, encode_manifest, manifest_key
from akoshad.storage import chunk_parts
from akoshad.storage.crypto import Identities, IdentityNeeded, Recipients, is_sealed
from akoshad.storage.documents import DOCUMENT_COMPRESSION, decode_document, encode_document
from akoshad.storage.errors import RefError
from akoshad.storage.format2 import Format2Manifest, build_manifest2
from akoshad.storage.format2_read import read_entries
from akoshad.storage.name_key import new_name_key
from akoshad.storage.prune_load import load_for_prune
from akoshad.storage.prune_refs import documents_needed, manifest_refs
from akoshad.storage.refs import (
    MAX_CHUNK_LIST_PARTS,
    ChunkListPartRef,
    ChunkRef,
    chunk_list_parts_from_json,
)
from akoshad.storage.sealed_documents import decode_document_sealed
from akoshad.storage.stored import StoredFile
from akoshad.targets.local import LocalTarget
from tests.format2_store import write_upload
from tests.helpers import same_document
from tests.sealed_read import sealed_files

SID = "box-1"
UP1 = "20261130T010000000000Z-aaaaaa"
UP2 = "20261130T020000000000Z-bbbbbb"
N = 2000  # chunks of the big file: split (past SPLIT_MIN_CHUNKS) into about 60 parts
CHUNK = 4096


def pack_key(n: int) -> str:
    h = hashlib.sha256(b"pack %d" % n).hexdigest()
    return f"systems/{SID}/packs/{h[:2]}/{h}"


def chunk(i: int, tag: str = "", pack: int = 1, enc: str = "none") -> ChunkRef:
    sha = hashlib.sha256(f"chunk {i}{tag}".encode()).hexdigest()
    return ChunkRef(sha, CHUNK, pack_key(pack), i * 3000, 3000, "zstd", enc)  # type: ignore[arg-type]


def big(chunks: list[ChunkRef], path: str = "reflection.duckdb") -> StoredFile:
    size = sum(c.size for c in chunks)
    return StoredFile(
        path, "duckdb", size, hashlib.sha256(path.encode()).hexdigest(), tuple(chunks)
    )


def small() -> StoredFile:
    ref = ChunkRef(hashlib.sha256(b"s").hexdigest(), 10, pack_key(9), 0, 10, "none", "none")
    return StoredFile("notes.json", "file", 10, ref.sha256, (ref,), name="notes.json")


def build(
    files: list[StoredFile], upload_id: str = UP1, known: Any = frozenset()
) -> Format2Manifest:
    return build_manifest2(
        system_id=SID, upload_id=upload_id, files=files, skipped={}, known_documents=known
    )


def entry(built: Format2Manifest, path: str = "reflection.duckdb") -> dict[str, Any]:
    return next(e for e in built.manifest["metadata"]["files"] if e["path"] == path)


def doc_of(built: Format2Manifest, key: str) -> Any:
    return decode_document(dict(built.documents)[key], DOCUMENT_COMPRESSION, key, 1 << 26)


@pytest.fixture
async def target(tmp_path: Path) -> LocalTarget:
    t = LocalTarget(tmp_path / "outbox")
    await t.start()
    return t


async def read_back(target: LocalTarget, built: Format2Manifest, upload_id: str = UP1) -> Any:
    await write_upload(target, SID, upload_id, built)
    data = b"".join([p async for p in target.read(manifest_key(SID, upload_id))])
    return await read_entries(target, json.loads(data), system_id=SID)


# ---- cutting --------------------------------------------------------------------------


def ids(n: int, tag: str = "") -> list[dict[str, Any]]:
    return [
        {"sha256": hashlib.sha256(f"{i}{tag}".encode()).hexdigest(), "size": 1} for i in range(n)
    ]


def test_parts_are_bounded_and_keep_the_order() -> None:
    chunks = ids(5000)
    ends = chunk_parts.boundary_of()
    parts = chunk_parts.cut_chunk_parts(chunks, ends, 8, 128)
    assert [c for p in parts for c in p] == chunks
    assert all(8 <= len(p) <= 128 for p in parts[:-1]) and 1 <= len(parts[-1]) <= 128
    mean = len(chunks) / len(parts)
    assert 25 < mean < 60, mean  # about 32 (+ the minimum) on average
    # every part but the last ends at a boundary chunk or at the maximum
    assert all(ends(p[-1]["sha256"]) or len(p) == 128 for p in parts[:-1])


def test_a_chunk_repeated_all_along_the_file_does_not_cut_it_to_pieces() -> None:
    # a free block or filler row repeated every few chunks (as in a 1 GiB DuckDB-like
    # file: one id 1,024 times among 3,071 chunks): when its id is a cut, it may end a
    # part once, not every part at the minimum
    unique = ids(3000)
    filler = {"sha256": "f" * 64, "size": 1}

    def ends(sha: str) -> bool:
        return sha == filler["sha256"] or int(sha[-8:], 16) & 31 == 0

    chunks: list[dict[str, Any]] = []
    for i, c in enumerate(unique):
        chunks.append(c)
        if i % 3 == 2:
            chunks.append(filler)
    parts = chunk_parts.cut_chunk_parts(chunks, ends, 8, 128)
    assert [c for p in parts for c in p] == chunks
    # without the filler as a cut: about 4,000 / 40; with every filler a cut, 4,000 / 9
    assert len(parts) < 150, len(parts)
    # a part ends at the filler only where it is the filler's first time in the part
    assert all(p[-1] is not filler or p.count(filler) == 1 for p in parts[:-1])


@pytest.mark.parametrize("edit", ["replace", "insert", "delete"])
def test_one_edited_chunk_changes_at_most_two_parts(edit: str) -> None:
    chunks = ids(3000)
    changed = list(chunks)
    i = 1500
    if edit == "replace":
        changed[i] = ids(1, "new")[0]
    elif edit == "insert":
        changed.insert(i, ids(1, "new")[0])
    else:
        del changed[i]
    ends = chunk_parts.boundary_of()

    def cut(c: list[dict[str, Any]]) -> list[str]:
        return [json.dumps(p) for p in chunk_parts.cut_chunk_parts(c, ends)]

    before, after = cut(chunks), cut(changed)
    assert len(set(after) - set(before)) <= 2
    assert len(set(before) & set(after)) >= len(before) - 2


def test_sealed_cuts_use_the_keyed_name_not_the_chunk_id() -> None:
    recipients, _ = keys()
    plain = chunk_parts.boundary_of()
    keyed = chunk_parts.boundary_of(new_name_key(SID, recipients))
    chunks = [c["sha256"] for c in ids(2000)]
    assert [plain(c) for c in chunks] != [keyed(c) for c in chunks]
    assert 20 < sum(keyed(c) for c in chunks) < 120  # still about one in 32


# ---- writing and reading ---------------------------------------------------------------


async def test_a_large_list_is_split_and_reads_back_whole(target: LocalTarget) -> None:
    chunks = [chunk(i) for i in range(N)]
    built = build([big(chunks), small()])
    top_key = entry(built)["chunk_list"]["key"]
    top = doc_of(built, top_key)
    assert set(top) == {"parts"} and 30 <= len(top["parts"]) <= 120
    assert all(
        set(p) == {"key", "compression", "encryption", "count", "size"} for p in top["parts"]
    )
    got: list[dict[str, Any]] = []
    for part in top["parts"]:
        doc = doc_of(built, part["key"])
        assert set(doc) == {"chunks"} and len(doc["chunks"]) == part["count"]
        assert sum(c["size"] for c in doc["chunks"]) == part["size"]
        assert part["encryption"] == "none" and part["key"] in built.document_keys
        got += doc["chunks"]
    assert got == [c.to_json() for c in chunks]
    files = {f.path: f for f in await read_back(target, built)}
    assert files["reflection.duckdb"].chunks == tuple(chunks)
    assert files["notes.json"] == small()


async def test_lists_up_to_the_threshold_stay_whole(target: LocalTarget) -> None:
    chunks = [chunk(i) for i in range(chunk_parts.SPLIT_MIN_CHUNKS)]
    built = build([big(chunks)])
    assert set(doc_of(built, entry(built)["chunk_list"]["key"])) == {"chunks"}
    assert len(built.documents) == 1
    (f,) = await read_back(target, built)
    assert f.chunks == tuple(chunks)


async def test_a_whole_list_written_before_parts_existed_still_reads(
    target: LocalTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = [chunk(i) for i in range(N)]
    monkeypatch.setattr(chunk_parts, "SPLIT_MIN_CHUNKS", 10**9)  # what earlier versions wrote
    old = build([big(chunks)])
    (key, data), *_ = old.documents
    assert same_document(
        encode_document(SID, "chunklists", {"chunks": [c.to_json() for c in chunks]}), (key, data)
    )
    (f,) = await read_back(target, old)
    assert f.chunks == tuple(chunks)
    monkeypatch.undo()
    new = build([big(chunks)], UP2, old.document_keys)
    assert entry(new)["chunk_list"] != entry(old)["chunk_list"]  # split now
    (g,) = await read_back(target, new, UP2)
    assert g == f


@pytest.mark.parametrize("edit", ["replace", "insert"])
def test_a_change_in_the_middle_writes_the_top_list_and_one_or_two_parts(edit: str) -> None:
    chunks = [chunk(i) for i in range(N)]
    first = build([big(chunks), small()])
    changed = list(chunks)
    new = [chunk(i, "v2", pack=2) for i in range(1000, 1003)]  # one changed region
    if edit == "replace":
        changed[1000:1003] = new
    else:
        changed[1000:1000] = new
    second = build([big(changed), small()], UP2, first.document_keys)
    written = [k for k, _ in second.documents]
    top = entry(second)["chunk_list"]["key"]
    assert top in written and all("/chunklists/" in k for k in written)
    assert 2 <= len(written) <= 3  # the top-level list and the part(s) of the change
    whole = len(encode_document(SID, "chunklists", {"chunks": [c.to_json() for c in changed]})[1])
    print(f"\n{N} chunks: one change writes {second.document_bytes} bytes, the whole list {whole}")
    assert second.document_bytes * 4 < whole
    # unchanged: nothing written again
    third = build([big(changed), small()], UP2, second.document_keys)
    assert third.documents == [] and entry(third) == entry(second)


# ---- bounds: a split list is checked against its entry before a part is fetched --------


def _tamper(built: Format2Manifest, change: Any) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """The manifest with its big file's top-level list replaced by ``change(top, docs)``."""
    key = entry(built)["chunk_list"]["key"]
    docs = dict(built.documents)
    top = doc_of(built, key)
    change(top, docs)
    new_key, data = encode_document(SID, "chunklists", top)
    docs[new_key] = data
    manifest = json.loads(encode_manifest(built.manifest))
    for e in manifest["metadata"]["files"]:
        if "chunk_list" in e:
            e["chunk_list"]["key"] = new_key
    return manifest, list(docs.items())


def _grow_first_size(top: dict[str, Any], docs: dict[str, bytes]) -> None:
    top["parts"][0]["size"] += 1


def _count_off(top: dict[str, Any], docs: dict[str, bytes]) -> None:
    top["parts"][0]["count"] -= 1
    top["parts"][0]["size"] -= CHUNK
    top["parts"][1]["size"] += CHUNK


def _swap_sizes(top: dict[str, Any], docs: dict[str, bytes]) -> None:
    a, b = top["parts"][0], top["parts"][1]
    a["count"], b["count"] = b["count"], a["count"]
    a["size"], b["size"] = b["size"], a["size"]


def _nested(top: dict[str, Any], docs: dict[str, bytes]) -> None:
    inner_key, data = encode_document(SID, "chunklists", {"parts": [top["parts"][0]]})
    docs[inner_key] = data
    top["parts"][0]["key"] = inner_key


def _outside(top: dict[str, Any], docs: dict[str, bytes]) -> None:
    top["parts"][0]["key"] = top["parts"][0]["key"].replace(SID, "other-box")


def _too_many_chunks(top: dict[str, Any], docs: dict[str, bytes]) -> None:
    a, b = top["parts"][0], top["parts"][1]
    b["size"] += a["size"] - (a["count"] - 1)
    a["size"] = a["count"] - 1


def _extra_field(top: dict[str, Any], docs: dict[str, bytes]) -> None:
    top["parts"][0]["sha256"] = "0" * 64


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (_grow_first_size, "its parts add up to"),
        (_count_off, "exceed the limit|its list says"),
        (_swap_sizes, "its list says"),
        (_nested, "chunks"),
        (_outside, "is not a part under"),
        (_too_many_chunks, "claims"),
        (_extra_field, "unknown field sha256"),
    ],
)
async def test_a_split_list_that_does_not_match_its_entry_is_refused(
    target: LocalTarget, change: Any, said: str
) -> None:
    built = build([big([chunk(i) for i in range(N)])])
    manifest, docs = _tamper(built, change)
    for key, data in docs:
        await target.put_bytes(key, data, "application/gzip")
    with pytest.raises(ManifestError, match=said) as err:
        await read_entries(target, manifest, system_id=SID)
    assert "reflection.duckdb" in str(err.value) and "\n" not in str(err.value)


def test_part_refs_are_strict() -> None:
    good = {"key": "systems/a/chunklists/ab/x.json.gz", "compression": "gzip"}
    good |= {"encryption": "none", "count": 3, "size": 10}  # type: ignore[dict-item]
    assert ChunkListPartRef.from_json(good).to_json() == good
    for bad, said in [
        ({**good, "count": 0}, "count must be at least 1"),
        ({**good, "size": -1}, "size must not be negative"),
        ({**good, "encryption": "rot13"}, "encryption must be one of"),
        ({k: v for k, v in good.items() if k != "count"}, "missing field count"),
    ]:
        with pytest.raises(RefError, match=said):
            ChunkListPartRef.from_json(bad)
    with pytest.raises(RefError, match="0 parts"):
        chunk_list_parts_from_json({"parts": []})
    with pytest.raises(RefError, match=f"expected 1 to {MAX_CHUNK_LIST_PARTS}"):
        chunk_list_parts_from_json({"parts": [good] * (MAX_CHUNK_LIST_PARTS + 1)})


async def test_a_missing_or_damaged_part_is_named_with_its_file(target: LocalTarget) -> None:
    built = build([big([chunk(i) for i in range(N)]), small()])
    await write_upload(target, SID, UP1, built)
    manifest = json.loads(b"".join([p async for p in target.read(manifest_key(SID, UP1))]))
    top = doc_of(built, entry(built)["chunk_list"]["key"])
    part = top["parts"][len(top["parts"]) // 2]["key"]
    path = target.root / part
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ManifestError) as err:
        await read_entries(target, manifest, system_id=SID)
    assert str(err.value).startswith(f"'reflection.duckdb': chunk list part {part} ")
    path.unlink()
    with pytest.raises(ManifestError) as err:
        await read_entries(target, manifest, system_id=SID)
    assert str(err.value) == f"'reflection.duckdb': chunk list part {part} is missing"


# ---- encryption ------------------------------------------------------------------------


def keys() -> tuple[Recipients, Identities]:
    ident = x25519.Identity.generate()
    public = str(ident.to_public())
    return Recipients.parse([public]), Identities(Path("id.txt"), (public,), (), (ident,))


async def test_sealed_parts_reveal_nothing_and_open_with_the_identity(
    target: LocalTarget,
) -> None:
    recipients, identities = keys()
    name_key = new_name_key(SID, recipients)
    chunks = [chunk(i, enc="age") for i in range(N)]
    f = big(chunks)

    def sealed(files: list[StoredFile], upload_id: str, known: Any) -> Format2Manifest:
        return build_manifest2(
            system_id=SID,
            upload_id=upload_id,
            files=files,
            skipped={},
            known_documents=known,
            name_key=name_key,
            recipients=recipients,
        )

    built = sealed([f], UP1, frozenset())
    lists = {k: v for k, v in built.documents if "/chunklists/" in k}
    assert len(lists) > 30  # the top-level list and its parts
    secrets = [c.sha256 for c in chunks] + [pack_key(1), f.path, f.sha256]
    # readable in the manifest: the keys the upload references (a pack's name is no secret
    # there: the listing shows it), and nothing else
    names = built.manifest["metadata"]["index"]["objects"]
    assert set(names) == set(dict(built.documents)) | {pack_key(1)}
    for key, data in built.documents:
        assert key.endswith(".json.gz.age") and is_sealed(data)
        assert not any(s in key for s in secrets)
        assert not any(s.encode() in data for s in secrets)
    assert not any(s in encode_manifest(built.manifest).decode() for s in secrets[:-3])
    assert f.path not in encode_manifest(built.manifest).decode()
    assert f.sha256 not in encode_manifest(built.manifest).decode()
    top_key = next(
        k
        for k, v in lists.items()
        if "parts" in decode_document_sealed(v, "gzip", "age", k, identities)
    )
    top = decode_document_sealed(lists[top_key], "gzip", "age", top_key, identities)
    assert all(p["encryption"] == "age" and p["key"] in lists for p in top["parts"])
    await write_upload(target, SID, UP1, built)
    manifest = json.loads(b"".join([p async for p in target.read(manifest_key(SID, UP1))]))
    with pytest.raises(IdentityNeeded):
        await read_entries(target, manifest, system_id=SID)
    (back,), _ = await sealed_files(target, manifest, identities)
    assert back.chunks == tuple(chunks)
    # a change in the middle: only the top-level list and the changed part are new
    changed = list(chunks)
    changed[1000] = chunk(1000, "v2", enc="age")
    again = sealed([big(changed)], UP2, built.document_keys)
    # (the cuts follow a random name key here: a changed cut may rarely move the next one)
    assert 2 <= len([k for k, _ in again.documents if "/chunklists/" in k]) <= 5
    # prune reads the upload's readable objects list, with or without the identity: the
    # sealed parts, the lists and the pack are live, and no sealed document is read
    for ids in (identities, None):
        loaded = await load_for_prune(target, SID, identities=ids)
        (m,) = loaded.manifests
        assert built.document_keys <= m.refs.objects and pack_key(1) in m.refs.objects
        assert set(top_key_parts(top)) <= m.refs.objects and m.refs.sealed
        assert loaded.documents == {}


def top_key_parts(top: dict[str, Any]) -> list[str]:
    return [p["key"] for p in top["parts"]]


# ---- prune: the parts are live objects of every upload that names them ----------------


def test_prune_refs_name_the_top_list_and_its_parts() -> None:
    chunks = [chunk(i) for i in range(N)]
    built = build_manifest2(
        system_id=SID, upload_id=UP1, files=[big(chunks)], skipped={}, use_index=True
    )
    docs = {k: decode_document(v, "gzip", k, 1 << 26) for k, v in built.documents}
    given: dict[str, Any] = {}
    rounds = 0
    while need := documents_needed(built.manifest, given):
        given |= {k: docs[k] for k in need}
        rounds += 1
    assert rounds == 3 and set(given) == set(docs) == built.document_keys
    key = manifest_key(SID, UP1)
    refs = manifest_refs(UP1, key, built.manifest, given)
    top = next(k for k, d in docs.items() if "parts" in d)
    parts = {p["key"] for p in docs[top]["parts"]}
    assert built.document_keys <= refs.objects
    assert refs.children[top] == parts
    assert set(refs.chunks) == parts  # each part holds its own chunks
    assert {c.offset for c in refs.chunk_refs()} == {c.offset for c in chunks}
    assert len(list(refs.chunk_refs())) == N
