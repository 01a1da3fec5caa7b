"""``akoshad prune`` and the daemon's prune on the local target, as users run them: 15
uploads made by a daemon, ``retention: keep_last 3`` (the other rules 0)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from akoshad.config import load_settings
from akoshad.runtime.target_identity import KV_IDENTITY, target_identity
from tests.crashloop import referenced_keys
from tests.helpers import akoshad, base_env, manifests, start_daemon, stop_daemon, wait_for
from tests.helpers import write_config as _write
from tests.prune_cli_child import kill_at_step, paused_at
from tests.s3server import free_port
from tests.storegen import make_store

SYSTEM = "prunebox"
UPLOADS = 15
KEEP = 3
RETENTION = {
    "keep_last": KEEP,
    "keep_hourly": 0,
    "keep_daily": 0,
    "keep_weekly": 0,
    "keep_monthly": 0,
    "prune_interval_hours": 0,
}


class Box:
    """A store, its state and its outbox under ``tmp``, with a config over them."""

    def __init__(self, tmp: Path, **extra: Any) -> None:
        self.tmp = tmp
        self.store, self.state, self.outbox = tmp / "store", tmp / "state", tmp / "outbox"
        self.sock = tmp / "s.sock"
        self.env = base_env(tmp / "home")
        retention = {**RETENTION, **extra.pop("retention", {})}
        self.config = _write(
            tmp / "c.yaml",
            data_dir=str(self.store),
            state_dir=str(self.state),
            local_target_dir=str(self.outbox),
            socket_path=str(self.sock),
            debounce_seconds=0.2,
            max_delay_seconds=2,
            retention=retention,
            cloud_sync={"system_id": SYSTEM},
            **extra,
        )

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return akoshad(*args, "--config", str(self.config), env=self.env, check=check)

    def ids(self) -> list[str]:
        return [m["metadata"]["upload_id"] for m in manifests(self.outbox, SYSTEM)]

    def prune(self, *args: str) -> dict[str, Any]:
        res = self.cli("prune", "--json", *args)
        assert res.returncode == 0, res.stdout + res.stderr
        return dict(json.loads(res.stdout))

    def restore(self, upload_id: str, dest: Path) -> dict[str, str]:
        self.cli("restore", "--upload-id", upload_id, "--dest", str(dest), check=True)
        return hashes(dest)

    def kv(self, key: str) -> Any:
        with sqlite3.connect(self.state / "state.db") as con:
            row = con.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def ledger_keys(self) -> set[str]:
        """The objects the ledger points at: whole objects, and the packs its chunks are
        in (located through the chunk table)."""
        with sqlite3.connect(self.state / "state.db") as con:
            rows = con.execute("SELECT key, chunks FROM ledger WHERE target = 'local'").fetchall()
            table = dict(con.execute("SELECT sha256, key FROM chunks WHERE target = 'local'"))
        keys = {key for key, chunks in rows if chunks is None}
        for _, chunks in rows:
            keys |= {table[sha] for sha, _ in json.loads(chunks or "[]")}
        return keys


def hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """15 uploads by a daemon (each a new content of one file), then the daemon stopped."""
    box = Box(tmp_path_factory.mktemp("fifteen"))
    make_store(box.store)
    proc = start_daemon(box.config, box.env, box.tmp / "daemon.log")
    try:
        wait_for(box.sock.exists, 30)
        n = 0
        while len(box.ids()) < UPLOADS:
            before = len(box.ids())
            n += 1
            (box.store / "notes.txt").write_text(f"version {n}\n")
            wait_for(lambda b=before: box.cli("sync", "--wait") and len(box.ids()) > b, 30, 0.2)  # type: ignore[misc]
    finally:
        assert stop_daemon(proc) == 0
    assert len(box.ids()) == UPLOADS
    return box.tmp


@pytest.fixture
def box(made: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Box:
    """A copy of the 15 uploads (the same machine: its state and owner id come along, and
    the outbox counts as the same place, moved with them)."""
    for name in ("store", "state", "outbox"):
        shutil.copytree(made / name, tmp_path / name, symlinks=True)
    extra = getattr(request, "param", {})
    box = Box(tmp_path, **extra)
    settings = load_settings(box.config, environ=box.env)
    with sqlite3.connect(box.state / "state.db") as con:
        con.execute(
            "UPDATE kv SET value = ? WHERE key = ?",
            (target_identity(settings, "local"), KV_IDENTITY.format(target="local")),
        )
    return box


def kept_restores(box: Box) -> dict[str, dict[str, str]]:
    return {u: box.restore(u, box.tmp / f"before-{u}") for u in box.ids()[-KEEP:]}


def assert_pruned_and_restorable(box: Box, kept: dict[str, dict[str, str]]) -> None:
    """Only the kept uploads are left, every object a kept manifest names is there and
    nothing else is, and each kept upload verifies and restores as before."""
    assert box.ids() == list(kept)
    prefix = box.outbox / "systems" / SYSTEM
    named = {k for m in manifests(box.outbox, SYSTEM) for k in referenced_keys(m, box.outbox)}
    named |= {f"systems/{SYSTEM}/uploads/{u}/manifest.json" for u in kept}
    present = {p.relative_to(box.outbox).as_posix() for p in prefix.rglob("*") if p.is_file()}
    assert present == named | {f"systems/{SYSTEM}/owner.json"}
    res = box.cli("verify", "--all")
    assert res.returncode == 0, res.stdout + res.stderr
    for upload_id, files in kept.items():
        assert box.restore(upload_id, box.tmp / f"after-{upload_id}") == files


def test_dry_run_lists_what_would_go_and_deletes_nothing(box: Box) -> None:
    ids, before = box.ids(), hashes(box.outbox)
    res = box.cli("prune", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert f"would remove {UPLOADS - KEEP} upload(s), kept {KEEP}" in res.stdout
    assert all(f"would remove upload {u}" in res.stdout for u in ids[:-KEEP])
    result = box.prune("--dry-run")
    assert result["dry_run"] is True and result["ok"] is True
    assert sorted(result["uploads_removed"]) == ids[:-KEEP]
    # each dropped upload: its manifest and its notes.txt (the first one's files are kept)
    assert result["objects_deleted"] >= 2 * (UPLOADS - KEEP) - 1
    assert result["bytes_freed"] > 0
    assert hashes(box.outbox) == before  # nothing deleted
    assert box.kv("last_prune") is None  # a dry run is not the last prune


def test_an_upload_dated_at_the_edge_of_time_does_not_stop_the_prune(box: Box) -> None:
    """A manifest whose ``uploaded_at`` is ``0001-01-01T00:00:00+05:00`` (year 0 in UTC,
    where retention cuts its periods) stopped every prune: ``prune failed: OverflowError:
    date value out of range``, the daemon's too, every 10 minutes. It is the oldest upload
    now, and the prune goes on."""
    ids = box.ids()
    uploads = box.outbox / "systems" / SYSTEM / "uploads"
    doc = json.loads((uploads / ids[0] / "manifest.json").read_text())
    odd = "10101T000000000000Z-0ddd0d"
    doc["uploaded_at"] = "0001-01-01T00:00:00+05:00"
    doc["metadata"]["upload_id"] = odd
    (uploads / odd).mkdir()
    (uploads / odd / "manifest.json").write_text(json.dumps(doc))
    res = box.cli("prune", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert f"would remove upload {odd}" in res.stdout
    assert f"would remove {UPLOADS - KEEP + 1} upload(s), kept {KEEP}" in res.stdout


def test_prune_removes_what_retention_drops_and_the_kept_uploads_restore(box: Box) -> None:
    ids, kept = box.ids(), kept_restores(box)
    ledger = box.ledger_keys()
    newest = manifests(box.outbox, SYSTEM)[-1]
    assert ledger and ledger <= referenced_keys(newest, box.outbox)
    dry = box.prune("--dry-run")
    result = box.prune()
    assert result["ok"] is True and result["dry_run"] is False
    # what the target holds after it, the owner record included, as the dry run foretold
    mine = (box.outbox / "systems" / SYSTEM).rglob("*")
    on_disk = sum(p.stat().st_size for p in mine if p.is_file())
    assert result["bytes_stored_after"] == dry["bytes_stored_after"] == on_disk
    assert sorted(result["uploads_removed"]) == ids[:-KEEP]
    assert result["uploads_kept"] == KEEP and result["objects_deleted"] >= 2 * (UPLOADS - KEEP) - 1
    assert result["bytes_freed"] > 0
    assert_pruned_and_restorable(box, kept)
    assert all((box.outbox / key).is_file() for key in ledger)  # the ledger's objects stay
    last = box.kv("last_prune")
    assert last["ok"] is True and last["uploads_removed"] == UPLOADS - KEEP
    assert last["objects_deleted"] == result["objects_deleted"] and last["problems"] == []
    again = box.prune()  # nothing left to do
    assert again["uploads_removed"] == [] and again["objects_deleted"] == 0
    res = box.cli("run", "--once")  # and the next upload still finds what it points at
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("box", [{"retention": {"enabled": False}}], indirect=True)
def test_retention_disabled_keeps_everything(box: Box) -> None:
    before = hashes(box.outbox)
    res = box.cli("prune")
    assert res.returncode == 0, res.stderr
    assert "kept every upload, deleted nothing" in res.stdout
    assert box.prune()["enabled"] is False
    assert hashes(box.outbox) == before


def test_a_prune_removes_the_temporary_files_an_interrupted_write_left(box: Box) -> None:
    """A ``prune`` by hand killed in the middle of a repack leaves a temporary pack in the
    outbox: the next prune (here by hand too, no daemon start in between) removes it, and
    only under this system's prefix; a dry run leaves it."""
    packs = sorted(p for p in (box.outbox / "systems" / SYSTEM / "packs").rglob("*") if p.is_file())
    assert packs, "the uploads made no pack"
    ours = packs[0].with_name(packs[0].name + ".akoshad-tmp-0badc0de")
    ours.write_bytes(b"half a repacked pack")
    theirs = box.outbox / "systems" / "other" / "packs" / "ab" / "ab12.akoshad-tmp-0badc0de"
    theirs.parent.mkdir(parents=True, mode=0o700)
    theirs.write_bytes(b"another system's write in progress")
    assert box.prune("--dry-run")["dry_run"] is True and ours.exists()
    result = box.prune()
    assert result["ok"] is True and result["multipart_aborted"] == 1
    assert not ours.exists() and theirs.exists()
    assert box.prune()["multipart_aborted"] == 0


