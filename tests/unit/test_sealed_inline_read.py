"""Reading an index part held in the manifest (``inline``) on the real local target: it
opens with the identity, a wrong identity is told apart from damage as for a stored part,
and a malformed or oversized one refuses the manifest with one line."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from pyrage import x25519

from akoshad.manifest.layout import ManifestError
from akoshad.pipeline.sealed_ledger import sealed_with
from akoshad.pipeline.sealing import Sealing
from akoshad.storage import format2_read
from akoshad.storage.crypto import Identities, NotForThisIdentity, Recipients
from akoshad.storage.documents import DocumentError
from akoshad.storage.format2 import build_manifest2
from akoshad.storage.format2_read import read_entries
from akoshad.storage.name_key import NameKeyCache, load_or_create_name_key, new_name_key
from akoshad.storage.refs import ChunkRef
from akoshad.storage.stored import StoredFile
from akoshad.targets.local import LocalTarget

SID = "host-inline"
UP = "20261204T230000Z-0001"


def keys() -> tuple[Recipients, Identities]:
    ident = x25519.Identity.generate()
    public = str(ident.to_public())
    return Recipients.parse([public]), Identities(Path("id.txt"), (public,), (), (ident,))


def files(n: int = 30) -> list[StoredFile]:
    pack = f"systems/{SID}/packs/ab/{'ab' * 32}"
    out = []
    for i in range(n):
        sha = hashlib.sha256(f"{i}".encode()).hexdigest()
        ref = ChunkRef(sha, 900, pack, i * 1000, 1000, "zstd", "age")
        out.append(StoredFile(f"sessions/s{i:02d}.json", "file", 900, sha, (ref,), mode=0o600))
    return out


def sealed(recipients: Recipients) -> dict[str, Any]:
    built = build_manifest2(
        system_id=SID,
        upload_id=UP,
        files=files(),
        skipped={},
        name_key=new_name_key(SID, recipients),
        recipients=recipients,
    )
    assert built.documents == []  # nothing stored but the manifest
    return built.manifest


def with_part(manifest: dict[str, Any], **over: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(manifest))
    out["metadata"]["index"]["parts"][0].update(over)
    return out


@pytest.fixture
async def target(tmp_path: Path) -> LocalTarget:
    t = LocalTarget(tmp_path / "outbox")
    await t.start()
    return t


async def test_an_inline_part_opens_with_the_identity_and_fetches_nothing(
    target: LocalTarget,
) -> None:
    recipients, identities = keys()
    manifest = sealed(recipients)
    seen: set[str] = set()
    got = await read_entries(target, manifest, documents=seen, identities=identities)
    assert [f.path for f in got] == [f.path for f in files()]
    assert seen == set()  # no stored document read (none named for the listing's sizes)
    with pytest.raises(NotForThisIdentity):
        await read_entries(target, manifest, identities=keys()[1])


async def test_a_damaged_inline_part_is_damage_not_a_wrong_identity(
    target: LocalTarget, tmp_path: Path
) -> None:
    recipients, identities = keys()
    manifest = sealed(recipients)
    raw = bytearray(base64.b64decode(manifest["metadata"]["index"]["parts"][0]["inline"]))
    raw[-5] ^= 0xFF
    flipped = with_part(manifest, inline=base64.b64encode(bytes(raw)).decode())
    with pytest.raises(DocumentError, match="index part"):
        await read_entries(target, flipped, identities=identities)
    # sealed to another key, while the identity opens every name key of the system
    await load_or_create_name_key(target, SID, recipients, identities, NameKeyCache(tmp_path))
    other = sealed(keys()[0])
    with pytest.raises(DocumentError, match="opens every name key of this system"):
        await read_entries(target, other, identities=identities)


async def test_an_upload_sealed_to_other_keys_is_told_without_a_key_that_is_no_object(
    target: LocalTarget,
) -> None:
    """A small store's upload (its index part held in the manifest) read with an identity
    that is no recipient said 'index part systems/.../index/be/<sha>.json.gz.age is
    encrypted to other keys': verify, restore and drill named an object that is not in the
    target (the part is in the manifest). It is said of the upload, as without an identity."""
    other = sealed(keys()[0])
    with pytest.raises(NotForThisIdentity) as info:
        await read_entries(target, other, identities=keys()[1])
    said = str(info.value)
    assert said == "this upload is encrypted to other keys: the identity in id.txt cannot read it"
    assert "index/" not in said


@pytest.mark.parametrize(
    ("over", "error"),
    [
        ({"inline": "not base64!"}, "inline is not valid base64"),
        ({"key": "systems/host-inline/index/ab/x.json.gz.age"}, "unknown field key"),
        ({"name": "systems/other/index/ab/x.json.gz.age"}, "key is not under"),
        ({"encryption": "none"}, "an inline part must be sealed"),
    ],
)
async def test_a_malformed_inline_part_refuses_the_manifest(
    target: LocalTarget, over: dict[str, Any], error: str
) -> None:
    recipients, identities = keys()
    bad = with_part(sealed(recipients), **over)
    with pytest.raises(ManifestError, match=error):
        await read_entries(target, bad, identities=identities)


async def test_an_inline_part_counts_in_the_manifests_document_budget(
    target: LocalTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Budget of exactly the inline part's bytes: the chunk list read after it is over."""
    recipients, identities = keys()
    pack = f"systems/{SID}/packs/cd/{'cd' * 32}"
    refs = tuple(
        ChunkRef(hashlib.sha256(b"%d" % i).hexdigest(), 10, pack, i * 100, 100, "zstd", "age")
        for i in range(70)
    )
    big = StoredFile("big.bin", "file", 700, "e" * 64, refs, mode=0o600)
    built = build_manifest2(
        system_id=SID,
        upload_id=UP,
        files=[*files(), big],
        skipped={},
        name_key=new_name_key(SID, recipients),
        recipients=recipients,
    )
    for key, data in built.documents:  # the chunk list
        await target.put_bytes(key, data, "application/gzip")
    assert len(await read_entries(target, built.manifest, identities=identities)) == 31
    inline = base64.b64decode(built.manifest["metadata"]["index"]["parts"][0]["inline"])
    monkeypatch.setattr(format2_read, "MAX_TOTAL_DOCUMENT_BYTES", len(inline))
    with pytest.raises(ManifestError, match=r"chunk list .* exceed"):
        await read_entries(target, built.manifest, identities=identities)


async def test_the_ledger_proof_reads_an_inline_part(target: LocalTarget) -> None:
    recipients, identities = keys()
    key = new_name_key(SID, recipients)
    built = build_manifest2(
        system_id=SID, upload_id=UP, files=files(), skipped={}, name_key=key, recipients=recipients
    )
    assert await sealed_with(target, SID, built.manifest, Sealing(recipients, key), identities)
    other = Sealing(recipients, new_name_key(SID, recipients))
    assert not await sealed_with(target, SID, built.manifest, other, identities)
