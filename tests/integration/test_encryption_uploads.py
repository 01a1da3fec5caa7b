"""Encrypted uploads, end to end (``akoshad run --once``, real SeaweedFS and the local
target): nothing readable in the target without the identity shows a store file's name, a
plaintext SHA-256 of a file or chunk, or a marker planted in the files; the identity gives
the store back byte for byte; a changed recipient list makes a new name key."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import random
import shutil
import sqlite3
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from akoshad.manifest.layout import validate_manifest
from akoshad.storage.crypto import (
    IdentityNeeded,
    NotForThisIdentity,
    is_sealed,
    load_identity,
    write_new_identity,
)
from akoshad.storage.document_copies import DIR_NAME
from akoshad.targets import make_target
from akoshad.targets.local import LocalTarget
from tests.helpers import (
    akoshad,
    base_env,
    manifests,
    start_daemon,
    stop_daemon,
    wait_for,
    write_config,
)
from tests.s3server import WeedServer
from tests.sealed_read import restore_sealed, sealed_files
from tests.storegen import make_store

if sys.version_info >= (3, 14):  # pragma: no cover
    from compression import zstd
else:
    from backports import zstd

MARKERS = [f"MARKER-{i}-{random.Random(i).randbytes(8).hex()}" for i in range(5)]
MiB = 1024 * 1024


def plant_store(root: Path) -> None:
    """A session-buddy-like store with markers in small, large and nested files."""
    make_store(root, conversations=10)
    (root / "notes").mkdir()
    (root / "notes" / "plans-for-launch.md").write_text(f"# plans\n{MARKERS[0]}\n" * 50)
    (root / "sessions" / "session-0" / "state.json").write_text(
        json.dumps({"token": MARKERS[1], "notes": [MARKERS[2]] * 10})
    )
    rng = random.Random(7)
    words = [rng.randbytes(4).hex() for _ in range(4096)]
    lines = [" ".join(rng.choices(words, k=12)) for _ in range(200_000)]  # ~20 MiB
    lines[1234] = MARKERS[3]
    lines[150_000] = MARKERS[4]
    (root / "big-transcript.log").write_text("\n".join(lines))


def forms(body: bytes) -> list[bytes]:
    """``body`` and what decompresses from any gzip or zstd frame found inside it."""
    out = [body]
    for magic, decode in ((b"\x1f\x8b\x08", _gunzip), (b"\x28\xb5\x2f\xfd", _unzstd)):
        at = body.find(magic)
        while at != -1 and len(out) < 64:
            decoded = decode(body[at:])
            if decoded:
                out.append(decoded)
            at = body.find(magic, at + 1)
    return out


def _gunzip(data: bytes) -> bytes:
    try:
        return zlib.decompressobj(31).decompress(data, 256 * MiB)
    except zlib.error:
        return b""


def _unzstd(data: bytes) -> bytes:
    try:
        return bytes(zstd.ZstdDecompressor().decompress(data, 256 * MiB))
    except zstd.ZstdError:
        return b""


def secrets_of(root: Path, plain_hashes: set[str]) -> list[bytes]:
    """What must not show: every store path and file name, the markers, the hashes."""
    out: set[bytes] = {m.encode() for m in MARKERS}
    for p in root.rglob("*"):
        if p.is_file():
            rel = p.relative_to(root).as_posix()
            out |= {rel.encode(), p.name.encode()}
            plain_hashes.add(hashlib.sha256(p.read_bytes()).hexdigest())
    out |= {h.encode() for h in plain_hashes}
    return sorted(out)


def assert_nothing_readable(objects: dict[str, bytes], forbidden: list[bytes]) -> None:
    for key, body in objects.items():
        for needle in forbidden:
            assert needle.decode() not in key, (key, needle)
            for form in forms(body):
                assert needle not in form, (key, needle[:40])


def encryption_config(tmp: Path, system_id: str, recipients: list[str], **extra: Any) -> Path:
    tree: dict[str, Any] = {
        "data_dir": str(tmp / "store"),
        "state_dir": str(tmp / "state"),
        "local_target_dir": str(tmp / "outbox"),
        "socket_path": str(tmp / "s.sock"),
        "min_upload_interval_seconds": 0,
        "encryption": {"recipients": recipients, "encrypt_memories": True},
    }
    tree.update(extra)
    tree.setdefault("cloud_sync", {"system_id": system_id})
    return write_config(tmp / "c.yaml", **tree)


@pytest.mark.s3
def test_encrypted_bucket_reveals_nothing_and_restores_with_the_identity(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    plant_store(tmp_path / "store")
    public = write_new_identity(tmp_path / "id.txt")
    other = write_new_identity(tmp_path / "other.txt")
    cfg = encryption_config(tmp_path, system_id, [public], cloud_sync=s3.cloud_sync(system_id))
    res = akoshad("run", "--once", "--config", str(cfg), env=base_env(tmp_path), timeout=300)
    assert res.returncode == 0, res.stderr

    client = s3.client()
    keys = s3.keys(f"systems/{system_id}/")
    objects = {k: client.get_object(Bucket=s3.bucket, Key=k)["Body"].read() for k in keys}
    (mkey,) = [k for k in keys if k.endswith("/manifest.json")]
    manifest = json.loads(objects[mkey])
    assert validate_manifest(manifest) == []  # still Akosha's SystemMemoryUploadManifest
    assert manifest["files"] == ["memories.json.age"]
    assert manifest["conversation_count"] == 0
    metadata = manifest["metadata"]
    assert "files" not in metadata and "skipped" not in metadata
    assert all(p["encryption"] == "age" for p in metadata["index"]["parts"])
    # readable in the manifest: the keyed names of what the upload references (a prune
    # needs no identity), every one of them an object in the bucket
    names = metadata["index"]["objects"]
    assert set(names) <= set(keys) and any("/packs/" in k for k in names)
    parts = metadata["index"]["parts"]
    assert set(names) >= {p["key"] for p in parts if "key" in p}
    # a small store's sealed entry list is held in the manifest: no object, named nowhere
    assert any("inline" in p for p in parts)
    assert all(p["name"] not in keys and p["name"] not in names for p in parts if "inline" in p)
    sealed = [k for k in keys if not k.endswith(("manifest.json", "owner.json"))]
    assert sealed and all(is_sealed(objects[k][:32]) or "/packs/" in k for k in sealed)

    identity = load_identity(tmp_path / "id.txt")
    target = make_target("cloud", s3.settings(system_id, home=tmp_path))

    async def read_back() -> tuple[dict[str, bytes], set[str]]:
        await target.start()
        try:
            files, _ = await sealed_files(target, manifest, identity)
            hashes = {f.sha256 for f in files} | {c.sha256 for f in files for c in f.chunks}
            assert any(len(f.chunks) > 64 for f in files)  # a sealed chunk list was read
            with pytest.raises(IdentityNeeded):
                await restore_sealed(target, manifest, None)
            with pytest.raises(NotForThisIdentity):
                await restore_sealed(target, manifest, load_identity(tmp_path / "other.txt"))
            return await restore_sealed(target, manifest, identity), hashes
        finally:
            await target.close()

    restored, hashes = asyncio.run(read_back())
    assert other != public
    on_disk = {
        p.relative_to(tmp_path / "store").as_posix(): p.read_bytes()
        for p in (tmp_path / "store").rglob("*")
        if p.is_file()
    }
    assert set(restored) == set(on_disk)
    for path, data in on_disk.items():
        if not path.endswith((".db", ".duckdb")):  # databases are restored as captured
            assert restored[path] == data, path
    assert_nothing_readable(objects, secrets_of(tmp_path / "store", hashes))

    # the commands: without the identity or with another one, one line and exit 1
    env = base_env(tmp_path)
    newest = manifest["metadata"]["upload_id"]
    for extra, said in [
        ((), "is encrypted: pass --identity or set encryption.identity_file"),
        (("--identity", str(tmp_path / "other.txt")), "is encrypted to other keys"),
    ]:
        for cmd in (
            ("verify",),
            ("restore", "--latest", "--dest", str(tmp_path / "no")),
            ("drill",),
        ):
            res = akoshad(*cmd, "--config", str(cfg), *extra, env=env, timeout=300)
            assert res.returncode == 1, (cmd, res.stdout, res.stderr)
            assert said in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
            # the upload it picked is named: which key it needs is then clear
            assert f"akoshad: upload {newest} {said}" in res.stderr, res.stderr
            assert MARKERS[0] not in res.stdout + res.stderr
    assert not (tmp_path / "no").exists() or not any((tmp_path / "no").iterdir())
    mine = ("--identity", str(tmp_path / "id.txt"))
    res = akoshad("verify", "--config", str(cfg), *mine, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr  # the ledger check included
    assert "ledger:" in res.stdout and "problem" not in res.stdout, res.stdout
    dest = tmp_path / "restored"
    res = akoshad("restore", "--latest", "--dest", str(dest), "--config", str(cfg), *mine, env=env)
    assert res.returncode == 0, res.stderr
    back = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert back == restored
    res = akoshad("drill", "--config", str(cfg), *mine, env=env, timeout=300)
    assert res.returncode == 0 and "all well" in res.stdout, res.stdout + res.stderr


def _outbox_objects(outbox: Path) -> dict[str, bytes]:
    return {
        p.relative_to(outbox).as_posix(): p.read_bytes() for p in outbox.rglob("*") if p.is_file()
    }


def _packs(target: LocalTarget, manifest: dict[str, Any], identity: Any) -> set[str]:
    async def run() -> set[str]:
        files, _ = await sealed_files(target, manifest, identity)
        return {c.key for f in files for c in f.chunks}

    return asyncio.run(run())


def test_local_target_switch_on_then_change_recipients(tmp_path: Path) -> None:
    """Unencrypted, then encrypted to A (every file sent again sealed, nothing shared with
    the clear upload), then to B (a new name key: new uploads readable with B alone, the
    A upload still with A)."""
    plant_store(tmp_path / "store")
    env = base_env(tmp_path)
    outbox = tmp_path / "outbox"
    a = write_new_identity(tmp_path / "a.txt")
    b = write_new_identity(tmp_path / "b.txt")
    sid = "enc-local"

    def run(recipients: list[str]) -> dict[str, Any]:
        extra = {"encryption": {"recipients": recipients}} if recipients else {"encryption": {}}
        cfg = encryption_config(tmp_path, sid, recipients, **extra)
        res = akoshad("run", "--once", "--config", str(cfg), env=env, timeout=300)
        assert res.returncode == 0, res.stderr
        return manifests(outbox, sid)[-1]

    clear = run([])
    assert clear["metadata"]["format"] == 2 and "files" in clear["metadata"]
    (tmp_path / "store" / "notes" / "new.md").write_text("a change")
    first = run([a])  # the store is unchanged but for one file: all sent again, sealed
    assert len(manifests(outbox, sid)) == 2
    target = LocalTarget(outbox)
    ida, idb = load_identity(tmp_path / "a.txt"), load_identity(tmp_path / "b.txt")
    packs_a = _packs(target, first, ida)
    clear_packs = {c["key"] for e in clear["metadata"]["files"] for c in e.get("chunks", [])}
    assert packs_a and not packs_a & clear_packs
    with pytest.raises(NotForThisIdentity):
        _packs(target, first, idb)

    (tmp_path / "store" / "notes" / "new.md").write_text("another change")
    second = run([b])
    packs_b = _packs(target, second, idb)
    assert packs_b and not packs_b & packs_a  # no chunk shared with the old name key
    with pytest.raises(NotForThisIdentity):
        _packs(target, second, ida)
    keys = sorted((outbox / "systems" / sid / "keys").iterdir())
    assert len(keys) == 2 and all(is_sealed(k.read_bytes()) for k in keys)

    async def both() -> tuple[dict[str, bytes], dict[str, bytes]]:
        return await restore_sealed(target, first, ida), await restore_sealed(target, second, idb)

    old, new = asyncio.run(both())
    assert old["notes/new.md"] == b"a change" and new["notes/new.md"] == b"another change"
    assert new["big-transcript.log"] == (tmp_path / "store" / "big-transcript.log").read_bytes()
    (tmp_path / "store" / "notes" / "new.md").write_text("third")
    third = run([b])  # same key: only the changed file's chunk is new
    assert len(_packs(target, third, idb) - packs_b) == 1
    documents = [k for k in _outbox_objects(outbox) if "/index/" in k or "/chunklists/" in k]
    assert all(is_sealed((outbox / k).read_bytes()) for k in documents if k.endswith(".age"))
    assert len([k for k in documents if not k.endswith(".age")]) == 1  # the clear chunk list
    # verify --all with B alone: A's upload is named, not verified; all the others are
    cfg = encryption_config(tmp_path, sid, [b])
    verify = akoshad(
        "verify", "--all", "--config", str(cfg), "--identity", str(tmp_path / "b.txt"), env=env
    )
    assert verify.returncode == 1, verify.stderr
    lines = verify.stdout.splitlines()
    ids = sorted(p.name for p in (outbox / "systems" / sid / "uploads").iterdir())
    assert len(ids) == 4, ids  # clear, A, B, B
    assert any(line.startswith(f"{ids[1]}: not verified: ") for line in lines), lines
    for upload_id in (ids[0], ids[2], ids[3]):
        assert any(line.startswith(f"{upload_id}: ") and line.endswith(", ok") for line in lines)


@pytest.mark.parametrize("earlier_state", [False, True])
def test_a_change_of_the_encryption_sends_an_unchanged_store_again(
    tmp_path: Path, earlier_state: bool
) -> None:
    """Encryption turned on, the recipients changed, encryption turned off, the store never
    touched: each ``run --once`` after a change makes an upload that the new settings alone
    read (before, it found nothing changed and the newest upload stayed readable only by
    the identity the user may have changed keys to be rid of); the run after it sends
    nothing. ``earlier_state``: before each run the state holds no record of how the last
    upload was sealed, as a state kept by an akoshad that made none (it is read from the
    ledger, the chunk table and the name keys: the same settings send nothing, a change
    sends the store again)."""
    make_store(tmp_path / "store", conversations=5)
    (tmp_path / "store" / "notes.md").write_text("kept as it is\n" * 100)
    env = base_env(tmp_path)
    outbox = tmp_path / "outbox"
    a = write_new_identity(tmp_path / "a.txt")
    b = write_new_identity(tmp_path / "b.txt")
    sid = "enc-switch"
    target = LocalTarget(outbox)
    ida, idb = load_identity(tmp_path / "a.txt"), load_identity(tmp_path / "b.txt")

    def run(recipients: list[str], uploads: int) -> tuple[dict[str, Any], str]:
        cfg = encryption_config(tmp_path, sid, recipients)
        db = tmp_path / "state" / "state.db"
        if earlier_state and db.exists():
            with sqlite3.connect(db) as con:
                con.execute("DELETE FROM kv WHERE key LIKE 'sealed_as:%'")
            con.close()
        res = akoshad("run", "--once", "--config", str(cfg), env=env, timeout=300)
        assert res.returncode == 0, res.stderr
        made = manifests(outbox, sid)
        assert len(made) == uploads, res.stderr
        return made[-1], res.stderr

    clear, _ = run([], 1)
    _, said = run([], 1)  # nothing changed, nothing sent
    assert "encryption settings changed" not in said
    to_a, said = run([a], 2)
    assert "encryption settings changed" in said, said
    files = asyncio.run(restore_sealed(target, to_a, ida))
    assert files["notes.md"] == (tmp_path / "store" / "notes.md").read_bytes()
    assert set(files) == {e["path"] for e in clear["metadata"]["files"]}
    run([a], 2)  # recorded: the next run finds nothing to send
    to_b, _ = run([b], 3)
    assert asyncio.run(restore_sealed(target, to_b, idb))["notes.md"].startswith(b"kept")
    with pytest.raises(NotForThisIdentity):
        asyncio.run(restore_sealed(target, to_b, ida))
    clear_again, said = run([], 4)
    assert "encryption settings changed" in said
    # turned off: a WARNING that says the store goes up in clear now
    assert "WARNING" in said and "sent again, NOT encrypted" in said, said
    assert {e["path"] for e in clear_again["metadata"]["files"]} == set(files)
    run([], 4)


def _strip_objects_lists(outbox: Path, sid: str, state: Path | None = None) -> None:
    """Make every manifest in ``outbox`` as an earlier akoshad wrote it: no objects list
    (and, given the ``state``, no copies of the sealed documents: it kept none)."""
    if state is not None:
        shutil.rmtree(state / DIR_NAME)
    for path in (outbox / "systems" / sid / "uploads").glob("*/manifest.json"):
        doc = json.loads(path.read_text())
        del doc["metadata"]["index"]["objects"]
        path.write_text(json.dumps(doc))


def _prunable(tmp_path: Path, sid: str) -> tuple[Path, Path, str, dict[str, int]]:
    """Three encrypted uploads (each with a skipped file) of a store under ``tmp_path``
    for ``sid``, kept by nothing but ``keep_last: 1``: (store, config, recipient, retention)."""
    store = tmp_path / "store"
    (store / "notes").mkdir(parents=True)
    os.close(os.open(bytes(store / "notes") + b"/bad-\xff.txt", os.O_CREAT | os.O_WRONLY))
    public = write_new_identity(tmp_path / "id.txt")
    retention = {"keep_last": 1, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0}
    cfg = encryption_config(tmp_path, sid, [public], retention=retention)
    for i in range(3):
        (store / "notes" / "n.md").write_text(f"version {i} {MARKERS[0]}" * 1000)
        res = akoshad("run", "--once", "--config", str(cfg), env=base_env(tmp_path), timeout=120)
        assert "run --once: uploaded" in res.stderr, res.stderr  # exit 1: a file skipped
    assert len(manifests(tmp_path / "outbox", sid)) == 3
    return store, cfg, public, retention


def test_prune_of_encrypted_uploads_needs_no_identity(tmp_path: Path) -> None:
    """Each encrypted upload names the objects it references in a readable list of keyed
    names: a prune without the identity removes the uploads retention drops and their
    objects, and the kept one (with its sealed skip list) restores with the identity."""
    sid = "enc-prune"
    store, cfg, _, _ = _prunable(tmp_path, sid)
    outbox = tmp_path / "outbox"
    before = {p for p in outbox.rglob("*") if p.is_file()}
    res = akoshad("prune", "--config", str(cfg), env=base_env(tmp_path), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    (kept,) = manifests(outbox, sid)
    gone = before - {p for p in outbox.rglob("*") if p.is_file()}
    assert any("/packs/" in str(p) for p in gone), gone  # the dropped versions' chunks
    identity = load_identity(tmp_path / "id.txt")
    target = LocalTarget(outbox)

    async def read() -> tuple[dict[str, bytes], list[Any]]:
        _, skipped = await sealed_files(target, kept, identity)
        return await restore_sealed(target, kept, identity), skipped

    restored, skipped = asyncio.run(read())
    assert restored["notes/n.md"] == (store / "notes" / "n.md").read_bytes()
    assert len(skipped) == 1 and skipped[0]["path"].startswith("notes/bad-"), skipped
    assert "skipped" in kept["metadata"]["index"] and "bad-" not in json.dumps(kept)
    verify = akoshad(
        "verify",
        "--all",
        "--config",
        str(cfg),
        "--identity",
        str(tmp_path / "id.txt"),
        env=base_env(tmp_path),
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_prune_of_earlier_encrypted_uploads_needs_the_identity(tmp_path: Path) -> None:
    """Uploads of an earlier akoshad name no objects list: without the identity a prune
    deletes nothing and says why in one line; with it, the uploads retention drops go."""
    sid = "enc-prune-old"
    _, cfg, public, retention = _prunable(tmp_path, sid)
    outbox = tmp_path / "outbox"
    _strip_objects_lists(outbox, sid, tmp_path / "state")
    env = base_env(tmp_path)
    res = akoshad("prune", "--config", str(cfg), env=env, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "is encrypted" in res.stdout and "nothing deleted" in res.stdout, res.stdout
    assert "Traceback" not in res.stderr
    assert len(manifests(outbox, sid)) == 3
    enc = {"recipients": [public], "identity_file": str(tmp_path / "id.txt")}
    cfg = encryption_config(tmp_path, sid, [public], retention=retention, encryption=enc)
    res = akoshad("prune", "--config", str(cfg), env=env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(manifests(outbox, sid)) == 1


def test_the_copies_this_machine_kept_open_its_uploads_without_the_identity(
    tmp_path: Path,
) -> None:
    """Uploads with no objects list, made by this machine: the copies of their sealed
    documents in its state open them, so a prune without the identity goes on, and the
    kept upload verifies with the identity."""
    sid = "enc-prune-copies"
    _, cfg, public, retention = _prunable(tmp_path, sid)
    outbox = tmp_path / "outbox"
    _strip_objects_lists(outbox, sid)
    env = base_env(tmp_path)
    res = akoshad("prune", "--config", str(cfg), env=env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(manifests(outbox, sid)) == 1
    enc = {"recipients": [public], "identity_file": str(tmp_path / "id.txt")}
    cfg = encryption_config(tmp_path, sid, [public], retention=retention, encryption=enc)
    res = akoshad("verify", "--all", "--config", str(cfg), env=env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_daemon_without_the_identity_records_that_drills_need_it(tmp_path: Path) -> None:
    """A daemon with recipients but no identity uploads encrypted; its drill checks
    nothing and says it needs the identity (not a failure of the upload), once an
    interval; with the identity configured the next daemon's drill finds all well."""
    store = tmp_path / "store"
    (store / "notes").mkdir(parents=True)
    (store / "notes" / "n.md").write_text(MARKERS[0])
    public = write_new_identity(tmp_path / "id.txt")
    env = base_env(tmp_path)
    cfg = encryption_config(tmp_path, "enc-drill", [public], drill_interval_hours=0.001)

    def last_drill() -> dict[str, Any] | None:
        res = akoshad("status", "--json", "--config", str(cfg), env=env, timeout=30)
        return json.loads(res.stdout).get("last_drill") if res.returncode == 0 else None

    def drill_after(at: float) -> dict[str, Any] | None:
        drill = last_drill()
        return drill if drill is not None and drill["at"] > at else None

    proc = start_daemon(cfg, env, tmp_path / "d.log")
    try:
        drill = wait_for(last_drill, 90, interval=0.5)
    finally:
        assert stop_daemon(proc) == 0
    assert drill["ok"] is False and drill["needs_identity"] is True, drill
    (problem,) = drill["problems"]
    assert "this upload is encrypted" in problem
    log = (tmp_path / "d.log").read_text()
    assert "Traceback" not in log and "drill of upload" in log and MARKERS[0] not in log

    enc = {"recipients": [public], "identity_file": str(tmp_path / "id.txt")}
    cfg = encryption_config(
        tmp_path, "enc-drill", [public], drill_interval_hours=0.001, encryption=enc
    )
    proc = start_daemon(cfg, env, tmp_path / "d2.log")
    try:
        good = wait_for(lambda: (d := last_drill()) is not None and d["ok"] and d, 90, interval=0.5)
    finally:
        assert stop_daemon(proc) == 0
    assert good["files"] == 1 and not good.get("needs_identity")

    # an identity_file that does not open the uploads (encrypted to other keys), or that
    # cannot be read: a fault the user must see, not a drill that "needs the identity"
    write_new_identity(tmp_path / "other.txt")
    after = good["at"]
    for name in ("other.txt", "typo.txt"):
        enc = {"recipients": [public], "identity_file": str(tmp_path / name)}
        cfg = encryption_config(
            tmp_path, "enc-drill", [public], drill_interval_hours=0.001, encryption=enc
        )
        proc = start_daemon(cfg, env, tmp_path / f"d-{name}.log")
        try:
            bad = wait_for(functools.partial(drill_after, after), 90, interval=0.5)
            check = akoshad("status", "--check", "--config", str(cfg), env=env, timeout=30)
            safety = json.loads(
                akoshad("status", "--json", "--config", str(cfg), env=env, timeout=30).stdout
            )["safety"]
        finally:
            assert stop_daemon(proc) == 0
        after = bad["at"]
        assert bad["ok"] is False and bad["needs_identity"] is False, bad
        want = "other keys" if name == "other.txt" else "identity_file cannot be used"
        assert want in bad["problems"][0], bad
        assert check.returncode == 1 and safety["safe"] is False, (check.stdout, safety)