def test_prune_goes_through_a_running_daemon(box: Box) -> None:
    ids, kept = box.ids(), kept_restores(box)
    log = box.tmp / "daemon.log"
    proc = start_daemon(box.config, box.env, log)
    try:
        wait_for(box.sock.exists, 30)
        result = box.prune()
        assert sorted(result["uploads_removed"]) == ids[:-KEEP]
        st = json.loads(box.cli("status", "--json", check=True).stdout)
        assert st["last_prune"]["uploads_removed"] == UPLOADS - KEEP
        assert st["last_prune"]["ok"] is True and st["lease"]["ours"] is True
        assert box.prune("--dry-run")["uploads_removed"] == []
    finally:
        assert stop_daemon(proc) == 0
    text = log.read_text()
    assert f"removed {UPLOADS - KEEP} upload(s), kept {KEEP}" in text, text
    assert "Traceback" not in text
    assert_pruned_and_restorable(box, kept)


def test_a_prune_by_a_file_the_daemon_has_not_reloaded_is_refused(box: Box) -> None:
    """``keep_last`` raised in the file, the daemon not reloaded: ``prune`` (through the
    daemon) removed the uploads by the daemon's old policy, those the file now keeps too.
    It is refused, naming both policies and the reload, and deletes nothing; after a
    reload (SIGHUP) it prunes by the file."""
    ids = box.ids()
    proc = start_daemon(box.config, box.env, box.tmp / "daemon.log")
    try:
        wait_for(box.sock.exists, 30)
        config = yaml.safe_load(box.config.read_text())
        config["retention"]["keep_last"] = KEEP + 2
        box.config.write_text(yaml.safe_dump(config))
        for args in ((), ("--dry-run",)):
            res = box.cli("prune", "--json", *args)
            assert res.returncode == 1, res.stdout + res.stderr
            (problem,) = json.loads(res.stdout)["problems"]
            assert problem.startswith(
                f"the daemon runs with retention 'keep {KEEP} latest uploads' but the "
                f"configuration here says 'keep {KEEP + 2} latest uploads': reload the daemon"
            )
            assert problem.endswith("nothing was deleted")
        assert box.ids() == ids and box.kv("last_prune") is None
        proc.send_signal(signal.SIGHUP)
        result = wait_for(
            lambda: box.cli("prune", "--json").returncode == 0 and box.kv("last_prune"), 30, 0.5
        )
        assert result["uploads_removed"] == UPLOADS - KEEP - 2
        assert box.ids() == ids[-(KEEP + 2) :]
    finally:
        assert stop_daemon(proc) == 0


