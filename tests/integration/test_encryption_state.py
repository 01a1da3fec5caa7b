"""Encrypted uploads read back by the machine's own tools (local target, ``python -m
akoshad`` as users run it): ``akoshad uploads`` with and without the identity, and the
ledger rebuilt from sealed index parts when the state is lost (a new machine that holds
the identity sends nothing again for files it did not change)."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from akoshad.storage.crypto import load_identity, write_new_identity
from akoshad.targets.local import LocalTarget
from tests.helpers import akoshad, base_env, manifests, start_daemon, stop_daemon, wait_for
from tests.integration.test_encryption_uploads import encryption_config
from tests.sealed_read import sealed_files
from tests.storegen import make_store

SID = "enc-state"


class Sealed:
    """Two encrypted uploads of one store (a file changed in between), to identity A."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store = tmp / "store"
        make_store(self.store, conversations=10)
        (self.store / "notes").mkdir()
        (self.store / "notes" / "plan.md").write_text("first\n" * 200)
        self.env = base_env(tmp)
        self.public = write_new_identity(tmp / "id.txt")
        write_new_identity(tmp / "other.txt")
        self.outbox = tmp / "outbox"
        for text in ("first", "second"):
            (self.store / "notes" / "plan.md").write_text(f"{text}\n" * 200)
            res = self.run("--once")
            assert res.returncode == 0, res.stderr
        self.manifests = manifests(self.outbox, SID)
        assert len(self.manifests) == 2

    def config(self, **encryption: Any) -> Path:
        enc = {"recipients": [self.public], **encryption}
        return encryption_config(self.tmp, SID, [self.public], encryption=enc)

    def run(self, *args: str, **encryption: Any) -> Any:
        cfg = self.config(**encryption)
        return akoshad("run", *args, "--config", str(cfg), env=self.env, timeout=300)

    def cli(self, *args: str, **encryption: Any) -> Any:
        cfg = self.config(**encryption)
        return akoshad(*args, "--config", str(cfg), env=self.env, timeout=120)

    def file_counts(self) -> list[int]:
        target, identity = LocalTarget(self.outbox), load_identity(self.tmp / "id.txt")

        async def counts() -> list[int]:
            return [len((await sealed_files(target, m, identity))[0]) for m in self.manifests]

        return asyncio.run(counts())

    def objects(self) -> set[str]:
        root = self.outbox / "systems" / SID
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Sealed:
    return Sealed(tmp_path_factory.mktemp("sealed"))


