"""Prune of an encrypted target repacks its packs when the identity is configured, and
only then: the rewritten documents are sealed to the same recipients, every kept upload
restores with the identity, the objects list follows the moved chunks (a prune without the
identity afterwards finds nothing missing), and the ledger follows them (the next upload
dedupes against the new pack). Uploads sealed to an earlier recipient list are never
rewritten."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from akoshad.storage.crypto import load_identity, write_new_identity
from akoshad.storage.document_copies import DIR_NAME
from akoshad.targets import make_target
from akoshad.targets.local import LocalTarget
from tests.helpers import akoshad, base_env, manifests, write_config
from tests.prune_cli_child import kill_at_step, paused_at
from tests.s3server import WeedServer
from tests.sealed_read import restore_sealed

MiB = 1024 * 1024
RETENTION = {"keep_last": 1, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0}


def _config(tmp: Path, sid: str, recipients: list[str], identity: Path | None) -> Path:
    enc: dict[str, Any] = {"recipients": recipients}
    if identity is not None:
        enc["identity_file"] = str(identity)
    return write_config(
        tmp / "c.yaml",
        data_dir=str(tmp / "store"),
        state_dir=str(tmp / "state"),
        local_target_dir=str(tmp / "outbox"),
        socket_path=str(tmp / "s.sock"),
        min_upload_interval_seconds=0,
        encryption=enc,
        retention=RETENTION,
        cloud_sync={"system_id": sid},
    )


def _run_once(tmp: Path, cfg: Path) -> None:
    res = akoshad("run", "--once", "--config", str(cfg), env=base_env(tmp), timeout=300)
    assert res.returncode == 0, res.stderr


def _prune(tmp: Path, cfg: Path) -> dict[str, Any]:
    res = akoshad("prune", "--json", "--config", str(cfg), env=base_env(tmp), timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def _two_versions(tmp: Path, cfg: Path, sid: str, notes: int = 0) -> bytes:
    """A 6 MiB file uploaded, then uploaded again with its first half changed: the first
    upload's pack keeps half its bytes alive for the second. Returns the second version.
    ``notes`` small files beside it (past 200 files: index parts stored, not inline)."""
    store = tmp / "store"
    store.mkdir()
    for i in range(notes):
        (store / "notes").mkdir(exist_ok=True)
        (store / "notes" / f"n{i}.md").write_text(f"note {i}")
    rng = random.Random(5)
    data = bytearray(rng.randbytes(6 * MiB))
    (store / "big.bin").write_bytes(data)
    _run_once(tmp, cfg)
    data[: 3 * MiB] = rng.randbytes(3 * MiB)
    (store / "big.bin").write_bytes(data)
    _run_once(tmp, cfg)
    assert len(manifests(tmp / "outbox", sid)) == 2
    return bytes(data)


def _packs(tmp: Path, sid: str) -> dict[str, int]:
    root = tmp / "outbox" / "systems" / sid / "packs"
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _restore(tmp: Path, manifest: dict[str, Any], identity_file: Path) -> dict[str, bytes]:
    return asyncio.run(
        restore_sealed(LocalTarget(tmp / "outbox"), manifest, load_identity(identity_file))
    )


def _copies(tmp: Path) -> list[Path]:
    """The copies of sealed documents the state holds (``document_copies``)."""
    root = tmp / "state" / DIR_NAME
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _sealed_documents(tmp: Path, sid: str) -> set[str]:
    """The sealed documents stored, and the index parts the manifests hold (``inline``):
    what the copies are kept for."""
    root = tmp / "outbox"
    held = {
        p["name"]
        for m in manifests(root, sid)
        for p in m["metadata"]["index"]["parts"]
        if "inline" in p
    }
    return held | {
        str(p.relative_to(root))
        for kind in ("index", "chunklists")
        for p in (root / "systems" / sid / kind).rglob("*.age")
    }


def test_prune_with_the_identity_repacks_sealed_packs(tmp_path: Path) -> None:
    sid = "enc-repack"
    identity = tmp_path / "id.txt"
    public = write_new_identity(identity)
    without = _config(tmp_path, sid, [public], None)
    latest = _two_versions(tmp_path, without, sid)
    # uploads of a machine that kept no copy of what it sealed (an earlier akoshad, or
    # its state lost): without the identity, the dropped upload goes and its half-dead
    # pack stays whole
    assert _copies(tmp_path)
    shutil.rmtree(tmp_path / "state" / DIR_NAME)
    first = _prune(tmp_path, without)
    assert first["packs_repacked"] == 0 and len(first["uploads_removed"]) == 1, first
    assert sum(_packs(tmp_path, sid).values()) > 9 * MiB  # 6 MiB + the changed 3 MiB

    cfg = _config(tmp_path, sid, [public], identity)
    packs_before = _packs(tmp_path, sid)
    done = _prune(tmp_path, cfg)
    assert done["packs_repacked"] >= 1 and done["manifests_rewritten"] == 1, done
    assert done["bytes_stored_after"] <= 1.2 * done["bytes_referenced"], done
    stored = sum(_packs(tmp_path, sid).values())
    assert stored <= 1.2 * 6 * MiB and done["bytes_referenced"] <= 6.1 * MiB, (stored, done)
    assert set(_packs(tmp_path, sid)) != set(packs_before)
    # what the identity opened (and what the repack wrote) is kept as copies
    assert len(_copies(tmp_path)) >= len(_sealed_documents(tmp_path, sid)) > 0

    (kept,) = manifests(tmp_path / "outbox", sid)
    assert _restore(tmp_path, kept, identity)["big.bin"] == latest
    # the rewritten index parts and chunk lists are sealed, and the readable objects list
    # names the new pack: a prune without the identity finds nothing missing
    objects = kept["metadata"]["index"]["objects"]
    assert all(k.endswith(".age") for k in objects if "/index/" in k or "/chunklists/" in k)
    assert {f"systems/{sid}/packs/{p}" for p in _packs(tmp_path, sid)} <= set(objects)
    again = _prune(tmp_path, without)
    assert again["missing"] == [] and again["objects_deleted"] == 0, again
    # each prune keeps only the copies of the documents still stored
    assert len(_copies(tmp_path)) == len(_sealed_documents(tmp_path, sid))
    verify = akoshad("verify", "--all", "--config", str(cfg), env=base_env(tmp_path), timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # the ledger follows the moved chunks: a new upload of an unchanged big file and one
    # new small file adds one small pack, not the big file's chunks again
    before = _packs(tmp_path, sid)
    (tmp_path / "store" / "note.md").write_text("a note")
    _run_once(tmp_path, without)
    new = {k: n for k, n in _packs(tmp_path, sid).items() if k not in before}
    assert sum(new.values()) < MiB, new
    newest = manifests(tmp_path / "outbox", sid)[-1]
    restored = _restore(tmp_path, newest, identity)
    assert restored["big.bin"] == latest and restored["note.md"] == b"a note"


def test_uploads_sealed_to_earlier_recipients_are_not_rewritten(tmp_path: Path) -> None:
    """The identity opens the uploads sealed to the earlier recipient too, but a rewritten
    document would be sealed to the recipient configured now: those uploads' packs stay."""
    sid = "enc-repack-old"
    identity = tmp_path / "id.txt"
    old = write_new_identity(tmp_path / "old.txt")
    new = write_new_identity(identity)
    both = tmp_path / "both.txt"
    both.write_text((tmp_path / "old.txt").read_text() + identity.read_text())
    both.chmod(0o600)
    latest = _two_versions(tmp_path, _config(tmp_path, sid, [old], None), sid)
    cfg = _config(tmp_path, sid, [new], both)
    done = _prune(tmp_path, cfg)
    assert len(done["uploads_removed"]) == 1 and done["packs_repacked"] == 0, done
    assert done["manifests_rewritten"] == 0, done
    (kept,) = manifests(tmp_path / "outbox", sid)
    assert _restore(tmp_path, kept, tmp_path / "old.txt")["big.bin"] == latest


