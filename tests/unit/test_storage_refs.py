"""Chunk refs as the contract spells them: JSON round trip and strict validation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from akoshad.errors import AkoshadError
from akoshad.storage.errors import RefError
from akoshad.storage.refs import (
    MAX_CHUNK_SIZE,
    MAX_INLINE_PART_BYTES,
    ChunkListRef,
    ChunkRef,
    IndexPartRef,
    check_file_chunks,
    chunk_list_from_json,
    chunks_from_json,
    inline_part_json,
)

SHA = "0123456789abcdef" * 4
KEY = "systems/host-1/packs/ab/" + "ab" * 32


def good(**over: Any) -> dict[str, Any]:
    ref: dict[str, Any] = {
        "sha256": SHA,
        "size": 1000,
        "key": KEY,
        "offset": 4096,
        "length": 400,
        "compression": "zstd",
        "encryption": "none",
    }
    ref.update(over)
    return ref


def test_refs_read_back_share_their_pack_key_and_codec_names() -> None:
    """An upload of 100,000 files read back (uploads, verify, restore) held a pack key and
    two codec names of their own for every chunk, as the JSON spells them out: parsed refs
    share one string each."""
    a, b = (json.loads(json.dumps(good())) for _ in range(2))
    assert a["key"] is not b["key"]
    ra, rb = ChunkRef.from_json(a), ChunkRef.from_json(b)
    assert ra == rb and ra.key is rb.key
    assert ra.compression is rb.compression and ra.encryption is rb.encryption


def test_round_trip_keeps_the_contract_fields_in_order() -> None:
    ref = ChunkRef.from_json(good())
    assert list(ref.to_json()) == [
        "sha256",
        "size",
        "key",
        "offset",
        "length",
        "compression",
        "encryption",
    ]
    assert ChunkRef.from_json(json.loads(json.dumps(ref.to_json()))) == ref
    assert ref.end == 4496


@given(
    size=st.integers(0, MAX_CHUNK_SIZE),
    offset=st.integers(0, 2**40),
    comp=st.sampled_from(["gzip", "zstd", "none"]),
    enc=st.sampled_from(["none", "age"]),
    sha=st.binary(min_size=32, max_size=32).map(bytes.hex),
)
def test_any_valid_ref_round_trips(size: int, offset: int, comp: str, enc: str, sha: str) -> None:
    length = size if (comp, enc) == ("none", "none") else max(1, size // 2) if size else 0
    ref = ChunkRef(sha, size, KEY, offset, length, comp, enc)  # type: ignore[arg-type]
    assert ChunkRef.from_json(ref.to_json()) == ref


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"sha256": SHA.upper()}, "sha256 must be 64 lowercase hex"),
        ({"sha256": SHA[:-1]}, "sha256 must be 64 lowercase hex"),
        ({"sha256": 5}, "sha256 must be 64 lowercase hex"),
        ({"size": True}, "size must be an integer"),
        ({"size": 1.0}, "size must be an integer"),
        ({"size": -1}, "size must not be negative"),
        ({"size": MAX_CHUNK_SIZE + 1}, "size .* exceeds the limit"),
        ({"offset": -5}, "offset must not be negative"),
        ({"offset": "0"}, "offset must be an integer"),
        ({"offset": 5 * 1024**4}, "offset \\+ length exceeds"),
        ({"length": -1}, "length must not be negative"),
        ({"length": 1000 + 70000}, "length .* exceeds the limit"),
        ({"length": 0}, "length 0 for a chunk of 1000 bytes"),
        ({"compression": "none"}, "length 400 differs from size 1000"),
        ({"compression": "lz4"}, "compression must be one of gzip|zstd|none"),
        ({"encryption": "gpg"}, "encryption must be one of none|age"),
        ({"key": ""}, "key must be a non-empty string"),
        ({"key": 3}, "key must be a non-empty string"),
        ({"key": "../etc/passwd"}, "not a safe relative object key"),
        ({"key": "/abs/key"}, "not a safe relative object key"),
        ({"key": "a//b"}, "not a safe relative object key"),
        ({"key": "a/./b"}, "not a safe relative object key"),
        ({"key": "a/b\\c"}, "not a safe relative object key"),
        ({"key": "a/b\nc"}, "not a safe relative object key"),
        ({"key": "k" * 1025}, "key longer than"),
        ({"extra": 1}, "unknown field extra"),
    ],
)
def test_bad_fields_raise_one_clear_error(over: dict[str, Any], message: str) -> None:
    with pytest.raises(RefError, match=message):
        ChunkRef.from_json(good(**over))


def test_missing_fields_and_non_objects() -> None:
    ref = good()
    del ref["offset"], ref["encryption"]
    with pytest.raises(RefError, match="missing field offset, encryption"):
        ChunkRef.from_json(ref)
    with pytest.raises(RefError, match="expected an object, got list"):
        ChunkRef.from_json([SHA])


def test_constructor_validates_too() -> None:
    with pytest.raises(RefError):
        ChunkRef(SHA, 10, KEY, 0, 10, "zstd", "rsa")  # type: ignore[arg-type]
    assert issubclass(RefError, AkoshadError) and RefError.exit_code == 1


def test_lists_name_the_bad_item() -> None:
    items = [good(), good(offset=-1)]
    with pytest.raises(RefError, match=r"^chunks\[1\]: offset must not be negative"):
        chunks_from_json(items)
    with pytest.raises(RefError, match="expected a list"):
        chunks_from_json({"chunks": []})
    with pytest.raises(RefError, match="exceed the limit"):
        chunks_from_json([good()] * 3, max_chunks=2)
    assert chunk_list_from_json({"chunks": [good()]}) == [ChunkRef.from_json(good())]
    with pytest.raises(RefError, match=r"chunk list.chunks\[0\]: missing field"):
        chunk_list_from_json({"chunks": [{}]})


def test_file_sizes_must_add_up() -> None:
    chunks = chunks_from_json([good(), good(offset=0, size=24, length=24, compression="none")])
    check_file_chunks(chunks, 1024)
    with pytest.raises(RefError, match="add up to 1024, the file has 1025"):
        check_file_chunks(chunks, 1025, "reflection.duckdb")


def test_chunk_list_and_index_part_refs() -> None:
    cl = ChunkListRef.from_json({"key": "systems/s/chunklists/ab/x.json.gz", "compression": "gzip"})
    assert ChunkListRef.from_json(cl.to_json()) == cl
    part = {"key": "systems/s/index/ab/y.json.gz", "compression": "gzip", "encryption": "age"}
    assert IndexPartRef.from_json(part).to_json() == part
    with pytest.raises(RefError, match="chunk_list: compression"):
        ChunkListRef.from_json({"key": "a", "compression": "brotli"})
    with pytest.raises(RefError, match="index part: unknown field size"):
        IndexPartRef.from_json({**part, "size": 1})
    with pytest.raises(RefError, match="index part: key"):
        IndexPartRef("../x", "gzip", "none")


INLINE_NAME = "systems/s/index/ab/" + "ab" * 32 + ".json.gz.age"


def inline_part(data: bytes = b"age-encryption.org/v1 sealed", **over: Any) -> dict[str, Any]:
    return {**inline_part_json(INLINE_NAME, data, "gzip"), **over}


def test_an_inline_index_part_round_trips_its_sealed_bytes() -> None:
    part = inline_part(b"\x00\xffsealed")
    ref = IndexPartRef.from_json(part)
    assert (ref.key, ref.inline, ref.encryption) == (INLINE_NAME, b"\x00\xffsealed", "age")
    assert ref.to_json() == part
    most = b"x" * MAX_INLINE_PART_BYTES
    assert IndexPartRef.from_json(inline_part(most)).inline == most


@pytest.mark.parametrize(
    ("part", "error"),
    [
        (inline_part(inline="AAA*"), "inline is not valid base64"),
        (inline_part(inline="AA AA"), "inline is not valid base64"),
        (inline_part(inline="QR=="), "inline is not valid base64"),  # not canonical
        (inline_part(inline="é"), "inline is not valid base64"),
        (inline_part(inline=12), "inline must be a base64 string"),
        (inline_part(inline=""), "inline holds 0 bytes"),
        (inline_part(b"x" * (MAX_INLINE_PART_BYTES + 1)), "inline holds 65537 bytes"),
        (inline_part(inline="A" * 200_000), "inline is over 65536 bytes"),
        (inline_part(key="systems/s/index/ab/y.json.gz.age"), "unknown field key"),
        (inline_part(size=1), "unknown field size"),
        (inline_part(encryption="none"), "an inline part must be sealed"),
        (inline_part(name="../x"), "not a safe relative object key"),
        ({k: v for k, v in inline_part().items() if k != "name"}, "missing field name"),
    ],
)
def test_a_bad_inline_index_part_is_refused_with_one_line(part: dict[str, Any], error: str) -> None:
    with pytest.raises(RefError, match=error):
        IndexPartRef.from_json(part, "metadata.index.parts[0]")
