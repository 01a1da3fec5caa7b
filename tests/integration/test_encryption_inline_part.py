"""An encrypted upload of a small store holds its one sealed index part in the manifest
(``inline``): a prune never deletes what such an upload references, with the identity,
with the daemon's copies of what it sealed, and with neither; a repack rewrites the part
inline again; a bucket that mixes uploads made before (a stored sealed part) and after
prunes and restores alike. Real CLI runs on the local target, every kept upload restored
byte for byte with the identity."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import shutil
from pathlib import Path
from typing import Any

from akoshad.manifest.layout import encode_manifest
from akoshad.storage.crypto import load_identity, write_new_identity
from akoshad.storage.document_copies import DIR_NAME
from akoshad.targets.local import LocalTarget
from tests.helpers import akoshad, base_env, manifests, write_config
from tests.sealed_read import restore_sealed

MiB = 1024 * 1024
BIG = 24 * MiB  # about 96 chunks: a stored chunk list, named by an entry of the part
FIRST_HALF = (0, BIG // 2)


def _config(tmp: Path, sid: str, public: str, identity: Path | None, keep: int) -> Path:
    enc: dict[str, Any] = {"recipients": [public]}
    if identity is not None:
        enc["identity_file"] = str(identity)
    return write_config(
        tmp / ("with-id.yaml" if identity else "c.yaml"),
        data_dir=str(tmp / "store"),
        state_dir=str(tmp / "state"),
        local_target_dir=str(tmp / "outbox"),
        socket_path=str(tmp / "s.sock"),
        min_upload_interval_seconds=0,
        encryption=enc,
        retention={"keep_last": keep, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0},
        cloud_sync={"system_id": sid},
    )


class Store:
    """A small store: a big file (a chunk list) and a few notes, uploaded version by
    version; ``versions`` holds every upload's files, oldest first."""

    def __init__(self, tmp: Path, cfg: Path, big: int = BIG) -> None:
        self.tmp, self.cfg = tmp, cfg
        self.rng = random.Random(7)
        self.big = bytearray(self.rng.randbytes(big))
        self.versions: list[dict[str, bytes]] = []

    def upload(self, change: tuple[int, int] | None = None) -> None:
        """Upload the next version; ``change``: the bytes of the big file to change."""
        if change is not None:  # the packs that held them become partly dead
            self.big[change[0] : change[1]] = self.rng.randbytes(change[1] - change[0])
        n = len(self.versions)
        files = {f"notes/n{i}.json": json.dumps({"v": n, "i": i}).encode() for i in range(12)}
        files["big.bin"] = bytes(self.big)
        store = self.tmp / "store"
        shutil.rmtree(store, ignore_errors=True)
        for rel, data in files.items():
            (store / rel).parent.mkdir(parents=True, exist_ok=True)
            (store / rel).write_bytes(data)
        res = akoshad("run", "--once", "--config", str(self.cfg), env=base_env(self.tmp))
        assert res.returncode == 0, res.stderr
        self.versions.append(files)