def test_a_prune_asked_while_the_state_is_held_waits_for_it(box: Box) -> None:
    """The state's lock held (a daemon starting: its socket not answering yet, or a
    `run --once`): `akoshad prune` waits until the lock is free (or the daemon answers) and
    then prunes; it said 'another akoshad is already running ... (use `akoshad sync
    --wait` ...)' at once, exit 1, though a prune was asked for."""
    ids = box.ids()
    box.state.mkdir(exist_ok=True)
    fd = os.open(box.state / "akoshad.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        cmd = [sys.executable, "-m", "akoshad", "prune", "--json", "--config", str(box.config)]
        proc = subprocess.Popen(cmd, env=box.env, stdout=subprocess.PIPE, text=True)
        time.sleep(2.0)
        assert proc.poll() is None, proc.communicate()
    finally:
        os.close(fd)  # the lock goes with it
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert sorted(json.loads(out)["uploads_removed"]) == ids[:-KEEP]


@pytest.mark.parametrize(
    "box",
    [{"retention": {"prune_interval_hours": 0.001}, "metrics_listen": f"127.0.0.1:{free_port()}"}],
    indirect=True,
)
def test_the_daemon_prunes_by_itself_every_interval(box: Box) -> None:
    kept = kept_restores(box)
    proc = start_daemon(box.config, box.env, box.tmp / "daemon.log")
    try:
        wait_for(box.sock.exists, 30)

        def last_prune() -> Any:
            st = json.loads(box.cli("status", "--json", check=True).stdout)
            return st["last_prune"]

        last = wait_for(last_prune, 40, 0.5)  # 3.6 s after the start
        assert last["ok"] is True and last["uploads_removed"] == UPLOADS - KEEP
        listen = yaml.safe_load(box.config.read_text())["metrics_listen"]
        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert "akoshad_last_prune_timestamp_seconds" in text
    finally:
        assert stop_daemon(proc) == 0
    assert_pruned_and_restorable(box, kept)


@pytest.mark.parametrize("box", [{"retention": {"prune_interval_hours": 0.001}}], indirect=True)
def test_a_prune_recorded_by_a_clock_that_ran_ahead_does_not_stop_the_next(box: Box) -> None:
    """The last prune was recorded while the clock ran a year ahead, and the clock was set
    right since: the daemon prunes at its interval all the same, not a year later."""
    ahead = time.time() + 365 * 86400
    record: dict[str, Any] = {
        "at": ahead,
        "ok": True,
        "uploads_kept": UPLOADS,
        "uploads_removed": 0,
    }
    record |= {"objects_deleted": 0, "bytes_freed": 0, "problems": []}
    with sqlite3.connect(box.state / "state.db") as con:
        con.execute(
            "INSERT OR REPLACE INTO kv (key, value) VALUES ('last_prune', ?)", (json.dumps(record),)
        )
    kept = kept_restores(box)
    proc = start_daemon(box.config, box.env, box.tmp / "daemon.log")
    try:
        wait_for(box.sock.exists, 30)

        def pruned() -> Any:
            st = json.loads(box.cli("status", "--json", check=True).stdout)
            return st["last_prune"] if st["last_prune"]["at"] < ahead else None

        last = wait_for(pruned, 40, 0.5)  # 3.6 s after the start
        assert last["ok"] is True and last["uploads_removed"] == UPLOADS - KEEP
    finally:
        assert stop_daemon(proc) == 0
    assert_pruned_and_restorable(box, kept)


def paused_at_step(
    box: Box, op: str, nth: int, command: str, stderr: int = subprocess.PIPE
) -> subprocess.Popen[str]:
    """``akoshad COMMAND`` (``prune``, or ``run``: a daemon) in a child whose prune prints
    ``AT-STEP`` and waits before the NTH step of kind OP (``tests.prune_cli_child``)."""
    return paused_at([op, str(nth), command, "--config", str(box.config)], box.env, stderr)


@pytest.mark.parametrize(("op", "nth"), [("delete_manifest", 3), ("delete_object", 2)])
def test_kill_9_of_a_prune_leaves_the_kept_uploads_restorable(box: Box, op: str, nth: int) -> None:
    kept = kept_restores(box)
    err = kill_at_step(paused_at_step(box, op, nth, "prune"))
    assert "Traceback" not in err
    left = box.ids()
    assert KEEP < len(left) < UPLOADS if op == "delete_manifest" else left == list(kept)
    res = box.cli("verify", "--all")  # every upload still listed is whole
    assert res.returncode == 0, res.stdout + res.stderr
    for upload_id, files in kept.items():
        assert box.restore(upload_id, box.tmp / f"mid-{upload_id}") == files
    result = box.prune()  # the next prune finishes the job
    assert result["ok"] is True
    assert_pruned_and_restorable(box, kept)


def test_a_prune_through_a_daemon_killed_mid_way_is_reported_not_redone(box: Box) -> None:
    """The daemon is killed (-9) in the middle of the prune it runs for ``akoshad prune``:
    the command says so and fails, and does not run a second prune of its own, which would
    have reported only what was left; the next ``prune`` finishes the job."""
    kept = kept_restores(box)
    daemon = paused_at_step(box, "delete_manifest", 3, "run", subprocess.DEVNULL)
    try:
        wait_for(box.sock.exists, 30)
        cli = subprocess.Popen(
            [sys.executable, "-m", "akoshad", "prune", "--json", "--config", str(box.config)],
            env=box.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert daemon.stdout is not None
        while (line := daemon.stdout.readline()) != "AT-STEP\n":
            assert line, "the daemon ended before its prune reached the step"
        daemon.send_signal(signal.SIGKILL)
        out, err = cli.communicate(timeout=60)
    finally:
        daemon.kill()
        daemon.communicate(timeout=30)
    assert cli.returncode == 1, out + err
    # --json: the problem as an object on stdout too, for a script to read
    printed = json.loads(out)
    assert printed["ok"] is False and printed["dry_run"] is False, printed
    (problem,) = printed["problems"]
    assert "before it answered the prune, which may be partly done" in problem, problem
    assert "before it answered the prune, which may be partly done" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert KEEP < len(box.ids()) < UPLOADS  # the daemon's part only: no prune here
    assert box.prune()["ok"] is True
    assert_pruned_and_restorable(box, kept)


def test_a_lost_document_of_kept_uploads_is_named_and_the_prune_goes_on(box: Box) -> None:
    """A chunk list or index part the kept uploads read is lost: ``akoshad prune`` exits 1
    naming it, still drops what retention drops (the manifests), and keeps every object
    stored up to the kept uploads, so nothing they may use is deleted; once the document is
    back, the next prune finishes the job and the kept uploads restore as before."""
    many = box.store / "many"  # past 200 files, the entries go into shared index parts
    many.mkdir()
    for i in range(240):
        (many / f"m{i:03d}.json").write_text(f'{{"n": {i}}}')
    for n in range(KEEP):
        (box.store / "notes.txt").write_text(f"index {n}\n")
        res = box.cli("run", "--once")
        assert res.returncode == 0, res.stdout + res.stderr
    ids, kept = box.ids(), kept_restores(box)
    assert len(ids) == UPLOADS + KEEP
    shared = [
        {k for k in referenced_keys(m, box.outbox) if "/index/" in k}
        for m in manifests(box.outbox, SYSTEM)[-KEEP:]
    ]
    documents = sorted(set.intersection(*shared))
    assert documents, "the kept uploads share no index part"
    lost = box.outbox / documents[0]
    data = lost.read_bytes()
    lost.unlink()
    before = hashes(box.outbox)
    res = box.cli("prune", "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    result = json.loads(res.stdout)
    assert result["ok"] is False and sorted(result["uploads_removed"]) == ids[:-KEEP]
    named = [p for p in result["problems"] if documents[0] in p]
    assert len(named) == KEEP, result  # each kept upload
    assert all("nothing it may still use is deleted" in p for p in named), result
    gone = set(before) - set(hashes(box.outbox))
    assert gone == {f"systems/{SYSTEM}/uploads/{u}/manifest.json" for u in ids[:-KEEP]}
    assert box.kv("last_prune")["ok"] is False
    res = box.cli("prune", "--dry-run")
    assert res.returncode == 1 and f"problem: kept upload {ids[-1]}: " in res.stdout, res.stdout
    lost.write_bytes(data)
    assert box.prune()["ok"] is True
    assert_pruned_and_restorable(box, kept)


def test_a_prune_of_an_outbox_that_is_not_there_says_so(tmp_path: Path) -> None:
    """``local_target_dir`` with a typo (no daemon): ``prune`` made that directory, claimed
    the system id there and printed "removed 0 upload(s), kept 0" (exit 0); it now says the
    outbox is not there, as uploads, verify, restore and drill do, and makes nothing."""
    box = Box(tmp_path)
    box.store.mkdir()
    for args in ((), ("--dry-run",)):
        res = box.cli("prune", *args)
        assert res.returncode == 1, res.stdout + res.stderr
        want = f"local_target_dir {box.outbox} does not exist: no upload can be there"
        assert want in res.stderr and res.stdout == ""
        assert not box.outbox.exists()


def test_an_outbox_reached_through_a_symlink_is_pruned_listed_and_restored(box: Box) -> None:
    """``local_target_dir`` a link to the outbox on another disk (the uploads go through
    it): ``prune``, ``uploads`` and ``restore`` said "local_target_dir ... is not a
    directory: no upload can be there" (exit 1); they read it as the uploads wrote it."""
    real = box.tmp / "disk" / "outbox"
    real.parent.mkdir()
    box.outbox.rename(real)
    box.outbox.symlink_to(real, target_is_directory=True)
    ids = box.ids()
    before = box.restore(ids[-1], box.tmp / "before")
    res = box.cli("uploads", "--json")
    assert res.returncode == 0, res.stderr
    assert [u["upload_id"] for u in json.loads(res.stdout)] == ids
    assert sorted(box.prune("--dry-run")["uploads_removed"]) == ids[:-KEEP]
    assert sorted(box.prune()["uploads_removed"]) == ids[:-KEEP]
    assert box.ids() == ids[-KEEP:] and box.outbox.is_symlink()
    assert box.restore(ids[-1], box.tmp / "after") == before


def test_prune_json_that_could_not_run_still_prints_a_result(tmp_path: Path) -> None:
    """``prune --json`` that cannot run (here the outbox is not there; a bucket missing or
    a server down alike) printed nothing on stdout, only the line on stderr: a script
    reading the JSON got nothing to parse. It prints ``{ok: false, problems: [that line]}``
    too, as ``drill --json`` does (exit 1, the line on stderr as before)."""
    box = Box(tmp_path)
    box.store.mkdir()
    res = box.cli("prune", "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    why = f"local_target_dir {box.outbox} does not exist: no upload can be there"
    assert json.loads(res.stdout) == {
        "ok": False,
        "dry_run": False,
        "problems": [f"{why}: nothing to prune"],
    }
    assert res.stderr == f"akoshad: {why}: nothing to prune\n"


def test_a_prune_of_a_system_id_without_uploads_names_the_ones_there(
    made: Path, tmp_path: Path
) -> None:
    """A new machine whose host name makes another default ``system_id``: ``prune`` said
    only "removed 0 upload(s), kept 0" (exit 0), which reads as a prune of the backup. It
    says which system ids the target holds, as ``uploads`` does, in a note line and in
    ``--json`` (exit 0: nothing was wrong with the prune itself)."""
    shutil.copytree(made / "outbox", tmp_path / "outbox", symlinks=True)
    (tmp_path / "store").mkdir()
    config = _write(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(tmp_path / "state"),
        local_target_dir=str(tmp_path / "outbox"),
        socket_path=str(tmp_path / "s.sock"),
        cloud_sync={"system_id": "newhost"},
    )
    env = base_env(tmp_path / "home")
    note = (
        f"no uploads for system newhost in local; it holds system id(s) {SYSTEM}: to prune "
        "those, set cloud_sync.system_id to one (then akoshad takeover)"
    )
    res = akoshad("prune", "--dry-run", "--config", str(config), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines()[-1] == f"note: {note}"
    res = akoshad("prune", "--json", "--config", str(config), env=env)
    assert res.returncode == 0 and json.loads(res.stdout)["note"] == note, res.stdout


def test_a_request_for_another_place_is_refused_by_the_daemon_it_reaches(
    box: Box, tmp_path: Path
) -> None:
    """A second configuration (another system_id and outbox) without a socket_path of its
    own reaches the running daemon of the first: ``prune --config second.yaml`` pruned the
    daemon's target, by the same rules, and reported its uploads as removed. The daemon
    refuses, naming the system id it prunes, and nothing is deleted."""
    ids = box.ids()
    (tmp_path / "second").mkdir()
    second = _write(
        tmp_path / "second.yaml",
        data_dir=str(tmp_path / "second" / "store"),
        state_dir=str(tmp_path / "second" / "state"),
        local_target_dir=str(tmp_path / "second" / "outbox"),
        socket_path=str(box.sock),
        retention=RETENTION,
        cloud_sync={"system_id": "another"},
    )
    proc = start_daemon(box.config, box.env, box.tmp / "daemon.log")
    try:
        wait_for(box.sock.exists, 30)
        for args in ((), ("--dry-run",)):
            res = akoshad("prune", "--json", *args, "--config", str(second), env=box.env)
            assert res.returncode == 1, res.stdout + res.stderr
            (problem,) = json.loads(res.stdout)["problems"]
            assert problem.startswith(
                f"the daemon answering here backs up system_id '{SYSTEM}' to its local "
                "target, not the place the configuration here names (system_id 'another')"
            )
            assert problem.endswith("; nothing was deleted"), problem
        assert box.ids() == ids and box.kv("last_prune") is None
        # nor does it sync, drill or take over for that configuration: each would act on
        # its own store and target and report it as the other's (exit 0 for nothing)
        for command, not_done in (
            (("sync", "--wait"), "nothing was synced"),
            (("drill",), "no drill ran"),
            (("takeover",), "nothing was taken over"),
        ):
            res = akoshad(*command, "--config", str(second), env=box.env, timeout=120)
            assert res.returncode == 1, (command, res.stdout + res.stderr)
            assert f"system_id '{SYSTEM}'" in res.stderr and not_done in res.stderr, res.stderr
        assert box.ids() == ids and box.kv("last_drill") is None
        assert box.prune("--dry-run")["uploads_removed"]  # its own configuration: answered
        res = akoshad("sync", "--wait", "--config", str(box.config), env=box.env, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        assert stop_daemon(proc) == 0