async def test_recovery_of_an_encrypted_upload_keeps_it_and_sends_again(tmp_path: Path) -> None:
    """A crash between an encrypted manifest's PUT and the commit: the daemon (no
    identity) cannot read the manifest, so the ledger cannot be committed from it. The
    landed upload is a completed upload all the same: it is kept (never deleted, never a
    crash at start), and the next pass sends the store again, sealed. Both restore."""
    from akoshad.pipeline.recovery import Discarder, Recovery
    from tests.f2_rig import close_rig, killed_before_the_commit, open_sealed_rig

    rig = await open_sealed_rig(tmp_path, "enc-rec")
    try:
        rig.write("notes/a.md", MARKERS[0].encode() * 100)
        (report,) = await rig.sync()
        assert report.upload_id and report.error is None
        first = rig.on_disk()
        await rig.state.transaction(lambda c: killed_before_the_commit(c, rig.plans))
        recovery = Recovery(rig.state, "enc-rec", Discarder("enc-rec"), rig.uploader.sealing)
        await recovery.recover({"local": rig.target})
        assert await rig.uploads() == [report.upload_id]
        assert await rig.state.in_progress_uploads() == []
        rig.write("notes/b.md", b"later")
        (again,) = await rig.sync()
        assert sorted(again.files_uploaded) == ["notes/a.md", "notes/b.md"]
        identity = load_identity(tmp_path / "id.txt")
        kept, newer = await rig.uploads()
        assert kept == report.upload_id
        assert await restore_sealed(rig.target, await rig.manifest(kept), identity) == first
        assert await restore_sealed(rig.target, await rig.manifest(newer), identity) == (
            rig.on_disk()
        )
    finally:
        await close_rig(rig)