def test_uploads_without_the_identity_says_encrypted(sealed: Sealed) -> None:
    res = sealed.cli("uploads", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [r["upload_id"] for r in rows] == [m["metadata"]["upload_id"] for m in sealed.manifests]
    for row, manifest in zip(rows, sealed.manifests, strict=True):
        assert row["encrypted"] is True and row["damaged"] is None
        assert row["files"] is None and row["stored_bytes"] is None
        assert "needs the identity" in row["locked"]
        assert row["total_size_bytes"] == manifest["total_size_bytes"]
    table = sealed.cli("uploads")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["UPLOAD_ID", "TIME", "FILES", "STORED", "TOTAL"]
    for line in lines[1:3]:
        cells = line.split()
        assert cells[2:4] == ["encrypted", "encrypted"], line
        assert "?" not in line
    assert lines[3].startswith("encrypted: files and stored bytes unknown, needs the identity")


@pytest.mark.parametrize("how", ["--identity", "identity_file"])
def test_uploads_with_the_identity_reads_the_sealed_index(sealed: Sealed, how: str) -> None:
    if how == "--identity":
        res = sealed.cli("uploads", "--json", "--identity", str(sealed.tmp / "id.txt"))
    else:
        res = sealed.cli("uploads", "--json", identity_file=str(sealed.tmp / "id.txt"))
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [r["files"] for r in rows] == sealed.file_counts()
    assert all(r["encrypted"] is True and r["locked"] is None for r in rows)
    # every stored object counted once (the owner record and the name keys aside)
    stored = sum(
        (sealed.outbox / "systems" / SID / k).stat().st_size
        for k in sealed.objects()
        if k != "owner.json" and not k.startswith("keys/")
    )
    assert sum(r["stored_bytes"] for r in rows) == stored
    assert 0 < rows[1]["stored_bytes"] < rows[0]["stored_bytes"]  # one small change
    human = sealed.cli("uploads", "--identity", str(sealed.tmp / "id.txt")).stdout
    assert "encrypted" not in human and human.splitlines()[1].split()[2] == str(rows[0]["files"])


def test_uploads_with_another_identity_says_so(sealed: Sealed) -> None:
    res = sealed.cli("uploads", "--json", "--identity", str(sealed.tmp / "other.txt"))
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert all(r["files"] is None and "other keys" in r["locked"] for r in rows), rows


def _packs(sealed: Sealed) -> set[str]:
    return {k for k in sealed.objects() if k.startswith("packs/")}


def _corrupt_state(sealed: Sealed) -> None:
    """The state database is damaged: the daemon sets it aside and rebuilds the ledger."""
    (sealed.tmp / "state" / "state.db").write_bytes(b"not a database " * 1000)


def test_lost_state_without_identity_sends_again_and_says_why(sealed: Sealed) -> None:
    before = _packs(sealed)
    _corrupt_state(sealed)
    res = sealed.run("--once")
    assert res.returncode == 0, res.stderr
    said = [line for line in res.stderr.splitlines() if "no identity is readable here" in line]
    assert len(said) == 1 and "sent again once" in said[0], res.stderr
    assert _packs(sealed) - before  # the store went up again


def test_lost_state_with_identity_sends_no_pack_again(sealed: Sealed) -> None:
    """The state database lost, ``run --once`` with ``identity_file``: the ledger is seeded
    from the sealed index, nothing unchanged goes up again."""
    before, uploads = _packs(sealed), len(manifests(sealed.outbox, SID))
    identity = {"identity_file": str(sealed.tmp / "id.txt")}
    _corrupt_state(sealed)
    res = sealed.run("--once", **identity)
    assert res.returncode == 0, res.stderr
    assert "ledger rebuilt" in res.stderr and "sent again" not in res.stderr, res.stderr
    assert _packs(sealed) == before
    assert len(manifests(sealed.outbox, SID)) == uploads  # no change: no upload


def test_new_machine_with_identity_takes_over_and_sends_only_changes(sealed: Sealed) -> None:
    """The whole state directory lost (a new machine): ``takeover`` and ``run --once`` with
    ``identity_file`` send nothing for unchanged files, then only what changes."""
    before, uploads = _packs(sealed), len(manifests(sealed.outbox, SID))
    identity = {"identity_file": str(sealed.tmp / "id.txt")}
    shutil.rmtree(sealed.tmp / "state")
    res = sealed.cli("takeover", "--json", **identity)
    assert res.returncode == 0, res.stdout + res.stderr
    files = [p for p in sealed.store.rglob("*") if p.is_file()]
    assert json.loads(res.stdout)["ledger_entries"] == len(files)
    res = sealed.run("--once", **identity)
    assert res.returncode == 0, res.stderr
    assert _packs(sealed) == before
    assert len(manifests(sealed.outbox, SID)) == uploads
    (sealed.store / "notes" / "plan.md").write_text("third\n" * 200)
    res = sealed.run("--once", **identity)
    assert res.returncode == 0, res.stderr
    assert len(_packs(sealed) - before) == 1  # the changed file alone


def test_the_daemon_warns_once_that_others_may_read_its_identity(tmp_path: Path) -> None:
    """An identity_file others may read: the daemon said nothing at its start and warned
    again at every drill; now one warning at the start and one at each SIGHUP reload that
    finds it so, none per drill (chmod 600 then a reload: no more)."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "n.md").write_text("n\n")
    identity = tmp_path / "id.txt"
    public = write_new_identity(identity)
    identity.chmod(0o644)
    enc = {"recipients": [public], "identity_file": str(identity)}
    cfg = encryption_config(tmp_path, SID, [public], encryption=enc, drill_interval_hours=0.001)
    env = base_env(tmp_path)
    log = tmp_path / "d.log"

    def warnings() -> int:
        return log.read_text().count(f"identity file {identity} is readable by others")

    seen: set[float] = set()  # the drills' times

    def three_drills() -> bool:
        res = akoshad("status", "--json", "--config", str(cfg), env=env, timeout=30)
        drill = json.loads(res.stdout).get("last_drill") if res.returncode == 0 else None
        seen.update([drill["at"]] if drill else [])
        return len(seen) >= 3

    proc = start_daemon(cfg, env, log)
    try:
        assert wait_for(three_drills, 90, interval=0.5), seen
        assert warnings() == 1, log.read_text()[-3000:]
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: log.read_text().count("configuration reloaded") == 1, 30)
        assert wait_for(lambda: warnings() == 2, 10), log.read_text()[-3000:]
        identity.chmod(0o600)
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: log.read_text().count("configuration reloaded") == 2, 30)
        time.sleep(1)
        assert warnings() == 2, log.read_text()[-3000:]
    finally:
        assert stop_daemon(proc) == 0


def test_a_new_machine_without_the_recipients_is_told_its_uploads_are_clear(
    tmp_path: Path,
) -> None:
    """A new machine set up as "Restore on a new machine" says (the same target and
    system_id, the identity) but without ``encryption.recipients``: ``takeover`` printed
    only its success, and the next ``run --once`` sent the whole store unencrypted without
    a word. takeover now says that the uploads made here are not encrypted."""
    machine = Sealed(tmp_path)
    shutil.rmtree(tmp_path / "state")  # another machine: a state of its own
    res = machine.cli("takeover", recipients=[], identity_file=str(tmp_path / "id.txt"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "NOT encrypted" in res.stderr and "configure the recipients" in res.stderr
    assert "owns this system_id now" in res.stdout


def test_verify_of_a_clear_upload_names_the_sealed_last_upload_it_cannot_check(
    tmp_path: Path,
) -> None:
    """A clear upload, then one sealed to A: `verify --upload-id CLEAR` without the identity
    verifies it and says in its ledger line why the ledger (whose last upload is sealed)
    was not checked; not an unnamed `akoshad: this upload is encrypted` error, exit 1."""
    make_store(tmp_path / "store", conversations=5)
    env = base_env(tmp_path)
    public = write_new_identity(tmp_path / "a.txt")
    write_new_identity(tmp_path / "b.txt")
    for recipients in ([], [public]):
        cfg = encryption_config(tmp_path, SID, recipients, encryption={"recipients": recipients})
        res = akoshad("run", "--once", "--config", str(cfg), env=env, timeout=300)
        assert res.returncode == 0, res.stderr
    clear, sealed = (m["metadata"]["upload_id"] for m in manifests(tmp_path / "outbox", SID))
    res = akoshad("verify", "--upload-id", clear, "--config", str(cfg), env=env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{clear}: " in res.stdout and "verified, ok" in res.stdout
    assert (
        f"ledger: not checked: its last upload {sealed} is encrypted: pass --identity"
    ) in res.stdout
    assert "akoshad:" not in res.stderr
    other = str(tmp_path / "b.txt")
    res = akoshad("verify", "--all", "--identity", other, "--config", str(cfg), env=env)
    assert res.returncode == 1  # the sealed upload is not verified
    assert f"{sealed}: not verified: this upload is encrypted to other keys" in res.stdout
    assert f"ledger: not checked: its last upload {sealed} is encrypted to other keys" in (
        res.stdout
    )
    assert "akoshad:" not in res.stderr


def test_verify_reads_the_name_key_from_the_target_when_the_state_lost_it(
    tmp_path: Path,
) -> None:
    """The name key cache (state_dir/name_keys.json) removed, as its 'damaged' message tells
    to: verify with the identity compared the ledger without the key and reported every
    sealed file ('ledger: F: chunks differ from the manifest of U', exit 1); it now opens
    the key's record in the target with the identity, and the ledger checks out."""
    make_store(tmp_path / "store", conversations=5)
    env = base_env(tmp_path)
    public = write_new_identity(tmp_path / "a.txt")
    enc = {"recipients": [public], "identity_file": str(tmp_path / "a.txt")}
    cfg = encryption_config(tmp_path, SID, [public], encryption=enc)
    res = akoshad("run", "--once", "--config", str(cfg), env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    (tmp_path / "state" / "name_keys.json").unlink()
    res = akoshad("verify", "--config", str(cfg), env=env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "differ" not in res.stdout and "ledger: " in res.stdout
    assert res.stdout.rstrip().endswith(", ok"), res.stdout