def test_a_lost_sealed_document_does_not_stop_a_prune_with_the_identity(tmp_path: Path) -> None:
    """A kept upload's sealed index part lost: a prune with the identity falls back to the
    upload's objects list, as one without it does: the dropped upload goes, the lost part
    is reported missing (so the daemon sends it again), and nothing is repacked."""
    sid = "enc-repack-lost"
    identity = tmp_path / "id.txt"
    public = write_new_identity(identity)
    _two_versions(tmp_path, _config(tmp_path, sid, [public], None), sid, notes=250)
    newest = manifests(tmp_path / "outbox", sid)[-1]
    part = [k for k in newest["metadata"]["index"]["objects"] if "/index/" in k][-1]
    (tmp_path / "outbox" / part).unlink()
    cfg = _config(tmp_path, sid, [public], identity)
    res = akoshad("prune", "--json", "--config", str(cfg), env=base_env(tmp_path), timeout=300)
    done = json.loads(res.stdout)
    assert res.returncode == 1 and done["missing"] == [part], res.stdout + res.stderr
    assert len(done["uploads_removed"]) == 1 and done["packs_repacked"] == 0, done
    assert len(manifests(tmp_path / "outbox", sid)) == 1


def test_the_daemon_repacks_its_own_sealed_uploads_without_the_identity(tmp_path: Path) -> None:
    """The machine that sealed the documents keeps their plaintext in its state: a prune
    with only the recipients (the daemon's setup) repacks as one with the identity does,
    round after round, and every kept upload restores with the identity."""
    sid = "enc-repack-copies"
    identity = tmp_path / "id.txt"
    public = write_new_identity(identity)
    cfg = _config(tmp_path, sid, [public], None)
    latest = _two_versions(tmp_path, cfg, sid)
    root = tmp_path / "state" / DIR_NAME
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in _copies(tmp_path))
    done = _prune(tmp_path, cfg)
    assert done["packs_repacked"] >= 1 and done["manifests_rewritten"] == 1, done
    assert done["bytes_stored_after"] <= 1.2 * done["bytes_referenced"], done
    assert sum(_packs(tmp_path, sid).values()) <= 1.2 * 6 * MiB
    (kept,) = manifests(tmp_path / "outbox", sid)
    assert _restore(tmp_path, kept, identity)["big.bin"] == latest
    # the next prune keeps only the copies of the documents still stored
    assert _prune(tmp_path, cfg)["objects_deleted"] == 0
    assert len(_copies(tmp_path)) == len(_sealed_documents(tmp_path, sid))

    # more rounds: a third of the file changes each time; the target stays bounded
    rng = random.Random(11)
    data = bytearray(latest)
    for round_no in range(4):
        start = (round_no % 3) * 2 * MiB
        data[start : start + 2 * MiB] = rng.randbytes(2 * MiB)
        (tmp_path / "store" / "big.bin").write_bytes(data)
        _run_once(tmp_path, cfg)
        done = _prune(tmp_path, cfg)
        assert done["bytes_stored_after"] <= 1.2 * done["bytes_referenced"], (round_no, done)
        assert sum(_packs(tmp_path, sid).values()) <= 1.2 * 6.2 * MiB, round_no
    (kept,) = manifests(tmp_path / "outbox", sid)
    assert _restore(tmp_path, kept, identity)["big.bin"] == bytes(data)
    with_id = _config(tmp_path, sid, [public], identity)
    verify = akoshad(
        "verify", "--all", "--config", str(with_id), env=base_env(tmp_path), timeout=300
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_copy_that_is_not_the_sealed_document_is_not_used(tmp_path: Path) -> None:
    """Every copy replaced by another document's copy (valid, but not the plaintext of the
    object it stands for): none is used, so nothing is repacked, the dropped upload still
    goes, and the kept upload restores."""
    sid = "enc-repack-forged"
    identity = tmp_path / "id.txt"
    public = write_new_identity(identity)
    cfg = _config(tmp_path, sid, [public], None)
    latest = _two_versions(tmp_path, cfg, sid)
    copies = _copies(tmp_path)
    assert len(copies) >= 2
    bodies = [p.read_bytes() for p in copies]
    for path, body in zip(copies, bodies[1:] + bodies[:1], strict=True):
        path.write_bytes(body)
    done = _prune(tmp_path, cfg)
    assert done["packs_repacked"] == 0 and len(done["uploads_removed"]) == 1, done
    assert done["missing"] == [], done
    (kept,) = manifests(tmp_path / "outbox", sid)
    assert _restore(tmp_path, kept, identity)["big.bin"] == latest


@pytest.mark.s3
def test_the_daemon_repacks_its_sealed_uploads_in_a_bucket_without_the_identity(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """The same in an S3 bucket: the copies are the machine's, whatever the target."""
    identity = tmp_path / "id.txt"
    public = write_new_identity(identity)
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(tmp_path / "state"),
        socket_path=str(tmp_path / "s.sock"),
        min_upload_interval_seconds=0,
        encryption={"recipients": [public]},
        retention=RETENTION,
        cloud_sync=s3.cloud_sync(system_id),
    )
    store = tmp_path / "store"
    store.mkdir()
    rng = random.Random(9)
    data = bytearray(rng.randbytes(6 * MiB))
    for _ in range(2):
        data[: 3 * MiB] = rng.randbytes(3 * MiB)
        (store / "big.bin").write_bytes(data)
        _run_once(tmp_path, cfg)
    client = s3.client()

    def packs() -> int:
        return sum(
            client.head_object(Bucket=s3.bucket, Key=k)["ContentLength"]
            for k in s3.keys(f"systems/{system_id}/packs/")
        )

    assert packs() > 9 * MiB
    done = _prune(tmp_path, cfg)
    assert done["packs_repacked"] >= 1 and done["manifests_rewritten"] == 1, done
    assert done["bytes_stored_after"] <= 1.2 * done["bytes_referenced"], done
    assert packs() <= 1.2 * 6 * MiB
    (mkey,) = [k for k in s3.keys(f"systems/{system_id}/") if k.endswith("/manifest.json")]
    manifest = json.loads(client.get_object(Bucket=s3.bucket, Key=mkey)["Body"].read())
    target = make_target("cloud", s3.settings(system_id, home=tmp_path))

    async def restore() -> dict[str, bytes]:
        await target.start()
        try:
            return await restore_sealed(target, manifest, load_identity(identity))
        finally:
            await target.close()

    assert asyncio.run(restore())["big.bin"] == bytes(data)


@pytest.mark.parametrize(
    ("op", "nth"),
    [("delete_manifest", 1), ("write_pack", 1), ("rewrite_manifest", 1), ("delete_replaced", 1)],
)
def test_kill_9_of_a_prune_repacking_with_the_copies_leaves_the_kept_upload_whole(
    tmp_path: Path, op: str, nth: int
) -> None:
    """A prune without the identity, repacking from the copies, killed (-9) before a step:
    the kept upload restores, and the next prune finishes the job within the bound."""
    sid = "enc-repack-kill"
    identity = tmp_path / "id.txt"
    cfg = _config(tmp_path, sid, [write_new_identity(identity)], None)
    latest = _two_versions(tmp_path, cfg, sid)
    child = paused_at([op, str(nth), "prune", "--config", str(cfg)], base_env(tmp_path))
    assert "Traceback" not in kill_at_step(child)
    newest = manifests(tmp_path / "outbox", sid)[-1]
    assert _restore(tmp_path, newest, identity)["big.bin"] == latest
    done = _prune(tmp_path, cfg)
    assert done["bytes_stored_after"] <= 1.2 * done["bytes_referenced"], done
    assert sum(_packs(tmp_path, sid).values()) <= 1.2 * 6 * MiB
    (kept,) = manifests(tmp_path / "outbox", sid)
    assert _restore(tmp_path, kept, identity)["big.bin"] == latest