async def test_recovery_of_an_encrypted_upload_with_the_identity_commits_it(
    tmp_path: Path,
) -> None:
    """The same crash with the identity readable here: the landed upload is committed from
    its sealed index, so nothing is sent again and the next upload reuses its chunks."""
    from akoshad.pipeline.recovery import Discarder, Recovery
    from tests.f2_rig import close_rig, killed_before_the_commit, open_sealed_rig

    rig = await open_sealed_rig(tmp_path, "enc-rec2", with_identity=True)
    try:
        rig.write("notes/a.md", MARKERS[0].encode() * 100)
        rig.write("big.bin", random.Random(3).randbytes(3 * 1024 * 1024))
        (report,) = await rig.sync()
        assert report.upload_id and report.error is None
        await rig.state.transaction(lambda c: killed_before_the_commit(c, rig.plans))
        recovery = Recovery(rig.state, "enc-rec2", Discarder("enc-rec2"), rig.uploader.sealing)
        await recovery.recover({"local": rig.target})
        assert set(await rig.state.ledger("local")) == {"notes/a.md", "big.bin"}
        rig.write("notes/b.md", b"later")
        (again,) = await rig.sync()
        assert again.files_uploaded == ["notes/b.md"]  # the others known again
        kept, newer = await rig.uploads()
        assert kept == report.upload_id
        identity = load_identity(tmp_path / "id.txt")
        assert await restore_sealed(rig.target, await rig.manifest(newer), identity) == (
            rig.on_disk()
        )
    finally:
        await close_rig(rig)