def _prune(tmp: Path, cfg: Path) -> dict[str, Any]:
    res = akoshad("prune", "--json", "--config", str(cfg), env=base_env(tmp), timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def _kept_restore(tmp: Path, sid: str, identity: Path, versions: list[dict[str, bytes]]) -> None:
    """Every kept upload restores byte for byte (the last ones of ``versions``)."""
    kept = manifests(tmp / "outbox", sid)
    assert kept
    ids = load_identity(identity)
    for manifest, want in zip(kept, versions[-len(kept) :], strict=True):
        got = asyncio.run(restore_sealed(LocalTarget(tmp / "outbox"), manifest, ids))
        assert got == want, manifest["metadata"]["upload_id"]


def _inline(manifest: dict[str, Any]) -> bool:
    """Its one index part is held in it; no list of stored objects names it."""
    index = manifest["metadata"]["index"]
    (part,) = index["parts"]
    return "inline" in part and part["name"] not in index["objects"]


def _to_old_form(outbox: Path, sid: str, position: int) -> None:
    """Make the upload at ``position`` what an akoshad before inline parts wrote: its
    sealed part stored under its name, named by the manifest and its objects list."""
    folder = sorted((outbox / "systems" / sid / "uploads").iterdir())[position]
    manifest = json.loads((folder / "manifest.json").read_text())
    index = manifest["metadata"]["index"]
    (part,) = index["parts"]
    (outbox / part["name"]).parent.mkdir(parents=True, exist_ok=True)
    (outbox / part["name"]).write_bytes(base64.b64decode(part["inline"]))
    index["parts"] = [{"key": part["name"], "compression": "gzip", "encryption": "age"}]
    index["objects"] = sorted([*index["objects"], part["name"]])
    (folder / "manifest.json").write_bytes(encode_manifest(manifest))


def _verify(tmp: Path, cfg: Path) -> None:
    res = akoshad("verify", "--all", "--config", str(cfg), env=base_env(tmp), timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def test_prunes_keep_what_uploads_with_an_inline_part_reference(tmp_path: Path) -> None:
    sid = "enc-inline"
    identity = tmp_path / "id.txt"
    public = write_new_identity(identity)
    cfg = _config(tmp_path, sid, public, None, keep=2)
    with_id = _config(tmp_path, sid, public, identity, keep=2)
    store = Store(tmp_path, cfg)
    store.upload()
    store.upload(change=FIRST_HALF)
    store.upload()
    assert all(_inline(m) for m in manifests(tmp_path / "outbox", sid))
    assert not (tmp_path / "outbox" / "systems" / sid / "index").exists()

    # neither the identity nor the copies: the objects lists alone, packs kept whole
    shutil.move(tmp_path / "state" / DIR_NAME, tmp_path / "copies")
    done = _prune(tmp_path, cfg)
    assert len(done["uploads_removed"]) == 1 and done["packs_repacked"] == 0, done
    assert done["missing"] == [], done
    _kept_restore(tmp_path, sid, identity, store.versions)
    shutil.rmtree(tmp_path / "state" / DIR_NAME, ignore_errors=True)
    shutil.move(tmp_path / "copies", tmp_path / "state" / DIR_NAME)

    # the daemon's copies of what it sealed (inline parts too): a repack, the parts
    # rewritten inline, every kept upload whole
    store.upload(change=FIRST_HALF)
    done = _prune(tmp_path, cfg)
    assert len(done["uploads_removed"]) == 1, done
    assert done["packs_repacked"] >= 1 and done["manifests_rewritten"] >= 1, done
    kept = manifests(tmp_path / "outbox", sid)
    assert all(_inline(m) for m in kept)
    _kept_restore(tmp_path, sid, identity, store.versions)
    again = _prune(tmp_path, cfg)
    assert again["missing"] == [] and again["objects_deleted"] == 0, again

    # the identity: a repack again (the pack the last one wrote is half dead)
    store.upload(change=(BIG // 2, 3 * BIG // 4))
    store.upload()
    shutil.rmtree(tmp_path / "state" / DIR_NAME)
    done = _prune(tmp_path, with_id)
    assert len(done["uploads_removed"]) == 2 and done["packs_repacked"] >= 1, done
    assert all(_inline(m) for m in manifests(tmp_path / "outbox", sid))
    _kept_restore(tmp_path, sid, identity, store.versions)
    assert _prune(tmp_path, cfg)["missing"] == []
    _verify(tmp_path, with_id)


def test_a_bucket_of_old_and_new_uploads_prunes_and_restores(tmp_path: Path) -> None:
    """Uploads made before inline parts (a stored sealed part) beside new ones: read,
    repacked and rewritten (the old one stored again, the new ones inline), pruned."""
    sid = "enc-inline-mixed"
    identity = tmp_path / "id.txt"
    public = write_new_identity(identity)
    cfg = _config(tmp_path, sid, public, None, keep=3)
    with_id = _config(tmp_path, sid, public, identity, keep=3)
    store = Store(tmp_path, cfg)
    store.upload()
    store.upload(change=FIRST_HALF)
    _to_old_form(tmp_path / "outbox", sid, 0)
    _to_old_form(tmp_path / "outbox", sid, 1)
    store.upload()
    store.upload()
    _kept_restore(tmp_path, sid, identity, store.versions)  # all four, old and new
    _verify(tmp_path, with_id)

    done = _prune(tmp_path, with_id)  # drops the first; its half-dead pack repacked
    assert len(done["uploads_removed"]) == 1 and done["packs_repacked"] >= 1, done
    old, *new = manifests(tmp_path / "outbox", sid)
    assert "key" in old["metadata"]["index"]["parts"][0] and all(_inline(m) for m in new)
    _kept_restore(tmp_path, sid, identity, store.versions)
    assert _prune(tmp_path, cfg)["missing"] == []

    store.upload()  # the old-form upload dropped, without the identity or the copies
    shutil.rmtree(tmp_path / "state" / DIR_NAME)
    done = _prune(tmp_path, cfg)
    assert len(done["uploads_removed"]) == 1 and done["missing"] == [], done
    assert all(_inline(m) for m in manifests(tmp_path / "outbox", sid))
    assert not list((tmp_path / "outbox" / "systems" / sid / "index").rglob("*.age"))
    _kept_restore(tmp_path, sid, identity, store.versions)
    _verify(tmp_path, with_id)


def test_uploads_held_under_an_earlier_recipient_list_are_not_rewritten(tmp_path: Path) -> None:
    """The identity opens the inline parts sealed to the earlier recipient too, but their
    names are not the current name key's: those uploads stay as they are (a rewritten part
    would be sealed to the recipient configured now)."""
    sid = "enc-inline-old-recipients"
    old_id, new_id = tmp_path / "old.txt", tmp_path / "new.txt"
    old, new = write_new_identity(old_id), write_new_identity(new_id)
    both = tmp_path / "both.txt"
    both.write_text(old_id.read_text() + new_id.read_text())
    both.chmod(0o600)
    # no chunk list: the inline part is the one sealed document of each upload
    store = Store(tmp_path, _config(tmp_path, sid, old, None, keep=2), big=6 * MiB)
    store.upload()
    store.upload(change=(0, 3 * MiB))
    store.cfg = _config(tmp_path, sid, new, both, keep=2)
    store.upload()  # under the new recipient's name key
    before = manifests(tmp_path / "outbox", sid)[1]
    done = _prune(tmp_path, store.cfg)
    assert len(done["uploads_removed"]) == 1 and done["manifests_rewritten"] == 0, done
    kept_old, _ = manifests(tmp_path / "outbox", sid)
    assert kept_old == before and _inline(kept_old)
    target = LocalTarget(tmp_path / "outbox")
    got = asyncio.run(restore_sealed(target, kept_old, load_identity(old_id)))
    assert got == store.versions[1]
    _kept_restore(tmp_path, sid, both, store.versions)


def test_a_prune_that_needs_an_identity_set_but_not_there_says_why(tmp_path: Path) -> None:
    """Uploads without an objects list (an earlier akoshad) need the identity to be pruned;
    ``identity_file`` set to a path where no file is: the prune said "reading it needs
    encryption.identity_file (set it to ...)", as if none were set (why it could not be
    read went only to a log ``prune`` by hand does not show). It names the file and why."""
    sid = "enc-identity-gone"
    public = write_new_identity(tmp_path / "id.txt")
    cfg = _config(tmp_path, sid, public, tmp_path / "moved-away.txt", keep=1)
    store = Store(tmp_path, cfg, big=MiB)
    store.upload()
    store.upload(change=FIRST_HALF)
    for folder in (tmp_path / "outbox" / "systems" / sid / "uploads").iterdir():
        manifest = json.loads((folder / "manifest.json").read_text())
        del manifest["metadata"]["index"]["objects"]
        (folder / "manifest.json").write_bytes(encode_manifest(manifest))
    shutil.rmtree(tmp_path / "state" / DIR_NAME)
    before = sorted((tmp_path / "outbox").rglob("*"))
    res = akoshad("prune", "--json", "--config", str(cfg), env=base_env(tmp_path))
    assert res.returncode == 1, res.stdout + res.stderr
    result = json.loads(res.stdout)
    (problem,) = result["problems"]
    assert result["needs_identity"] is True and "is encrypted: reading it needs" in problem
    assert f"encryption.identity_file {tmp_path / 'moved-away.txt'} does not exist" in problem
    assert problem.endswith("; nothing deleted")
    assert sorted((tmp_path / "outbox").rglob("*")) == before