async def test_format_1_objects_are_sent_again_sealed(tmp_path: Path) -> None:
    """Whole gzip objects of an older akoshad are readable: an encrypted upload never
    points at them; every file is sent again, sealed."""
    from tests.f2_rig import close_rig, open_sealed_rig
    from tests.integration.test_format2_writer import SID, write_format1_upload

    rig = await open_sealed_rig(tmp_path, SID)
    try:
        rig.write("a.json", b'{"a": 1}')
        rig.write("big.bin", MARKERS[3].encode() * 100_000)
        await write_format1_upload(rig, tmp_path / "outbox")
        rig.write("a.json", b'{"a": 2}')
        reports = await rig.sync()
        assert all(r.error is None for r in reports)
        sent = sorted(f for r in reports for f in r.files_uploaded)
        assert sent == ["a.json", "big.bin"]  # big.bin unchanged, but its object is readable
        manifest = await rig.manifest((await rig.uploads())[-1])
        files, _ = await sealed_files(rig.target, manifest, load_identity(tmp_path / "id.txt"))
        assert all(f.whole is None and f.chunks for f in files)
        assert all(c.encryption == "age" for f in files for c in f.chunks)
        restored = await restore_sealed(rig.target, manifest, load_identity(tmp_path / "id.txt"))
        assert restored == rig.on_disk()
    finally:
        await close_rig(rig)
